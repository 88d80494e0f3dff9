"""ClickHouse URL parsing, the JSONL question/answer reader and the seed's answer format."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from llmkit.errors import ConfigError
from llmkit.simulate.sources import SAMPLE_QA, QaRow, clickhouse_config, read_qa_jsonl
from llmkit.simulate.sources.clickhouse import format_answer


def test_clickhouse_url() -> None:
    config = clickhouse_config("clickhouse://ch.example:9001/analytics", "app", "s3cret")
    assert (config.host, config.port, config.database) == ("ch.example", 9001, "analytics")
    assert (config.username, config.password) == ("app", "s3cret")
    assert config.url == "clickhouse://ch.example:9001/analytics"
    assert "s3cret" not in repr(config)


def test_clickhouse_url_defaults_and_credentials_in_the_url() -> None:
    config = clickhouse_config("clickhouse://bob:pw@10.0.0.5?connect_timeout=1.5")
    assert (config.host, config.port, config.database) == ("10.0.0.5", 9000, "default")
    assert (config.username, config.password, config.connect_timeout) == ("bob", "pw", 1.5)


def test_the_seeds_http_url_maps_to_the_native_port(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        config = clickhouse_config("http://127.0.0.1:8123", "simulator_app", "pw")
    assert (config.host, config.port, config.database) == ("127.0.0.1", 9000, "default")
    assert "HTTP interface" in caplog.text
    assert "clickhouse://127.0.0.1:9000/default" in caplog.text
    assert clickhouse_config("http://h:8123/?database=qa").database == "qa"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://h/db", "known schemes: clickhouse://, http://"),
        ("clickhouse://h/bad-name", "database name 'bad-name'"),
        ("clickhouse://h/db?colour=red", "unknown parameter colour"),
        ("clickhouse://:pw@h/db?connect_timeout=0", "connect_timeout must be > 0"),
    ],
)
def test_bad_clickhouse_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        clickhouse_config(url)
    assert ":pw@" not in str(info.value)


def test_sample_file_is_valid_and_varied() -> None:
    rows = read_qa_jsonl(SAMPLE_QA)
    assert len(rows) >= 20
    assert len({r.qa_id for r in rows}) == len(rows)
    assert any(r.referensi for r in rows) and any(not r.referensi for r in rows)
    assert any(r.pertanyaan.startswith("Apa") for r in rows)
    assert any(r.pertanyaan.startswith(("What", "How")) for r in rows)


def test_missing_qa_id_is_generated_and_referensi_defaults_to_empty(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(
        '{"pertanyaan": "Apa itu X?", "jawaban": "X adalah Y."}\n\n{"pertanyaan": "q", "jawaban": "a"}\n'
    )
    rows = read_qa_jsonl(path)
    assert [r.referensi for r in rows] == ["", ""]
    assert all(uuid.UUID(r.qa_id).version == 4 for r in rows)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"jawaban": "a"}', "pertanyaan must be a string; got missing"),
        ('{"pertanyaan": "  ", "jawaban": "a"}', "pertanyaan must not be empty"),
        ('{"pertanyaan": "q", "jawaban": 3}', "jawaban must be a string; got int 3"),
        ('{"pertanyaan": "q", "jawaban": "a", "qa_id": "nope"}', "qa_id must be a UUID"),
        ('{"pertanyaan": "q", "jawaban": "a", "answer": "x"}', "unknown key answer; valid keys: qa_id"),
    ],
)
def test_a_bad_line_names_the_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text('{"pertanyaan": "ok", "jawaban": "ok"}\n\n' + line + "\n")
    with pytest.raises(ConfigError, match=rf"{path}:3: {message}"):
        read_qa_jsonl(path)


def test_a_repeated_qa_id_names_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    qa_id = str(uuid.uuid4())
    row = f'{{"qa_id": "{qa_id}", "pertanyaan": "q", "jawaban": "a"}}\n'
    path.write_text(row + row)
    with pytest.raises(ConfigError, match=rf"{path}:2: qa_id {qa_id} is already used on line 1"):
        read_qa_jsonl(path)


def test_answer_format_follows_the_seed() -> None:
    row = QaRow(str(uuid.uuid4()), "Apa itu inflasi?", "Kenaikan harga umum.", "https://www.bi.go.id")
    assert format_answer(row) == (
        "**Pertanyaan:** Apa itu inflasi?\n\n**Jawaban:** Kenaikan harga umum.\n\n"
        "**Referensi:** https://www.bi.go.id"
    )
    assert format_answer(row._replace(referensi="")) == (
        "**Pertanyaan:** Apa itu inflasi?\n\n**Jawaban:** Kenaikan harga umum."
    )
