"""The run form of a model version, read from its OpenAPI `Input` schema: one field per input, in
`x-order`, each labelled with its name (and its title and description beside it), its default
filled, and a control for every Cog input type. Everything here is text for the template, which
escapes it; nothing a model author wrote becomes markup."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Field:
    name: str
    kind: str  # text, textarea, integer, number, checkbox, select, password, file, files, lines, json
    title: str = ""
    description: str = ""
    required: bool = False
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: list[Any] = field(default_factory=list)
    accept: str = ""
    pattern: str = ""
    min_length: int | None = None
    max_length: int | None = None
    deprecated: bool = False

    @property
    def slider(self) -> bool:
        return self.kind in ("integer", "number") and self.minimum is not None and self.maximum is not None

    @property
    def step(self) -> str:
        return "1" if self.kind == "integer" else "any"

    @property
    def value(self) -> str:
        """The default as the control shows it."""
        d = self.default
        if d is None:
            return ""
        if self.kind == "lines" and isinstance(d, list):
            return "\n".join(str(x) for x in d)
        if self.kind == "json":
            return json.dumps(d)
        return str(d).lower() if isinstance(d, bool) else str(d)


def _resolve(schema: dict[str, Any], prop: dict[str, Any]) -> dict[str, Any]:
    """A property with its `allOf: [$ref]` (Cog's choices) merged in."""
    merged = {k: v for k, v in prop.items() if k != "allOf"}
    for part in prop.get("allOf") or []:
        ref = part.get("$ref", "") if isinstance(part, dict) else ""
        if ref.startswith("#/components/schemas/"):
            target = (schema.get("components", {}).get("schemas", {})).get(ref.rsplit("/", 1)[-1], {})
            merged = {**{k: v for k, v in target.items() if k not in ("title", "description")}, **merged}
    return merged


def _kind(p: dict[str, Any]) -> str:
    if p.get("enum"):
        return "select"
    t, fmt = p.get("type"), p.get("format")
    if t == "string" and (fmt == "password" or p.get("x-cog-secret")):
        return "password"
    if t == "string" and fmt == "uri":
        return "file"
    if t == "string":  # several lines where they may be long or the default has more than one
        multiline = (p.get("maxLength") or 0) > 200 or "\n" in str(p.get("default") or "")
        return "textarea" if multiline else "text"
    if t == "integer":
        return "integer"
    if t == "number":
        return "number"
    if t == "boolean":
        return "checkbox"
    if t == "array":
        items = p.get("items") or {}
        return "files" if items.get("type") == "string" and items.get("format") == "uri" else (
            "lines" if items.get("type") in ("string", "integer", "number") else "json")
    return "json"


def fields(openapi_schema: dict[str, Any] | None, component: str = "Input") -> list[Field]:
    """The fields of the version's `Input` (or another component such as `TrainingInput`)."""
    schema = openapi_schema or {}
    inp = schema.get("components", {}).get("schemas", {}).get(component) or {}
    required = set(inp.get("required") or [])
    props = inp.get("properties") or {}
    out = []
    for name, raw in sorted(props.items(), key=lambda kv: (kv[1].get("x-order", 1 << 30), kv[0])):
        p = _resolve(schema, raw if isinstance(raw, dict) else {})
        out.append(Field(
            name=name, kind=_kind(p), title=str(p.get("title") or ""), description=str(p.get("description") or ""),
            required=name in required, default=p.get("default"), minimum=p.get("minimum"), maximum=p.get("maximum"),
            choices=list(p.get("enum") or []), accept=str(p.get("x-cog-accept") or ""),
            pattern=str(p.get("pattern") or ""), min_length=p.get("minLength"), max_length=p.get("maxLength"),
            deprecated=bool(p.get("deprecated"))))
    return out
