"""Part 9, fine-tunes: trainings of one trainable base (examples/phrasebook, a real if tiny
training: a word list becomes its weights) make `fine-tunes` versions, and then:

- a new fine-tune's first prediction on a warm base (its weights loaded into a worker on the base's
  replica: Serve's model multiplexing) against a fine-tune on an app of its own from zero (a named
  deployment of it, `min_instances: 0`: a Serve replica started for it, then the same setup);
- all fine-tunes used in turn: Serve apps and replicas, and the p50 of their predictions once
  loaded, against fine-tunes on apps of their own (named deployments on the `cpu` SKU, as many as
  the cluster has room for beside the rest, up to `finetunes_separate`: 20 do not fit on this
  machine, which is the point).

Each trial uses fine-tunes not used before, so every first prediction really is a first."""

from __future__ import annotations

import statistics
import time
from typing import Any

import httpx

from benchmarks import stack as stk
from benchmarks.plan import Plan
from benchmarks.stats import Figure, ratio
from vendo_core.ids import app_name, deployment_app_name, training_app_name

BASE, DEST = "phrasebook", "phrasebook-tuned"


def _post(st, path: str, body: dict, *, wait: bool = False) -> dict:
    headers = {**st.headers, **({"Prefer": "wait=60"} if wait else {})}
    r = httpx.post(f"{st.url}{path}", json=body, headers=headers, timeout=120, trust_env=False)
    if r.status_code not in (200, 201):
        raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")
    return r.json()


def _get(st, path: str) -> dict:
    r = httpx.get(f"{st.url}{path}", headers=st.headers, timeout=60, trust_env=False)
    r.raise_for_status()
    return r.json()


def train(st, base_vid: str, n: int) -> list[str]:
    """`n` fine-tunes of the base (one word list each); returns their `owner/name:vid` refs."""
    refs = []
    for i in range(n):
        words = f"data:text/plain,one%09uno{i}%0Atwo%09dos{i}%0A"
        t = _post(st, f"/v1/models/{stk.USER}/{BASE}/versions/{base_vid}/trainings",
                  {"destination": f"{stk.USER}/{DEST}", "input": {"words": words, "name": f"book {i}"}})
        deadline = time.monotonic() + 300
        while t["status"] not in ("succeeded", "failed", "canceled"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"training {t['id']} still {t['status']}")
            time.sleep(0.1)
            t = _get(st, f"/v1/trainings/{t['id']}")
        if t["status"] != "succeeded":
            raise RuntimeError(f"training {t['id']} {t['status']}: {t.get('error')}")
        refs.append(t["output"]["version"])
    return refs


def predict_s(st, ref: str, word: str = "one") -> tuple[float, str]:
    t0 = time.perf_counter()
    p = _post(st, "/v1/predictions", {"version": ref, "input": {"text": word}}, wait=True)
    took = time.perf_counter() - t0
    if p["status"] != "succeeded":
        raise RuntimeError(f"prediction on {ref}: {p['status']} {p.get('error')}")
    return took, p["output"]


def deployment_first_s(st, ref: str, name: str) -> float:
    """A deployment of fine-tune `ref` (its own app, at zero): its first prediction's time."""
    from ray import serve

    _post(st, "/v1/deployments", {"name": name, "model": ref.split(":")[0], "version": ref.split(":")[1],
                                  "hardware": "cpu", "min_instances": 0, "max_instances": 1})
    try:
        t0 = time.perf_counter()
        p = _post(st, f"/v1/deployments/{stk.USER}/{name}/predictions", {"input": {"text": "one"}}, wait=True)
        took = time.perf_counter() - t0
        if p["status"] != "succeeded":
            raise RuntimeError(f"deployment {name}: {p['status']} {p.get('error')}")
        return took
    finally:
        httpx.delete(f"{st.url}/v1/deployments/{stk.USER}/{name}", headers=st.headers, timeout=60, trust_env=False)
        app = deployment_app_name(stk.USER, name)
        deadline = time.monotonic() + 60
        while app in serve.status().applications and time.monotonic() < deadline:
            time.sleep(0.2)


def _room_for(sku_name: str, st) -> int:
    """How many replicas of SKU `sku_name` the cluster has room for now."""
    import ray

    from vendo_core.hardware import hardware

    sku = hardware(str(st.settings.hardware_config) if st.settings.hardware_config else None).get(sku_name)
    free = ray.available_resources()
    fits = [free.get("CPU", 0) / sku.num_cpus if sku.num_cpus else 1e9]
    if sku.memory:
        fits.append(free.get("memory", 0) / sku.memory)
    return int(min(fits))


def _serve_counts(apps: list[str]) -> tuple[int, int]:
    """(how many of `apps` exist, their live replicas)."""
    from ray import serve

    present = [a for a in apps if a in serve.status().applications]
    return len(present), sum(stk.live(stk.replicas(a)) for a in present)


def in_turn_p50_ms(st, refs: list[str], rounds: int) -> tuple[float, list[float]]:
    for ref in refs:  # load each once
        predict_s(st, ref)
    times = [predict_s(st, ref)[0] * 1e3 for _ in range(rounds) for ref in refs]
    return statistics.median(times), times


def run(st, plan: Plan) -> dict[str, Any]:
    from ray import serve

    base_vid = st.push(stk.ROOT / "examples" / "phrasebook", BASE)
    r = httpx.post(f"{st.url}/v1/models", json={"owner": stk.USER, "name": DEST, "visibility": "private",
                                                  "hardware": "cpu"}, headers=st.headers, timeout=60, trust_env=False)
    if r.status_code not in (201, 409):
        raise RuntimeError(f"models.create: {r.status_code} {r.text[:200]}")
    trials = plan.cold_trials if plan.cold_trials > 1 else 1
    n = max(plan.finetunes, 2 * trials)
    t0 = time.monotonic()
    refs = train(st, base_vid, n)
    train_s = time.monotonic() - t0
    serve.delete(training_app_name(base_vid))  # its replica's CPU back for the rest
    predict_s(st, f"{stk.USER}/{BASE}:{base_vid}")  # the base is warm
    warm_first = [predict_s(st, ref)[0] for ref in refs[:trials]]
    own_first = [deployment_first_s(st, ref, f"ft-own-{i}") for i, ref in enumerate(refs[trials:2 * trials])]

    shared = refs[:plan.finetunes]
    p50_shared, _ = in_turn_p50_ms(st, shared, plan.finetune_rounds)
    own_apps = _serve_counts([app_name(ref.split(":")[1]) for ref in shared])[0]
    if own_apps:
        raise RuntimeError(f"{own_apps} fine-tunes got Serve apps of their own")
    apps_shared, replicas_shared = _serve_counts([st.app_of(base_vid)])
    # the same fine-tunes on apps of their own: as many as the cluster holds beside the rest
    separate = shared[:min(plan.finetunes_separate, _room_for("cpu", st) - 1)]
    names = [f"ft-sep-{i}" for i in range(len(separate))]
    for name, ref in zip(names, separate, strict=True):
        _post(st, "/v1/deployments", {"name": name, "model": ref.split(":")[0], "version": ref.split(":")[1],
                                      "hardware": "cpu", "min_instances": 1, "max_instances": 1})
    try:
        for name in names:  # warm, then in turn
            p = _post(st, f"/v1/deployments/{stk.USER}/{name}/predictions", {"input": {"text": "one"}}, wait=True)
            if p["status"] != "succeeded":
                raise RuntimeError(f"deployment {name}'s first prediction: {p['status']} (no room for its replica?)")
        sep_times = []
        for _ in range(plan.finetune_rounds):
            for name in names:
                t = time.perf_counter()
                _post(st, f"/v1/deployments/{stk.USER}/{name}/predictions", {"input": {"text": "one"}}, wait=True)
                sep_times.append((time.perf_counter() - t) * 1e3)
        apps_sep, replicas_sep = _serve_counts([deployment_app_name(stk.USER, name) for name in names])
    finally:
        for name in names:
            httpx.delete(f"{st.url}/v1/deployments/{stk.USER}/{name}", headers=st.headers, timeout=60,
                         trust_env=False)
    serve.delete(st.app_of(base_vid))
    warm = Figure.of([s * 1e3 for s in warm_first], "ms")
    own = Figure.of([s * 1e3 for s in own_first], "ms")
    return {
        "finetunes": len(shared), "trainings": n, "train_s_each": round(train_s / n, 2),
        "first_on_warm_base": warm.to_json(), "first_on_own_app": own.to_json(),
        "own_vs_warm": ratio(own, warm).to_json(),
        "in_turn": {"shared": {"finetunes": len(shared), "p50_ms": round(p50_shared, 1), "serve_apps": apps_shared,
                               "replicas": replicas_shared},
                    "separate": {"finetunes": len(separate), "p50_ms": round(statistics.median(sep_times), 1),
                                 "serve_apps": apps_sep, "replicas": replicas_sep}},
    }
