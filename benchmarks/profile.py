"""Where a vendo prediction's CPU goes: bring up the benchmark stack, drive the no-op model with sync
predictions (`Prefer: wait`) at a fixed concurrency, and (1) count the CPU time each process used
per prediction (psutil: the proxy, the router or bare ingress, the model replica, Redis, the Serve
controller, the load generator, and the rest of the machine), then (2) sample the proxy, the router
and the model replica with py-spy (and the bare Serve ingress and model the same way, for
comparison). Writes collapsed stacks and a summary.

    python -m benchmarks.profile [--seconds 10] [--rounds 3] [--concurrency 16] [--out DIR]

DIR defaults to benchmarks/results/profile/; `summary.md` is the part worth reading."""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import load
from benchmarks import stack as stk
from benchmarks.overhead import plain_sync, vendo_sync

RESULTS = Path(__file__).resolve().parent / "results" / "profile"
_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>.*?)(?::\d+)?\)$")


def log(msg: str) -> None:
    print(f"[profile {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


MODEL_REPLICA = re.compile(r"ServeReplica:v-[0-9a-f]+:model")  # a model version's Serve replica, by its title


def actor_pids() -> dict[str, int]:
    """pids of the proxy, the controller, the Serve replicas and redis-server, by role."""
    import os

    import psutil

    found: dict[str, int] = {"load generator": os.getpid()}
    for p in psutil.process_iter(["pid", "cmdline", "name"]):
        title = " ".join(p.info.get("cmdline") or [])
        if p.info.get("name") == "redis-server" or title.startswith("redis-server"):
            found["redis"] = p.info["pid"]
            continue
        if p.info.get("name") == "haproxy":  # Serve's HAProxy ingress (RAY_SERVE_ENABLE_HA_PROXY=1)
            found["haproxy"] = p.info["pid"]
            continue
        if not title.startswith("ray::"):
            continue
        if "ServeController" in title:
            found["controller"] = p.info["pid"]
            continue
        if "ProxyActor" in title:
            found["proxy"] = p.info["pid"]
        elif "ServeReplica:vendo:router" in title:
            found["router"] = p.info["pid"]
        elif MODEL_REPLICA.search(title):
            found["model"] = p.info["pid"]
        elif f"ServeReplica:{stk.BARE_APP}:ingress" in title:
            found["bare_ingress"] = p.info["pid"]
        elif f"ServeReplica:{stk.BARE_APP}:model" in title:
            found["bare_model"] = p.info["pid"]
    return found


def cpu_s(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each process, and by the whole machine."""
    import psutil

    out = {}
    for role, pid in pids.items():
        try:
            t = psutil.Process(pid).cpu_times()
            out[role] = t.user + t.system
        except psutil.Error:
            pass
    out["machine"] = machine_busy_s()
    return out


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores: user, system, nice, interrupts)."""
    import psutil

    t = psutil.cpu_times()
    return t.user + t.system + getattr(t, "nice", 0) + getattr(t, "irq", 0) + getattr(t, "softirq", 0)


VENDO_FRAMES = ("(router/", "(deployments/", "(cluster/", "redis/asyncio/client.py", "fastapi/routing.py",
                "starlette/middleware/base.py", "starlette/concurrency.py", "ray/serve/handle.py",
                "ActorHandle._actor_method_call")


def short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m["file"]
    for marker in ("site-packages/", "/lib/python3", "/work/main/", "/benchmarks/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m['fn']} ({path})"


def summarize(raw: Path, top: int = 25) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(samples, top self, top inclusive among the frames that name vendo's own code and the
    request-path pieces it chooses: FastAPI routing, Starlette middleware, redis-py, Serve handles)
    from py-spy's collapsed (`raw`) output."""
    selfc: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack_s, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = [short(f) for f in stack_s.split(";") if f]
        count = int(n)
        total += count
        if frames:
            selfc[frames[-1]] += count
        for f in set(frames):
            if any(k in f for k in VENDO_FRAMES):
                incl[f] += count
    return total, selfc.most_common(top), incl.most_common(top)


async def drive(send, concurrency: int, seconds: float) -> load.Run:
    async with load.Pool(concurrency) as pool:
        await load.warm(pool, send, 2 * concurrency)
        return await load.closed_loop(pool, send, max_requests=10**7, max_s=seconds)


def record(pids: dict[str, int], roles: list[str], seconds: float, out: Path) -> list[subprocess.Popen]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    procs = []
    for role in roles:
        if role in pids:
            procs.append(subprocess.Popen(
                [spy, "record", "-p", str(pids[role]), "-d", str(int(seconds)), "-r", "100", "-f", "raw",
                 "--nonblocking", "-o", str(out / f"{role}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


def main(argv: list[str] | None = None) -> int:
    from ray import serve

    from router.serve_apps import autoscaling
    from vendo_core.hardware import hardware

    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved accounting windows per target")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--lock-held", action="store_true")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    sections = []
    with stk.ray_lock(args.lock_held), stk.stack() as st:
        vid = st.push(stk.MODELS / "noop", "noop")
        sku = hardware(None).get(None)
        stk.deploy_bare(stk.BARE_APP, stk.BARE_PREFIX, stk.MODELS / "noop", max_ongoing_requests=128,
                        autoscaling_config=autoscaling(st.settings, 1), ray_actor_options=sku.ray_actor_options())
        targets = {
            "vendo": (vendo_sync(st.url, st.headers, vid), ["proxy", "router", "model"]),
            "bare": (plain_sync(st.bare_url, "bare Serve"), ["proxy", "bare_ingress", "bare_model"]),
        }
        for send, _ in targets.values():
            asyncio.run(drive(send, args.concurrency, 2.0))  # replicas up before their pids are read
        pids = actor_pids()
        # (1) CPU accounting, vendo and bare interleaved, `rounds` windows each
        per: dict[str, dict[str, list[float]]] = {w: collections.defaultdict(list) for w in targets}
        rate_runs: dict[str, list[float]] = {w: [] for w in targets}
        for i in range(args.rounds):
            for who, (send, roles) in targets.items():
                counted = {r: pids[r] for r in (*roles, "controller", "redis", "load generator") if r in pids}
                before = cpu_s(counted)
                run = asyncio.run(drive(send, args.concurrency, args.seconds))
                after = cpu_s(counted)
                rate_runs[who].append(run.throughput)
                for k in after:
                    if k in before:
                        per[who][k].append((after[k] - before[k]) / max(run.ok, 1) * 1e3)
                log(f"round {i + 1}: {who} {run.throughput:.0f}/s, "
                    f"{per[who]['machine'][-1]:.1f} ms CPU per prediction on the machine")
        cpu_table = {w: {k: statistics.median(v) for k, v in d.items()} for w, d in per.items()}
        spread = {w: {k: (min(v), max(v)) for k, v in d.items()} for w, d in per.items()}
        rates = {w: statistics.median(v) for w, v in rate_runs.items()}
        # (2) py-spy, one window each
        for who, (send, roles) in targets.items():
            log(f"{who}: sampling {', '.join(f'{r}={pids.get(r)}' for r in roles)} for {args.seconds:.0f}s "
                f"at concurrency {args.concurrency}")
            sub = args.out / who
            sub.mkdir(exist_ok=True)
            procs = record(pids, roles, args.seconds, sub)
            run = asyncio.run(drive(send, args.concurrency, args.seconds))
            for p in procs:
                p.wait(60)
            sections.append(f"## {who}: {run.throughput:.0f} predictions/s, p50 {run.p(50) * 1e3:.1f} ms "
                            f"at concurrency {args.concurrency}\n")
            for role in roles:
                raw = sub / f"{role}.txt"
                if not raw.exists():
                    sections.append(f"### {role}: no samples\n")
                    continue
                total, top_self, top_incl = summarize(raw)
                sections.append(f"### {role}: {total} thread samples at 100 Hz\n")
                sections.append("| inclusive % of samples | vendo's code and the request-path pieces it picks |\n|---|---|")
                sections += [f"| {n / total * 100:.1f} | `{f}` |" for f, n in top_incl]
                sections.append("\n| self % | function |\n|---|---|")
                sections += [f"| {n / total * 100:.1f} | `{f}` |" for f, n in top_self[:15]]
                sections.append("")
        serve.delete(stk.BARE_APP)
    roles_all = ["proxy", "haproxy", "router", "bare_ingress", "model", "bare_model", "redis", "controller",
                 "load generator"]
    head = ["| process | vendo, ms CPU per prediction | bare Serve, ms CPU per prediction |", "|---|---|---|"]
    pairs = [("proxy", "proxy", "proxy"), ("HAProxy (where Serve runs it)", "haproxy", "haproxy"),
             ("router / bare ingress", "router", "bare_ingress"),
             ("model replica", "model", "bare_model"), ("redis-server", "redis", "redis"),
             ("Serve controller", "controller", "controller"), ("load generator", "load generator", "load generator")]
    def cell(who: str, k: str) -> str:
        if k not in cpu_table[who]:
            return "n/a"
        lo, hi = spread[who][k]
        return f"{cpu_table[who][k]:.2f} ({lo:.2f}–{hi:.2f})"

    for label, v, b in pairs:
        head.append(f"| {label} | {cell('vendo', v)} | {cell('bare', b)} |")
    for who in ("vendo", "bare"):
        named = sum(x for k, x in cpu_table[who].items() if k in roles_all)
        cpu_table[who]["other"] = cpu_table[who]["machine"] - named
    head.append(f"| everything else on the machine | {cpu_table['vendo']['other']:.2f} | {cpu_table['bare']['other']:.2f} |")
    head.append(f"| **whole machine** | **{cell('vendo', 'machine')}** | **{cell('bare', 'machine')}** |")
    head.append(f"| predictions/s while counted | {rates['vendo']:.0f} | {rates['bare']:.0f} |")
    (args.out / "cpu.json").write_text(json.dumps({"cpu_ms_per_prediction": cpu_table, "per_s": rates,
                                                   "windows": per}, indent=1))
    (args.out / "summary.md").write_text(
        "# Where the CPU goes: no-op model, sync predictions, concurrency "
        f"{args.concurrency}\n\n## CPU time per prediction, by process (psutil; median (min–max) of "
        f"{args.rounds} windows of {args.seconds:.0f} s each, vendo and bare Serve interleaved)\n\n"
        + "\n".join(head) + "\n\n## py-spy samples (100 Hz, a separate window of the same load)\n\n"
        + "\n".join(sections) + "\n")
    print((args.out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
