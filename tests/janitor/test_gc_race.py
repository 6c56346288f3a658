"""The blob collection against concurrent uploads of the same audio, on a real S3 server (SeaweedFS):
threads upload one recording again and again, each run finishing as soon as its audio is checked, so
the audio is unreferenced most of the time, while the janitor collects it as fast as it can. Every
upload whose job was accepted must find its audio in the bucket while its run lives: none may be
lost, however the two interleave."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

import harness
from emotionq import jobs
from emotionq.blobs import name, open_blobs
from emotionq.janitor.sweeps import Janitor
from emotionq.jobs import blobrefs

pytestmark = [pytest.mark.s3, pytest.mark.timeout(300)]

UPLOADERS = 4
UPLOADS_EACH = 25
MIN_COLLECTIONS = 5  # uploads go on (up to 4x) until the collector has deleted the audio this often


def test_concurrent_uploads_of_the_same_audio_never_lose_it_to_the_collector(store, seaweed, tmp_path, monkeypatch):
    monkeypatch.setattr(blobrefs, "RECHECK_S", 0.0)  # look at a blob again at once, not minutes later
    settings = harness.settings(var_dir=tmp_path, blob_retention_s=0, blob_patience_s=0,
                                **seaweed.settings(prefix=f"race-{os.urandom(4).hex()}/"))
    blobs = open_blobs(settings)
    janitor = Janitor(settings=settings, store=store, blobs=blobs, notifier=None)
    audio = os.urandom(50_000)
    sha = hashlib.sha256(audio).hexdigest()
    lost, generations, deleted, joined = [], set(), [], []
    done = threading.Event()

    def uploader(k: int) -> None:
        i = 0
        while i < UPLOADS_EACH or (sum(deleted) < MIN_COLLECTIONS and i < 4 * UPLOADS_EACH):  # a busy machine
            i += 1
            writer = blobs.writer(max_bytes=10**6)
            writer.write(audio)
            writer.close()
            sub = jobs.submit(store, settings=settings, client=f"c{k}", priority="low", metadata={}, model="m",
                              options={"granularity": "utterance", "embedding": False},  # one dedup key
                              input={"filename": None, "content_type": None, "bytes": len(audio),
                                     "duration_s": 1.0, "sha256": sha})
            writer.commit(sub.run.blob)  # a no-op PUT when the object is there: stored once
            writer.abort()
            generations.add(sub.run.blob)
            there = blobs.exists(name(sha, sub.run.blob))  # what a worker would fetch now
            run = jobs.Run.from_doc(store.get(jobs.run_key(sub.run.id)), id=sub.run.id, key="")
            if not there and run.state not in jobs.TERMINAL:  # live throughout: it needs its audio
                lost.append((k, i, sub.outcome, sub.run.blob))
            joined.append(sub.outcome == "coalesced")
            jobs.fail(store, run_id=sub.run.id, error={"code": "x", "message": "x", "retryable": False})

    def collector() -> None:
        while not done.is_set():
            janitor.counts = {}
            janitor.blobs_unused()
            deleted.append(janitor.counts.get("blobs deleted", 0))

    threads = [threading.Thread(target=uploader, args=(k,)) for k in range(UPLOADERS)]
    gc = threading.Thread(target=collector)
    gc.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    gc.join()
    print(f"\n{len(joined)} uploads ({sum(joined)} joined a live run), {sum(deleted)} collections, "
          f"{len(generations)} generations")
    assert lost == []
    assert sum(deleted) >= MIN_COLLECTIONS and len(generations) >= 3, "the collector never raced the uploads"
