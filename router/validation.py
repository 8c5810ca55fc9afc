"""Validate a prediction input against a version's stored OpenAPI schema.

The router never imports user code, so it cannot call cog's `check_input`; this mirrors it from
the schema alone: the same coercions ("4" -> 4 for integers, ints -> floats, 0/1 -> booleans,
strings are never booleans), the same constraint checks and the same messages, so a request the
router accepts is one the replica's `check_input` accepts too. Defaults are not filled in.
Stricter than cog in three places that cog's own JSON-schema pass also enforces: list inputs
need lists, "object" inputs need objects, and file inputs need a URL, never a local path.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import re2

from vendo_core.errors import InvalidInput

_FILE_SCHEMES = ("http://", "https://", "data:")
# Order in which cog tries union members when none matches the value's type exactly.
_UNION_PRIORITY = {"boolean": 0, "integer": 1, "number": 2, "string": 3, "object": 4}


class _Reject(Exception):
    """A value failed; `reason` is the message without the field name."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _resolve(prop: dict, components: dict) -> tuple[dict, list | None]:
    """Follow `allOf: [{$ref}]` (how choices are encoded) to the enum component."""
    for part in prop.get("allOf") or []:
        ref = part.get("$ref", "") if isinstance(part, dict) else ""
        target = components.get(ref.rsplit("/", 1)[-1]) if ref.startswith("#/components/schemas/") else None
        if isinstance(target, dict):
            merged = {k: v for k, v in prop.items() if k != "allOf"}
            merged.setdefault("type", target.get("type"))
            return merged, target.get("enum")
    return prop, prop.get("enum")


def _type_name(schema: dict) -> str:
    if "anyOf" in schema:
        name = " | ".join(_type_name(v) for v in schema["anyOf"])
        return f"Optional[{name}]" if schema.get("nullable") else name
    kind = schema.get("type")
    if kind == "array":
        return f"List[{_type_name(schema.get('items') or {})}]"
    if kind == "string":
        return {"uri": "Path", "password": "Secret"}.get(schema.get("format", ""), "str")
    return {"integer": "int", "number": "float", "boolean": "bool", "object": "Any"}.get(kind, "Any")


def _scalar(schema: dict, value: Any, prefixes: Sequence[str]) -> Any:
    """Coerce one non-null value the way cog's PrimitiveType.normalize does."""
    kind = schema.get("type")
    bad = _Reject(f"Invalid value for type {_type_name(schema)}")
    if kind == "string":
        if not isinstance(value, str):
            raise bad
        if schema.get("format") == "uri" and not value.startswith((*_FILE_SCHEMES, *prefixes)):
            raise bad
        return value
    if kind == "integer":
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise bad from None
        if isinstance(value, (bool, int)) or (isinstance(value, float) and value.is_integer()):
            return int(value)
        raise bad
    if kind == "number":
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if not isinstance(value, (bool, int, float)) or not math.isfinite(value):
            raise bad  # NaN/inf would not survive JSON storage
        return float(value)
    if kind == "boolean":
        # bool(x) == x only for bools and 0/1: cog rejects "true", 2, etc.
        if isinstance(value, (bool, int, float)) and value in (0, 1):
            return bool(value)
        raise bad
    if kind == "object" or kind is None:
        if kind == "object" and not isinstance(value, dict):
            raise bad
        return value
    raise bad


def _exact(schema: dict, value: Any) -> bool:
    kind = schema.get("type")
    return {
        "array": isinstance(value, list),
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, float),
        "string": isinstance(value, str),
        "object": isinstance(value, dict),
    }.get(kind, False)


def _strict(schema: dict, value: Any) -> bool:
    # Union members accept values of their own JSON type only; no string coercion.
    kind = schema.get("type")
    if kind == "array":
        return isinstance(value, list) and all(_strict(schema.get("items") or {}, v) for v in value)
    return {
        "boolean": type(value) is bool,
        "integer": type(value) is int,
        "number": type(value) in (int, float),
        "string": type(value) is str,
        "object": isinstance(value, dict),
    }.get(kind, False)


def _coerce(schema: dict, value: Any, prefixes: Sequence[str]) -> Any:
    if value is None:
        if schema.get("nullable"):
            return None
        raise _Reject(f"Invalid value for type {_type_name(_element(schema))}")
    if "anyOf" in schema:
        variants = [v for v in schema["anyOf"] if isinstance(v, dict)]
        ranked = sorted(
            enumerate(variants),
            key=lambda iv: (
                not _exact(iv[1], value),
                _UNION_PRIORITY.get(iv[1].get("type"), 100) + (10 if iv[1].get("type") == "array" else 0),
                iv[0],
            ),
        )
        for _, variant in ranked:
            if _strict(variant, value):
                return _coerce(variant, value, prefixes) if variant.get("type") == "array" else value
        raise _Reject(f"Invalid value for type {_type_name(schema)}")
    if schema.get("type") == "array":
        items = schema.get("items") or {}
        if not isinstance(value, list):
            raise _Reject(f"Invalid value for type {_type_name(items)}")
        return [_scalar(items, v, prefixes) for v in value]
    return _scalar(schema, value, prefixes)


def _element(schema: dict) -> dict:
    return schema.get("items") or {} if schema.get("type") == "array" else schema


def _bound(value: float) -> str:
    return str(int(value)) if float(value) == int(value) else str(value)


def _check_constraints(name: str, prop: dict, choices: list | None, value: Any) -> None:
    if value is None:
        return
    values = value if isinstance(value, list) and prop.get("type") == "array" else [value]
    if "minimum" in prop and not all(v >= prop["minimum"] for v in values):
        raise _Reject(f"fails constraint >= {_bound(prop['minimum'])}")
    if "maximum" in prop and not all(v <= prop["maximum"] for v in values):
        raise _Reject(f"fails constraint <= {_bound(prop['maximum'])}")
    if "minLength" in prop and not all(len(v) >= prop["minLength"] for v in values):
        raise _Reject(f"fails constraint len() >= {prop['minLength']}")
    if "maxLength" in prop and not all(len(v) <= prop["maxLength"] for v in values):
        raise _Reject(f"fails constraint len() <= {prop['maxLength']}")
    if "pattern" in prop:
        pattern = _linear_pattern(prop["pattern"])
        # match, not fullmatch: as cog does
        if pattern is not None and not all(pattern.match(v) for v in values):
            raise _Reject(f"does not match regex {prop['pattern']!r}")
    if choices is not None and not all(v in choices for v in values):
        raise _Reject(f"does not match choices {choices!r}")


@functools.lru_cache(maxsize=1024)
def _linear_pattern(pattern: str) -> Any:
    """`pattern` compiled for RE2, whose matching time is linear in the input, so no schema's pattern
    can stall the router (`^(a+)+$` against 40 characters would, with Python's engine). A pattern
    RE2 cannot express (backreferences, lookaround) is None: the router skips it and the model's own
    process enforces it, as Cog does."""
    try:
        return re2.compile(pattern)
    except re2.error:
        return None


def validate_input(
    schema: dict, payload: Any, *, component: str = "Input", file_url_prefixes: Sequence[str] = ()
) -> dict:
    """Check `payload` against `components.schemas[component]`; return the coerced input.

    Unknown keys are dropped and absent optional fields stay absent. Raises
    `InvalidInput(field, reason)` with cog's wording, e.g. ("times", "fails constraint <= 5").
    `file_url_prefixes` admits extra URL forms for file inputs besides http(s) and data:.
    """
    if not isinstance(payload, dict):
        raise InvalidInput("input", "must be an object")
    components = (schema.get("components") or {}).get("schemas") or {}
    input_schema = components.get(component) or {}
    props: dict = input_schema.get("properties") or {}
    required = set(input_schema.get("required") or [])
    resolved = {name: _resolve(prop, components) for name, prop in props.items() if isinstance(prop, dict)}

    out: dict[str, Any] = {}
    # Same order as check_input: coerce the given values first, then check each field.
    for name, value in payload.items():
        if name not in resolved:
            continue
        try:
            out[name] = _coerce(resolved[name][0], value, file_url_prefixes)
        except _Reject as exc:
            raise InvalidInput(name, exc.reason) from None
    for name in sorted(resolved, key=lambda n: resolved[n][0].get("x-order", 0)):
        prop, choices = resolved[name]
        if name not in out:
            if name in required:
                raise InvalidInput(name, "Field required")
            continue
        try:
            _check_constraints(name, prop, choices, out[name])
        except _Reject as exc:
            raise InvalidInput(name, exc.reason) from None
    return out
