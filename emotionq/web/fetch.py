"""Jobs by URL: the API fetches ``audio_url`` and streams it into the blob store exactly as an upload.

Why in the API, not on a queue: the fetched bytes are hashed on the way in, so dedup and
coalescing decide before anything is queued (a known recording is answered from the cache at once,
a GPU never waits on a download), and a URL that is refused, unreachable, too large or not audio is
a 4xx with its code in the same request, not a job that fails later. The API is the CPU tier that
already streams uploads; GPU hosts make no outbound calls. The cost, a request held for the
download, is bounded by the time limits below, and the download never blocks the event loop.

The guard is the webhooks' (``emotionq.webhooks.targets``): http(s) only (plain http only with
``EMOTIONQ_AUDIO_URL_ALLOW_HTTP``), optionally only the hosts of ``EMOTIONQ_AUDIO_URL_HOSTS``; every
hop of a redirect is resolved once and checked (no private, loopback, link-local, reserved or
metadata address unless ``EMOTIONQ_AUDIO_URL_ALLOW_NETWORKS`` allows it), the connection goes to the
address that was checked (no DNS rebinding), and the peer of the connection is checked again.
``s3://bucket/key`` is read with the service's S3 credentials, from ``EMOTIONQ_AUDIO_URL_S3_BUCKETS``
only. Limits: ``EMOTIONQ_MAX_UPLOAD_BYTES`` (413 ``payload_too_large``), the duration limit (probed as an
upload), a connect timeout, a read timeout (longest silence) and a deadline for the whole fetch.
"""

from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import logging
import time
from dataclasses import dataclass, field
from functools import cached_property, partial
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import httpx
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from emotionq.blobs import BlobStore, BlobWriter
from emotionq.errors import AudioURLError, ClientGone, InvalidRequest, PayloadTooLarge
from emotionq.settings import Settings
from emotionq.web.form import MAX_JSON_BYTES
from emotionq.web.upload import Upload, _body
from emotionq.webhooks import targets

log = logging.getLogger(__name__)

REDIRECTS = (301, 302, 303, 307, 308)
USER_AGENT = "emotionq-fetch/1"
ACCEPT = "audio/*, video/*, application/octet-stream;q=0.9, */*;q=0.1"
S3_CHUNK = 1 << 20


@dataclass
class Policy:
    """What an audio_url may name and how long fetching it may take."""

    settings: Settings
    allow: list = field(default_factory=list)
    hosts: tuple[str, ...] = ()
    buckets: tuple[tuple[str, str], ...] = ()  # (bucket, key prefix)

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        buckets = tuple((b.partition("/")[0], b.partition("/")[2]) for b in settings.audio_url_s3_buckets)
        return cls(settings=settings, allow=settings.audio_url_allow_networks, hosts=tuple(settings.audio_url_hosts),
                   buckets=buckets)

    @property
    def schemes(self) -> tuple[str, ...]:
        return ("https", "http") if self.settings.audio_url_allow_http else ("https",)

    @cached_property
    def s3(self):
        from emotionq.blobs import s3

        return s3.client(self.settings)

    def check(self, url: str) -> targets.Target:
        """The checked target of one hop (blocking: it resolves the host)."""
        host = targets.parse(url, field="audio_url", schemes=self.schemes, error=AudioURLError).hostname
        if self.hosts and not any(fnmatch.fnmatchcase(host, pattern) for pattern in self.hosts):
            raise AudioURLError(f"audio_url host {host!r} is not one this service fetches from (ask its "
                                "operator: EMOTIONQ_AUDIO_URL_HOSTS)", code="audio_url_refused")
        return targets.check(url, allow=self.allow, field="audio_url", schemes=self.schemes, error=AudioURLError,
                             setting="EMOTIONQ_AUDIO_URL_ALLOW_NETWORKS")


async def read_json(request: Request, *, idle_timeout_s: float) -> bytes:
    """The JSON body of a job by URL, at most MAX_JSON_BYTES."""
    body = bytearray()
    try:
        async for chunk in _body(request, idle_timeout_s):
            body.extend(chunk)
            if len(body) > MAX_JSON_BYTES:
                raise InvalidRequest(f"a JSON body is at most {MAX_JSON_BYTES} bytes: send audio as a URL or a file")
    except ClientDisconnect as exc:
        raise ClientGone("the client closed the connection before its request was read") from exc
    return bytes(body)


async def fetch(url: str, *, blobs: BlobStore, policy: Policy) -> Upload:
    """Fetch ``url`` into a pending blob (the caller commits or aborts it), hashed on the way."""
    s = policy.settings
    scheme = targets.parse(url, field="audio_url", schemes=("s3", *policy.schemes), error=AudioURLError).scheme
    writer = blobs.writer(max_bytes=s.max_upload_bytes)
    began = time.perf_counter()
    try:
        if scheme == "s3":
            content_type = await run_in_threadpool(_fetch_s3, url, writer, policy)
        else:
            content_type = await _fetch_http(url, writer, policy)
    except BaseException:
        writer.abort()
        raise
    log.info("audio_url %s: %d bytes in %.0f ms", shown(url), writer.size, (time.perf_counter() - began) * 1e3)
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1]) or None
    return Upload(size=writer.size, filename=name, content_type=content_type, blob=writer,
                  url=shown(url))


def shown(url: str) -> str:
    """The URL as the job records it: without its query and fragment (a presigned URL's credentials)."""
    try:
        return urlunsplit(urlsplit(url)._replace(query="", fragment=""))
    except ValueError:  # not parseable: shown up to where a query could start
        return url.partition("?")[0].partition("#")[0]


async def _fetch_http(url: str, writer: BlobWriter, policy: Policy) -> str | None:
    s = policy.settings
    timeout = httpx.Timeout(connect=s.audio_url_connect_timeout_s, read=s.audio_url_read_timeout_s,
                            write=s.audio_url_read_timeout_s, pool=s.audio_url_connect_timeout_s)
    first = url
    try:
        async with asyncio.timeout(s.audio_url_timeout_s), httpx.AsyncClient(
                trust_env=False, follow_redirects=False, timeout=timeout,
                event_hooks={"response": [partial(_location_is_a_url, policy=policy)]}) as client:
            for _ in range(s.audio_url_max_redirects + 1):
                target = await run_in_threadpool(policy.check, url)  # every hop, resolved once
                pinned, host, extensions = target.pinned()
                headers = {**host, "user-agent": USER_AGENT, "accept": ACCEPT, "accept-encoding": "identity"}
                async with client.stream("GET", pinned, headers=headers, extensions=extensions) as response:
                    _check_peer(response, target, policy)
                    if response.status_code in REDIRECTS and response.headers.get("location"):
                        url = _redirect(url, response.headers["location"])
                        continue
                    if not 200 <= response.status_code < 300:
                        raise AudioURLError(f"audio_url {shown(url)} answered HTTP {response.status_code}; check "
                                            "that the URL works, or upload the file", code="audio_url_unreachable",
                                            retryable=response.status_code >= 500 or response.status_code == 429)
                    declared = response.headers.get("content-length", "")
                    if declared.isascii() and declared.isdigit() and int(declared) > s.max_upload_bytes:
                        raise PayloadTooLarge(f"audio_url {shown(url)} holds {int(declared):,} bytes; the limit is "
                                              f"{s.max_upload_bytes:,}: send a shorter or compressed file")
                    async for chunk in response.aiter_raw():
                        writer.write(chunk)  # PayloadTooLarge past the limit, whatever the header said
                        if writer.needs_flush:
                            await run_in_threadpool(writer.flush)
                    return response.headers.get("content-type")
            raise AudioURLError(f"audio_url {shown(first)} redirects more than {s.audio_url_max_redirects} times",
                                code="audio_url_unreachable")
    except TimeoutError:
        raise AudioURLError(f"audio_url {shown(url)} did not deliver within {s.audio_url_timeout_s:g} s; upload "
                            "the file instead", code="audio_url_unreachable", retryable=True) from None
    except httpx.TimeoutException as exc:
        raise AudioURLError(f"audio_url {shown(url)}: no answer within {s.audio_url_read_timeout_s:g} s "
                            f"({type(exc).__name__}); check that the URL works, or upload the file",
                            code="audio_url_unreachable", retryable=True) from None
    except httpx.InvalidURL as exc:  # what urlsplit lets through but an HTTP request cannot carry
        raise AudioURLError(f"audio_url {shown(url)!r} is not a URL an HTTP request can carry ({exc})",
                            code="audio_url_invalid") from None
    except httpx.HTTPError as exc:
        raise AudioURLError(f"audio_url {shown(url)} could not be fetched ({type(exc).__name__}: {exc}); check "
                            "that the URL works, or upload the file", code="audio_url_unreachable",
                            retryable=True) from None


async def _location_is_a_url(response: httpx.Response, *, policy: Policy) -> None:
    """A redirect's Location, parsed by the guard's parser before httpx parses it (httpx's own error would
    read as an unreachable server, where the URL is what is wrong)."""
    location = response.headers.get("location")
    if response.status_code in REDIRECTS and location:
        targets.parse(_redirect(str(response.url), location), field="audio_url", schemes=policy.schemes,
                      error=AudioURLError)


def _redirect(url: str, location: str) -> str:
    """Where a redirect from ``url`` leads; a Location that is no URL is refused like a bad audio_url."""
    try:
        return urljoin(url, location)
    except ValueError as exc:
        raise AudioURLError(f"audio_url {shown(url)} redirects to a malformed URL ({exc}); ask its server "
                            "for a working link, or upload the file", code="audio_url_invalid") from None


def _check_peer(response: httpx.Response, target: targets.Target, policy: Policy) -> None:
    """The address actually connected to must be the one checked (and allowed)."""
    stream = response.extensions.get("network_stream")
    peer = stream.get_extra_info("server_addr") if stream is not None else None
    if peer is None:
        return  # the pinned URL named the checked address: that is where httpx connected
    address = ipaddress.ip_address(peer[0].split("%")[0])
    if str(getattr(address, "ipv4_mapped", None) or address) != target.address or not targets.allowed(address,
                                                                                                       policy.allow):
        raise AudioURLError(f"audio_url connected to {address}, not the address it was checked at "
                            f"({target.address}); refused", code="audio_url_refused")


def _fetch_s3(url: str, writer: BlobWriter, policy: Policy) -> str | None:
    """An s3:// audio_url of an allowed bucket, read with the service's credentials (blocking)."""
    import botocore.exceptions

    from emotionq.blobs.s3 import is_missing

    parts = urlsplit(url)
    bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
    if not bucket or not key:
        raise AudioURLError("audio_url must be s3://bucket/key", code="audio_url_invalid")
    if not any(bucket == b and key.startswith(prefix) for b, prefix in policy.buckets):
        raise AudioURLError(f"audio_url bucket {bucket!r} is not one this service reads (ask its operator: "
                            "EMOTIONQ_AUDIO_URL_S3_BUCKETS)", code="audio_url_refused")
    s = policy.settings
    deadline = time.monotonic() + s.audio_url_timeout_s
    try:
        obj = policy.s3.get_object(Bucket=bucket, Key=key)
        if obj["ContentLength"] > s.max_upload_bytes:
            raise PayloadTooLarge(f"audio_url {url} holds {obj['ContentLength']:,} bytes; the limit is "
                                  f"{s.max_upload_bytes:,}: send a shorter or compressed file")
        for chunk in obj["Body"].iter_chunks(S3_CHUNK):
            writer.write(chunk)
            if writer.needs_flush:
                writer.flush()
            if time.monotonic() > deadline:
                raise AudioURLError(f"audio_url {url} did not deliver within {s.audio_url_timeout_s:g} s",
                                    code="audio_url_unreachable", retryable=True)
    except botocore.exceptions.ClientError as exc:
        what = "no such object" if is_missing(exc) else exc.response.get("Error", {}).get("Code", "error")
        raise AudioURLError(f"audio_url {url}: {what}; check the bucket and key", code="audio_url_unreachable",
                            retryable=False) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise AudioURLError(f"audio_url {url} could not be fetched ({type(exc).__name__}: {exc})",
                            code="audio_url_unreachable", retryable=True) from None
    return obj.get("ContentType")
