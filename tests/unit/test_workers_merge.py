"""core.workers: how several workers' /stats and /metrics become one answer."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from llmkit.core.figures import summable
from llmkit.core.workers import merge_metrics, merge_stats


def test_counts_add_up_and_ratios_do_not() -> None:
    parts = [
        {
            "http": {"requests": 10, "errors_5xx": 1, "in_flight": 0},
            "uptime": 50,
            "pid": 11,
            "latency_p50": 2.0,
        },
        {
            "http": {"requests": 30, "errors_5xx": 0, "in_flight": 2},
            "uptime": 70,
            "pid": 12,
            "latency_p50": 4.0,
        },
    ]
    merged = merge_stats(parts)
    assert merged["http"] == {"requests": 40, "errors_5xx": 1, "in_flight": 2}
    assert merged["uptime"] == 70  # the longest-running worker
    assert merged["pid"] == 11  # a process's own figure: the first part's
    assert merged["latency_p50"] == 3.0  # a percentile cannot be summed: the workers' mean


def test_a_hit_rate_is_recomputed_from_the_summed_hits_and_misses() -> None:
    parts = [
        {"cache": {"hits": 9, "misses": 1, "hit_rate": 0.9, "backend": "memory", "enabled": True}},
        {"cache": {"hits": 0, "misses": 10, "hit_rate": 0.0, "backend": "memory", "enabled": True}},
    ]
    assert merge_stats(parts)["cache"] == {
        "hits": 9,
        "misses": 11,
        "hit_rate": 0.45,
        "backend": "memory",
        "enabled": True,
    }


def test_keys_of_any_worker_are_kept_and_text_comes_from_the_first() -> None:
    merged = merge_stats([{"a": 1, "name": "x"}, {"a": 2, "b": {"c": 3}, "name": "y"}])
    assert merged == {"a": 3, "name": "x", "b": {"c": 3}}


def test_settings_are_not_summed_and_lists_merge_item_by_item() -> None:
    parts = [
        {"config": {"max_concurrent": 32}, "upstreams": [{"url": "a", "calls": 1}, {"url": "b", "calls": 2}]},
        {"config": {"max_concurrent": 32}, "upstreams": [{"url": "a", "calls": 3}, {"url": "b", "calls": 4}]},
    ]
    assert merge_stats(parts) == {
        "config": {"max_concurrent": 32},
        "upstreams": [{"url": "a", "calls": 4}, {"url": "b", "calls": 6}],
    }
    assert merge_stats([{"tags": ["x"]}, {"tags": ["x", "y"]}]) == {"tags": ["x"]}


def test_rate_limited_is_a_count() -> None:
    assert summable("orchestrate.rate_limited")
    assert not summable("cache.hit_rate") and not summable("memory_usage_percent")
    assert merge_stats([{"rate_limited": 2}, {"rate_limited": 3}]) == {"rate_limited": 5}


METRICS = """# HELP llmkit_http_requests_total Requests answered.
# TYPE llmkit_http_requests_total counter
llmkit_http_requests_total{route="/a",method="GET",status="200"} %d
# HELP llmkit_http_in_flight Requests in flight.
# TYPE llmkit_http_in_flight gauge
llmkit_http_in_flight %d
"""


def test_metrics_of_each_worker_carry_its_label() -> None:
    body = merge_metrics([(0, METRICS % (5, 1)), (1, METRICS % (7, 0))])
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    requests = {s.labels["worker"]: s.value for s in families["llmkit_http_requests"].samples}
    assert requests == {"0": 5.0, "1": 7.0}
    assert families["llmkit_http_requests"].type == "counter"
    assert all(s.labels["route"] == "/a" for s in families["llmkit_http_requests"].samples)
    assert {s.labels["worker"]: s.value for s in families["llmkit_http_in_flight"].samples} == {
        "0": 1.0,
        "1": 0.0,
    }
    assert body.count(b"# TYPE llmkit_http_requests_total counter") == 1
