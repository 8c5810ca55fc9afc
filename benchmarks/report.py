"""Results out: `latest.json` (everything measured), `latest.md` (the tables, goals met or missed)
and `latest.png` (the charts). The markdown and the chart are built from the JSON alone, so
`python -m benchmarks --report-only` redraws them from a saved run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from benchmarks.stats import Figure

GPU_NOT_MEASURED = "not measured: no GPU in this run"
TARGET_NAMES = {"vendo": "vendo", "bare": "bare Serve", "cog": "Cog (coglet)"}
INGRESS_NAMES = {"haproxy": "HAProxy ingress (direct ingress to the router)", "proxy": "default ingress (the Python proxy)"}


def F(d: dict | None) -> Figure:
    return Figure.from_json(d)


def fmt(fig: Figure, digits: int | None = None) -> str:
    return fig.text(digits)


def ratio_text(fig: Figure) -> str:
    return "n/a" if math.isnan(fig.median) else f"{fig.median:.2f}× ({fig.lo:.2f}–{fig.hi:.2f})"


# goals


def goals(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal with its figure and whether it is met (None: not measured). The cost-per-prediction
    goals are the cost issue's: vendo at or below bare Serve's default two hops, within 5× of
    Cog's own server, cold start at or below bare Serve's."""
    out: list[dict[str, Any]] = []
    o = res.get("overhead")
    if o:
        rb = o["ratios"]["vendo/bare"]
        r = F(rb["p50_ms"])
        out.append({"goal": "Overhead: p50 latency at c=1", "target": "≤ 1.0 × bare Serve",
                    "figure": f"{ratio_text(r)}: vendo {fmt(F(o['figures']['vendo']['p50_ms']))} vs "
                              f"{fmt(F(o['figures']['bare']['p50_ms']))}",
                    "met": _cmp(r.median, 1.0, le=True)})
        if "vendo/cog" in o["ratios"]:
            r = F(o["ratios"]["vendo/cog"]["p50_ms"])
            out.append({"goal": "Overhead: no-op p50 at c=1 against Cog's own server", "target": "≤ 5 × coglet",
                        "figure": f"{ratio_text(r)}: vendo {fmt(F(o['figures']['vendo']['p50_ms']))} vs "
                                  f"{fmt(F(o['figures']['cog']['p50_ms']))}",
                        "met": _cmp(r.median, 5.0, le=True)})
        for c in (16, 64):
            key = f"throughput_c{c}"
            if key in rb:
                r = F(rb[key])
                out.append({"goal": f"Overhead: throughput at c={c}", "target": "≥ 1.0 × bare Serve",
                            "figure": f"{ratio_text(r)}: vendo {fmt(F(o['figures']['vendo'][key]))} vs "
                                      f"{fmt(F(o['figures']['bare'][key]))}",
                            "met": _cmp(r.median, 1.0, le=False)})
    c = res.get("coldstart")
    if c:
        r = F(c["ratio_total"])
        out.append({"goal": "Cold start (scale from zero, first result)", "target": "≤ 1.0 × bare Serve",
                    "figure": f"{ratio_text(r)}: vendo {fmt(F(c['figures']['vendo']['total']))} vs "
                              f"{fmt(F(c['figures']['bare']['total']))}",
                    "met": _cmp(r.median, 1.0, le=True)})
    e = res.get("efficiency")
    if e and e.get("vendo"):
        parts, met = [], True
        for n, d in e["vendo"].items():
            f = F(d["efficiency"])
            parts.append(f"{n}: {f.median:.2f} ({f.lo:.2f}–{f.hi:.2f})")
            met = met and f.median >= 0.9
        out.append({"goal": "Efficiency, 50 ms/prediction, by replicas", "target": "≥ 0.9 at every count",
                    "figure": "; ".join(parts), "met": met})
    s = res.get("streaming")
    if s:
        f = F(s["first_token_ms"])
        out.append({"goal": "Streaming: first yield → first SSE output", "target": "≤ 20 ms",
                    "figure": fmt(f), "met": _cmp(f.median, 20.0, le=True)})
    b = res.get("batch")
    if b:
        r = F(b["ratio"])
        out.append({"goal": f"Batch job ({b['lines']} no-op lines, c={b['concurrency']}) vs HTTP",
                    "target": "≥ 0.8 × HTTP at the same concurrency",
                    "figure": f"{ratio_text(r)}: batch {fmt(F(b['figures']['batch_per_s']))} vs "
                              f"HTTP {fmt(F(b['figures']['http_per_s']))}",
                    "met": _cmp(r.median, 0.8, le=False)})
    c = res.get("catalogue")
    if c:
        r, fig = F(c["p50_ratio"]), c["figures"]
        n = c["versions"]
        out.append({"goal": f"Catalogue: {n:,} registered versions ({c['used']} used) vs 10",
                    "target": "routing p50 and the controller's memory flat (≤ 1.1×)",
                    "figure": f"p50 {ratio_text(r)} ({fmt(F(fig[f'p50_ms_{n}']))} vs {fmt(F(fig['p50_ms_10']))}"
                              + (f" before and {fmt(F(fig['p50_ms_10_after']))} after" if "p50_ms_10_after" in fig else "")
                              + "); "
                              f"controller RSS {c['controller_rss_ratio']:.2f}× "
                              f"({F(fig[f'controller_rss_mib_{n}']).median:.0f} MiB), CPU "
                              f"{F(fig[f'controller_cpu_pct_{n}']).median:.1f}% vs "
                              f"{F(fig['controller_cpu_pct_10']).median:.1f}% of a core; router RSS "
                              f"{F(fig[f'router_rss_mib_{n}']).median:.0f} vs {F(fig['router_rss_mib_10']).median:.0f} MiB",
                    "met": _cmp(max(r.median, c["controller_rss_ratio"]), 1.1, le=True)})
    ft = res.get("finetunes")
    if ft:
        r = F(ft["own_vs_warm"])
        shared, sep = ft["in_turn"]["shared"], ft["in_turn"]["separate"]
        out.append({"goal": "Fine-tune's first prediction: on a warm base vs on its own app from zero",
                    "target": "several times faster on the warm base (≥ 2×)",
                    "figure": f"{ratio_text(r)}: {fmt(F(ft['first_on_warm_base']))} vs "
                              f"{fmt(F(ft['first_on_own_app']))}",
                    "met": _cmp(r.median, 2.0, le=False)})
        out.append({"goal": f"{shared['finetunes']} fine-tunes of one base used in turn",
                    "target": "the base's app and replicas alone; p50 as on apps of their own",
                    "figure": f"{shared['serve_apps']} app, {shared['replicas']} replica, p50 {shared['p50_ms']} ms; "
                              f"{sep['finetunes']} on their own apps: {sep['serve_apps']} apps, "
                              f"{sep['replicas']} replicas, p50 {sep['p50_ms']} ms",
                    "met": shared["serve_apps"] == 1 and shared["p50_ms"] <= 1.25 * sep["p50_ms"]})
    ws = res.get("workingset")
    if ws:
        out.append({"goal": f"Working set: {ws['versions']} versions in turn, room for {ws['room']}",
                    "target": "each first prediction ≤ a cold start + 1 s",
                    "figure": f"worst {ws['worst_after_full_s']:.2f} s after the cluster filled vs cold start "
                              f"{ws['cold_start_s']:.2f} s (+{ws['margin_s']:.2f} s); all: "
                              + ", ".join(f"{t:.2f}" for t in ws["first_s"]) + " s",
                    "met": ws["margin_s"] <= 1.0})
    b = res.get("burst")
    if b:
        burst, sync, fair = b["burst"], b["sync"], b["fairness"]
        out.append({"goal": f"Burst: {burst['predictions']:,} async creates of the no-op model, one replica",
                    "target": "drains at ≥ 0.9× the sync throughput",
                    "figure": f"{b['drain_vs_sync']:.2f}×: {burst['drain_per_s']:.0f}/s vs {sync['throughput_per_s']:.0f}/s "
                              f"sync; time to terminal p50 {burst['time_to_terminal_p50_ms']:.0f} ms, "
                              f"p99 {burst['time_to_terminal_p99_ms']:.0f} ms",
                    "met": _cmp(b["drain_vs_sync"], 0.9, le=False)})
        on_a, on_b = fair["b_on_model_a_ms"], fair["b_on_model_b_ms"]
        out.append({"goal": f"Fairness: account A queues {fair['queued_by_a']} on a 50 ms model; B runs one on "
                            "another model, then one on A's",
                    "target": "B: other model ≤ a cold start more; same model ≤ its round-robin share",
                    "figure": f"other model {on_b['while_a_queued']:.0f} ms (idle {on_b['idle_p50']:.0f} ms); same "
                              f"model {on_a['while_a_queued']:.0f} ms (idle {on_a['idle_p50']:.0f} ms) with "
                              f"{fair['a_predictions_left_when_b_ran']} of A's still queued behind it; A's queue "
                              f"drained in {fair['a_queue_drained_s']:.1f} s",
                    "met": (on_b["while_a_queued"] <= on_b["idle_p50"] + on_a["cold_start"]
                            and fair["a_predictions_left_when_b_ran"] > fair["queued_by_a"] // 2)})
    sc = res.get("scale")
    if sc:
        op, st, rd = sc["open_predictions"], sc["open_streams"], sc["redis"]
        ingress, ingress_steps = _stream_ingress(st)
        steps = [op["router_mib_per_1000"], st["router_mib_per_1000"], ingress_steps]
        out.append({"goal": f"Memory: {op['open']:,} open predictions and {st['open']:,} open SSE streams; "
                            "Redis per finished prediction",
                    "target": "measured; the cost per 1,000 flat as they grow (second step ≤ 1.5× the first + 2 MiB)",
                    "figure": f"router {_steps(op['router_mib_per_1000'])} MiB per 1,000 open predictions; "
                              f"per 1,000 streams router {_steps(st['router_mib_per_1000'])} MiB, {ingress} "
                              f"{_steps(ingress_steps)} MiB; Redis {rd['bytes_per_prediction']:,} bytes per "
                              f"finished prediction",
                    "met": all(b <= max(1.5 * a, a + 2.0) for a, b in steps)})
    g = res.get("gpu") or {}
    out.append({"goal": "GPU: images/s vs a bare torch loop", "target": "≥ 0.9 × bare torch",
                "figure": g.get("note", GPU_NOT_MEASURED), "met": None})
    return out


def _stream_ingress(streams: dict) -> tuple[str, list[float]]:
    """Which ingress carried part 13's streams, and its memory per 1,000 (runs before the ingress
    was recorded measured Serve's proxy)."""
    if "ingress_mib_per_1000" in streams:
        return ("HAProxy" if streams.get("ingress") == "haproxy" else "proxy"), streams["ingress_mib_per_1000"]
    return "proxy", streams["proxy_mib_per_1000"]


def _steps(per_1000: list[float]) -> str:
    """Two steps' cost per 1,000: "first, then second"."""
    return " then ".join(f"{x:.1f}" for x in per_1000)


def _cmp(x: float, bound: float, *, le: bool) -> bool | None:
    if x is None or math.isnan(x):
        return None
    return x <= bound if le else x >= bound


def _met(m: bool | None) -> str:
    return {True: "**met**", False: "**missed**", None: "not measured"}[m]


# markdown


CPU_ROLES = ("ingress", "router", "model replicas", "model workers", "Redis", "Serve controller",
             "Ray (raylet, GCS, other actors)", "load generator", "other")


def _efficiency_cpu(e: dict) -> list[str]:
    """Part 4's CPU by process during the trials."""
    rows = [(who, n, d["cpu"]) for who in ("vendo", "bare") for n, d in (e.get(who) or {}).items() if d.get("cpu")]
    if not rows:
        return []
    cores = rows[0][2].get("cores")
    lines = ["", f"CPU during the trials, in cores used on average (the machine has {cores}; a process with one "
             "busy thread tops out at 1.0):", "",
             "| | replicas | machine busy | " + " | ".join(CPU_ROLES) + " |", "|---" * (3 + len(CPU_ROLES)) + "|"]
    for who, n, c in rows:
        by = c.get("by_role", {})
        lines.append(f"| {'vendo' if who == 'vendo' else 'bare Serve'} | {n} | {c.get('machine', 0):.2f} | "
                     + " | ".join(f"{by.get(r, 0.0):.2f}" for r in CPU_ROLES) + " |")
    return lines


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [
        f"# vendo benchmarks: {res['started_at']}",
        "",
        f"Machine: {m['cpus']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, {m['kernel']}; "
        f"{m['note']}. Python {m['python']}, Ray {m['ray']}, Cog {m['cog']} (coglet {m['coglet']}), "
        f"commit {res.get('commit', '?')}. Run took {res['duration_s']:.0f} s.",
        "",
        f"Each figure is the median of {res['plan']['trials']} trials, with the trials' min–max in "
        "brackets; ratios are the median of per-trial ratios (trials of the targets on one cluster ran "
        "interleaved; bare Serve's baseline runs on a cluster of its own, just before vendo's).",
        "",
        "## Goals",
        "",
        "| goal | target | figure | |",
        "|---|---|---|---|",
    ]
    for g in goals(res):
        lines.append(f"| {g['goal']} | {g['target']} | {g['figure']} | {_met(g['met'])} |")
    o = res.get("overhead")
    if o:
        same = "vendo/bare_same_ingress" in o["ratios"]
        lines += ["", "## 1. Overhead: no-op model, sync `Prefer: wait` over HTTP", ""]
        if res.get("ingress"):
            lines += [f"vendo on Serve's {INGRESS_NAMES.get(res['ingress'], res['ingress'])}; bare Serve's baseline on "
                      "its default ingress (the Python proxy), on a cluster of its own brought up just before "
                      "vendo's on the same cores (the ingress is cluster-wide)"
                      + (", and bare Serve again on vendo's ingress, interleaved with vendo" if same else "") + ".", ""]
        head = "| | vendo | bare Serve | Cog (coglet) |"
        head += " bare Serve, vendo's ingress |" if same else ""
        head += " vendo / bare | vendo / Cog |" + (" vendo / bare, same ingress |" if same else "")
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        labels = {"p50_ms": "p50 latency, c=1", "p99_ms": "p99 latency, c=1"}
        targets = ("vendo", "bare", "cog") + (("bare_same_ingress",) if same else ())
        for key in o["figures"]["vendo"]:
            label = labels.get(key) or f"throughput, c={key.split('_c')[-1]}"
            row = [fmt(F(o["figures"][t][key])) for t in targets]
            row += [ratio_text(F(o["ratios"][r][key])) for r in ("vendo/bare", "vendo/cog")]
            if same:
                row.append(ratio_text(F(o["ratios"]["vendo/bare_same_ingress"][key])))
            lines.append(f"| {label} | " + " | ".join(row) + " |")
    a = res.get("async_path")
    if a:
        lines += ["", "## 2. Async path: no-op model through vendo", "",
                  "| | p50, c=1 | p99, c=1 | throughput, c=16 | throughput, c=64 |", "|---|---|---|---|---|"]
        rows = []
        if o:
            rows.append(("sync `Prefer: wait` (part 1)", o["figures"]["vendo"]))
        rows.append((f"create, then poll every {a['poll']['poll_interval_ms']:.0f} ms", a["poll"]["figures"]))
        for label, figs in rows:
            lines.append(f"| {label} | " + " | ".join(
                fmt(F(figs.get(k))) for k in ("p50_ms", "p99_ms", "throughput_c16", "throughput_c64")) + " |")
        w = a.get("webhook") or {}
        if w.get("measured"):
            lines.append("| create, then the `completed` webhook arrives | " + " | ".join(
                fmt(F(w["figures"].get(k))) for k in ("p50_ms", "p99_ms", "throughput_c16", "throughput_c64")) + " |")
        else:
            lines.append(f"| time to webhook | {w.get('note', 'not measured')} | | | |")
        if a["poll"].get("mean_polls_per_prediction"):
            lines += ["", f"Polls per prediction (mean): {a['poll']['mean_polls_per_prediction']}."]
    c = res.get("coldstart")
    if c:
        lines += ["", "## 3. Cold start: one prediction on a version at zero replicas", "",
                  "| phase | vendo | bare Serve |", "|---|---|---|"]
        names = {"intake": "intake (proxy, router, record written)", "queueing": "queueing (until Serve starts a replica)",
                 "replica_start": "replica start (process, imports, ready, routed)", "setup": "setup() (vendo: with package fetch)",
                 "predict": "predict", "return": "return (terminal write to response)", "total": "**total**"}
        for k, label in names.items():
            lines.append(f"| {label} | {fmt(F(c['figures']['vendo'].get(k)))} | {fmt(F(c['figures']['bare'].get(k)))} |")
        lines.append(f"| vendo / bare | {ratio_text(F(c['ratio_total']))} | |")
    e = res.get("efficiency")
    if e:
        lines += ["", f"## 4. Efficiency: {e['wait_s'] * 1e3:.0f} ms per prediction without CPU, saturated (4 clients per replica)", "",
                  "| replicas | ideal | vendo throughput | vendo efficiency | bare Serve throughput | bare Serve efficiency |",
                  "|---|---|---|---|---|---|"]
        for n, d in e["vendo"].items():
            b = e.get("bare", {}).get(n, {})
            lines.append(f"| {n} | {d['ideal_per_s']:.0f}/s | {fmt(F(d['throughput']))} | {fmt(F(d['efficiency']), 2)} | "
                         f"{fmt(F(b.get('throughput')))} | {fmt(F(b.get('efficiency')), 2)} |")
        if o and "throughput_c16" in o["figures"]["bare"]:
            cap = F(o["figures"]["bare"]["throughput_c16"]).median
            over = [n for n, d in e["vendo"].items() if d["ideal_per_s"] > cap]
            if over:
                lines += ["", f"On this machine bare Serve pushes at most ~{cap:.0f} no-op predictions/s (part 1, c=16): "
                          f"the ideal at {', '.join(over)} replicas is above that, so there the figure is bound by the "
                          "CPU, not by scheduling."]
        lines += _efficiency_cpu(e)
    s = res.get("streaming")
    if s:
        lines += ["", f"## 5. Streaming: model yield → SSE `output` event at the client ({s['items_per_prediction']} items, "
                  f"{s['gap_s'] * 1e3:.0f} ms apart)", "",
                  "| first item (median per trial) | first item (worst per trial) | every item p50 | every item p99 |",
                  "|---|---|---|---|",
                  f"| {fmt(F(s['first_token_ms']))} | {fmt(F(s['first_token_max_ms']))} | {fmt(F(s['every_token_p50_ms']))} | "
                  f"{fmt(F(s['every_token_p99_ms']))} |"]
    f = res.get("files")
    if f:
        g = f["figures"]
        lines += ["", f"## 6. Files: a {f['bytes'] / 1e6:.1f} MB PNG output ({f['storage'].split(':')[0]} storage)", "",
                  "| returned as a file (upload + URL) | returned nothing (same write) | added by upload + URL | "
                  "`put_bytes` of the same bytes | added beyond `put_bytes` | GET via expiring URL | read from disk |",
                  "|---|---|---|---|---|---|---|",
                  "| " + " | ".join(fmt(F(g.get(k))) for k in ("file", "none", "added_by_upload_and_url", "put_bytes",
                                                               "added_beyond_put_bytes", "download", "read_disk")) + " |"]
    sc = res.get("scale")
    if sc:
        op, st, rd = sc["open_predictions"], sc["open_streams"], sc["redis"]
        ingress, ingress_steps = _stream_ingress(st)
        lines += ["", "## 13. Memory and scale (resident memory added per 1,000, in two steps)", "",
                  f"| what is held open | router, MiB per 1,000 | {ingress}, MiB per 1,000 |", "|---|---|---|",
                  f"| predictions waiting in the router's queue ({op['open']:,} in all) | "
                  f"{_steps(op['router_mib_per_1000'])} | |",
                  f"| SSE streams on waiting predictions ({st['open']:,} in all) | {_steps(st['router_mib_per_1000'])} | "
                  f"{_steps(ingress_steps)} |",
                  "", f"Redis: {rd['bytes_per_prediction']:,} bytes per finished no-op prediction (used_memory over "
                  f"{rd['predictions']:,} predictions, retention off). Routing with 10,000 registered versions: the "
                  "catalogue goal above."]
    lines += ["", "## 11. GPU", "", (res.get("gpu") or {}).get("note", GPU_NOT_MEASURED) +
              " (see benchmarks/README.md, part 11, to run it on a GPU machine)."]
    if res.get("errors"):
        lines += ["", "## Parts that failed", ""] + [f"- {k}: {v}" for k, v in res["errors"].items()]
    return "\n".join(lines) + "\n"


# README

README_START, README_END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"


def readme_section(res: dict[str, Any]) -> str:
    """The Performance section's body: the machine, the goals and the overhead table."""
    m = res["machine"]
    md = markdown(res)
    goals_table = md.split("## Goals\n\n", 1)[1].split("\n\n", 1)[0]
    overhead = md.split("## 1. Overhead: no-op model, sync `Prefer: wait` over HTTP\n\n", 1)
    lines = [
        README_START,
        f"Latest run ({res['started_at']}, commit {res.get('commit', '?')}): a **{m['cpus']}-core, {m['memory_gib']} GiB "
        f"shared-core VM** ({m['cpu_model']}), with the load generator running on the same two cores as "
        f"everything it measures; Ray {m['ray']}, Cog {m['cog']}. Medians of {res['plan']['trials']} trials "
        "(min–max). Every part: [benchmarks/results/latest.md](benchmarks/results/latest.md); the chart: "
        "[latest.png](benchmarks/results/latest.png); the profile: "
        "[profile.md](benchmarks/results/profile.md).",
        "",
        goals_table,
    ]
    if len(overhead) == 2:
        lines += ["", "No-op model, sync predictions over HTTP:", "", overhead[1].split("\n\n", 1)[0]]
    lines.append(README_END)
    return "\n".join(lines)


def update_readme(res: dict[str, Any], readme: Path) -> bool:
    """Replace the text between the benchmark markers in `readme`; False if it has none."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(head + readme_section(res) + tail)
    return True


# chart


def chart(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(17, 9.5))
    colors = {"vendo": "#3b6fb6", "bare": "#8fb35a", "cog": "#d08b3c"}
    m = res["machine"]
    fig.suptitle(f"vendo benchmarks, {res['started_at']} — {m['cpus']} cores, {m['memory_gib']} GiB "
                 f"(shared-core VM; load generator on the same cores). Bars: median of trials; whiskers: min–max",
                 fontsize=11)

    def bar(ax, x, fg: Figure, color, label=None, width=0.25):
        if math.isnan(fg.median):
            return
        ax.bar(x, fg.median, width, color=color, label=label,
               yerr=[[fg.median - fg.lo], [fg.hi - fg.median]], capsize=3)

    o = res.get("overhead")
    ax = axes[0][0]
    if o:
        for i, t in enumerate(("vendo", "bare", "cog")):
            for j, k in enumerate(("p50_ms", "p99_ms")):
                bar(ax, j + (i - 1) * 0.27, F(o["figures"][t][k]), colors[t], TARGET_NAMES[t] if j == 0 else None)
        ax.set_xticks([0, 1], ["p50", "p99"])
        ax.set_ylabel("ms")
        ax.set_title("1. No-op latency at concurrency 1")
        ax.legend()
    ax = axes[0][1]
    if o:
        keys = [k for k in o["figures"]["vendo"] if k.startswith("throughput_c")]
        for i, t in enumerate(("vendo", "bare", "cog")):
            for j, k in enumerate(keys):
                bar(ax, j + (i - 1) * 0.27, F(o["figures"][t][k]), colors[t], TARGET_NAMES[t] if j == 0 else None)
        ax.set_xticks(range(len(keys)), [f"c={k.split('_c')[-1]}" for k in keys])
        ax.set_ylabel("predictions / s")
        ax.set_title("1. No-op throughput")
        ax.legend()
    ax = axes[0][2]
    a = res.get("async_path")
    if a:
        rows = []
        if o:
            rows.append(("sync wait", o["figures"]["vendo"]))
        rows.append(("create + poll", a["poll"]["figures"]))
        if (a.get("webhook") or {}).get("measured"):
            rows.append(("create + webhook", a["webhook"]["figures"]))
        for i, (label, figs) in enumerate(rows):
            bar(ax, i, F(figs["p50_ms"]), ["#3b6fb6", "#7a9fd6", "#b3c8ea"][i], label, width=0.6)
        ax.set_xticks(range(len(rows)), [r[0] for r in rows])
        ax.set_ylabel("ms, p50 at c=1")
        title = "2. vendo async path"
        if not (a.get("webhook") or {}).get("measured"):
            title += "\n(webhook: " + (a.get("webhook") or {}).get("note", "not measured") + ")"
        ax.set_title(title, fontsize=10)
    ax = axes[1][0]
    c = res.get("coldstart")
    if c:
        phases = ("intake", "queueing", "replica_start", "setup", "predict", "return")
        shades = ["#444444", "#c85a5a", "#d9a441", "#6aa36a", "#4f86c6", "#9a6fb0"]
        widest = 0.0
        for row, who in enumerate(("vendo", "bare")):
            left = 0.0
            for k, col in zip(phases, shades, strict=False):
                v = F(c["figures"][who].get(k)).median
                if math.isnan(v):
                    continue
                ax.barh(row, v, left=left, color=col, label=k.replace("_", " ") if row == 0 else None)
                left += v
            tot = F(c["figures"][who]["total"])
            ax.text(left + 20, row, f"total {tot.median:.0f} ms", va="center")
            widest = max(widest, left)
        ax.set_xlim(0, widest * 1.6)
        ax.set_yticks([0, 1], ["vendo", "bare Serve"])
        ax.set_xlabel("ms (median per phase)")
        ax.set_title("3. Cold start: scale from zero to first result")
        ax.legend(fontsize=7, loc="center right")
    ax = axes[1][1]
    e = res.get("efficiency")
    if e and e.get("vendo"):
        for who in ("vendo", "bare"):
            d = e.get(who) or {}
            if not d:
                continue
            ns = [int(n) for n in d]
            figs = [F(d[n]["efficiency"]) for n in d]
            ax.errorbar(ns, [f.median for f in figs],
                        yerr=[[f.median - f.lo for f in figs], [f.hi - f.median for f in figs]],
                        marker="o", capsize=3, color=colors[who], label=TARGET_NAMES[who])
        ax.axhline(0.9, ls="--", color="grey", label="goal 0.9")
        ax.set_ylim(0, 1.05)
        ax.set_xticks([int(n) for n in e["vendo"]])
        ax.set_xlabel("replicas")
        ax.set_ylabel("achieved / ideal throughput")
        ax.set_title("4. Efficiency, 50 ms per prediction")
        ax.legend()
    ax = axes[1][2]
    labels, figs = [], []
    s = res.get("streaming")
    if s:
        labels.append("stream: first item")
        figs.append(F(s["first_token_ms"]))
    f = res.get("files")
    if f:
        for k, label in (("added_by_upload_and_url", "file: upload+URL"), ("put_bytes", "file: put_bytes"),
                         ("download", "file: GET via URL")):
            labels.append(label)
            figs.append(F(f["figures"].get(k)))
    for i, fg in enumerate(figs):
        bar(ax, i, fg, "#3b6fb6", width=0.6)
    if s:
        ax.axhline(20, ls="--", color="grey", label="streaming goal 20 ms")
        ax.legend()
    ax.set_xticks(range(len(labels)), labels, rotation=15, fontsize=8)
    ax.set_ylabel("ms")
    ax.set_title("5. Streaming and 6. a 10 MB file output\n(9. GPU: " + GPU_NOT_MEASURED + ")", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(res: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "latest.json", "md": out_dir / "latest.md", "png": out_dir / "latest.png"}
    paths["json"].write_text(json.dumps(res, indent=1, default=str) + "\n")
    paths["md"].write_text(markdown(res))
    chart(res, paths["png"])
    return paths
