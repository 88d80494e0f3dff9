"""Fake JSON values that validate against a JSON schema: tool-call arguments and structured outputs."""

from __future__ import annotations

import math
import random
import re
import re._constants as sre_c
import re._parser as sre_parse
import string
from collections.abc import Callable, Sequence
from typing import Any

# Below this depth objects keep only their required properties and arrays their minimum of items,
# so recursive schemas (a tree whose nodes hold nodes) end.
_SHALLOW_DEPTH = 6
_MAX_DEPTH = 40
_DEFAULT_WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "simulasi", "jawaban", "contoh", "data", "nilai")
_TYPE_HINTS = {
    "object": ("properties", "required", "additionalProperties", "minProperties"),
    "array": ("items", "prefixItems", "minItems", "maxItems"),
    "string": ("minLength", "maxLength", "pattern", "format"),
    "number": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
}


def _date(r: random.Random) -> str:
    return f"{r.randint(2000, 2030):04d}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"


def _time(r: random.Random) -> str:
    return f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}Z"


_FORMATS: dict[str, Callable[[random.Random], str]] = {
    "date": _date,
    "time": _time,
    "date-time": lambda r: f"{_date(r)}T{_time(r)}",
    "email": lambda r: f"{r.choice(_DEFAULT_WORDS)}{r.randint(1, 99)}@example.com",
    "uri": lambda r: f"https://example.com/{r.choice(_DEFAULT_WORDS)}/{r.randint(1, 999)}",
    "uuid": lambda r: (
        f"{r.getrandbits(32):08x}-{r.getrandbits(16):04x}-4{r.getrandbits(12):03x}"
        f"-8{r.getrandbits(12):03x}-{r.getrandbits(48):012x}"
    ),
    "ipv4": lambda r: ".".join(str(r.randint(1, 254)) for _ in range(4)),
    "hostname": lambda r: f"{r.choice(_DEFAULT_WORDS)}.example.com",
    "duration": lambda r: f"PT{r.randint(1, 59)}M",
}
_FORMATS["uri-reference"] = _FORMATS["url"] = _FORMATS["iri"] = _FORMATS["uri"]
_FORMATS["idn-email"] = _FORMATS["email"]
_REGEX_REPEAT_CAP = 4


class SchemaError(ValueError):
    """A schema the sampler cannot satisfy or resolve (bad $ref, `false`, a non-object)."""


class SchemaSampler:
    """Makes values valid against one root schema; strings borrow words from `words`."""

    def __init__(self, root: Any, rng: random.Random, words: Sequence[str] = ()) -> None:
        self.root = root
        self.rng = rng
        self.words = tuple(words) or _DEFAULT_WORDS

    def sample(self, schema: Any = None, depth: int = 0) -> Any:
        """A value valid against `schema` (the root when None)."""
        schema = self.root if schema is None else schema
        if depth > _MAX_DEPTH:
            raise SchemaError("the schema nests too deeply (a $ref cycle with required fields?)")
        if schema is True or schema == {}:
            return self._words(1, 3)
        if not isinstance(schema, dict):
            raise SchemaError(f"a schema must be an object or true; got {schema!r:.80}")
        if "$ref" in schema:
            return self.sample(self._resolve(schema["$ref"]), depth + 1)
        if "allOf" in schema:
            return self.sample(_merge_all_of(schema), depth + 1)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self._enum(schema["enum"])
        for key in ("anyOf", "oneOf"):
            if key in schema:
                # The first alternative: a schema's authors put the usual case first.
                options = schema[key]
                if not isinstance(options, list) or not options:
                    raise SchemaError(f"{key} must be a non-empty array of schemas")
                return self.sample(options[0], depth + 1)
        return self._typed(schema, _pick_type(schema), depth)

    def _typed(self, schema: dict[str, Any], kind: str, depth: int) -> Any:
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind == "string":
            return self._string(schema)
        if kind in ("integer", "number"):
            return _number(schema, kind == "integer", self.rng)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        raise SchemaError(f"unknown type {kind!r}; JSON schema types are object, array, string, number, ...")

    def _resolve(self, ref: Any) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise SchemaError(f"only local $ref such as '#/$defs/Name' are supported; got {ref!r}")
        node = self.root
        for part in ref[1:].split("/")[1:]:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise SchemaError(f"$ref {ref!r} points to nothing in the schema")
        return node

    def _enum(self, values: Any) -> Any:
        if not isinstance(values, list) or not values:
            raise SchemaError("enum must be a non-empty array")
        return self.rng.choice(values)

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties") or {}
        required = [k for k in schema.get("required") or () if isinstance(k, str)]
        shallow = depth >= _SHALLOW_DEPTH
        names = [k for k in properties if k in required or not shallow]
        names += [k for k in required if k not in properties]
        out: dict[str, Any] = {}
        extra = schema.get("additionalProperties", True)
        for name in names:
            sub = properties.get(name, extra if isinstance(extra, dict) else True)
            out[name] = self.sample(sub, depth + 1)
        minimum = schema.get("minProperties") or 0
        while len(out) < minimum and extra is not False:
            out[f"extra_{len(out)}"] = self.sample(extra if isinstance(extra, dict) else True, depth + 1)
        return out

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        low = schema.get("minItems") or 0
        high = schema.get("maxItems")
        count = low if depth >= _SHALLOW_DEPTH else max(low, min(self.rng.randint(1, 3), low + 3))
        if high is not None:
            count = min(count, high)
        prefix = schema.get("prefixItems")
        items = schema.get("items", True)
        if isinstance(items, list):  # draft 4's tuple form
            prefix, items = items, schema.get("additionalItems", True)
        prefix = prefix if isinstance(prefix, list) else []
        if items is False:
            count = min(count, len(prefix))
        out: list[Any] = []
        for i in range(count):
            sub = prefix[i] if i < len(prefix) else items
            value = self.sample(sub, depth + 1)
            if schema.get("uniqueItems") and value in out:
                # One retry for a distinct value, then stop short rather than repeat (past minItems).
                value = self.sample(sub, depth + 1)
                if value in out and len(out) >= low:
                    break
            out.append(value)
        return out

    def _words(self, low: int, high: int) -> str:
        return " ".join(self.rng.choice(self.words) for _ in range(self.rng.randint(low, high)))

    def _string(self, schema: dict[str, Any]) -> str:
        low = schema.get("minLength") or 0
        high = schema.get("maxLength")
        fmt = schema.get("format")
        pattern = schema.get("pattern")
        text: str | None = None
        if isinstance(pattern, str):
            text = _from_pattern(pattern, self.rng, low, high)
        if text is None and isinstance(fmt, str) and fmt in _FORMATS:
            text = _FORMATS[fmt](self.rng)
        if text is None:
            text = self._words(1, 4)
            if len(text) < low:
                text = (text + " ") * (low // (len(text) + 1) + 1)
            if high is not None:
                text = text[:high].rstrip() or text[:high]
            if len(text) < low:
                text = text.ljust(low, "x")
        return text


def _pick_type(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        # ["string", "null"] and friends: a real value is the more useful fake.
        real = [k for k in kind if k != "null"]
        return str(real[0] if real else "null")
    if isinstance(kind, str):
        return kind
    for name, hints in _TYPE_HINTS.items():
        if any(h in schema for h in hints):
            return name
    return "string"


def _merge_all_of(schema: dict[str, Any]) -> dict[str, Any]:
    merged = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema["allOf"] or ():
        if not isinstance(part, dict):
            continue
        for key, value in part.items():
            if key == "properties":
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required":
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bound(schema: dict[str, Any], inclusive: str, exclusive: str) -> tuple[float | None, bool]:
    value = schema.get(inclusive)
    value, strict = (value if _is_number(value) else None), False
    other = schema.get(exclusive)
    if other is True:  # draft 4: a boolean that makes the plain bound exclusive
        strict = True
    elif _is_number(other) and (value is None or other >= value):
        value, strict = other, True
    return value, strict


def _number(schema: dict[str, Any], integer: bool, rng: random.Random) -> int | float:
    min_bound, low_strict = _bound(schema, "minimum", "exclusiveMinimum")
    max_bound, high_strict = _bound(schema, "maximum", "exclusiveMaximum")
    if min_bound is None:
        low_strict = False
    if max_bound is None:
        high_strict = False
    low = min_bound if min_bound is not None else (max_bound - 100 if max_bound is not None else 0)
    high = max_bound if max_bound is not None else low + 100
    step = schema.get("multipleOf")
    unit = step if isinstance(step, (int, float)) and not isinstance(step, bool) and step > 0 else None
    if integer or unit is not None:
        unit = unit or 1
        first = math.floor(low / unit) + 1 if low_strict else math.ceil(low / unit)
        last = math.ceil(high / unit) - 1 if high_strict else math.floor(high / unit)
        if first > last:
            raise SchemaError(f"no {'integer' if integer else 'number'} lies within the schema's bounds")
        value = rng.randint(first, min(last, first + 100)) * unit
        # round() drops float noise such as 0.30000000000000004 from a multipleOf of 0.1.
        return int(value) if integer or isinstance(value, int) else round(value, 10)
    # A round number away from strict bounds: two decimals inside the open interval.
    span = high - low
    value = round(low + span * rng.uniform(0.1, 0.9), 2) if span > 0 else low
    if (low_strict and value <= low) or (high_strict and value >= high):
        value = low + span / 2
    return value


def _from_pattern(pattern: str, rng: random.Random, low: int, high: int | None) -> str | None:
    """A string matching `pattern` (searched, as JSON schema does) within the lengths, or None."""
    try:
        compiled = re.compile(pattern)
        parsed = sre_parse.parse(pattern)
    except (re.error, RecursionError):
        return None
    for _ in range(8):
        try:
            text = _emit(list(parsed), rng)
        except (ValueError, IndexError, TypeError):
            return None
        if compiled.search(text) and len(text) >= low and (high is None or len(text) <= high):
            return text
    return None


def _emit(items: list[Any], rng: random.Random) -> str:
    return "".join(_emit_one(op, arg, rng) for op, arg in items)


def _emit_one(op: Any, arg: Any, rng: random.Random) -> str:
    if op is sre_c.LITERAL:
        return chr(arg)
    if op is sre_c.IN:
        return _emit_class(arg, rng)
    if op is sre_c.ANY:
        return rng.choice(string.ascii_letters)
    if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, sre_c.POSSESSIVE_REPEAT):
        low, high, body = arg
        high = low + _REGEX_REPEAT_CAP if high == sre_c.MAXREPEAT else high
        return "".join(_emit(list(body), rng) for _ in range(rng.randint(low, max(low, min(high, low + 3)))))
    if op is sre_c.SUBPATTERN:
        return _emit(list(arg[-1]), rng)
    if op is sre_c.BRANCH:
        return _emit(list(rng.choice(arg[1])), rng)
    if op in (sre_c.AT, sre_c.ASSERT, sre_c.ASSERT_NOT):
        return ""
    if op is sre_c.NOT_LITERAL:
        return "a" if arg != ord("a") else "b"
    raise ValueError(f"unsupported regex part {op}")


_CATEGORIES = {
    sre_c.CATEGORY_DIGIT: string.digits,
    sre_c.CATEGORY_WORD: string.ascii_letters + string.digits + "_",
    sre_c.CATEGORY_SPACE: " ",
    sre_c.CATEGORY_NOT_DIGIT: string.ascii_letters,
    sre_c.CATEGORY_NOT_WORD: "-.",
    sre_c.CATEGORY_NOT_SPACE: string.ascii_letters,
}


def _emit_class(parts: list[Any], rng: random.Random) -> str:
    if parts and parts[0][0] is sre_c.NEGATE:
        excluded = _class_chars(parts[1:])
        return next(c for c in string.ascii_letters + string.digits + "_-" if c not in excluded)
    return rng.choice(_class_chars(parts))


def _class_chars(parts: list[Any]) -> str:
    chars: list[str] = []
    for op, arg in parts:
        if op is sre_c.LITERAL:
            chars.append(chr(arg))
        elif op is sre_c.RANGE:
            chars.extend(chr(c) for c in range(arg[0], min(arg[1], arg[0] + 200) + 1))
        elif op is sre_c.CATEGORY:
            chars.append(_CATEGORIES.get(arg, ""))
    return "".join(chars)


def sample_instance(schema: Any, rng: random.Random, words: Sequence[str] = ()) -> Any:
    """A value valid against `schema`; raises SchemaError for one it cannot resolve or satisfy."""
    return SchemaSampler(schema, rng, words).sample()


_TYPES = frozenset(("object", "array", "string", "number", "integer", "boolean", "null"))
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONES = ("additionalProperties", "not", "additionalItems")


def schema_problem(schema: Any, where: str) -> str | None:
    """What makes `schema` no JSON schema (a bad type, properties not an object, ...) at `where`, or None."""
    try:
        _check_schema(schema, where, 0)
    except SchemaError as exc:
        return str(exc)
    return None


def _check_schema(schema: Any, where: str, depth: int) -> None:
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise SchemaError(f"{where} must be a JSON schema object; got {schema!r:.60}")
    if depth > _MAX_DEPTH:
        raise SchemaError(f"{where} nests too deeply")
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [] if kind is None else [kind]
    if (isinstance(kind, list) and not kind) or not all(isinstance(k, str) and k in _TYPES for k in kinds):
        known = ", ".join(sorted(_TYPES))
        raise SchemaError(f"{where}.type must be one of {known} (or an array of them); got {kind!r:.60}")
    required = schema.get("required")
    if required is not None and not (
        isinstance(required, list) and all(isinstance(r, str) for r in required)
    ):
        raise SchemaError(f"{where}.required must be an array of property names; got {required!r:.60}")
    for sub, at in _subschemas(schema, where):
        _check_schema(sub, at, depth + 1)


def _subschemas(schema: dict[str, Any], where: str) -> list[tuple[Any, str]]:
    found: list[tuple[Any, str]] = []
    for key in _SCHEMA_MAPS:
        value = schema.get(key)
        if value is not None and not isinstance(value, dict):
            raise SchemaError(f"{where}.{key} must be an object of schemas; got {value!r:.60}")
        found.extend((sub, f"{where}.{key}.{name}") for name, sub in (value or {}).items())
    for key in _SCHEMA_LISTS:
        value = schema.get(key)
        if value is not None and not isinstance(value, list):
            raise SchemaError(f"{where}.{key} must be an array of schemas; got {value!r:.60}")
        found.extend((sub, f"{where}.{key}[{i}]") for i, sub in enumerate(value or ()))
    items = schema.get("items")
    if isinstance(items, list):  # draft 4's tuple form
        found.extend((sub, f"{where}.items[{i}]") for i, sub in enumerate(items))
    elif items is not None:
        found.append((items, f"{where}.items"))
    found.extend((schema[key], f"{where}.{key}") for key in _SCHEMA_ONES if key in schema)
    return found
