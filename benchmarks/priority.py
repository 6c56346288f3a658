"""High-priority start delay under a low backlog, in service times.

Tiny checkpoint (the figure is a ratio of times inside one worker, and tiny keeps 500 jobs short).
500 distinct 1 s low jobs are queued, the worker is started, and once the first 10 have finished
one high job is submitted. Delay = its started_at - created_at; baseline = the mean service time
(finished_at - started_at) of the low jobs done by then. Expected: about one service time at most
(the low job already running) plus the dispatch gap. The rest of the backlog is dropped with the
private vhost and Redis database.
"""

from __future__ import annotations

import statistics

from benchmarks.common import (
    Context,
    Row,
    checkpoint,
    distinct_clips,
    finish_all,
    service,
    submit_all,
    ts,
)

NAME = "priority"
FIRST_DONE = 10  # low jobs finished before the high one is submitted
SAMPLED = 60  # low jobs read back for service times


def run(ctx: Context) -> list[Row]:
    backlog = 100 if ctx.quick else 500
    work = ctx.workdir(NAME)
    clips = distinct_clips(work / "clips", [1] * (backlog + 1))
    with service(work, checkpoint("tiny"), EMOTIONQ_MAX_QUEUED_LOW="1000000") as svc:
        low = submit_all(svc, clips[:backlog], threads=8)
        svc.start_worker(wait=False)
        finish_all(svc, low[:FIRST_DONE])
        [high] = finish_all(svc, submit_all(svc, clips[backlog:], priority="high"))
        lows = [j for j in map(svc.job, low[:SAMPLED]) if j["status"] == "succeeded"]
    created, started = ts(high["created_at"]), ts(high["started_at"])
    delay = started - created
    service_s = statistics.mean(ts(j["finished_at"]) - ts(j["started_at"]) for j in lows)
    starts = sorted(ts(j["started_at"]) for j in lows)
    cycle = (starts[-1] - starts[0]) / (len(starts) - 1)  # start to start: service + dispatch gap
    overtook = sum(created < ts(j["started_at"]) < started for j in lows)
    ctx.detail(NAME).update(backlog=backlog, delay_s=delay, service_s=service_s, cycle_s=cycle,
                            lows_started_while_high_waited=overtook, lows_sampled=len(lows))
    return [Row(NAME, f"high start delay, {backlog} low queued", delay * 1e3, "ms", service_s * 1e3,
                "mean low service time", notes=f"tiny, 1 s clips; {delay / cycle:.2f} start-to-start cycles "
                f"({cycle * 1e3:.0f} ms); {overtook} low job(s) started while the high one waited")]
