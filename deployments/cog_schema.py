"""Build a Cog-shaped OpenAPI 3.0.2 document from cog's in-process type introspection.

cog 0.23 builds this document in Go at `cog build` time (pkg/schema/openapi_spec.go); the Python
SDK only gives `PredictorInfo`. This module mirrors the Go output, with one deliberate
difference: `x: int = Input(default=None)` on a non-Optional type is optional (nullable, default
null), as it was in cog <= 0.9, because existing Replicate models rely on that. Python cannot
tell `Input(default=None)` from `Input(description=...)`, so we read the source with `ast`.
"""

from __future__ import annotations

import ast
import copy
import enum
import os
import pathlib
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from cog import Secret
from cog import _adt as adt

_OPTIONAL = (adt.Repetition.OPTIONAL, adt.Repetition.OPTIONAL_REPEATED)


@dataclass(frozen=True)
class SourceFacts:
    """What only the source text tells us about a run/predict/train function."""

    explicit_none: frozenset[str] = frozenset()  # parameters whose default is literally None
    streaming: bool = False  # decorated with @cog.streaming (a runtime no-op)
    # Input(accept=...) per parameter: cog's InputField drops it, so the loader reads FieldInfo.
    accept: dict[str, str] = field(default_factory=dict)
    # the Output schema when the return annotation is a TypedDict, which cog's inspector sees as Any
    output_schema: dict[str, Any] | None = None


_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def typed_dict_schema(tp: Any) -> dict[str, Any] | None:
    """The JSON schema of a TypedDict (as Cog's static schema gives it), or None for other types."""
    if not typing.is_typeddict(tp):
        return None
    hints = typing.get_type_hints(tp)
    properties = {name: {"title": name.replace("_", " ").title(), **_json_schema(hint)}
                  for name, hint in hints.items()}
    required = [name for name in hints if name in tp.__required_keys__]
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    return out


def _json_schema(tp: Any) -> dict[str, Any]:
    nested = typed_dict_schema(tp)
    if nested is not None:
        return nested
    if tp in _JSON_TYPES:
        return {"type": _JSON_TYPES[tp]}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, tuple, set, frozenset):
        return {"type": "array", "items": _json_schema(args[0]) if args else {}}
    if origin is dict or tp is dict:
        return {"type": "object"}
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = _json_schema(rest[0]) if len(rest) == 1 else {}
        return {**inner, "nullable": True} if len(rest) < len(args) else inner
    if isinstance(tp, type) and issubclass(tp, os.PathLike):
        return {"type": "string", "format": "uri"}
    return {}


def _is_named(node: ast.AST, name: str) -> bool:
    if isinstance(node, ast.Call):
        node = node.func
    return (isinstance(node, ast.Name) and node.id == name) or (
        isinstance(node, ast.Attribute) and node.attr == name
    )


def _is_none(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _default_is_none(default: ast.AST) -> bool:
    if _is_none(default):
        return True
    if isinstance(default, ast.Call) and _is_named(default.func, "Input"):
        if default.args:
            return _is_none(default.args[0])
        return any(kw.arg == "default" and _is_none(kw.value) for kw in default.keywords)
    return False


def source_facts(source_file: str, owner: str | None, function: str) -> SourceFacts:
    """Read `function` (a method of class `owner`, or a top-level function) from the source.

    Unparseable files or functions defined elsewhere (inherited from a mixin) yield empty facts.
    """
    try:
        tree = ast.parse(pathlib.Path(source_file).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return SourceFacts()
    body: list[ast.stmt] = tree.body
    if owner is not None:
        classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == owner]
        if not classes:
            return SourceFacts()
        body = classes[-1].body
    funcs = [
        n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == function
    ]
    if not funcs:
        return SourceFacts()
    fn = funcs[-1]
    params = fn.args.posonlyargs + fn.args.args
    defaults = fn.args.defaults
    with_defaults = params[len(params) - len(defaults) :] if defaults else []
    explicit_none = frozenset(
        p.arg for p, d in zip(with_defaults, defaults, strict=True) if _default_is_none(d)
    )
    streaming = any(_is_named(d, "streaming") for d in fn.decorator_list)
    return SourceFacts(explicit_none=explicit_none, streaming=streaming)


def legacy_optional(info: adt.PredictorInfo, facts: SourceFacts) -> frozenset[str]:
    """Inputs that cog 0.23 calls required but legacy cog treated as optional (default=None)."""
    return frozenset(
        name
        for name, inp in info.inputs.items()
        if name in facts.explicit_none
        and inp.type.union_variants is None
        and inp.type.repetition in (adt.Repetition.REQUIRED, adt.Repetition.REPEATED)
    )


def _json_value(value: Any) -> Any:
    # Defaults and choices come back from cog normalized (Path, Secret, Enum); emit JSON.
    if isinstance(value, Secret):
        return value.get_secret_value()
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def _number(value: float) -> int | float:
    # cog stores ge/le as floats; Go's JSON prints 1.0 as 1, and so do we.
    return int(value) if float(value).is_integer() else value


def _title(name: str) -> str:
    return name.replace("_", " ").title()


def input_schema(
    info: adt.PredictorInfo, facts: SourceFacts, title: str = "Input", taken: set[str] | None = None
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Return the Input component and the enum components its `choices` fields refer to.

    `taken` holds component names already used; an enum whose field name clashes gets a suffix.
    """
    taken = set() if taken is None else taken
    legacy = legacy_optional(info, facts)
    properties: dict[str, Any] = {}
    required: list[str] = []
    enums: dict[str, dict[str, Any]] = {}
    for name, inp in sorted(info.inputs.items(), key=lambda item: item[1].order):
        ft = inp.type
        prop: dict[str, Any] = {"x-order": inp.order}
        if inp.choices:
            enum_name = name
            while enum_name in taken or enum_name in enums:
                enum_name += "Enum"
            enums[enum_name] = {
                "title": enum_name,
                "description": "An enumeration.",
                "enum": [_json_value(c) for c in inp.choices],
                "type": ft.primitive.json_type()["type"],
            }
            prop["allOf"] = [{"$ref": f"#/components/schemas/{enum_name}"}]
        else:
            prop["title"] = _title(name)
            prop.update(ft.json_type())

        nullable = ft.repetition in _OPTIONAL or name in legacy
        if ft.primitive is adt.PrimitiveType.SECRET and name in facts.explicit_none:
            nullable = True
        if inp.default is not None:
            prop["default"] = _json_value(inp.default)
        elif nullable and name in facts.explicit_none:
            prop["default"] = None
        elif not nullable:
            required.append(name)
        if nullable:
            prop["nullable"] = True

        if inp.description is not None:
            prop["description"] = inp.description
        if inp.ge is not None:
            prop["minimum"] = _number(inp.ge)
        if inp.le is not None:
            prop["maximum"] = _number(inp.le)
        if inp.min_length is not None:
            prop["minLength"] = inp.min_length
        if inp.max_length is not None:
            prop["maxLength"] = inp.max_length
        if inp.regex is not None:
            prop["pattern"] = inp.regex
        if inp.deprecated:
            prop["deprecated"] = True
        if name in facts.accept:
            prop["x-cog-accept"] = facts.accept[name]
        properties[name] = prop

    schema: dict[str, Any] = {"title": title, "type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema, enums


def _operation(kind: str, streaming: bool) -> tuple[str, dict[str, Any], str, dict[str, Any]]:
    train = kind == "train"
    noun, request, response = (
        ("training", "TrainingRequest", "TrainingResponse")
        if train
        else ("prediction", "PredictionRequest", "PredictionResponse")
    )
    ok = {"description": "Successful Response"}
    invalid = {
        "description": "Validation Error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}},
    }
    post: dict[str, Any] = {
        "summary": "Train" if train else "Predict",
        "description": f"Run a single {noun} on the model",
        "operationId": "train_trainings_post" if train else "predict_predictions_post",
        "requestBody": {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{request}"}}}},
        "responses": {
            "200": {**ok, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{response}"}}}},
            "422": invalid,
        },
    }
    if streaming and not train:
        post["x-cog-streaming"] = True
    cancel = {
        "summary": "Cancel",
        "operationId": f"cancel_{noun}s__{noun}_id__cancel_post",
        "parameters": [
            {
                "required": True,
                "schema": {"title": _title(f"{noun}_id"), "type": "string"},
                "name": f"{noun}_id",
                "in": "path",
            }
        ],
        "responses": {"200": {**ok, "content": {"application/json": {"schema": {}}}}, "422": invalid},
    }
    return f"/{noun}s", {"post": post}, f"/{noun}s/{{{noun}_id}}/cancel", {"post": cancel}


def _envelopes(kind: str) -> dict[str, Any]:
    inp, out, request, response = (
        ("TrainingInput", "TrainingOutput", "TrainingRequest", "TrainingResponse")
        if kind == "train"
        else ("Input", "Output", "PredictionRequest", "PredictionResponse")
    )
    ref = {"input": {"$ref": f"#/components/schemas/{inp}"}}
    string = {"type": "string"}
    stamp = {"type": "string", "format": "date-time"}
    return {
        request: {
            "title": request,
            "type": "object",
            "properties": {"id": {"title": "Id", **string}, **ref},
        },
        response: {
            "title": response,
            "type": "object",
            "properties": {
                **ref,
                "output": {"$ref": f"#/components/schemas/{out}"},
                "id": {"title": "Id", **string},
                "version": {"title": "Version", **string},
                "created_at": {"title": "Created At", **stamp},
                "started_at": {"title": "Started At", **stamp},
                "completed_at": {"title": "Completed At", **stamp},
                "status": {"title": "Status", **string},
                "error": {"title": "Error", **string},
                "logs": {"title": "Logs", **string},
                "metrics": {"title": "Metrics", "type": "object"},
            },
        },
    }


_COMMON_COMPONENTS = {
    "Status": {
        "title": "Status",
        "description": "An enumeration.",
        "enum": ["starting", "processing", "succeeded", "canceled", "failed"],
        "type": "string",
    },
    "HTTPValidationError": {
        "title": "HTTPValidationError",
        "type": "object",
        "properties": {
            "detail": {"title": "Detail", "type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}}
        },
    },
    "ValidationError": {
        "title": "ValidationError",
        "required": ["loc", "msg", "type"],
        "type": "object",
        "properties": {
            "loc": {
                "title": "Location",
                "type": "array",
                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            },
            "msg": {"title": "Message", "type": "string"},
            "type": {"title": "Error Type", "type": "string"},
        },
    },
}


def build_openapi(
    predict: tuple[adt.PredictorInfo, SourceFacts] | None,
    train: tuple[adt.PredictorInfo, SourceFacts] | None = None,
    version: str = "",
) -> dict[str, Any]:
    """Assemble the whole document; prediction and training parts share one document."""
    components: dict[str, Any] = {}
    empty_ok = {"description": "Successful Response", "content": {"application/json": {"schema": {}}}}
    paths: dict[str, Any] = {
        "/": {"get": {"summary": "Root", "operationId": "root__get", "responses": {"200": empty_ok}}},
        "/health-check": {
            "get": {
                "summary": "Healthcheck",
                "operationId": "healthcheck_health_check_get",
                "responses": {"200": empty_ok},
            }
        },
    }
    reserved = {"Input", "Output", "TrainingInput", "TrainingOutput", *_COMMON_COMPONENTS}
    reserved |= {"PredictionRequest", "PredictionResponse", "TrainingRequest", "TrainingResponse"}
    for kind, part in (("predict", predict), ("train", train)):
        if part is None:
            continue
        info, facts = part
        inp, out = ("TrainingInput", "TrainingOutput") if kind == "train" else ("Input", "Output")
        schema, enums = input_schema(info, facts, inp, reserved | set(components))
        components[inp] = schema
        components[out] = {**(facts.output_schema or info.output.json_type()), "title": out}
        components.update(enums)
        components.update(_envelopes(kind))
        # Like Go, only @cog.streaming sets x-cog-streaming; iterator outputs stream regardless.
        path, op, cancel_path, cancel = _operation(kind, facts.streaming)
        paths[path] = op
        paths[cancel_path] = cancel
    components.update(copy.deepcopy(_COMMON_COMPONENTS))
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": version},
        "paths": paths,
        "components": {"schemas": components},
    }
