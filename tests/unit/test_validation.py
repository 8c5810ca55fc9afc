"""router.validation against a hand-written Cog-shaped schema (no cog import, no user code)."""

from __future__ import annotations

import pytest

from router.validation import validate_input
from vendo_core.errors import InvalidInput

SCHEMA = {
    "openapi": "3.0.2",
    "components": {
        "schemas": {
            "Input": {
                "title": "Input",
                "type": "object",
                "required": ["text"],
                "properties": {
                    "text": {"x-order": 0, "title": "Text", "type": "string", "minLength": 1, "maxLength": 5},
                    "times": {"x-order": 1, "title": "Times", "type": "integer", "default": 2, "minimum": 1, "maximum": 5},
                    "ratio": {"x-order": 2, "title": "Ratio", "type": "number", "minimum": 0, "maximum": 1.5},
                    "flag": {"x-order": 3, "title": "Flag", "type": "boolean", "default": False},
                    "style": {"x-order": 4, "allOf": [{"$ref": "#/components/schemas/style"}], "default": "plain"},
                    "level": {"x-order": 5, "allOf": [{"$ref": "#/components/schemas/level"}], "default": 1},
                    "code": {"x-order": 6, "title": "Code", "type": "string", "pattern": "^[a-z]+[0-9]$"},
                    "note": {"x-order": 7, "title": "Note", "type": "string", "nullable": True, "default": None},
                    "token": {
                        "x-order": 8,
                        "title": "Token",
                        "type": "string",
                        "format": "password",
                        "writeOnly": True,
                        "x-cog-secret": True,
                        "nullable": True,
                        "default": None,
                    },
                    "tags": {"x-order": 9, "title": "Tags", "type": "array", "items": {"type": "string"}},
                    "files": {
                        "x-order": 10,
                        "title": "Files",
                        "type": "array",
                        "items": {"type": "string", "format": "uri"},
                        "nullable": True,
                    },
                    "image": {"x-order": 11, "title": "Image", "type": "string", "format": "uri"},
                    "options": {"x-order": 12, "title": "Options", "type": "object"},
                    "mixed": {"x-order": 13, "title": "Mixed", "anyOf": [{"type": "integer"}, {"type": "string"}]},
                    "nums": {
                        "x-order": 14,
                        "title": "Nums",
                        "type": "array",
                        "items": {"type": "integer"},
                        "minimum": 0,
                        "maximum": 9,
                    },
                    "either": {
                        "x-order": 15,
                        "title": "Either",
                        "anyOf": [{"type": "number"}, {"type": "array", "items": {"type": "number"}}],
                        "nullable": True,
                    },
                },
            },
            "style": {"title": "style", "description": "An enumeration.", "enum": ["plain", "fancy"], "type": "string"},
            "level": {"title": "level", "description": "An enumeration.", "enum": [1, 2, 3], "type": "integer"},
            "TrainingInput": {
                "title": "TrainingInput",
                "type": "object",
                "required": ["steps"],
                "properties": {"steps": {"x-order": 0, "title": "Steps", "type": "integer", "minimum": 1}},
            },
        }
    },
}


def check(payload):
    return validate_input(SCHEMA, payload)


def test_returns_given_fields_only_and_drops_unknown_keys():
    assert check({"text": "hi", "bogus": 1}) == {"text": "hi"}


@pytest.mark.parametrize("payload", [None, [], "text", 3])
def test_payload_must_be_an_object(payload):
    with pytest.raises(InvalidInput) as exc:
        check(payload)
    assert (exc.value.field, exc.value.reason) == ("input", "must be an object")


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("times", "4", 4),
        ("times", 3.0, 3),
        ("times", True, 1),  # cog: int(True) == True
        ("ratio", 1, 1.0),
        ("ratio", "0.25", 0.25),
        ("flag", True, True),
        ("flag", 0, False),
        ("flag", 1.0, True),
        ("style", "fancy", "fancy"),
        ("level", "2", 2),
        ("code", "ab1", "ab1"),
        ("note", None, None),
        ("token", "s3cret", "s3cret"),
        ("tags", [], []),
        ("tags", ["a", "b"], ["a", "b"]),
        ("files", None, None),
        ("files", ["https://x.test/a.png", "data:text/plain;base64,aGk="], ["https://x.test/a.png", "data:text/plain;base64,aGk="]),
        ("image", "http://127.0.0.1:8000/v1/files/abc", "http://127.0.0.1:8000/v1/files/abc"),
        ("options", {"a": [1, 2]}, {"a": [1, 2]}),
        ("mixed", 5, 5),
        ("mixed", "5", "5"),  # exact type match wins; no coercion inside unions
        ("nums", [0, "9"], [0, 9]),
        ("either", 2, 2),
        ("either", [1, 2.5], [1.0, 2.5]),
    ],
)
def test_accepts_and_coerces_like_cog(field, value, expected):
    assert check({"text": "a", field: value})[field] == expected


@pytest.mark.parametrize(
    ("payload", "field", "reason"),
    [
        ({}, "text", "Field required"),
        ({"times": 2}, "text", "Field required"),
        ({"text": ""}, "text", "fails constraint len() >= 1"),
        ({"text": "toolong"}, "text", "fails constraint len() <= 5"),
        ({"text": 5}, "text", "Invalid value for type str"),
        ({"text": None}, "text", "Invalid value for type str"),
        ({"text": "a", "times": 9}, "times", "fails constraint <= 5"),
        ({"text": "a", "times": 0}, "times", "fails constraint >= 1"),
        ({"text": "a", "times": 2.5}, "times", "Invalid value for type int"),
        ({"text": "a", "times": "4.0"}, "times", "Invalid value for type int"),
        ({"text": "a", "times": "four"}, "times", "Invalid value for type int"),
        ({"text": "a", "times": None}, "times", "Invalid value for type int"),
        ({"text": "a", "ratio": 2}, "ratio", "fails constraint <= 1.5"),
        ({"text": "a", "ratio": "nan"}, "ratio", "Invalid value for type float"),
        ({"text": "a", "flag": "true"}, "flag", "Invalid value for type bool"),
        ({"text": "a", "flag": 2}, "flag", "Invalid value for type bool"),
        ({"text": "a", "style": "bold"}, "style", "does not match choices ['plain', 'fancy']"),
        ({"text": "a", "level": 4}, "level", "does not match choices [1, 2, 3]"),
        ({"text": "a", "code": "A1"}, "code", "does not match regex '^[a-z]+[0-9]$'"),
        ({"text": "a", "token": 5}, "token", "Invalid value for type Secret"),
        ({"text": "a", "tags": "abc"}, "tags", "Invalid value for type str"),
        ({"text": "a", "tags": ["a", 1]}, "tags", "Invalid value for type str"),
        ({"text": "a", "image": "/etc/passwd"}, "image", "Invalid value for type Path"),
        ({"text": "a", "image": "s3://bucket/key"}, "image", "Invalid value for type Path"),
        ({"text": "a", "image": None}, "image", "Invalid value for type Path"),
        ({"text": "a", "files": ["file:///etc/passwd"]}, "files", "Invalid value for type Path"),
        ({"text": "a", "options": [1]}, "options", "Invalid value for type Any"),
        ({"text": "a", "mixed": 2.5}, "mixed", "Invalid value for type int | str"),
        ({"text": "a", "nums": [1, 10]}, "nums", "fails constraint <= 9"),
        ({"text": "a", "either": "1"}, "either", "Invalid value for type Optional[float | List[float]]"),
    ],
)
def test_rejects_with_cog_messages(payload, field, reason):
    with pytest.raises(InvalidInput) as exc:
        check(payload)
    assert (exc.value.field, exc.value.reason) == (field, reason)
    assert exc.value.detail == f"{field}: {reason}"
    assert exc.value.problem()["invalid_fields"] == [{"field": field, "reason": reason}]


def test_type_errors_win_over_missing_fields_like_check_input():
    # check_input normalizes the given values before it looks for missing ones.
    with pytest.raises(InvalidInput) as exc:
        check({"times": "x"})
    assert exc.value.field == "times"


def test_file_url_prefixes_admit_platform_urls():
    payload = {"text": "a", "image": "vendo://files/abc"}
    with pytest.raises(InvalidInput):
        check(payload)
    assert validate_input(SCHEMA, payload, file_url_prefixes=("vendo://",))["image"] == "vendo://files/abc"


def test_training_input_component():
    assert validate_input(SCHEMA, {"steps": "3"}, component="TrainingInput") == {"steps": 3}
    with pytest.raises(InvalidInput) as exc:
        validate_input(SCHEMA, {}, component="TrainingInput")
    assert exc.value.field == "steps"


def test_schema_without_inputs_accepts_anything_and_returns_nothing():
    assert validate_input({"components": {"schemas": {}}}, {"a": 1}) == {}


def _pattern_schema(pattern: str) -> dict:
    return {"components": {"schemas": {"Input": {"type": "object", "properties": {
        "s": {"type": "string", "pattern": pattern}}}}}}


def test_a_catastrophic_pattern_answers_at_once():
    """`^(a+)+$` against 40 a's and a bang takes Python's engine longer than the age of the
    universe; RE2 is linear, so this returns (the test's own timeout is the assertion's teeth)."""
    schema = _pattern_schema(r"^(a+)+$")
    with pytest.raises(InvalidInput) as e:
        validate_input(schema, {"s": "a" * 40 + "!"})
    assert e.value.field == "s" and "does not match regex" in e.value.reason
    assert validate_input(schema, {"s": "a" * 40}) == {"s": "a" * 40}


def test_patterns_match_at_the_start_as_cog_does():
    assert validate_input(_pattern_schema(r"[a-z]+"), {"s": "abc123"}) == {"s": "abc123"}
    with pytest.raises(InvalidInput):
        validate_input(_pattern_schema(r"[a-z]+"), {"s": "123abc"})


def test_a_pattern_re2_cannot_express_is_left_to_the_model():
    # a backreference: the router skips it rather than run a super-linear engine; Cog's own check
    # in the model's process still applies it
    assert validate_input(_pattern_schema(r"^(a)\1$"), {"s": "xy"}) == {"s": "xy"}
