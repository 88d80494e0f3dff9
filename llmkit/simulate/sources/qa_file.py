"""Question/answer rows for the database source, and the JSONL files they are loaded from."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from llmkit.errors import ConfigError

FIELDS = ("qa_id", "pertanyaan", "jawaban", "referensi")
SAMPLE_QA = Path(__file__).resolve().parent.parent / "sample_qa.jsonl"


class QaRow(NamedTuple):
    """One row of `response_simulator`."""

    qa_id: str
    pertanyaan: str
    jawaban: str
    referensi: str = ""


def _text(obj: dict[str, Any], key: str, where: str, required: bool) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        got = "missing" if key not in obj else f"{type(value).__name__} {value!r}"
        raise ConfigError(f"{where}: {key} must be a string; got {got}")
    if required and not value.strip():
        raise ConfigError(f"{where}: {key} must not be empty")
    return value


def parse_qa_line(line: str, where: str) -> QaRow:
    """One JSONL line as a QaRow (qa_id generated when missing); ConfigError naming `where` if wrong."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{where}: invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ConfigError(
            f"{where}: expected a JSON object with {', '.join(FIELDS)}; got {type(obj).__name__}"
        )
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {', '.join(unknown)}; valid keys: {', '.join(FIELDS)}")
    raw_id = obj.get("qa_id")
    if raw_id is None:
        qa_id = str(uuid.uuid4())
    else:
        try:
            qa_id = str(uuid.UUID(str(raw_id)))
        except ValueError:
            raise ConfigError(f"{where}: qa_id must be a UUID; got {raw_id!r}") from None
    return QaRow(
        qa_id,
        _text(obj, "pertanyaan", where, required=True),
        _text(obj, "jawaban", where, required=True),
        _text(obj, "referensi", where, required=False),
    )


def read_qa_jsonl(path: Path) -> list[QaRow]:
    """Every row of a JSONL file (blank lines skipped); ConfigError naming file:line on a bad line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    rows: list[QaRow] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        row = parse_qa_line(line, where)
        if row.qa_id in seen:
            raise ConfigError(f"{where}: qa_id {row.qa_id} is already used on line {seen[row.qa_id]}")
        seen[row.qa_id] = number
        rows.append(row)
    return rows
