"""The Grafana dashboard (`deploy/grafana/vendo.json`) charts only metrics that exist: `vendo_*` names
come from `vendo_core.metrics.SPECS` (with the suffix Prometheus gives each kind) or are the router's
scrape-time gauges, with only their declared labels; `ray_serve_*` names are metrics the installed Ray
Serve defines, found by reading its source (importing ray is slow, so the test never does)."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import warnings
from functools import cache
from pathlib import Path

import pytest

from vendo_core import metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "vendo.json"

# gauges the router adds at scrape time (router/services/ops.py), with their labels
SCRAPE_TIME = {
    "vendo_redis_roundtrip_seconds": (),
    "vendo_webhook_backlog": (),
    "vendo_serve_apps": ("status",),
    "vendo_serve_replicas": ("app", "state"),
}
UNITS = {"s", "ms", "reqps", "currencyUSD", "short", "percentunit"}
FUNCTIONS = {
    "abs", "absent", "avg", "avg_over_time", "bottomk", "ceil", "changes", "clamp_max", "clamp_min", "count",
    "count_values", "delta", "deriv", "floor", "group", "histogram_quantile", "increase", "irate",
    "label_replace", "last_over_time", "max", "max_over_time", "min", "min_over_time", "quantile", "rate",
    "resets", "round", "scalar", "sort", "sort_desc", "stddev", "stdvar", "sum", "sum_over_time", "time",
    "topk", "vector"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
STRING = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'""")
SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^{}]*)\}")
MATCHER = re.compile(r"""\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\s*(?:,|$)""")
IDENT = re.compile(r"(?<![\w$.:])([A-Za-z_:][\w:]*)")


# ------------------------------------------------------------------------------------------------ known names
def vendo_metrics() -> dict[str, tuple[str, ...]]:
    """Every exposed `vendo_*` sample name and the labels it carries."""
    out = dict(SCRAPE_TIME)
    for name, spec in metrics.SPECS.items():
        full = f"{metrics.NAMESPACE}_{name}"
        if spec.kind == "counter":
            out[f"{full}_total"] = spec.labels
        elif spec.kind == "gauge":
            out[full] = spec.labels
        elif spec.kind == "histogram":
            out[f"{full}_bucket"] = (*spec.labels, "le")
            out[f"{full}_sum"] = spec.labels
            out[f"{full}_count"] = spec.labels
        else:
            raise AssertionError(f"unknown kind {spec.kind!r} of {name}")
    return out


def _serve_dir() -> Path:
    spec = importlib.util.find_spec("ray")  # locates the package without importing it
    assert spec is not None and spec.submodule_search_locations, "ray is installed"
    return Path(next(iter(spec.submodule_search_locations))) / "serve"


def _protocols(serve: Path) -> list[str]:
    """`RequestProtocol`'s values, lowered as Serve does to name its per-protocol metrics."""
    tree = ast.parse((serve / "_private" / "common.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "RequestProtocol":
            return [n.value.value.lower() for n in node.body
                    if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)]
    raise AssertionError("RequestProtocol not found in ray/serve/_private/common.py")


def _metric_name(call: ast.Call) -> ast.expr | None:
    if call.args:
        return call.args[0]
    return next((k.value for k in call.keywords if k.arg == "name"), None)


def _expand(node: ast.expr, protocols: list[str]) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):  # f"serve_num_{protocol_name}_requests"
        names = [""]
        for part in node.values:
            if isinstance(part, ast.Constant):
                names = [n + str(part.value) for n in names]
            elif (isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name)
                  and part.value.id == "protocol_name"):
                names = [n + p for n in names for p in protocols]
            else:
                return []
        return names
    return []


@cache
def ray_serve_metrics() -> dict[str, set[str]]:
    """Exported sample name (with Ray's `ray_` prefix) → where the metric is defined, for every
    `Counter`/`Gauge`/`Histogram` that the ray/serve and ray/serve/_private sources create."""
    serve = _serve_dir()
    protocols = _protocols(serve)
    out: dict[str, set[str]] = {}
    files = [*sorted(serve.glob("*.py")), *sorted((serve / "_private").rglob("*.py"))]
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        if not re.search(r"\b(Counter|Gauge|Histogram)\(", text):
            continue
        with warnings.catch_warnings():  # Ray's own escape sequences are not this test's business
            warnings.simplefilter("ignore")
            tree = ast.parse(text)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            kind = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if kind not in ("Counter", "Gauge", "Histogram") or (name := _metric_name(node)) is None:
                continue
            for base in _expand(name, protocols):
                if not base.startswith("serve_"):
                    continue
                if kind == "Counter":
                    samples = [base if base.endswith("_total") else f"{base}_total"]
                elif kind == "Histogram":
                    samples = [f"{base}_bucket", f"{base}_sum", f"{base}_count"]
                else:
                    samples = [base]
                where = f"{path.relative_to(serve.parent).as_posix()}:{node.lineno}"
                for s in samples:
                    out.setdefault(f"ray_{s}", set()).add(where)
    return out


# ------------------------------------------------------------------------------------------------ PromQL
def _balanced(text: str, open_at: int) -> int:
    """The index just past the parenthesis that closes the one at `open_at`."""
    depth = 0
    for i in range(open_at, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i + 1
    raise AssertionError(f"unbalanced parentheses in {text!r}")


def _opening(text: str, close_at: int) -> int:
    depth = 0
    for i in range(close_at, -1, -1):
        depth += {")": 1, "(": -1}.get(text[i], 0)
        if depth == 0:
            return i
    raise AssertionError(f"unbalanced parentheses in {text!r}")


def analyse(expr: str) -> dict:
    """The metric names, label matchers and grouping labels of one PromQL expression, each grouping
    clause with the metric names it aggregates over."""
    # blank string contents (keeping positions) so that regexes inside them confuse nothing
    flat = STRING.sub(lambda m: m.group(0)[0] + " " * (len(m.group(0)) - 2) + m.group(0)[-1], expr)
    matchers: list[tuple[str, str]] = []  # (metric, label)
    for m in SELECTOR.finditer(flat):
        assert m.group(1), f"a selector without a metric name in {expr!r}"
        body = expr[m.start(2):m.end(2)]
        pos = 0
        while body[pos:].strip():
            mm = MATCHER.match(body, pos)
            assert mm, f"cannot read the matchers {body!r} in {expr!r}"
            matchers.append((m.group(1), mm.group(1)))
            pos = mm.end()
        flat = flat[:m.start(2) - 1] + " " * (m.end(2) - m.start(2) + 2) + flat[m.end(2) + 1:]
    flat = re.sub(r"\[[^\]]*\]", lambda m: " " * len(m.group(0)), flat)  # range selectors ([5m], [$__range])
    assert flat.count("(") == flat.count(")"), f"unbalanced parentheses in {expr!r}"

    groupings: list[tuple[str, list[str], str]] = []  # (clause, labels, the text it applies to)
    for g in GROUPING.finditer(flat):
        labels = [x.strip() for x in g.group(2).split(",") if x.strip()]
        clause = g.group(1)
        if clause in ("by", "without"):
            before = flat[:g.start()].rstrip()
            if before.endswith(")"):  # sum (x) by (l)
                scope = flat[_opening(flat, len(before) - 1):len(before)]
            else:  # sum by (l) (x)
                assert re.search(r"\b(" + "|".join(FUNCTIONS) + r")$", before), f"stray {clause} in {expr!r}"
                open_at = flat.index("(", g.end())
                scope = flat[open_at:_balanced(flat, open_at)]
        else:  # vector matching: the labels must exist on both sides
            scope = flat
        groupings.append((clause, labels, scope))
    flat = GROUPING.sub(lambda m: " " * len(m.group(0)), flat)

    names: list[str] = []
    for m in IDENT.finditer(flat):
        word = m.group(1)
        if re.match(r"\s*\(", flat[m.end():]):
            assert word in FUNCTIONS, f"unknown function {word!r} in {expr!r}"
        elif word not in KEYWORDS:
            names.append(word)
    return {"names": names, "matchers": matchers, "groupings": groupings}


def _idents(text: str) -> set[str]:
    return set(IDENT.findall(text))


# ------------------------------------------------------------------------------------------------ the dashboard
@cache
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels() -> list[dict]:
    out = []
    for p in dashboard()["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # a collapsed row holds its panels
    return out


def exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in all_panels() for t in p.get("targets", []) if "expr" in t]


def test_the_dashboard_is_a_grafana_model_with_unique_panels():
    d = dashboard()
    assert d["title"] and d["uid"] and 36 <= d["schemaVersion"] <= 41
    panels = all_panels()
    ids = [p["id"] for p in panels]
    titles = [p["title"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    assert all(titles) and len(titles) == len(set(titles)), "panel titles are unique and present"


def test_every_panel_says_what_it_means_and_in_what_unit():
    charts = [p for p in all_panels() if p["type"] != "row"]
    assert charts
    for p in charts:
        assert len(p.get("description", "")) > 40, f"{p['title']}: a description for an operator"
        assert p["fieldConfig"]["defaults"].get("unit") in UNITS, f"{p['title']}: a unit"
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"] and all(t.get("expr") for t in p["targets"]), p["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"]), p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]


def test_template_variables_read_declared_labels():
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    known = vendo_metrics()
    for name in ("model", "account"):
        v = variables[name]
        query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
        assert m, f"${name} comes from label_values: {query!r}"
        assert m.group(2) == name and name in known[m.group(1)], query
        assert v["datasource"]["uid"] == "${datasource}"
    used = " ".join(e for _, e in exprs())
    assert "$model" in used and "$account" in used, "the variables filter something"


@pytest.mark.parametrize("title,expr",
                         [pytest.param(t, e, id=f"{t} #{i}") for i, (t, e) in enumerate(exprs())])
def test_expressions_name_only_metrics_and_labels_that_exist(title, expr):
    vendo, ray = vendo_metrics(), ray_serve_metrics()
    got = analyse(expr)
    assert got["names"], f"{title}: {expr!r} charts a metric"
    for name in got["names"]:
        if name.startswith("vendo_"):
            assert name in vendo, f"{title}: {name} is not a vendo metric ({sorted(vendo)})"
        else:
            assert name.startswith("ray_serve_") and name in ray, \
                f"{title}: {name} is neither a vendo nor a Ray Serve metric"
    for metric, label in got["matchers"]:
        if metric.startswith("vendo_"):
            assert label in vendo[metric], f"{title}: {metric} has no label {label!r}"
    for clause, labels, scope in got["groupings"]:
        for metric in _idents(scope) & set(vendo):
            missing = set(labels) - set(vendo[metric])
            assert not missing, f"{title}: {clause} {sorted(missing)} over {metric}, labelled {vendo[metric]}"


def test_the_scrape_time_gauges_are_the_routers():
    source = (ROOT / "router" / "services" / "ops.py").read_text()
    found: dict[str, tuple[str, ...]] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not node.args or not isinstance(node.args[0], ast.Constant):
            continue
        func = getattr(node.func, "id", getattr(node.func, "attr", ""))
        if func == "_gauge":
            found[f"{metrics.NAMESPACE}_{node.args[0].value}"] = ()
        elif func == "GaugeMetricFamily":
            labels = next((k.value for k in node.keywords if k.arg == "labels"), None)
            found[node.args[0].value] = tuple(ast.literal_eval(labels)) if labels is not None else ()
    assert found == SCRAPE_TIME


def test_the_checks_catch_mistakes():
    vendo = vendo_metrics()
    assert "vendo_predictions_created_total" in vendo and "vendo_predictions_created" not in vendo
    assert vendo["vendo_cold_start_seconds_bucket"][-1] == "le"
    ray = ray_serve_metrics()
    for name in ("ray_serve_num_http_requests_total", "ray_serve_http_request_latency_ms_bucket",
                 "ray_serve_deployment_processing_latency_ms_bucket", "ray_serve_deployment_queued_queries",
                 "ray_serve_replica_processing_queries"):
        assert name in ray, name
    assert "ray_serve_deployment_queued_queries_total" not in ray  # a gauge has no _total
    got = analyse('sum(rate(x{model=~"$model", a="(b)"}[5m])) by (model) / sum by (hw) (rate(y[$__range]))')
    assert got["names"] == ["x", "y"] and got["matchers"] == [("x", "model"), ("x", "a")]
    assert [(c, ls, _idents(s) & {"x", "y"}) for c, ls, s in got["groupings"]] == [
        ("by", ["model"], {"x"}), ("by", ["hw"], {"y"})]
    with pytest.raises(AssertionError):
        analyse("sum(rat(x[5m]))")
    with pytest.raises(AssertionError):
        analyse('{__name__=~"vendo_.*"}')
