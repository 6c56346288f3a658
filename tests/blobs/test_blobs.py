"""Both blob stores keep the same promises: hashed while written, filed once under hash and generation,
nothing left by a refused upload; S3 streams long uploads in parts, workers fetch through a bounded,
checked cache, and an outage is BlobStoreUnavailable."""

from __future__ import annotations

import hashlib
import os

import pytest

import harness
from emotionq.blobs import name, open_blobs
from emotionq.blobs.cache import BlobCache
from emotionq.blobs.s3 import S3Blobs
from emotionq.errors import BadInput, BlobStoreUnavailable, ConfigurationError, PayloadTooLarge

MiB = 1024 * 1024
pytestmark = pytest.mark.s3


@pytest.fixture(params=["local", "s3"])
def blobs(request, tmp_path):
    """Each backend as a worker opens it (S3: with its cache), empty."""
    if request.param == "local":
        yield open_blobs(harness.settings(var_dir=tmp_path), worker=True)
        return
    seaweed = request.getfixturevalue("seaweed")
    prefix = f"t-{os.urandom(4).hex()}/"
    yield open_blobs(harness.settings(var_dir=tmp_path, blob_part_bytes=5 * MiB, blob_patience_s=0,
                                      **seaweed.settings(prefix=prefix)), worker=True)


def _write(blobs, data: bytes, chunk: int = 64 * 1024):
    writer = blobs.writer(max_bytes=100 * MiB)
    for i in range(0, len(data), chunk):
        writer.write(data[i:i + chunk])
        if writer.needs_flush:
            writer.flush()
    writer.close()
    return writer


def _names(blobs) -> list[str]:
    return sorted(n for n, _ in blobs.listing() if not n.startswith("tmp/"))


def test_unknown_scheme_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigurationError, match="s3://bucket/prefix"):
        open_blobs(harness.settings(var_dir=tmp_path, blob_url="gs://bucket/x"))


def test_identical_audio_is_stored_once_under_its_hash_and_generation(blobs):
    data = os.urandom(300_000)
    first, second = _write(blobs, data), _write(blobs, data)
    sha = hashlib.sha256(data).hexdigest()
    assert first.sha256 == second.sha256 == sha and first.size == len(data)
    assert first.commit("g1") is True
    assert second.commit("g1") is False  # stored once
    assert _names(blobs) == [name(sha, "g1")]
    with blobs.local(sha, "g1") as path:
        assert path.read_bytes() == data
    with pytest.raises(BadInput) as missing:
        with blobs.local("b" * 64, "g1"):
            pass
    assert missing.value.code == "audio_missing"


def test_a_refused_upload_leaves_nothing(blobs):
    writer = _write(blobs, os.urandom(1000))
    writer.abort()
    with pytest.raises(PayloadTooLarge):
        small = blobs.writer(max_bytes=10)
        small.write(b"x" * 11)
    small.abort()
    assert list(blobs.listing()) == []


def test_a_short_upload_that_is_not_filed_never_touches_the_disk(tmp_path):
    """A repeat of known audio (a dedup hit) is probed from memory and dropped: no file written, none deleted."""
    blobs = open_blobs(harness.settings(var_dir=tmp_path))
    data = os.urandom(300_000)
    writer = _write(blobs, data)
    assert writer.source().read() == data
    assert list(blobs.tmp_dir.iterdir()) == []
    writer.abort()
    kept = _write(blobs, data)
    assert kept.commit(None) is True  # filed: written once, where it belongs
    assert list(blobs.tmp_dir.iterdir()) == [] and blobs.path(kept.sha256).read_bytes() == data


def test_a_long_upload_goes_up_in_parts_and_is_probed_in_place(blobs):
    data = os.urandom(11 * MiB + 123)
    writer = _write(blobs, data)
    source = writer.source()
    readable = open(source, "rb") if isinstance(source, (str, os.PathLike)) else source
    readable.seek(5 * MiB - 10)
    assert readable.read(20) == data[5 * MiB - 10:5 * MiB + 10]  # across the first part's end
    readable.seek(0)
    assert hashlib.sha256(readable.read()).hexdigest() == writer.sha256
    assert writer.commit("g1") is True
    assert _names(blobs) == [name(writer.sha256, "g1")]  # the temporary object is gone
    if isinstance(blobs, S3Blobs):
        assert not blobs.s3.list_multipart_uploads(Bucket=blobs.bucket).get("Uploads")
        assert not list(blobs.spool_dir.iterdir())  # the spool held one part at most, and is gone


def test_the_worker_cache_evicts_least_recently_used_but_never_a_blob_in_use(seaweed, tmp_path):
    prefix = f"c-{os.urandom(4).hex()}/"
    blobs = open_blobs(harness.settings(var_dir=tmp_path, blob_cache_bytes=350_000, blob_patience_s=0,
                                        **seaweed.settings(prefix=prefix)), worker=True)
    shas = []
    for _ in range(4):
        writer = _write(blobs, os.urandom(100_000))
        writer.commit("g")
        shas.append(writer.sha256)
    cache: BlobCache = blobs.cache
    with blobs.local(shas[0], "g"):
        with blobs.local(shas[0], "g") as held:  # in use while the others come in
            for sha in shas[1:]:
                with blobs.local(sha, "g"):
                    pass
            assert held.exists()
    assert (cache.hits, cache.misses) == (1, 4)
    cached = {p.name for p in cache.dir.glob("??/*")}
    assert shas[0] in cached and len(cached) <= 3
    assert sum(p.stat().st_size for p in cache.dir.glob("??/*")) <= 350_000


def test_a_fetched_blob_must_match_its_hash(seaweed, tmp_path):
    blobs = open_blobs(harness.settings(var_dir=tmp_path, blob_patience_s=0,
                                        **seaweed.settings(prefix=f"h-{os.urandom(4).hex()}/")), worker=True)
    sha = hashlib.sha256(b"the real audio").hexdigest()
    blobs.s3.put_object(Bucket=blobs.bucket, Key=blobs.key(name(sha, "g")), Body=b"something else")
    with pytest.raises(BadInput) as corrupt:
        with blobs.local(sha, "g"):
            pass
    assert corrupt.value.code == "audio_corrupt"
    assert not list(blobs.cache.dir.glob("??/*")) and not list((blobs.cache.dir / "tmp").iterdir())


def test_an_object_store_that_does_not_answer_is_unavailable(tmp_path):
    from servers import free_port

    blobs = open_blobs(harness.settings(var_dir=tmp_path, blob_url="s3://emotionq/x/", blob_patience_s=0.5,
                                        s3_endpoint_url=f"http://127.0.0.1:{free_port()}", s3_access_key_id="a",
                                        s3_secret_access_key="b", s3_timeout_s=1), worker=True)
    writer = _write(blobs, os.urandom(1000))
    with pytest.raises(BlobStoreUnavailable, match="retry shortly"):
        writer.commit("g")
    writer.abort()
    with pytest.raises(BlobStoreUnavailable):
        with blobs.local("a" * 64, "g"):
            pass
    with pytest.raises(BlobStoreUnavailable):
        blobs.ping()
