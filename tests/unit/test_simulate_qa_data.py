"""The question-answer set shipped with llmkit, the bench's paraphrases of it, and simulate.qa_path files."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from llmkit.errors import ConfigError
from llmkit.settings import SimulateSettings
from llmkit.simulate.sources.matching import language_of, plain_words
from llmkit.simulate.sources.qa import SHIPPED_QA, load_qa, qa_files
from llmkit.simulate.sources.qa_file import read_qa_jsonl
from llmkit.simulate.sources.questions import DEFAULT_THRESHOLD, QuestionMatcher

BENCH_DATA = Path(__file__).resolve().parents[2] / "bench" / "data"
ROWS = load_qa(SHIPPED_QA)


def test_the_shipped_set_has_several_hundred_rows_in_both_languages() -> None:
    assert [p.name for p in qa_files(SHIPPED_QA)] == ["en.jsonl", "id.jsonl"]
    assert len(ROWS) >= 400
    for path in qa_files(SHIPPED_QA):
        rows = read_qa_jsonl(path)
        assert len(rows) >= 0.4 * len(ROWS), path
        # Each file is the language it is named for (greetings such as "Halo" have no function word).
        assert {language_of(plain_words(r.pertanyaan)) for r in rows} == {path.stem, None}


def test_no_duplicate_ids_or_questions_and_short_answers() -> None:
    assert len({r.qa_id for r in ROWS}) == len(ROWS)
    normalised = [" ".join(plain_words(r.pertanyaan)) for r in ROWS]
    assert len(set(normalised)) == len(ROWS)
    assert all(r.pertanyaan.strip() == r.pertanyaan and r.jawaban.strip() == r.jawaban for r in ROWS)
    assert max(len(r.jawaban) for r in ROWS) <= 300


def test_the_settings_default_threshold_is_the_matchers() -> None:
    assert SimulateSettings().qa_threshold == DEFAULT_THRESHOLD


def test_every_question_asked_as_written_gets_its_own_answer() -> None:
    matcher = QuestionMatcher([r.pertanyaan for r in ROWS])
    wrong = [r.pertanyaan for i, r in enumerate(ROWS) if matcher.best(r.pertanyaan) != i]
    assert wrong == []


@pytest.mark.parametrize("name", ["qa_paraphrases.jsonl", "qa_paraphrases_dev.jsonl"])
def test_the_bench_paraphrases_label_shipped_rows(name: str) -> None:
    examples = [orjson.loads(line) for line in (BENCH_DATA / name).read_text(encoding="utf-8").splitlines()]
    by_id = {r.qa_id: r for r in ROWS}
    questions = {" ".join(plain_words(r.pertanyaan)) for r in ROWS}
    for ex in examples:
        assert set(ex) == {"prompt", "lang", "qa_id", "question"} and ex["lang"] in ("en", "id")
        if ex["qa_id"] is not None:
            assert by_id[ex["qa_id"]].pertanyaan == ex["question"]
        # Held out: a paraphrase, never a shipped question as written.
        assert " ".join(plain_words(ex["prompt"])) not in questions, ex["prompt"]
    labelled = [ex for ex in examples if ex["qa_id"]]
    assert {ex["lang"] for ex in labelled} == {"en", "id"}
    assert sum(ex["qa_id"] is None for ex in examples) >= 10


def test_a_directory_loads_its_jsonl_files_in_order(tmp_path: Path) -> None:
    (tmp_path / "b.jsonl").write_text('{"pertanyaan": "Second?", "jawaban": "Two."}\n', encoding="utf-8")
    (tmp_path / "a.jsonl").write_text('{"pertanyaan": "First?", "jawaban": "One."}\n', encoding="utf-8")
    (tmp_path / ".hidden.jsonl").write_text("not json\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not json\n", encoding="utf-8")
    assert [r.pertanyaan for r in load_qa(tmp_path)] == ["First?", "Second?"]
    assert [r.jawaban for r in load_qa(tmp_path / "b.jsonl")] == ["Two."]


def test_bad_qa_paths_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"simulate\.qa_path: .*missing does not exist"):
        load_qa(tmp_path / "missing")
    with pytest.raises(ConfigError, match=r"simulate\.qa_path: .* has no \.jsonl files"):
        load_qa(tmp_path)
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="has no question rows"):
        load_qa(tmp_path / "empty.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"pertanyaan": "Q?", "jawaban": "A."}\n{"pertanyaan": "Q2?"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.jsonl:2: jawaban must be a string; got missing"):
        load_qa(bad)


def test_a_qa_id_used_in_two_files_is_refused(tmp_path: Path) -> None:
    row = '{"qa_id": "8f900181-daa1-5b4c-8f24-9b4ab41055b2", "pertanyaan": "Q?", "jawaban": "A."}\n'
    (tmp_path / "a.jsonl").write_text(row, encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(row, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"b\.jsonl: qa_id 8f900181-.* is already used in .*a\.jsonl"):
        load_qa(tmp_path)
