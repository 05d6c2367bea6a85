"""Who a client is, for counting: one key per address, one per IPv6 /64.

Throttles on both sides (SMTP AUTH in ``gateway.throttle``, admin logins in
``consent_site.login_throttle``) count failures per client.  An IPv6 host
usually owns a whole /64, and an IPv4 client may arrive as ``::ffff:a.b.c.d``.
"""

from __future__ import annotations

import ipaddress


def client_key(address: str) -> str:
    """The address (IPv4, or IPv4-mapped IPv6) or its IPv6 /64; anything else as given."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
