"""llmkit.simulate.schema_sample: fakes for many schemas, checked by a small validator written here."""

from __future__ import annotations

import datetime
import math
import random
import re
from typing import Any

import orjson
import pytest

from llmkit.simulate.schema_sample import SchemaError, sample_instance

_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _is_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[kind])


def _resolve(root: dict[str, Any], ref: str) -> Any:
    node: Any = root
    for part in ref.lstrip("#").split("/")[1:]:
        node = node[part]
    return node


def _check_format(value: str, fmt: str) -> None:
    if fmt == "date":
        datetime.date.fromisoformat(value)
    elif fmt == "date-time":
        datetime.datetime.fromisoformat(value)
    elif fmt == "email":
        assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]+", value), value
    elif fmt in ("uri", "url"):
        assert re.match(r"^[a-z]+://", value), value
    elif fmt == "uuid":
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", value), value


def _check_number(value: float, s: dict[str, Any], path: str) -> None:
    if "minimum" in s:
        assert value >= s["minimum"], path
    if "maximum" in s:
        assert value <= s["maximum"], path
    low, high = s.get("exclusiveMinimum"), s.get("exclusiveMaximum")
    if low is True:  # draft 4: the boolean form makes minimum exclusive
        low = s["minimum"]
    if high is True:
        high = s["maximum"]
    if low is not None and low is not False:
        assert value > low, path
    if high is not None and high is not False:
        assert value < high, path
    if "multipleOf" in s:
        ratio = value / s["multipleOf"]
        assert math.isclose(ratio, round(ratio), abs_tol=1e-9), (path, value)


def _check_string(value: str, s: dict[str, Any], path: str) -> None:
    assert len(value) >= s.get("minLength", 0), (path, value)
    assert len(value) <= s.get("maxLength", 10**9), (path, value)
    if "pattern" in s:
        assert re.search(s["pattern"], value), (path, value)
    if "format" in s:
        _check_format(value, s["format"])


def _check_object(value: dict[str, Any], s: dict[str, Any], root: dict[str, Any], path: str) -> None:
    props = s.get("properties", {})
    for name in s.get("required", []):
        assert name in value, f"{path}: missing {name}"
    if s.get("additionalProperties") is False:
        assert set(value) <= set(props), f"{path}: extra {set(value) - set(props)}"
    assert len(value) >= s.get("minProperties", 0)
    for name, item in value.items():
        sub = props.get(name, s.get("additionalProperties", True))
        if isinstance(sub, dict):
            validate(item, sub, root, f"{path}.{name}")


def _check_array(value: list[Any], s: dict[str, Any], root: dict[str, Any], path: str) -> None:
    assert len(value) >= s.get("minItems", 0), path
    assert len(value) <= s.get("maxItems", 10**9), path
    prefix = s.get("prefixItems", [])
    for i, item in enumerate(value):
        sub = prefix[i] if i < len(prefix) else s.get("items", True)
        if isinstance(sub, dict):
            validate(item, sub, root, f"{path}[{i}]")
    if s.get("uniqueItems"):
        assert len({orjson.dumps(v) for v in value}) == len(value), path


def _check_alternatives(value: Any, options: list[Any], root: Any, path: str) -> None:
    errors = 0
    for option in options:
        try:
            validate(value, option, root, path)
        except AssertionError:
            errors += 1
    assert errors < len(options), f"{path}: matches no alternative"


def validate(value: Any, schema: Any, root: Any = None, path: str = "$") -> None:
    """Assert `value` is valid against `schema` (the subset of JSON schema the sampler supports)."""
    root = schema if root is None else root
    if schema is True:
        return
    s: dict[str, Any] = schema
    if "$ref" in s:
        return validate(value, _resolve(root, s["$ref"]), root, path)
    for part in s.get("allOf", []):
        validate(value, part, root, path)
    if "anyOf" in s or "oneOf" in s:
        _check_alternatives(value, s.get("anyOf") or s["oneOf"], root, path)
    if "const" in s:
        assert value == s["const"], path
    if "enum" in s:
        assert value in s["enum"], path
    kind = s.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        assert any(_is_type(value, k) for k in kinds), f"{path}: {value!r} is not {kind}"
    if isinstance(value, dict):
        _check_object(value, s, root, path)
    elif isinstance(value, list):
        _check_array(value, s, root, path)
    elif isinstance(value, str):
        _check_string(value, s, path)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        _check_number(value, s, path)
    return None


WEATHER = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "City, e.g. Jakarta"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
    },
    "required": ["location", "unit"],
    "additionalProperties": False,
}

SCHEMAS: list[Any] = [
    WEATHER,
    {"type": "object"},
    {},
    True,
    {"type": "string", "minLength": 30},
    {"type": "string", "maxLength": 3},
    {"type": "string", "minLength": 5, "maxLength": 5},
    {"type": "string", "format": "date"},
    {"type": "string", "format": "date-time"},
    {"type": "string", "format": "email"},
    {"type": "string", "format": "uri"},
    {"type": "string", "format": "uuid"},
    {"type": "string", "pattern": "^[A-Z]{3}-\\d{4}$"},
    {"type": "string", "pattern": "^(foo|bar)+_[a-z0-9]{2,5}$"},
    {"type": "string", "pattern": "^\\+?[0-9 ]{7,12}$"},
    {"type": "string", "pattern": "[^abc]x."},
    {"type": "integer"},
    {"type": "integer", "minimum": -5, "maximum": -3},
    {"type": "integer", "exclusiveMinimum": 10, "exclusiveMaximum": 12},
    {"type": "integer", "minimum": 0, "exclusiveMinimum": True},
    {"type": "integer", "multipleOf": 7, "minimum": 50},
    {"type": "number", "minimum": 0.5, "maximum": 0.75},
    {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.01},
    {"type": "number", "multipleOf": 0.25},
    {"type": "number", "multipleOf": 0.1, "minimum": 1, "maximum": 2},
    {"type": "boolean"},
    {"type": "null"},
    {"type": ["string", "null"], "maxLength": 4},
    {"type": ["null", "integer"]},
    {"enum": ["a", 1, None, {"x": 1}]},
    {"const": {"fixed": [1, 2]}},
    {"anyOf": [{"type": "integer", "minimum": 3}, {"type": "string"}]},
    {"oneOf": [{"type": "boolean"}, {"type": "string"}]},
    {"allOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]}, {"required": ["b"]}]},
    {"type": "array", "items": {"type": "string", "format": "date"}, "minItems": 4, "maxItems": 5},
    {"type": "array", "items": {"type": "integer"}, "maxItems": 0},
    {"type": "array", "items": {"enum": [1, 2, 3, 4, 5, 6, 7, 8]}, "uniqueItems": True, "minItems": 2},
    {"type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}], "items": False},
    {"type": "object", "minProperties": 2, "additionalProperties": {"type": "integer"}},
    {
        "type": "object",
        "properties": {"point": {"$ref": "#/$defs/Point"}, "old": {"$ref": "#/definitions/Old"}},
        "required": ["point", "old"],
        "$defs": {
            "Point": {
                "type": "object",
                "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                "required": ["x", "y"],
                "additionalProperties": False,
            }
        },
        "definitions": {"Old": {"type": "string", "enum": ["yes"]}},
    },
    {
        # A recursive tree: sampling must end.
        "$ref": "#/$defs/Node",
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                },
                "required": ["name", "children"],
                "additionalProperties": False,
            }
        },
    },
    {
        # What the openai client sends for a pydantic model with strict structured outputs.
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "rating": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "kind": {"$ref": "#/$defs/Kind"},
        },
        "required": ["title", "tags", "rating", "kind"],
        "additionalProperties": False,
        "$defs": {"Kind": {"type": "string", "enum": ["book", "film"]}},
    },
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=[orjson.dumps(s).decode()[:50] for s in SCHEMAS])
def test_samples_validate(schema: Any) -> None:
    for seed in range(25):
        value = sample_instance(schema, random.Random(seed), ["kata", "contoh"])
        orjson.dumps(value)  # always JSON
        validate(value, schema)


def test_same_seed_same_value_and_words_are_used() -> None:
    schema = {"type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"]}
    first = sample_instance(schema, random.Random(3), ["alpha", "beta"])
    assert first == sample_instance(schema, random.Random(3), ["alpha", "beta"])
    assert set(first["s"].split()) <= {"alpha", "beta"}


def test_required_objects_keep_all_properties_near_the_top() -> None:
    value = sample_instance(WEATHER, random.Random(0))
    assert set(value) == {"location", "unit", "days"}


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "https://example.com/schema.json"},
        {"$ref": "#/$defs/Missing"},
        False,
        {"type": "frobnicate"},
        {"type": "integer", "minimum": 5, "maximum": 4},
        {"anyOf": []},
        {"enum": []},
        [1, 2],
    ],
)
def test_unsatisfiable_or_unresolvable_schemas_raise(schema: Any) -> None:
    with pytest.raises(SchemaError):
        sample_instance(schema, random.Random(0))


def test_unknown_pattern_features_fall_back_to_plain_text() -> None:
    # A backreference cannot be generated: the sampler still answers a string.
    value = sample_instance({"type": "string", "pattern": "(a)\\1"}, random.Random(0))
    assert isinstance(value, str)
