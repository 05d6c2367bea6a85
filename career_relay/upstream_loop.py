"""Whether the upstream is the gateway itself: a configuration that would send every
message back to the gateway (a mail loop) does not start.  At run time the hop count
(``gateway.message.MAX_HOPS``, RFC 5321 6.3) ends a loop this cannot see: an upstream
that routes the mail back by another name.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from career_relay.settings import Settings


def upstream_is_gateway(settings: Settings, host: str, port: int) -> bool:
    """Whether the upstream is the gateway's own listener: the same port, and the same
    host as written, "localhost" for a loopback listener (or the other way round), or,
    when the gateway listens on every address, a loopback address or its own
    ``gateway.hostname``.  Another host on the same port (25) is the usual case, and fine,
    as is the gateway's host name when it listens on loopback only (Postfix on the public
    address of the same machine).  ``host`` and ``port``: gateway.listen's, parsed."""
    if port != settings.upstream.port:
        return False
    upstream, host = _host_key(settings.upstream.host), _host_key(host)
    if upstream == host:
        return True
    other = host if upstream == "localhost" else upstream if host == "localhost" else ""
    if other == "127.0.0.1" or (other == "::1" and upstream == "localhost"):
        return True  # (a "localhost" listener binds IPv4 only)
    everywhere = {"0.0.0.0": (4,), "::": (4, 6)}.get(host, ())
    return bool(everywhere) and (upstream == _host_key(settings.gateway.hostname)
                                 or any(_loopback_host(upstream, v) for v in everywhere))


def _host_key(host: str) -> str:
    """A host as compared: lower case, no brackets or final dot, an address in its one
    written form (an IPv4-mapped IPv6 address as the IPv4 address)."""
    host = host.strip("[]").rstrip(".").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def _loopback_host(host: str, version: int) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.version == version and address.is_loopback
