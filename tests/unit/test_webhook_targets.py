"""Webhook targets: http(s) only; link-local and metadata never, private networks only when allowed."""

from __future__ import annotations

import pytest

from llmkit.platform.webhooks.targets import GuardedResolver, UnsafeTarget, check_target, check_url


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hook",
        "http://127.0.0.1:8080/hook",
        "http://[::1]:9000/",
        "http://localhost/hook",
        "https://93.184.216.34/x",
    ],
)
def test_public_and_loopback_urls_pass(url: str) -> None:
    check_url(url, allow_private=False)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("example.com/hook", "http:// or https://"),
        ("http:///path", "no host"),
        ("http://user:pw@example.com/", "credentials"),
        ("http://example.com:99999/", "not a URL"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://169.254.10.1/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("http://100.100.100.200/", "metadata"),
        ("http://[::ffff:169.254.169.254]/", "metadata"),
        ("http://0.0.0.0/", "not a unicast"),
        ("http://224.0.0.1/", "not a unicast"),
        ("http://10.0.0.5/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://172.16.0.1/", "private"),
        ("http://100.64.0.1/", "private"),
        ("http://[fd12::1]/", "private"),
        ("https://" + "a" * 2050, "at most"),
    ],
)
def test_refused_urls_say_why(url: str, reason: str) -> None:
    with pytest.raises(UnsafeTarget, match=reason):
        check_url(url, allow_private=False)


def test_private_networks_pass_when_allowed_but_metadata_never() -> None:
    check_url("http://10.0.0.5/", allow_private=True)
    check_url("http://[fd12::1]/", allow_private=True)
    for url in ("http://169.254.169.254/", "http://[fd00:ec2::254]/", "http://100.100.100.200/"):
        with pytest.raises(UnsafeTarget):
            check_url(url, allow_private=True)


async def test_a_name_is_checked_by_what_it_resolves_to() -> None:
    await check_target("http://localhost:1/", allow_private=False)
    with pytest.raises(UnsafeTarget, match="does not resolve"):
        await check_target("http://no-such-host.invalid/", allow_private=False)


async def test_the_delivery_resolver_keeps_only_allowed_addresses() -> None:
    resolver = GuardedResolver(allow_private=False)
    try:
        found = await resolver.resolve("localhost", 80)
        assert found and all(r["host"] in ("127.0.0.1", "::1") for r in found)
    finally:
        await resolver.close()
