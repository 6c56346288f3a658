"""Multipart uploads streamed straight into the blob store, hashed on the way, never held in memory.

A body is accepted only whole: one that ends before its closing boundary, stalls for longer than
the idle timeout, or whose client hangs up is refused, and what had arrived of it is deleted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from emotionq.blobs import BlobStore, BlobWriter
from emotionq.errors import ClientGone, InvalidRequest, PayloadTooLarge, RequestTimeout

MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 32
FILE_FIELD = "file"


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)
    size: int = 0
    filename: str | None = None
    content_type: str | None = None
    blob: BlobWriter | None = None  # the received file, not yet filed: the caller commits or aborts it
    url: str | None = None  # a job by URL: where it was fetched from (emotionq.web.fetch)


class _Receiver:
    """Collects one multipart body: form fields in memory, the ``file`` part into a blob."""

    def __init__(self, blobs: BlobStore, max_bytes: int) -> None:
        self.blobs, self.max_bytes = blobs, max_bytes
        self.upload = Upload()
        self.writer: BlobWriter | None = None
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, str] = {}
        self._name: str | None = None
        self._value = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._header_field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._header_value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers, self._name, self._value = {}, None, bytearray()

    def _header_end(self) -> None:
        self._headers[self._header_field.decode("latin-1").lower()] = self._header_value.decode("latin-1")
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", ""))
        name = params.get(b"name")
        if name is None:
            raise InvalidRequest("a multipart part has no name; send form fields with names")
        self._name = name.decode("utf-8", "replace")
        if self._name == FILE_FIELD:
            if self.writer is not None:
                raise InvalidRequest("send exactly one 'file' part per job")
            filename = params.get(b"filename")
            self.upload.filename = filename.decode("utf-8", "replace") if filename else None
            self.upload.content_type = self._headers.get("content-type")
            self.writer = self.blobs.writer(max_bytes=self.max_bytes)
        elif len(self.upload.fields) >= MAX_FIELDS:
            raise InvalidRequest(f"too many form fields (limit {MAX_FIELDS})")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._name == FILE_FIELD:
            self.writer.write(data[start:end])
            return
        self._value.extend(data[start:end])
        if len(self._value) > MAX_FIELD_BYTES:
            raise InvalidRequest(f"form field {self._name!r} exceeds {MAX_FIELD_BYTES} bytes")

    def _part_end(self) -> None:
        if self._name != FILE_FIELD:
            self.upload.fields[self._name] = self._value.decode("utf-8", "replace")


async def receive(request: Request, blobs: BlobStore, *, max_bytes: int, idle_timeout_s: float) -> Upload:
    """Parse a ``multipart/form-data`` request; the ``file`` part lands in a pending blob of ``blobs``."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise InvalidRequest("send the audio as multipart/form-data with a 'file' part, or its URL as JSON "
                             "{\"audio_url\": ...}", code="not_multipart")
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > max_bytes + MAX_FIELDS * MAX_FIELD_BYTES:
        raise PayloadTooLarge(f"the upload exceeds the {max_bytes:,}-byte limit; send a shorter or compressed file")

    receiver = _Receiver(blobs, max_bytes)
    parser = MultipartParser(params[b"boundary"], receiver.callbacks())
    try:
        async for chunk in _body(request, idle_timeout_s):
            parser.write(chunk)
            if receiver.writer is not None and receiver.writer.needs_flush:  # a part for the object store
                await run_in_threadpool(receiver.writer.flush)
        parser.finalize()
        if parser.state != MultipartState.END:
            raise InvalidRequest("the multipart body ended before its closing boundary: the upload is incomplete; "
                                 "send it again", code="incomplete_body")
    except MultipartParseError as exc:
        _abort(receiver)
        raise InvalidRequest(f"the multipart body is malformed: {exc}", code="malformed_multipart") from exc
    except ClientDisconnect as exc:
        _abort(receiver)
        raise ClientGone("the client closed the connection before the upload was complete") from exc
    except BaseException:
        _abort(receiver)
        raise
    if receiver.writer is None:
        raise InvalidRequest("no 'file' part: send the audio as form field 'file'", code="missing_file")
    upload = receiver.upload
    upload.size = receiver.writer.size
    upload.blob = receiver.writer  # closed (its last part sent, its hash taken) by the intake, in its thread
    return upload


async def _body(request: Request, idle_timeout_s: float) -> AsyncIterator[bytes]:
    """The request body's chunks; RequestTimeout if none arrives for ``idle_timeout_s``."""
    chunks = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), idle_timeout_s)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise RequestTimeout(f"no part of the upload arrived for {idle_timeout_s:g} s; the request was "
                                 "dropped: send it again on a steady connection") from None
        yield chunk


def _abort(receiver: _Receiver) -> None:
    if receiver.writer is not None:
        receiver.writer.abort()
