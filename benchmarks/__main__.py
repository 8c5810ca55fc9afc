"""`python -m benchmarks` (`make bench`): bring up vendo, bare Ray Serve and Cog's server on this
machine, measure every part in one run, write benchmarks/results/latest.{json,md,png} and print
the tables. See benchmarks/README.md."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from benchmarks import plan as plans
from benchmarks import report

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("overhead", "async", "streaming", "files", "batch", "catalogue", "burst", "scale", "finetunes",
         "workingset", "efficiency", "cold")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    import cog
    import coglet
    import ray

    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal"))
    except (OSError, StopIteration, ValueError):
        mem_kib = 0
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gib": round(mem_kib / 2**20),
            "kernel": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "ray": ray.__version__, "cog": cog.__version__, "coglet": coglet.__version__,
            "note": "a shared-core VM; the load generator runs on the same cores as everything it measures"}


def commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return sha + (" with uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _part(res: dict, name: str, fn: Callable[[], Any]) -> None:
    log(f"{name} ...")
    t0 = time.monotonic()
    try:
        res[name] = fn()
        log(f"{name} done in {time.monotonic() - t0:.0f}s")
    except Exception as e:  # noqa: BLE001 - one broken part must not lose the others
        res.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"[:500]
        log(f"{name} FAILED after {time.monotonic() - t0:.0f}s:\n{traceback.format_exc()}")


def _sku(st):
    from vendo_core.hardware import hardware

    return hardware(str(st.settings.hardware_config) if st.settings.hardware_config else None).get(None)


def run(parts: tuple[str, ...], plan: plans.Plan, lock_held: bool) -> dict[str, Any]:
    from ray import serve

    from benchmarks import (
        async_path,
        batchjob,
        burst,
        catalogue,
        coldstart,
        efficiency,
        files,
        finetunes,
        overhead,
        scale,
        streaming,
        workingset,
    )
    from benchmarks import stack as stk
    from benchmarks.cogserver import CogServer
    from router.serve_apps import autoscaling

    res: dict[str, Any] = {"started_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                           "machine": machine(), "commit": commit(), "plan": dataclasses.asdict(plan)}
    t0 = time.monotonic()
    bare_runs: dict[str, Any] = {}  # bare Serve's baseline, per part, from its own cluster
    with stk.ray_lock(lock_held):
        if {"overhead", "efficiency", "cold"} & set(parts):
            # Serve's ingress is cluster-wide: bare Serve's default two hops (its Python proxy) get a
            # cluster of their own, brought up and torn down before vendo's, on the same cores
            log("bringing up a cluster on Serve's default ingress for bare Serve's baseline ...")
            with stk.stack(ingress="proxy") as st:
                log(f"baseline cluster up at {st.url} in {time.monotonic() - t0:.0f}s")
                if "overhead" in parts:
                    stk.deploy_bare(stk.BARE_APP, stk.BARE_PREFIX, stk.MODELS / "noop", max_ongoing_requests=64,
                                    autoscaling_config=autoscaling(st.settings, 1),
                                    ray_actor_options=_sku(st).ray_actor_options())
                    _part(bare_runs, "overhead", lambda: asyncio.run(overhead.run_bare(st, plan)))
                    serve.delete(stk.BARE_APP)
                if "efficiency" in parts:
                    _part(bare_runs, "efficiency", lambda: asyncio.run(efficiency.run(st, plan, "bare")))
                if "cold" in parts:
                    _part(bare_runs, "coldstart", lambda: asyncio.run(coldstart.run_side(st, plan, "bare")))
                log("tearing down the baseline cluster ...")
            res.setdefault("errors", {}).update({f"{k} (bare Serve)": v for k, v in bare_runs.pop("errors", {}).items()})
        log("bringing up Redis, Ray, Serve and the router (the Ray lock is held) ...")
        with stk.stack() as st:
            res["redis"] = "embedded redis-server" if st.embedded_redis else f"the machine's, db {stk.BENCH_DB}"
            res["ingress"] = "haproxy" if st.haproxy else "proxy"
            log(f"up at {st.url} ({res['ingress']} ingress) in {time.monotonic() - t0:.0f}s; pushing the models ...")
            for name in ("noop", "stream", "file"):
                st.push(stk.MODELS / name, name)
            if "overhead" in parts and "overhead" in bare_runs:
                if st.haproxy:  # bare Serve on vendo's ingress too: what vendo costs over the same hops
                    stk.deploy_bare(stk.BARE_APP, stk.BARE_PREFIX, stk.MODELS / "noop", max_ongoing_requests=64,
                                    autoscaling_config=autoscaling(st.settings, 1),
                                    ray_actor_options=_sku(st).ray_actor_options())
                with CogServer(stk.MODELS / "noop", stk.free_port(), st.log_dir / "coglet.log") as cog:
                    _part(res, "overhead", lambda: overhead.result(
                        {**bare_runs["overhead"],
                         **asyncio.run(overhead.run_vendo(st, cog.url, plan, bare_same_ingress=st.haproxy))}, plan))
                if st.haproxy:
                    serve.delete(stk.BARE_APP)
            if "async" in parts:
                _part(res, "async_path", lambda: asyncio.run(async_path.run(st, plan)))
            if "streaming" in parts:
                _part(res, "streaming", lambda: asyncio.run(streaming.run(st, plan)))
            if "files" in parts:
                _part(res, "files", lambda: asyncio.run(files.run(st, plan)))
            if "batch" in parts:
                _part(res, "batch", lambda: asyncio.run(batchjob.run(st, plan)))
            if "catalogue" in parts:
                _part(res, "catalogue", lambda: asyncio.run(catalogue.run(st, plan)))
            if "burst" in parts:
                _part(res, "burst", lambda: asyncio.run(burst.run(st, plan)))
                for name in ("burst-a", "burst-slow"):
                    if name in st.versions and st.app_of(st.versions[name]) in serve.status().applications:
                        serve.delete(st.app_of(st.versions[name]))
            if "scale" in parts:
                _part(res, "scale", lambda: asyncio.run(scale.run(st, plan)))
                if "scale-slow" in st.versions and st.app_of(st.versions["scale-slow"]) in serve.status().applications:
                    serve.delete(st.app_of(st.versions["scale-slow"]))
            for name in ("noop", "stream", "file"):  # free their replicas before the scaling parts
                serve.delete(st.app_of(st.versions[name]))
            if "finetunes" in parts:
                _part(res, "finetunes", lambda: finetunes.run(st, plan))
            if "workingset" in parts:
                _part(res, "workingset", lambda: workingset.run(st, plan))
            if "efficiency" in parts and "efficiency" in bare_runs:
                _part(res, "efficiency", lambda: {"wait_s": efficiency.WAIT_S, "bare": bare_runs["efficiency"],
                                                  "vendo": asyncio.run(efficiency.run(st, plan, "vendo"))})
            if "cold" in parts and "coldstart" in bare_runs:
                _part(res, "coldstart", lambda: coldstart.result(
                    {"vendo": asyncio.run(coldstart.run_side(st, plan, "vendo")), "bare": bare_runs["coldstart"]}, plan))
            log("tearing down ...")
    if not res.get("errors"):
        res.pop("errors", None)
    res["gpu"] = {"measured": False, "note": report.GPU_NOT_MEASURED}
    res["duration_s"] = time.monotonic() - t0
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--quick", action="store_true", help="one short trial of each: checks the plumbing; "
                    "writes to a temp dir unless --out is given")
    ap.add_argument("--out", type=Path, default=None, help=f"results folder (default {RESULTS})")
    ap.add_argument("--lock-held", action="store_true",
                    help="the caller already holds /tmp/vendo-ray.lock (e.g. under flock(1))")
    ap.add_argument("--report-only", action="store_true", help="redraw latest.md/png from latest.json")
    ap.add_argument("--update-readme", action="store_true",
                    help="also put the goals and overhead tables in README.md's Performance section")
    args = ap.parse_args(argv)
    out = args.out or (Path(tempfile.mkdtemp(prefix="vendo-bench-quick-")) if args.quick else RESULTS)
    if args.report_only:
        res = json.loads((out / "latest.json").read_text())
    else:
        parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
        unknown = set(parts) - set(PARTS)
        if unknown:
            ap.error(f"unknown parts: {sorted(unknown)}")
        res = run(parts, plans.quick() if args.quick else plans.full(), args.lock_held)
    paths = report.write(res, out)
    print(report.markdown(res))
    if args.update_readme:
        readme = Path(__file__).resolve().parent.parent / "README.md"
        log("README.md updated" if report.update_readme(res, readme) else "README.md has no benchmark markers")
    log(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 1 if res.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
