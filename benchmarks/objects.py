"""Object storage: upload throughput to S3 (SeaweedFS) against the local-directory store, and a worker's
fetch of a blob from its cache (hit) against one from the bucket (miss).

- uploads: the same load as ``uploads`` (8 clients, each its own connection, new 5 s WAVs: stored,
  probed, queued with a confirmed publish) against one API whose blobs are in a local directory, then
  one whose blobs are in an S3 bucket of a private SeaweedFS on this machine; the ratio is S3 / local.
  A 20 MiB upload (multipart: parts of 8 MiB) is timed on both too.
- fetch: a worker process's ``blobs.local(sha, gen)`` of 5 s WAVs, first from the bucket (download,
  SHA-256 check, into the cache), then again from the cache.

SeaweedFS shares this 2-core machine with the API and the clients: a remote S3 adds network time
to every upload and miss, and takes the disk and CPU work off the API host.
"""

from __future__ import annotations

import os
import sys
import time

from benchmarks.common import ROOT, Context, Row, checkpoint, distinct_clips, percentile, service
from benchmarks.uploads import CLIENTS, load

sys.path.insert(0, str(ROOT / "tests"))
from servers import PrivateSeaweedFS  # noqa: E402

NAME = "objects"
CLIP_S = 5
LARGE_BYTES = 20 * 1024 * 1024


def run(ctx: Context) -> list[Row]:
    per_client = 10 if ctx.quick else 40
    work = ctx.workdir(NAME)
    with PrivateSeaweedFS(work, buckets=("emotionq",)) as s3:
        s3_env = {f"EMOTIONQ_{k.upper()}": v for k, v in s3.settings().items()}
        local = _uploads(ctx, work / "local", per_client, {})
        remote = _uploads(ctx, work / "s3", per_client, s3_env)
        fetch = _fetch(work / "fetch", s3, 10 if ctx.quick else 30)
    ctx.detail(NAME).update(local=local, s3=remote, fetch=fetch)
    note = f"{CLIENTS} clients x {per_client} new {local['bytes'] / 1024:.0f} KiB WAVs"
    return [
        Row(NAME, "uploads/s to S3 (SeaweedFS)", remote["load"]["per_s"], "uploads/s", local["load"]["per_s"],
            "local directory, same load", notes=f"{note}; p50 {remote['load']['p50_ms']:.0f} vs "
            f"{local['load']['p50_ms']:.0f} ms"),
        Row(NAME, "20 MiB upload to S3 (multipart)", remote["large_mib_s"], "MiB/s", local["large_mib_s"],
            "local directory"),
        Row(NAME, "worker fetch, cache hit p50", fetch["hit_p50_ms"], "ms", fetch["miss_p50_ms"],
            "cache miss p50 (GET + SHA-256 + file)", notes=f"{fetch['n']} x {fetch['bytes'] / 1024:.0f} KiB"),
    ]


def _uploads(ctx: Context, work, per_client: int, env: dict) -> dict:
    work.mkdir(parents=True)
    fresh = [p.read_bytes() for p in distinct_clips(work / "fresh", [CLIP_S] * (CLIENTS * per_client))]
    large = os.urandom(LARGE_BYTES)  # not audio: refused after it was stored (the timing is the upload's)
    with service(work, checkpoint("tiny"), EMOTIONQ_MAX_QUEUED_LOW="1000000", **env) as svc:
        auth = {"Authorization": svc.http.headers["Authorization"]}
        result = load(svc.url, auth, per_client, 202,
                      lambda c, i: c.post("/v1/jobs", files={"file": ("a.wav", fresh[i])}))
        began = time.perf_counter()
        r = svc.http.post("/v1/jobs", files={"file": ("large.bin", large)})
        large_s = time.perf_counter() - began
        assert r.status_code == 422, r.text
    return {"bytes": len(fresh[0]), "load": result, "large_s": large_s, "large_mib_s": LARGE_BYTES / 2**20 / large_s}


def _fetch(work, s3: PrivateSeaweedFS, n: int) -> dict:
    import harness
    from emotionq.blobs import open_blobs

    work.mkdir(parents=True)
    blobs = open_blobs(harness.settings(var_dir=work, **s3.settings(prefix="fetch/")), worker=True)
    stored = []
    for path in distinct_clips(work / "clips", [CLIP_S] * n):
        writer = blobs.writer(max_bytes=10**8)
        writer.write(path.read_bytes())
        writer.close()
        writer.commit("bench")
        stored.append(writer.sha256)
    timings = {"miss": [], "hit": []}
    for kind in ("miss", "hit"):
        for sha in stored:
            began = time.perf_counter()
            with blobs.local(sha, "bench") as path:
                path.stat()
            timings[kind].append((time.perf_counter() - began) * 1e3)
    return {"n": n, "bytes": os.path.getsize(blobs.cache.path(stored[0])),
            "miss_p50_ms": percentile(timings["miss"], 50), "hit_p50_ms": percentile(timings["hit"], 50),
            "miss_p99_ms": percentile(timings["miss"], 99), "hit_p99_ms": percentile(timings["hit"], 99)}
