"""Part 3, cold start: a version at zero replicas gets one prediction (`Prefer: wait`); the time to
its result is split into the router's intake, Serve's scale-up decision (queueing), replica start,
setup() and predict, and the return trip. Against bare Ray Serve scaling the same model up from zero
with the same deployment options.

Both deployments use short autoscaling delays (1 s down, 1.5 s look-back) so each falls back to zero
within seconds. vendo's app for the cold version is created here from the same builder the router
uses (`router.serve_apps.version_app_builder`) with those settings, so the router finds it and
only the replica is cold; everything else in the run keeps the long delays."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from benchmarks import load
from benchmarks import stack as stk
from benchmarks.plan import Plan
from benchmarks.stats import Figure, ratio

TEXT = "cold"
BARE_COLD_APP, BARE_COLD_PREFIX = "bare-cold", "/bare-cold"
SHORT = {"autoscale_downscale_delay_s": 1.0, "autoscale_look_back_period_s": 1.5,
         "autoscale_upscale_delay_s": 0.0}
PHASES = ("intake", "queueing", "replica_start", "setup", "predict", "return")


class ServeWatch:
    """Polls Serve's status for one deployment and notes when a replica was first seen (STARTING or
    later): Serve's view of when it decided to scale up. Good to about one poll (50 ms) plus the
    status call itself; RUNNING is not used, as the status reports it after the request is served."""

    def __init__(self, app: str, period_s: float = 0.05):
        self.app, self.period_s = app, period_s
        self.starting_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ServeWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        last = time.time()
        while not self._stop.is_set():
            asked = time.time()
            if self.starting_at is None and stk.live(stk.replicas(self.app)) > 0:
                self.starting_at = (last + asked) / 2  # it appeared between the two calls
            last = asked
            self._stop.wait(self.period_s)


def short_app(stack, vid: str) -> str:
    """Create the Serve app of version `vid` as the router would, but with the short autoscaling
    delays; the router then finds it and only its replica is ever cold. Returns the app name."""
    from ray import serve

    from router.apps import AppSpec
    from router.serve_apps import version_app_builder

    app = stack.app_of(vid)
    short = stack.settings.model_copy(update=SHORT)
    build = version_app_builder(short.model_dump(mode="json"), stack.redis_url)
    serve.run(build(AppSpec.of(stack.version_record(vid), app)), name=app, route_prefix=None)
    return app


def setup_vendo(stack) -> tuple[str, str]:
    """Push the cold model and create its vendo app with short delays; returns (version id, app)."""
    vid = stack.push(stk.MODELS / "cold", "cold")
    return vid, short_app(stack, vid)


def setup_bare(stack) -> None:
    """Run the cold model as a bare Serve app with the options vendo gives the version."""
    from router.serve_apps import autoscaling
    from vendo_core.hardware import hardware

    vid = stack.push(stk.MODELS / "cold", "cold")  # for the hardware vendo gives it
    short = stack.settings.model_copy(update=SHORT)
    skus = hardware(str(short.hardware_config) if short.hardware_config else None)
    stk.deploy_bare(BARE_COLD_APP, BARE_COLD_PREFIX, stk.MODELS / "cold", max_ongoing_requests=1,
                    autoscaling_config=autoscaling(short, 1),
                    ray_actor_options=skus.get(stack.version_record(vid).hardware).ray_actor_options())


def _iso(ts: str) -> float:
    from vendo_core.store import parse_iso

    return parse_iso(ts)


async def at_zero(app: str, settle_s: float) -> None:
    """Wait until `app` has no replica, then `settle_s` more: a cold start after a quiet spell, as in
    production, not one racing the clean-up after the last replica stopped (measured here: starts
    right at zero took 5 s as often as 2 s)."""
    await asyncio.to_thread(stk.wait_replicas, app, lambda c: stk.live(c) == 0, 90, "zero replicas")
    await asyncio.sleep(settle_s)


async def vendo_once(stack, vid: str, app: str, payload: dict | None = None, settle_s: float = 3.0) -> dict[str, float]:
    """One prediction on `app` from zero replicas (waits for zero first), split into phases (s)."""
    await at_zero(app, settle_s)
    async with load.client(1) as http:
        await http.get(f"{stack.url}/health")  # the connection is warm in both cases
        with ServeWatch(app) as watch:
            t0 = time.time()
            r = await http.post(f"{stack.url}/v1/predictions", headers={**stack.headers, "Prefer": "wait"},
                                json={"version": vid, "input": payload or {"text": TEXT}})
            t1 = time.time()
    body = r.json()
    if r.status_code != 201 or body.get("status") != "succeeded":
        raise RuntimeError(f"cold vendo prediction: {r.status_code} {str(body)[:300]}")
    if payload is None and body.get("output") != TEXT:
        raise RuntimeError(f"cold vendo prediction returned {body.get('output')!r}")
    created, started = _iso(body["created_at"]), _iso(body["started_at"])
    predict = float(body["metrics"]["predict_time"])
    setup = float(await asyncio.to_thread(stack.version_field, vid, "setup_time") or 0.0)
    seen = watch.starting_at or created
    return {
        "total": t1 - t0,
        "intake": created - t0,
        "queueing": max(0.0, seen - created),
        "replica_start": max(0.0, started - max(seen, created) - setup),
        "setup": setup,
        "predict": predict,
        "return": t1 - (started + predict),
    }


async def bare_once(stack, settle_s: float = 3.0) -> dict[str, float]:
    await at_zero(BARE_COLD_APP, settle_s)
    url = stack.url + BARE_COLD_PREFIX
    async with load.client(1) as http:
        await http.get(f"{stack.url}/health")
        with ServeWatch(BARE_COLD_APP) as watch:
            t0 = time.time()
            r = await http.post(f"{url}/predictions", json={"input": {"text": TEXT}})
            t1 = time.time()
    body = r.json()
    if r.status_code != 200 or body.get("output") != TEXT:
        raise RuntimeError(f"cold bare prediction: {r.status_code} {str(body)[:300]}")
    seen = watch.starting_at or t0
    return {
        "total": t1 - t0,
        "intake": 0.0,  # the bare ingress keeps no record; its intake is inside queueing
        "queueing": max(0.0, seen - t0),
        "replica_start": max(0.0, body["constructed_at"] - seen) + (body["started_at"] - body["ready_at"]),
        "setup": body["ready_at"] - body["constructed_at"],
        "predict": body["completed_at"] - body["started_at"],
        "return": t1 - body["completed_at"],
    }


async def run_side(stack, plan: Plan, who: str) -> list[dict[str, float]]:
    """`plan.cold_trials` cold starts of vendo's app or of the bare one ("vendo" or "bare"): each
    side on its own cluster, as Serve's ingress is cluster-wide (the baseline is Serve's default)."""
    from ray import serve

    trials: list[dict[str, float]] = []
    if who == "vendo":
        vid, app = await asyncio.to_thread(setup_vendo, stack)
    else:
        await asyncio.to_thread(setup_bare, stack)
        app = BARE_COLD_APP
    try:
        for _ in range(plan.cold_trials):
            if who == "vendo":
                trials.append(await vendo_once(stack, vid, app, settle_s=plan.cold_settle_s))
            else:
                trials.append(await bare_once(stack, settle_s=plan.cold_settle_s))
    finally:
        await asyncio.to_thread(serve.delete, app)
    return trials


def result(trials: dict[str, list[dict[str, float]]], plan: Plan) -> dict[str, Any]:
    figs = {who: {k: Figure.of([t[k] * 1e3 for t in ts if t.get(k) is not None], "ms")
                  for k in ("total", *PHASES)}
            for who, ts in trials.items()}
    return {
        "figures": {who: {k: f.to_json() for k, f in fs.items()} for who, fs in figs.items()},
        "ratio_total": ratio(figs["vendo"]["total"], figs["bare"]["total"]).to_json(),
        "trials": trials,
        "settings": SHORT,
        "settle_s": plan.cold_settle_s,
    }
