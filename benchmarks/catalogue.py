"""Part 8, the catalogue's scale: routing p50 and what the Serve controller and the router hold
with 10 registered versions of a model and with 10,000 of them, 3 in use either way. A version
costs Serve nothing until it is used (no app, no replica, nothing the controller tracks), and a
prediction resolves its version by id (one hash read), so both should be flat. The versions are
registered through the registry (as a push registers them; pushing 10,000 packages would measure
uploads instead), all pointing at the no-op's package, so any of them could be run.

Each trial is taken in the order 10, 10,000, 10 again (the clones deleted through the registry, as
`DELETE .../versions/{id}` deletes them), and its ratio is the 10,000 figure over the mean of the
two 10-version figures around it: on this shared VM every process's CPU per prediction moves by
5-10% from one minute to the next, which read as a catalogue cost of up to 1.27x when the three
sides were measured minutes apart (benchmarks/results/findings.md)."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from benchmarks import load
from benchmarks.overhead import TEXT, Failed
from benchmarks.plan import Plan
from benchmarks.profile import MODEL_REPLICA, actor_pids, cpu_s
from benchmarks.stack import MODELS, USER
from benchmarks.stats import Figure

MODEL = "catalogue"
USED = 3


def _rss_mib(pid: int | None) -> float:
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss / 2**20 if pid else float("nan")
    except psutil.Error:
        return float("nan")


async def register(stack, base_vid: str, upto: int, have: list[str]) -> list[str]:
    """Clones of `base_vid` as versions of bench/catalogue until `upto` exist; returns all ids."""
    from vendo_core.keys import Keys
    from vendo_core.redisconn import connect
    from vendo_core.registry import Registry

    r = connect(stack.redis_url)
    try:
        reg = Registry(r, Keys(stack.settings.redis_prefix))
        base = await reg.get_version(base_vid)
        clean = {f: None for f in ("created_at", "setup_status", "setup_error", "setup_logs", "setup_time",
                                   "setup_completed_at")}
        have = list(have)
        for i in range(len(have), upto):  # one at a time: concurrent ones only retry on the model's WATCH
            vid = hashlib.sha256(f"{USER}/{MODEL} clone {i}".encode()).hexdigest()
            await reg.add_version(base.model_copy(update={**clean, "id": vid}))
            have.append(vid)
        return have
    finally:
        await r.aclose()


async def unregister(stack, vids: list[str]) -> None:
    """Delete the versions `vids` of bench/catalogue through the registry."""
    from vendo_core.keys import Keys
    from vendo_core.redisconn import connect
    from vendo_core.registry import Registry

    r = connect(stack.redis_url)
    try:
        reg = Registry(r, Keys(stack.settings.redis_prefix))
        for vid in vids:
            await reg.delete_version(USER, MODEL, vid)
    finally:
        await r.aclose()


def round_robin(url: str, headers: dict[str, str], vids: list[str]) -> load.Send:
    target = load.check_loopback(f"{url}/v1/predictions")
    hdrs = {**headers, "Prefer": "wait"}
    turn = 0

    async def send(http) -> None:
        nonlocal turn
        vid = vids[turn % len(vids)]
        turn += 1
        r = await http.post(target, json={"version": vid, "input": {"text": TEXT}}, headers=hdrs)
        if r.status_code != 201 or r.json().get("status") != "succeeded":
            raise Failed(f"vendo answered {r.status_code}: {r.text[:200]}")

    return send


ROLES = ("router", "models", "redis", "haproxy", "controller", "load generator", "machine")


def _pids() -> dict[str, Any]:
    """`actor_pids`, with every model replica's pid (the 3 versions in use) under `models`."""
    import psutil

    pids: dict[str, Any] = actor_pids()
    pids.pop("model", None)
    pids["models"] = [p.info["pid"] for p in psutil.process_iter(["pid", "cmdline"])
                      if MODEL_REPLICA.search(" ".join(p.info.get("cmdline") or []))]
    return pids


def _cpu(pids: dict[str, Any]) -> dict[str, float]:
    """`cpu_s` of every role, the model replicas summed under `models`, in one reading."""
    models = {f"model {pid}": pid for pid in pids["models"]}
    got = cpu_s({**{k: v for k, v in pids.items() if k != "models"}, **models})
    got["models"] = sum(got.pop(k, 0.0) for k in models)
    return got


class Trials:
    """One closed-loop client over the versions in use, measured a trial at a time."""

    def __init__(self, stack, vids: list[str], plan: Plan):
        self.send = round_robin(stack.url, stack.headers, vids)
        self.plan = plan

    async def __aenter__(self) -> Trials:
        self.pool = await load.Pool(1).__aenter__()
        await load.warm(self.pool, self.send, self.plan.warm_requests)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.pool.__aexit__(*exc)

    async def trial(self, out: dict[str, list[float]]) -> None:
        """p50 at concurrency 1, the controller's and router's CPU (% of a core), each process's
        CPU per prediction (ms; `machine` is all of it) and the two's resident memory, added to `out`."""
        pids = _pids()
        before, t0 = _cpu(pids), time.monotonic()
        run = await load.closed_loop(self.pool, self.send, max_requests=self.plan.latency_requests,
                                     max_s=self.plan.latency_max_s)
        after, wall = _cpu(pids), time.monotonic() - t0
        add = lambda k, v: out.setdefault(k, []).append(v)  # noqa: E731
        add("p50_ms", run.p(50) * 1e3)
        for role in ("controller", "router"):
            add(f"{role}_cpu_pct", 100 * (after.get(role, 0) - before.get(role, 0)) / wall)
            add(f"{role}_rss_mib", _rss_mib(pids.get(role)))
        for role in ROLES:
            add(f"{role}_cpu_ms_per_prediction", 1e3 * (after.get(role, 0) - before.get(role, 0)) / max(run.ok, 1))


async def run(stack, plan: Plan) -> dict[str, Any]:
    """Each trial measures 10 versions, registers the other 9,990, measures, deletes them and
    measures 10 again: the three windows of a trial are a minute apart at most, so what the VM's
    speed does over the part's minutes moves a trial's sides alike."""
    from ray import serve

    base = stack.push(MODELS / "noop", MODEL)
    small = await register(stack, base, 10, [base])
    used = small[:USED]
    few: dict[str, list[float]] = {}
    many: dict[str, list[float]] = {}
    again: dict[str, list[float]] = {}
    register_s, unregister_s, every = [], [], small
    async with Trials(stack, used, plan) as t:
        for _ in range(plan.trials):
            await t.trial(few)
            t0 = time.monotonic()
            every = await register(stack, base, plan.catalogue_versions, small)
            register_s.append(time.monotonic() - t0)
            await t.trial(many)
            t0 = time.monotonic()
            await unregister(stack, every[len(small):])
            unregister_s.append(time.monotonic() - t0)
            await t.trial(again)
    for vid in used:
        serve.delete(stack.app_of(vid))
    figures = {f"{k}_{n}": Figure.of(v, unit).to_json()
               for n, got in ((10, few), (len(every), many), ("10_after", again)) for k, v in got.items()
               for unit in ["ms" if k.endswith(("_ms", "_prediction")) else "MiB" if k.endswith("mib") else "%"]}
    ratio = Figure.of([b / ((a + c) / 2) for a, b, c in zip(few["p50_ms"], many["p50_ms"], again["p50_ms"], strict=True)],
                      "×").to_json()
    rss = Figure.of(many["controller_rss_mib"], "MiB").median / Figure.of(few["controller_rss_mib"], "MiB").median
    return {"versions": len(every), "used": USED, "register_s": round(max(register_s), 1),
            "unregister_s": round(max(unregister_s), 1), "figures": figures, "p50_ratio": ratio,
            "controller_rss_ratio": rss}
