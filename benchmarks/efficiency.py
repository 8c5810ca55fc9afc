"""Part 4, efficiency: a model that waits 50 ms per prediction without using the CPU (a sync
`time.sleep`, one slot per replica, as a GPU-bound model is), pushed with `max_replicas` n for n in
1, 2, 4 (a separate version each) and warmed under load until n replicas run. Then a closed loop
with 4n clients (always a queue in front of every replica) measures achieved throughput; efficiency
is that over the ideal n / 0.05 s. The same is measured on bare Serve with the same options.

During the trials the CPU each process uses is read (psutil, by role: ingress, router, model
replicas, model workers, Redis, Ray's own, the load generator): on a machine this small, the
process that is the ceiling is named from it rather than guessed."""

from __future__ import annotations

import asyncio
import os
import re
import time
from typing import Any

from benchmarks import load
from benchmarks import stack as stk
from benchmarks.overhead import plain_sync, vendo_sync
from benchmarks.plan import Plan
from benchmarks.profile import machine_busy_s
from benchmarks.stats import Figure

WAIT_S = 0.05
PAYLOAD = {"wait_s": WAIT_S}


def _ok(body: dict) -> bool:
    return body.get("output") == "ok"


async def _saturate(app: str, send: load.Send, n: int, plan: Plan) -> tuple[list[load.Run], dict[str, Any]]:
    """Warm `app` to n running replicas under load, then run the trials; returns them and the
    CPU used during them (`CpuMeter.cores`)."""
    c = 4 * n
    async with load.Pool(c) as pool:
        await send(pool.clients[0])  # fails fast on a broken path (the first call also pays the cold start)
        warm = asyncio.create_task(load.closed_loop(pool, send, max_requests=10**9, max_s=120.0))
        try:
            await asyncio.to_thread(stk.wait_replicas, app, lambda cnt: cnt.get("running", 0) >= n, 120,
                                    f"{n} running replicas", 0.25)
        finally:
            warm.cancel()
            await asyncio.gather(warm, return_exceptions=True)
    runs = []
    cpu = CpuMeter()
    for _ in range(plan.trials):
        async with load.Pool(c) as pool:
            await load.warm(pool, send, c)
            cpu.start()
            runs.append(await load.closed_loop(pool, send, max_requests=10**6, max_s=plan.efficiency_max_s))
            cpu.stop()
    return runs, cpu.cores()


ROLES = (  # (role, test on "name cmdline"), first match wins
    ("ingress", re.compile(r"^haproxy |ProxyActor")),
    ("router", re.compile(r"ServeReplica:vendo:router")),
    ("model replicas", re.compile(r"ServeReplica:(v-[0-9a-f]+|bare-sleep-\d+):model")),
    ("model workers", re.compile(r"-m deployments\.worker")),
    ("Serve controller", re.compile(r"ServeController")),
    ("Redis", re.compile(r"^(redis-server|valkey-server)|valkey")),
    ("Ray (raylet, GCS, other actors)", re.compile(r"^(raylet|gcs_server) |ray::|/ray/")),
)


class CpuMeter:
    """CPU seconds by role (`ROLES`) over the windows between `start()` and `stop()`: each
    process's user + system time, read at both ends of a window (one that started in between counts
    whole; one that ended in between is missed: the trials' processes live through them), against
    the machine's busy time."""

    def __init__(self) -> None:
        self.by_role: dict[str, float] = {}
        self.machine = 0.0
        self.wall = 0.0
        self._at: tuple[float, float, dict[int, tuple[str, float]]] | None = None

    @staticmethod
    def _read() -> tuple[float, float, dict[int, tuple[str, float]]]:
        import psutil

        me = os.getpid()
        procs: dict[int, tuple[str, float]] = {}
        for p in psutil.process_iter(["pid", "name", "cmdline", "cpu_times"]):
            t = p.info.get("cpu_times")
            if t is None:
                continue
            title = f"{p.info.get('name') or ''} {' '.join(p.info.get('cmdline') or [])}"
            role = "load generator" if p.info["pid"] == me else next(
                (r for r, test in ROLES if test.search(title)), "other")
            procs[p.info["pid"]] = (role, t.user + t.system)
        return time.monotonic(), machine_busy_s(), procs

    def start(self) -> None:
        self._at = self._read()

    def stop(self) -> None:
        assert self._at is not None, "stop() without start()"
        (t0, busy0, before), (t1, busy1, after) = self._at, self._read()
        self._at = None
        self.wall += t1 - t0
        self.machine += busy1 - busy0
        for pid, (role, used) in after.items():
            self.by_role[role] = self.by_role.get(role, 0.0) + used - before.get(pid, (role, 0.0))[1]

    def cores(self) -> dict[str, Any]:
        """Cores used on average, by role and in all, and the machine's cores."""
        if not self.wall:
            return {}
        return {"by_role": {r: round(s / self.wall, 3) for r, s in sorted(self.by_role.items(), key=lambda x: -x[1])},
                "machine": round(self.machine / self.wall, 3), "cores": os.cpu_count()}


def _figures(runs: list[load.Run], cpu: dict[str, Any], n: int) -> dict[str, Any]:
    ideal = n / WAIT_S
    return {
        "throughput": Figure.of([r.throughput for r in runs], "/s").to_json(),
        "efficiency": Figure.of([r.throughput / ideal for r in runs], "").to_json(),
        "ideal_per_s": ideal,
        "runs": [r.summary() for r in runs],
        "cpu": cpu,
    }


async def run(stack, plan: Plan, who: str = "vendo") -> dict[str, Any]:
    """Efficiency at each of `plan.efficiency_replicas` for vendo or for bare Serve ("vendo" or
    "bare"); bare Serve's baseline runs on a cluster of its own, on Serve's default ingress."""
    from ray import serve

    from router.serve_apps import autoscaling
    from vendo_core.hardware import hardware

    out: dict[str, Any] = {}
    skus = hardware(str(stack.settings.hardware_config) if stack.settings.hardware_config else None)
    for n in plan.efficiency_replicas:
        if who == "vendo":
            vid = await asyncio.to_thread(stack.push, stk.MODELS / "sleep", f"sleep-{n}", max_replicas=n,
                                          salt=f"max_replicas={n}")
            app = stack.app_of(vid)
            send = vendo_sync(stack.url, stack.headers, vid, PAYLOAD, check=_ok)
        else:
            app, prefix = f"bare-sleep-{n}", f"/bare-sleep-{n}"
            await asyncio.to_thread(
                stk.deploy_bare, app, prefix, stk.MODELS / "sleep", max_ongoing_requests=1,
                autoscaling_config=autoscaling(stack.settings, n),
                ray_actor_options=skus.get(None).ray_actor_options())
            send = plain_sync(stack.url + prefix, "bare Serve", PAYLOAD)
        try:
            out[str(n)] = _figures(*await _saturate(app, send, n, plan), n)
        finally:
            await asyncio.to_thread(serve.delete, app)  # frees its replicas (CPU and memory)
    return out
