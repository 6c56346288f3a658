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
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

from emotionq.errors import InvalidRequest

MAX_URL_LENGTH = 2048
CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
BRACKETED = re.compile(r"\[[^\[\]]+\](?::[0-9]*)?")  # an IPv6 literal and its port: nothing else is bracketed
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


def parse(url: str, *, field: str = "webhook_url", schemes: tuple[str, ...] = ("http", "https"),
          error: type[InvalidRequest] | Callable[..., Exception] = InvalidRequest) -> SplitResult:
    """``url`` split, if it is an absolute URL of one of ``schemes`` with a host, a port in range and no
    credentials; ``error`` with code ``<field>_invalid`` otherwise. The one parser of user-given URLs:
    ``urlsplit`` and its ``hostname``/``port`` raise ValueError on malformed hosts and ports, and that
    must be the caller's 4xx, never a 500."""
    must = f"{field} must be an absolute {' or '.join(f'{s}://' for s in schemes)} URL"
    if not isinstance(url, str) or len(url) > MAX_URL_LENGTH:
        raise error(f"{must} of at most {MAX_URL_LENGTH} characters", code=f"{field}_invalid")
    if CONTROL_OR_SPACE.search(url):
        raise error(f"{must}, without spaces or control characters (percent-encode them)", code=f"{field}_invalid")
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # an unclosed or non-address bracketed host, a port out of range
        raise error(f"{must}; {url[:200]!r} is malformed: {exc}", code=f"{field}_invalid") from None
    if parts.scheme not in schemes or not host:
        raise error(must, code=f"{field}_invalid")
    host_port = parts.netloc.rpartition("@")[2]
    if ("[" in host_port or "]" in host_port) and not BRACKETED.fullmatch(host_port):
        raise error(f"{must}; {host_port[:100]!r} is not a host in brackets", code=f"{field}_invalid")
    if port == 0:
        raise error(f"{must}; port 0 is not a port to connect to", code=f"{field}_invalid")
    if parts.username is not None or parts.password is not None:
        raise error(f"{field} must not carry credentials", code=f"{field}_invalid")
    return parts


def check(url: str, *, allow: list, field: str = "webhook_url", schemes: tuple[str, ...] = ("http", "https"),
          error: type[InvalidRequest] | Callable[..., Exception] = InvalidRequest,
          setting: str = "EMOTIONQ_WEBHOOK_ALLOW_NETWORKS") -> Target:
    """The Target for ``url``; ``error`` (InvalidRequest by default) with code ``<field>_invalid`` (see
    ``parse``), ``<field>_unreachable`` (its host does not resolve) or ``<field>_refused``, unless it is a
    URL of one of ``schemes`` whose host resolves only to public addresses (or to allowed networks)."""
    parts = parse(url, field=field, schemes=schemes, error=error)
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or DEFAULT_PORTS[parts.scheme],
                                   proto=socket.IPPROTO_TCP)
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
