"""Which URLs emotionq may call out to, and calling them at the address that was checked.

No private, loopback, link-local, reserved or metadata addresses unless the operator allows
their networks (``EMOTIONQ_WEBHOOK_ALLOW_NETWORKS``). A host name is resolved once per request,
every address it resolves to is checked, and the connection goes to a checked address (``pin``):
resolving again when connecting would let DNS answer differently the second time (rebinding)
and reach an address that was never checked. The request keeps the URL's host in its ``Host``
header and as its TLS server name, so virtual hosts and certificates work as usual.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from emotionq.errors import InvalidRequest

MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Target:
    """A URL, and the checked address to connect to for it."""

    url: str
    host: str  # as written in the URL (the Host header and the TLS server name)
    address: str  # the IP address to connect to, checked

    def pinned(self) -> tuple[str, dict[str, str], dict]:
        """(the URL with the address for its host, the ``Host`` header, httpx request extensions)."""
        parts = urlsplit(self.url)
        literal = f"[{self.address}]" if ":" in self.address else self.address
        netloc = literal if parts.port is None else f"{literal}:{parts.port}"
        host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        if ":" in parts.hostname:  # an IPv6 literal in the URL itself
            host_header = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
        extensions = {"sni_hostname": self.host} if parts.scheme == "https" else {}
        return urlunsplit(parts._replace(netloc=netloc)), {"Host": host_header}, extensions


def check(url: str, *, allow: list, field: str = "webhook_url", schemes: tuple[str, ...] = ("http", "https"),
          error: type[InvalidRequest] | Callable[..., Exception] = InvalidRequest,
          setting: str = "EMOTIONQ_WEBHOOK_ALLOW_NETWORKS") -> Target:
    """The Target for ``url``; ``error`` (InvalidRequest by default) with code ``<field>_invalid``,
    ``<field>_unreachable`` (its host does not resolve) or ``<field>_refused``, unless it is a URL of
    one of ``schemes`` whose host resolves only to public addresses (or to allowed networks)."""
    parts = urlsplit(url)
    if len(url) > MAX_URL_LENGTH or parts.scheme not in schemes or not parts.hostname:
        raise error(f"{field} must be an absolute {' or '.join(f'{s}://' for s in schemes)} URL",
                    code=f"{field}_invalid")
    if parts.username or parts.password:
        raise error(f"{field} must not carry credentials", code=f"{field}_invalid")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
        infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError, UnicodeError) as exc:
        code = f"{field}_invalid" if field == "webhook_url" else f"{field}_unreachable"
        raise error(f"{field} host {parts.hostname!r} does not resolve: {exc}", code=code) from exc
    addresses = []
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if getattr(address, "ipv4_mapped", None):
            address = address.ipv4_mapped
        if not allowed(address, allow):
            raise error(
                f"{field} resolves to {address}, a private, loopback, link-local or reserved address; "
                f"use a public URL (operators can allow networks with {setting})",
                code=f"{field}_refused")
        addresses.append(str(address))
    return Target(url=url, host=parts.hostname, address=addresses[0])


def allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow: list) -> bool:
    """Whether emotionq may connect to ``address``: a public one, or one in an allowed network."""
    if getattr(address, "ipv4_mapped", None):
        address = address.ipv4_mapped
    return any(address in net for net in allow) or (address.is_global and not address.is_multicast)
