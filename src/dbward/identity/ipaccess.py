"""Console and API address rules: allowed ranges for everyone, per user, and for admin pages.

The three lists are checked independently and all must allow the address (an empty list
allows any). They are checked on every request, before and after two-factor sign-in, so
neither can stand in for the other.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable


def allowed(address: str, cidrs: Iterable[str]) -> bool:
    nets = list(cidrs)
    if not nets:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for net in nets:
        n = ipaddress.ip_network(net, strict=False)
        if ip.version == n.version and ip in n:
            return True
        if ip.version == 6 and ip.ipv4_mapped is not None and n.version == 4 and ip.ipv4_mapped in n:
            return True
    return False


def valid_cidr(text: str) -> str:
    """The normalised range, or ValueError with a sentence."""
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address or CIDR range") from None
