"""The job store: a small transactional document store, chosen by URL scheme.

``redis://`` (distributed mode) and ``sqlite:///path`` (embedded mode) hold the
same JSON documents under the same keys; the job logic in ``emotionq.jobs`` is
written once against :class:`Store` and runs unchanged on both.
"""

from __future__ import annotations

from importlib import import_module
from urllib.parse import urlsplit

from emotionq.errors import ConfigurationError
from emotionq.store.base import Store, Tx
from emotionq.store.patient import PatientStore

BACKENDS = {
    "redis": "emotionq.store.redis:RedisStore",
    "rediss": "emotionq.store.redis:RedisStore",
    "unix": "emotionq.store.redis:RedisStore",
    "sqlite": "emotionq.store.sqlite:SqliteStore",
}


def open_store(url: str) -> Store:
    """Open the store a URL names; an unknown scheme is a configuration error."""
    scheme = urlsplit(url).scheme
    try:
        target = BACKENDS[scheme]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise ConfigurationError(
            f"EMOTIONQ_STORE_URL has scheme {scheme!r}; use one of: {known}"
        ) from None
    module, _, name = target.partition(":")
    return getattr(import_module(module), name)(url)


__all__ = ["BACKENDS", "PatientStore", "Store", "Tx", "open_store"]
