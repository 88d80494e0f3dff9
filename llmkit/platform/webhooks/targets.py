"""Where a webhook may point: http(s) only, never a link-local or cloud metadata address, a private
network only with `gateway.webhooks_allow_private`; loopback is allowed (local receivers, tests).

Checked when a webhook is created (the URL, and its host's addresses) and on every delivery, where
`GuardedResolver` is the delivery session's resolver: the addresses it connects to are the ones checked,
so a name that resolves elsewhere after the check (DNS rebinding) reaches nothing refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SCHEMES = ("http", "https")
MAX_URL = 2048
# Cloud instance metadata (AWS, GCP, Azure, Oracle: 169.254.169.254 is link-local anyway; AWS's IPv6 one;
# Alibaba's): refused even on private networks, they hand out credentials.
METADATA = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"))
ALLOW_SETTING = "gateway.webhooks_allow_private"


class UnsafeTarget(ValueError):
    """A webhook URL (or an address its host resolves to) that deliveries must never reach."""


def address_refusal(ip: IPAddress, allow_private: bool) -> str | None:
    """Why deliveries may not go to `ip`, or None when they may."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA:
        return f"{ip} is a cloud metadata address"
    if ip.is_loopback:
        return None
    if ip.is_link_local:
        return f"{ip} is a link-local address"
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return f"{ip} is not a unicast host address"
    if ip.is_global:
        return None
    if allow_private:
        return None
    return f"{ip} is a private address (set {ALLOW_SETTING} to allow private networks)"


def check_url(url: str, allow_private: bool) -> str:
    """The URL's host, or UnsafeTarget saying what is wrong: scheme, form, or an address literal refused."""
    if len(url) > MAX_URL:
        raise UnsafeTarget(f"at most {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeTarget(f"not a URL: {exc}") from None
    if parts.scheme.lower() not in SCHEMES:
        raise UnsafeTarget(f"must be an http:// or https:// URL, not {parts.scheme or 'no'} scheme")
    host = parts.hostname
    if not host:
        raise UnsafeTarget("has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeTarget("must not carry credentials (user:password@); sign with the webhook's secret")
    if port == 0:
        raise UnsafeTarget("port 0 is no port")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    reason = address_refusal(ip, allow_private)
    if reason is not None:
        raise UnsafeTarget(reason)
    return host


async def check_target(url: str, allow_private: bool) -> None:
    """check_url, then every address the host resolves to (UnsafeTarget when one is refused or none is
    found)."""
    host = check_url(url, allow_private)
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UnsafeTarget(f"host {host!r} does not resolve: {exc.strerror or exc}") from None
    for info in infos:
        reason = address_refusal(ipaddress.ip_address(str(info[4][0]).split("%")[0]), allow_private)
        if reason is not None:
            raise UnsafeTarget(f"host {host!r} resolves to {reason}")


class GuardedResolver(AbstractResolver):
    """aiohttp's threaded resolver, keeping only addresses deliveries may reach (OSError when none is)."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        kept, refused = [], []
        for result in found:
            reason = address_refusal(ipaddress.ip_address(result["host"].split("%")[0]), self.allow_private)
            if reason is None:
                kept.append(result)
            else:
                refused.append(reason)
        if not kept:
            raise OSError(f"webhook host {host!r} resolves to no allowed address: {'; '.join(refused)}")
        return kept

    async def close(self) -> None:
        await self._inner.close()
