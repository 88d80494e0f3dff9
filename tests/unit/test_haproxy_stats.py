"""core.haproxy_stats: the servers behind each backend, read from HAProxy's stats CSV."""

from __future__ import annotations

from llmkit.core.haproxy_stats import balanced_servers, csv_url

CSV = (
    "# pxname,svname,qcur,status,check_status,addr,\n"
    "gateway,FRONTEND,0,OPEN,,,\n"
    "gateway,gateway-1,0,UP,L7OK,127.0.0.1:41001,\n"
    "gateway,gateway-2,0,DOWN,L7STS,127.0.0.1:41002,\n"
    "gateway,BACKEND,0,UP,,,\n"
    "simulate,simulate-1,0,UP,,127.0.0.1:41011,\n"
    "stats,FRONTEND,0,OPEN,,,\n"
)


def test_each_server_of_each_backend_with_its_status() -> None:
    servers = balanced_servers(CSV)
    assert [(s.backend, s.name, s.url, s.status) for s in servers] == [
        ("gateway", "gateway-1", "http://127.0.0.1:41001", "UP"),
        ("gateway", "gateway-2", "http://127.0.0.1:41002", "DOWN"),
        ("simulate", "simulate-1", "http://127.0.0.1:41011", "UP"),
    ]
    assert [s.passing for s in servers] == [True, False, False]  # simulate-1: not checked yet


def test_the_csv_export_of_a_stats_page() -> None:
    assert csv_url("http://127.0.0.1:8404/stats") == "http://127.0.0.1:8404/stats;csv"
    assert csv_url("http://127.0.0.1:8404/stats/") == "http://127.0.0.1:8404/stats;csv"
    assert csv_url("http://h/stats;csv") == "http://h/stats;csv"
