"""Client sources, as the rate limits and the brute-force throttle count them."""
from __future__ import annotations

import functools
import ipaddress

from flask import current_app


def client_source(address: str | None) -> str:
    """The source `address` (a request's client address, or None) counts as, under this app's
    IPV6_SOURCE_PREFIX."""
    return source_of(address or "unknown", current_app.config["IPV6_SOURCE_PREFIX"])


@functools.lru_cache(maxsize=4096)
def source_of(address: str, v6_prefix: int) -> str:
    """The source a client address counts as: an IPv4 address itself; an IPv6 address its /`v6_prefix` network;
    an IPv4-mapped IPv6 address (a dual-stack socket's view of an IPv4 client) its IPv4 address.

    An ISP or a host hands one subscriber a whole /64 (RFC 6177), and every address in it is theirs to use:
    counting IPv6 addresses one by one would give a single client 2**64 fresh rate limits and throttle counts.
    Anything that is not an address (a hop a proxy could not name) is counted as written.
    """
    if ":" not in address:  # IPv4, or not an address at all: nothing to widen
        return address
    try:
        ip = ipaddress.IPv6Address(address.split("%", 1)[0])  # a link-local zone names an interface, not a host
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    if v6_prefix >= 128:
        return str(ip)
    network = ipaddress.IPv6Network((int(ip) >> (128 - v6_prefix) << (128 - v6_prefix), v6_prefix))
    return str(network)
