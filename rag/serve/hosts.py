"""Which `Host` headers the server answers, and whose `X-Forwarded-For` it believes.

A token-less server on 127.0.0.1 is reachable from any web page the student opens, by
DNS rebinding (evil.example resolving to 127.0.0.1): the browser then sends
`Host: evil.example`. So a server bound to a loopback address answers only its
loopback names unless [serve] allowed_hosts says otherwise.
"""
from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(bind_host: str) -> bool:
    """Whether `bind_host` (rag serve's --host) is reachable from this machine only."""
    if bind_host == "localhost" or bind_host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(bind_host.strip("[]")).is_loopback
    except ValueError:
        return False                     # "" or a name: all interfaces, or unknown


def effective_allowed_hosts(configured, bind_host: str) -> tuple[str, ...]:
    """The configured names, else the loopback names when bound to loopback, else any."""
    names = tuple(h.strip().lower() for h in configured or () if h.strip())
    if names:
        return names
    return LOOPBACK_NAMES if is_loopback(bind_host) else ("*",)


def host_name(header: str) -> str:
    """The name part of a Host header: `[::1]:8000` -> `::1`, `Example:80` -> `example`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    if header.count(":") == 1:
        header = header.partition(":")[0]
    return header.rstrip(".")


def host_allowed(header: str | None, allowed: tuple[str, ...]) -> bool:
    if "*" in allowed:
        return True
    if not header:
        return False                     # HTTP/1.1 requires it; browsers always send it
    name = host_name(header)
    for pattern in allowed:
        if pattern.startswith("."):
            if name == pattern[1:] or name.endswith(pattern):
                return True
        elif name == pattern.strip("[]"):
            return True
    return False


def forwarded_allow_ips(configured) -> list[str]:
    """[serve] forwarded_allow_ips as uvicorn takes it, each entry checked."""
    out = []
    for entry in configured or ():
        entry = entry.strip()
        if not entry:
            continue
        if entry != "*":
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"[serve] forwarded_allow_ips: {entry!r} is not an address "
                                 "or a network") from None
        out.append(entry)
    return out
