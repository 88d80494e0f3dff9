"""Answer lengths (ignore_eos, min_tokens, simulate.output_tokens) and the scheduler, without a server."""

from __future__ import annotations

import asyncio
import random
import statistics
from pathlib import Path

import pytest

from llmkit.core.http import ApiError
from llmkit.core.tokenizer import tokenize
from llmkit.errors import ConfigError
from llmkit.settings import SimulateSettings, load_settings
from llmkit.simulate.lengths import LOREM, OutputLengths, Want, fit_text, lorem_text, output_lengths, want_of
from llmkit.simulate.scheduler import ClientGone, Scheduler
from llmkit.simulate.sources.file import shipped_responses_dir

ANSWERS_DIR = shipped_responses_dir()


def _answers() -> list[str]:
    assert ANSWERS_DIR is not None
    texts = [p.read_text() for p in sorted(Path(ANSWERS_DIR).glob("*.md"))[:12]]
    return [*texts, "", "short", "word" * 30, "a   b\n\n  c's", "日本語のテキスト ✓ 🙏😀"]


@pytest.mark.parametrize("goal", [0, 1, 2, 7, 64, 333, 2000])
def test_exact_lengths_retokenize_to_themselves(goal: int) -> None:
    for text in _answers():
        cut = fit_text(text, (), Want(goal, 0, goal))
        assert len(cut.tokens) == goal
        assert "".join(cut.tokens) == cut.text
        # What a client counts in the text it received is what usage says.
        assert len(tokenize(cut.text)) == goal
        assert cut.finish_reason == "length"


def test_at_least_lengthens_short_answers_and_keeps_long_ones() -> None:
    text = "Hello there, general Kenobi."
    natural = len(tokenize(text))
    longer = fit_text(text, (), Want(None, 50, None))
    assert len(tokenize(longer.text)) == 50 and longer.finish_reason == "stop"
    assert longer.text.startswith(text + "\n\n" + text)
    same = fit_text(text, (), Want(None, natural - 1, None))
    assert same.text == text
    # max_tokens still wins over min_tokens' continuation.
    capped = fit_text(text, (), Want(None, 50, 20))
    assert len(tokenize(capped.text)) == 20 and capped.finish_reason == "length"


def test_stop_cuts_the_answer_not_the_continuation() -> None:
    cut = fit_text("one two STOP three", ("STOP",), Want(30, 0, 30))
    assert cut.text.startswith("one two \n\none two STOP three")
    assert len(tokenize(cut.text)) == 30


def test_want_of_is_none_for_requests_that_ask_nothing() -> None:
    rng = random.Random(1)
    assert want_of(100, False, None, None, False, rng) is None
    assert want_of(None, False, None, None, False, rng) is None
    assert want_of(100, False, None, OutputLengths(50, 5), False, rng) is None
    assert want_of(100, True, None, None, False, rng) == Want(100, 0, 100)
    assert want_of(100, False, None, None, True, rng) == Want(100, 0, 100)
    drawn = want_of(None, False, 60, OutputLengths(10, 0), False, rng)
    assert drawn == Want(60, 60, None, "stop")


def test_the_distribution_has_its_mean_and_stdev() -> None:
    rng = random.Random(7)
    lengths = OutputLengths(200, 40)
    draws = [lengths.draw(rng) for _ in range(4000)]
    assert abs(statistics.fmean(draws) - 200) < 4
    assert abs(statistics.stdev(draws) - 40) < 3
    # Truncated at 1: a distribution centred near zero never draws less.
    assert min(OutputLengths(1, 50).draw(rng) for _ in range(500)) >= 1


@pytest.mark.parametrize(
    "raw", ["abc", "100,", ",5", "0,5", "10,-1", "1,2,3", "nan,1", "inf", "100;20", "10,x"]
)
def test_bad_output_tokens_is_a_config_error_naming_the_setting(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"simulate\.output_tokens"):
        SimulateSettings(output_tokens=raw)


def test_output_tokens_parses() -> None:
    assert output_lengths(SimulateSettings()) is None
    assert output_lengths(SimulateSettings(output_tokens=" 120 , 30 ")) == OutputLengths(120, 30)
    assert output_lengths(SimulateSettings(output_tokens="64")) == OutputLengths(64, 0)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ANSWER_MODE", "fuzzy", "simulate.answer_mode must be one of match, echo, random, lorem"),
        ("MAX_NUM_SEQS", "-1", "simulate.max_num_seqs must be >= 0"),
        ("MAX_WAITING", "-3", "simulate.max_waiting must be >= 0"),
        ("TIME_FACTOR_UNDER_LOAD", "0.5", "simulate.time_factor_under_load must be >= 1"),
        ("OUTPUT_TOKENS", "lots", "simulate.output_tokens must be"),
    ],
)
def test_bad_settings_by_env_are_config_errors(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_settings(None, env={f"LLMKIT_SIMULATE_{name}": value})


def test_settings_by_env() -> None:
    env = {
        "LLMKIT_SIMULATE_ANSWER_MODE": "echo",
        "LLMKIT_SIMULATE_OUTPUT_TOKENS": "100,10",
        "LLMKIT_SIMULATE_MAX_NUM_SEQS": "4",
        "LLMKIT_SIMULATE_MAX_WAITING": "8",
        "LLMKIT_SIMULATE_TIME_FACTOR_UNDER_LOAD": "2.5",
    }
    sim = load_settings(None, env=env).simulate
    assert (sim.answer_mode, sim.output_tokens, sim.max_num_seqs) == ("echo", "100,10", 4)
    assert (sim.max_waiting, sim.time_factor_under_load) == (8, 2.5)


def test_lorem_is_lorem() -> None:
    text = lorem_text(random.Random(3))
    assert text[0].isupper() and len(text.split()) == 200
    words = set(text.lower().replace(",", "").replace(".", "").split())
    assert words <= set(LOREM.lower().replace(",", "").replace(".", "").split())
    assert lorem_text(random.Random(3)) == text


def test_load_factor_is_llm_d_inference_sims() -> None:
    scheduler = Scheduler(8, 0, 3.0, 1.0)
    factors = []
    for _ in range(8):
        assert scheduler.try_enter()
        factors.append(scheduler.load_factor())
    assert factors[0] == 1.0 and factors[-1] == pytest.approx(3.0)
    assert factors[3] == pytest.approx(1 + 2.0 * 3 / 7)
    assert not scheduler.try_enter()
    # One sequence at most: no factor at all, as llm-d-inference-sim does.
    single = Scheduler(1, 0, 10.0, 1.0)
    assert single.try_enter() and single.load_factor() == 1.0


async def test_waiting_requests_get_seats_in_arrival_order() -> None:
    scheduler = Scheduler(1, 0, 1.0, 1.0)
    await scheduler.enter()
    order: list[int] = []

    async def wait(i: int) -> None:
        await scheduler.enter()
        order.append(i)

    tasks = [asyncio.create_task(wait(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert (scheduler.running, scheduler.waiting) == (1, 3)
    tasks[1].cancel()
    await asyncio.sleep(0)
    assert scheduler.waiting == 2
    for _ in range(2):
        scheduler.leave()
        await asyncio.sleep(0)
    assert order == [0, 2]
    assert (scheduler.running, scheduler.waiting) == (1, 0)
    scheduler.leave()
    assert scheduler.running == 0


async def test_a_full_waiting_queue_answers_429_with_retry_after() -> None:
    scheduler = Scheduler(1, 1, 1.0, 1.0)
    await scheduler.enter()
    waiter = asyncio.create_task(scheduler.enter())
    await asyncio.sleep(0)
    with pytest.raises(ApiError) as caught:
        await scheduler.enter()
    assert caught.value.status == 429 and caught.value.headers["Retry-After"] == "1"
    assert "simulate.max_waiting 1" in caught.value.message
    assert scheduler.rejected == 1
    scheduler.leave()
    await waiter


async def test_a_waiter_whose_client_left_is_skipped() -> None:
    scheduler = Scheduler(1, 0, 1.0, 1.0)
    await scheduler.enter()
    gone = asyncio.create_task(scheduler.enter(lambda: True))
    stays = asyncio.create_task(scheduler.enter())
    await asyncio.sleep(0)
    scheduler.leave()
    with pytest.raises(ClientGone):
        await gone
    await stays
    assert (scheduler.running, scheduler.waiting, scheduler.abandoned) == (1, 0, 1)
