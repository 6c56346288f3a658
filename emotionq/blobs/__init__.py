"""Audio blobs: content-addressed objects, in a local directory or an S3 bucket, chosen by URL.

``EMOTIONQ_BLOB_URL`` names the store: ``s3://bucket/prefix`` (many hosts: the API and the workers
share only the bucket), or a path / ``file:///path`` (one host, or a filesystem every host mounts);
unset, it is ``EMOTIONQ_BLOB_DIR`` (default ``var/blobs``), as in embedded mode. Every blob is filed
under its SHA-256 and a *generation* (``<sha[:2]>/<sha>.<gen>``), which ``emotionq.jobs.blobrefs``
hands out so that collecting unused audio can never delete audio a new upload counts on.
"""

from __future__ import annotations

from importlib import import_module
from urllib.parse import urlsplit

from emotionq.blobs.base import BlobStore, BlobWriter, name, parse_name
from emotionq.errors import ConfigurationError
from emotionq.settings import Settings

BACKENDS = {
    "file": "emotionq.blobs.local:LocalBlobs",
    "s3": "emotionq.blobs.s3:S3Blobs",
}


def open_blobs(settings: Settings, *, worker: bool = False) -> BlobStore:
    """The blob store the settings name; ``worker``: fetch through a bounded local cache, patiently."""
    url = settings.effective_blob_url
    scheme = urlsplit(url).scheme or "file"
    try:
        target = BACKENDS[scheme]
    except KeyError:
        raise ConfigurationError(f"EMOTIONQ_BLOB_URL has scheme {scheme!r}; use a path, file:///path or "
                                 "s3://bucket/prefix") from None
    module, _, cls = target.partition(":")
    return getattr(import_module(module), cls).from_settings(url, settings, worker=worker)


__all__ = ["BACKENDS", "BlobStore", "BlobWriter", "name", "open_blobs", "parse_name"]
