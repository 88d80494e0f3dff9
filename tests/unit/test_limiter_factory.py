"""limiter_from_url: the table of schemes and its errors."""

from __future__ import annotations

import pytest

from llmkit.core.limiter import limiter_from_url
from llmkit.core.limiter.memory import MemoryLimiter
from llmkit.core.limiter.redis import RedisLimiter
from llmkit.errors import ConfigError


async def test_memory_url_makes_a_memory_limiter() -> None:
    limiter = limiter_from_url("memory://?sweep_interval=5")
    assert isinstance(limiter, MemoryLimiter)
    assert limiter.sweep_interval == 5.0
    await limiter.close()


async def test_redis_url_makes_a_redis_limiter_without_connecting() -> None:
    limiter = limiter_from_url("redis://:secret@127.0.0.1:1/3?prefix=app&timeout=1&batch=false&lease=9")
    assert isinstance(limiter, RedisLimiter)
    assert (limiter.prefix, limiter.lease) == ("app", 9.0)
    assert limiter.client.connection_pool.connection_kwargs["db"] == 3
    await limiter.close()


def test_an_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"known schemes: memory://, redis://"):
        limiter_from_url("memcached://127.0.0.1")


@pytest.mark.parametrize("url", ["memory://?prefix=x", "redis://127.0.0.1/0?prefx=x"])
def test_an_unknown_parameter_lists_the_valid_ones(url: str) -> None:
    with pytest.raises(ConfigError, match="unknown parameter") as caught:
        limiter_from_url(url)
    assert "valid parameters" in str(caught.value)


@pytest.mark.parametrize("query", ["timeout=soon", "batch=maybe", "lease=0", "timeout=-1"])
def test_a_bad_parameter_value_is_a_config_error(query: str) -> None:
    with pytest.raises(ConfigError):
        limiter_from_url(f"redis://127.0.0.1/0?{query}")


def test_a_password_never_shows_in_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        limiter_from_url("redis://:hunter2@127.0.0.1/0?nope=1")
    assert "hunter2" not in str(caught.value)
