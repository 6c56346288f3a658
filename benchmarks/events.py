"""Events of a heavy job: what 40 slow readers of its Server-Sent Events cost every other request.

Tiny checkpoint, one worker, a 10-minute recording (2 minutes with --quick) scored with
``granularity=frame`` (tens of megabytes of JSON). Then /healthz is probed every 20 ms from a process
of its own, first alone (idle) and then while 40 clients open the job's events 25 ms apart and read
them slowly (16 KiB every 20 ms, 32 KiB receive buffers; tests/sse_load.py); p99 of each, and the API
process's resident memory before and at its peak under the load.
"""

from __future__ import annotations

import time

from benchmarks.common import Context, Row, checkpoint, percentile, service, speech
from sse_load import Prober, api_pid, load

NAME = "events"
READERS = 40


def run(ctx: Context) -> list[Row]:
    seconds = 120 if ctx.quick else 600
    window_s = 8 if ctx.quick else 15
    with service(ctx.workdir(NAME), checkpoint("tiny")) as svc:
        svc.start_worker()
        r = svc.submit(speech(seconds), granularity="frame")
        r.raise_for_status()
        job_id = r.json()["id"]
        if svc.finish(job_id, timeout=1800)["status"] != "succeeded":
            raise RuntimeError(f"the {seconds} s frame job did not succeed")
        size_mb = len(svc.http.get(f"/v1/jobs/{job_id}").content) / 2**20
        with Prober(svc.url) as idle:
            time.sleep(window_s)
        key = svc.http.headers["authorization"].removeprefix("Bearer ")
        busy = load(port=svc.port, job_id=job_id, key=key, pid=api_pid(svc.procs["api"].pid), readers=READERS,
                    seconds=window_s)
    p99_idle, p99_busy = percentile(idle.latencies_ms, 99), percentile(busy.latencies_ms, 99)
    received_mb = sum(c.received for c in busy.readers) / 2**20
    ctx.detail(NAME).update(job_mb=size_mb, recording_s=seconds, probes_idle=len(idle.latencies_ms),
                            probes_busy=len(busy.latencies_ms), p99_idle_ms=p99_idle, p99_busy_ms=p99_busy,
                            max_busy_ms=max(busy.latencies_ms), rss_idle_mb=busy.rss_idle_mb,
                            rss_peak_mb=busy.rss_peak_mb, readers_received_mb=received_mb)
    return [Row(NAME, f"/healthz p99, {READERS} slow readers of a frame job's events", p99_busy, "ms", p99_idle,
                "idle", notes=f"{seconds / 60:g} min recording, job {size_mb:.0f} MB of JSON; max "
                              f"{max(busy.latencies_ms):.0f} ms; API RSS {busy.rss_idle_mb:.0f} -> "
                              f"{busy.rss_peak_mb:.0f} MB; readers took {received_mb:.0f} MB in {window_s} s")]
