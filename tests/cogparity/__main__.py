"""python -m tests.cogparity --url URL --token TOKEN [--owner NAME] [CASE.txtar ...]: replay Cog's
integration cases against a running vendo and print one line per case and a total."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from tests.cogparity.replay import CASES, replay


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.cogparity")
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--owner", required=True, help="the token's account (models are made under it)")
    ap.add_argument("cases", nargs="*", type=Path)
    args = ap.parse_args()
    paths = args.cases or sorted(CASES.glob("*.txtar"))
    counts: Counter[str] = Counter()
    for path in paths:
        o = replay(path, args.url, args.token, args.owner)
        counts[o.result] += 1
        print(f"{o.result:5} {o.case:45} {o.seconds:6.1f}s  {o.detail[:300]}", flush=True)
    print(f"\n{counts['pass']} passed, {counts['fail']} failed, {counts['n/a']} not applicable")
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
