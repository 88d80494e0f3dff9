"""Short answers to the questions of a question-answer set, asked before another source (markdown files)."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

from llmkit.errors import ConfigError
from llmkit.simulate.sources.base import Source
from llmkit.simulate.sources.qa_file import QaRow, read_qa_jsonl
from llmkit.simulate.sources.questions import DEFAULT_THRESHOLD, QuestionMatcher

log = logging.getLogger(__name__)

# The questions shipped with llmkit (English and Indonesian), one file per language.
SHIPPED_QA = Path(__file__).resolve().parent.parent / "data" / "qa"
SETTING = "simulate.qa_path"


def qa_files(path: Path) -> list[Path]:
    """`path` if it is a file, else the sorted, not hidden `*.jsonl` files in it; ConfigError if none."""
    if path.is_file():
        return [path]
    if not path.exists():
        raise ConfigError(
            f"{SETTING}: {path} does not exist; give a .jsonl file of {{pertanyaan, jawaban}} rows or a "
            'directory of them ("" is the set shipped with llmkit)'
        )
    if not path.is_dir():
        raise ConfigError(f"{SETTING}: {path} is neither a file nor a directory")
    try:
        files = sorted(p for p in path.glob("*.jsonl") if not p.name.startswith(".") and p.is_file())
    except OSError as exc:
        raise ConfigError(f"{SETTING}: cannot list {path} ({exc.strerror or exc})") from exc
    if not files:
        raise ConfigError(f"{SETTING}: {path} has no .jsonl files")
    return files


def load_qa(path: Path) -> list[QaRow]:
    """The rows of a JSONL file or of every `*.jsonl` in a directory; ConfigError naming file:line if bad."""
    rows: list[QaRow] = []
    seen: dict[str, Path] = {}
    for file in qa_files(path):
        for row in read_qa_jsonl(file):
            if row.qa_id in seen:
                raise ConfigError(f"{file}: qa_id {row.qa_id} is already used in {seen[row.qa_id]}")
            seen[row.qa_id] = file
            rows.append(row)
    if not rows:
        raise ConfigError(f"{SETTING}: {path} has no question rows")
    return rows


def resolve_qa_path(configured: str) -> Path:
    """The file or directory simulate.qa_path names; "" is the set shipped with llmkit."""
    return SHIPPED_QA if configured == "" else Path(configured)


class QaSource:
    """Answers a prompt that asks one of the set's questions with its answer; else `fallback` answers.

    Wraps the markdown file source: it keeps the fallback's name and statistics (a 503 still names the
    files), adding its own under "qa".
    """

    def __init__(
        self, rows: list[QaRow], fallback: Source, *, threshold: float = DEFAULT_THRESHOLD, path: str = ""
    ) -> None:
        self.fallback = fallback
        self.name = fallback.name
        self.path = path
        self.answers = tuple(row.jawaban for row in rows)
        self.matcher = QuestionMatcher([row.pertanyaan for row in rows], threshold)
        self.matched = 0

    async def start(self) -> None:
        """Start the fallback source (the questions were loaded when this was built)."""
        await self.fallback.start()
        log.info("qa: %d questions from %s before the %s source", len(self.answers), self.path, self.name)

    async def answer(self, prompt: str, rng: random.Random) -> str:
        """The answer of the question `prompt` asks, or the fallback's answer when it asks none."""
        found = self.matcher.best(prompt)
        if found is None:
            return await self.fallback.answer(prompt, rng)
        self.matched += 1
        return self.answers[found]

    def stats(self) -> dict[str, Any]:
        """The fallback's counters, plus "qa": questions, answers given from them, the threshold."""
        qa = {
            "path": self.path,
            "questions": len(self.answers),
            "answers": self.matched,
            "threshold": self.matcher.threshold,
        }
        return {**self.fallback.stats(), "qa": qa}

    async def close(self) -> None:
        """Close the fallback source."""
        await self.fallback.close()
