"""Which callback URLs emotionq may call: no private, loopback, link-local or metadata
addresses unless the operator allows their networks (EMOTIONQ_WEBHOOK_ALLOW_NETWORKS)."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from emotionq.errors import InvalidRequest

MAX_URL_LENGTH = 2048


def parse_networks(spec: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(n.strip(), strict=False) for n in spec.split(",") if n.strip()]


def check(url: str, *, allow: list) -> None:
    """Raise InvalidRequest (code ``webhook_url_refused``) unless ``url`` is a public http(s) URL."""
    parts = urlsplit(url)
    if len(url) > MAX_URL_LENGTH or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("webhook_url must be an absolute http(s) URL", code="webhook_url_invalid")
    if parts.username or parts.password:
        raise InvalidRequest("webhook_url must not carry credentials; use the signature to authenticate",
                             code="webhook_url_invalid")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"webhook_url host {parts.hostname!r} does not resolve: {exc}",
                             code="webhook_url_invalid") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if getattr(address, "ipv4_mapped", None):
            address = address.ipv4_mapped
        if any(address in net for net in allow):
            continue
        if not address.is_global or address.is_multicast:
            raise InvalidRequest(
                f"webhook_url resolves to {address}, a private, loopback, link-local or reserved address; "
                "use a public URL (operators can allow networks with EMOTIONQ_WEBHOOK_ALLOW_NETWORKS)",
                code="webhook_url_refused")
