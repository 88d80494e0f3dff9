"""OpenAI's 400s for sampling fields out of range, on chat, legacy completions and Responses, through the
official openai client: the param names the field, the message is OpenAI's and says the range."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from tests.integration.test_simulate_app import make_settings, real_server

MESSAGES: Any = [{"role": "user", "content": "Halo, apa kabar?"}]
TOP_LOGPROBS_ALONE = "The 'top_logprobs' parameter is only allowed when 'logprobs' is enabled."


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with real_server(make_settings()) as made:
        yield made


@pytest.fixture
async def client(url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    made = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    try:
        yield made
    finally:
        await made.close()


def _error(raised: pytest.ExceptionInfo[openai.BadRequestError]) -> dict[str, Any]:
    body = raised.value.body
    assert raised.value.status_code == 400 and isinstance(body, dict)
    return body


CHAT_CASES = [
    (
        {"temperature": -1},
        "temperature",
        "-1 is less than the minimum of 0 - 'temperature' (temperature must be from 0 to 2)",
    ),
    ({"temperature": 2.5}, "temperature", "2.5 is greater than the maximum of 2 - 'temperature'"),
    (
        {"temperature": "hot"},
        "temperature",
        "Invalid type for 'temperature': expected a number from 0 to 2, but got a string",
    ),
    ({"top_p": 1.01}, "top_p", "1.01 is greater than the maximum of 1 - 'top_p' (top_p must be from 0 to 1)"),
    ({"top_p": -0.5}, "top_p", "-0.5 is less than the minimum of 0 - 'top_p'"),
    (
        {"presence_penalty": -2.5},
        "presence_penalty",
        "-2.5 is less than the minimum of -2 - 'presence_penalty'",
    ),
    (
        {"frequency_penalty": 3},
        "frequency_penalty",
        "3 is greater than the maximum of 2 - 'frequency_penalty' (frequency_penalty must be from -2 to 2)",
    ),
    ({"n": 0}, "n", "0 is less than the minimum of 1 - 'n' (n must be from 1 to 128)"),
    ({"n": 129}, "n", "129 is greater than the maximum of 128 - 'n'"),
    ({"top_logprobs": 3}, "top_logprobs", TOP_LOGPROBS_ALONE),
    ({"logprobs": False, "top_logprobs": 0}, "top_logprobs", TOP_LOGPROBS_ALONE),
    (
        {"logprobs": True, "top_logprobs": 21},
        "top_logprobs",
        "21 is greater than the maximum of 20 - 'top_logprobs'",
    ),
    (
        {"logprobs": True, "top_logprobs": -1},
        "top_logprobs",
        "-1 is less than the minimum of 0 - 'top_logprobs'",
    ),
    ({"logprobs": True, "top_logprobs": 2.0}, "top_logprobs", "top_logprobs must be an integer from 0 to 20"),
    ({"logprobs": "yes"}, "logprobs", "logprobs must be true or false"),
]


@pytest.mark.parametrize(("extra", "param", "message"), CHAT_CASES)
async def test_chat_refuses_out_of_range(
    client: openai.AsyncOpenAI, extra: dict[str, Any], param: str, message: str
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await client.chat.completions.create(model="m", messages=MESSAGES, extra_body=extra)
    error = _error(raised)
    assert raised.value.param == param and error["type"] == "invalid_request_error"
    assert message in error["message"], error


@pytest.mark.parametrize("stream", [False, True])
async def test_chat_refuses_before_streaming(client: openai.AsyncOpenAI, stream: bool) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await client.chat.completions.create(model="m", messages=MESSAGES, temperature=9, stream=stream)
    assert raised.value.param == "temperature"


async def test_chat_takes_the_bounds_and_null(client: openai.AsyncOpenAI) -> None:
    for extra in (
        {"temperature": 0, "top_p": 0, "presence_penalty": -2, "frequency_penalty": -2},
        {"temperature": 2, "top_p": 1, "presence_penalty": 2, "frequency_penalty": 2.0},
        {"temperature": None, "top_p": None, "n": None, "logprobs": None, "top_logprobs": None},
        {"logprobs": True, "top_logprobs": 0},
        {"logprobs": True, "top_logprobs": 20},
        {"logprobs": False},
    ):
        done = await client.chat.completions.create(model="m", messages=MESSAGES, extra_body=extra)
        assert done.choices[0].message.content, extra


@pytest.mark.parametrize(
    ("extra", "param", "message"),
    [
        ({"temperature": 2.01}, "temperature", "2.01 is greater than the maximum of 2 - 'temperature'"),
        ({"top_p": 2}, "top_p", "2 is greater than the maximum of 1 - 'top_p'"),
        (
            {"presence_penalty": -9},
            "presence_penalty",
            "-9 is less than the minimum of -2 - 'presence_penalty'",
        ),
        ({"n": 0}, "n", "0 is less than the minimum of 1 - 'n'"),
        (
            {"logprobs": 6},
            "logprobs",
            "6 is greater than the maximum of 5 - 'logprobs' (logprobs must be from 0 to 5)",
        ),
        ({"logprobs": -1}, "logprobs", "-1 is less than the minimum of 0 - 'logprobs'"),
        ({"logprobs": True}, "logprobs", "logprobs must be an integer from 0 to 5"),
    ],
)
async def test_completions_refuse_out_of_range(
    client: openai.AsyncOpenAI, extra: dict[str, Any], param: str, message: str
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await client.completions.create(model="m", prompt="Say hi", extra_body=extra)
    assert raised.value.param == param and message in _error(raised)["message"]


@pytest.mark.parametrize(
    ("extra", "param", "message"),
    [
        ({"temperature": -0.1}, "temperature", "-0.1 is less than the minimum of 0 - 'temperature'"),
        ({"top_p": 1.5}, "top_p", "1.5 is greater than the maximum of 1 - 'top_p'"),
        ({"top_logprobs": 21}, "top_logprobs", "21 is greater than the maximum of 20 - 'top_logprobs'"),
    ],
)
async def test_responses_refuse_out_of_range(
    client: openai.AsyncOpenAI, extra: dict[str, Any], param: str, message: str
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await client.responses.create(model="m", input="Halo", extra_body=extra)
    assert raised.value.param == param and message in _error(raised)["message"]


async def test_responses_echo_temperature_and_top_p(client: openai.AsyncOpenAI) -> None:
    done = await client.responses.create(model="m", input="Halo", temperature=0.3, top_p=0.9)
    assert (done.temperature, done.top_p) == (0.3, 0.9)
    default = await client.responses.create(model="m", input="Halo")
    assert (default.temperature, default.top_p) == (1.0, 1.0)


async def test_raw_error_body_is_openai_shaped(url: str) -> None:
    body = {"model": "m", "messages": MESSAGES, "top_p": 7}
    async with aiohttp.ClientSession() as session, session.post(f"{url}/v1/chat/completions", json=body) as r:
        assert r.status == 400
        assert await r.json() == {
            "error": {
                "message": "7 is greater than the maximum of 1 - 'top_p' (top_p must be from 0 to 1)",
                "type": "invalid_request_error",
                "param": "top_p",
                "code": "invalid_value",
            }
        }
