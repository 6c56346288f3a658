"""``emotionq purge``, ``keys`` and ``model``: what operators do to the queue, the API keys and the model."""

from __future__ import annotations

from pathlib import Path

import click

from emotionq.settings import get_settings


@click.command()
@click.option("--priority", type=click.Choice(["high", "low"]), required=True)
def purge(priority: str) -> None:
    """Remove the jobs waiting at one priority from the queue and fail them (code `purged`, webhooks sent).

    Both priorities share one queue, so `celery purge` cannot tell them apart, and would leave the
    jobs of the messages it drops queued for ever. Run it once per priority to empty the queue.
    """
    from emotionq.jobs.purge import purge_priority
    from emotionq.queues import make_celery
    from emotionq.webhooks.events import Notifier

    celery = make_celery(get_settings())

    def action(store):
        notifier = Notifier(store=store, celery=celery, settings=get_settings())
        return purge_priority(celery, store, priority=priority, notify=notifier.run_event)

    result = _run_admin(action)
    click.echo(f"purged {len(result.failed)} {priority}-priority runs (their jobs failed with code 'purged'); "
               f"dropped {result.stale} stale messages; left {result.kept} other messages queued")


@click.group()
def keys() -> None:
    """API keys (stored hashed in the job store; a key is shown once, when created)."""


@keys.command("create")
@click.argument("client")
def keys_create(client: str) -> None:
    """A new key for CLIENT (a name such as 'acme'); a client's keys all see its jobs."""
    from emotionq.web import keys as api_keys

    key, record = _run_admin(lambda store: api_keys.create(store, client=client))
    click.echo(f"created key {record['id']} for client {client!r}; it is shown only now:", err=True)
    click.echo(key)


@keys.command("list")
def keys_list() -> None:
    """Every key's id, client and creation time."""
    from emotionq.jobs.view import iso
    from emotionq.web import keys as api_keys

    for entry in _run_admin(api_keys.list_keys):
        click.echo(f"{entry['id']}  {entry['client']}  created {iso(entry['created_at'])}")


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke the key KEY_ID (see `keys list`); it stops working at once."""
    from emotionq.web import keys as api_keys

    entry = _run_admin(lambda store: api_keys.revoke(store, key_id=key_id))
    click.echo(f"revoked key {key_id} of client {entry['client']!r}")


@keys.command("limits")
@click.argument("client")
@click.option("--rate", type=click.FloatRange(min=0), help="requests per second (0: no limit)")
@click.option("--burst", type=click.IntRange(min=1), help="requests at once above the rate")
@click.option("--max-waiting", type=click.IntRange(min=0), help="jobs waiting at once (0: no cap of its own)")
@click.option("--reset", is_flag=True, help="back to the defaults (EMOTIONQ_CLIENT_*)")
def keys_limits(client: str, rate: float | None, burst: int | None, max_waiting: int | None, reset: bool) -> None:
    """Show or set CLIENT's limits: its request rate (token bucket) and its cap on waiting jobs."""
    from emotionq.jobs.scheduler import limits

    values = {"rate_per_s": rate, "burst": burst, "max_waiting": max_waiting}
    if reset or any(v is not None for v in values.values()):
        _run_admin(lambda store: limits.set_limits(
            store, client, **(dict.fromkeys(values) if reset else {k: v for k, v in values.items() if v is not None})))
    got = _run_admin(lambda store: limits.limits_of(store, client, get_settings()))
    click.echo(f"client {client!r}: rate {got.rate_per_s:g}/s (burst {got.burst}), at most {got.max_waiting or 'any'} "
               "jobs waiting")


def _run_admin(action):
    """Run ``action(store)``; emotionq's own errors become a one-line message and exit code 1."""
    from emotionq.errors import EmotionQError
    from emotionq.store import open_store

    try:
        store = open_store(get_settings().effective_store_url)
        try:
            return action(store)
        finally:
            store.close()
    except EmotionQError as exc:
        raise click.ClickException(exc.message) from exc


@click.group()
def model() -> None:
    """Model checkpoints."""


@model.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--arch", type=click.Choice(["tiny", "base", "large", "sensevoice-tiny", "sensevoice-small"]),
              default="tiny", show_default=True, help="emotion2vec sizes, or SenseVoiceSmall's (sensevoice-*)")
@click.option("--seed", type=int, default=0, show_default=True)
def model_init(directory: Path, arch: str, seed: int) -> None:
    """Write a randomly initialised checkpoint (emotion2vec, or SenseVoiceSmall) that funasr loads from DIRECTORY.

    Its outputs mean nothing (jobs say untrained: true); it exercises the real code.
    """
    if arch.startswith("sensevoice"):
        from emotionq.inference.sensevoice_checkpoint import write_sensevoice

        path, family = write_sensevoice(directory, arch=arch, seed=seed), "SenseVoiceSmall"
    else:
        from emotionq.inference.checkpoint import write_checkpoint

        path, family = write_checkpoint(directory, arch=arch, seed=seed), "emotion2vec"
    click.echo(f"wrote an untrained {arch} {family} checkpoint to {path}")



@model.command("compare")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", "model_id", help="hub id or directory; default the EMOTIONQ_MODEL setting")
@click.option("--threads", type=int, default=None, help="CPU threads; default the EMOTIONQ_TORCH_THREADS setting")
def model_compare(folder: Path, model_id: str | None, threads: int | None) -> None:
    """Score every recording in FOLDER on the fp32 and the int8 CPU runtime and print how far they agree.

    Run it on your own recordings before setting EMOTIONQ_RUNTIME=onnx-int8 for a trained model: the
    check at load holds int8 to fp32 only on a short probe of synthetic speech.
    """
    from emotionq.errors import EmotionQError
    from emotionq.inference import EmotionModel, decode
    from emotionq.inference.quantization import agreement

    s = get_settings()
    model_id, threads = model_id or s.model, threads or s.torch_threads
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    models = {}
    try:
        for name, runtime in (("fp32", "onnx"), ("int8", "onnx-int8")):
            models[name] = EmotionModel.load(model_id, revision=s.model_revision, threads=threads, runtime=runtime,
                                             runtime_cache_dir=s.runtime_cache_dir)
        if models["int8"].runtime != "onnxruntime-int8":
            raise click.ClickException(f"the int8 graphs cannot run: {models['int8'].runtime_note}")
        results: dict[str, list] = {"fp32": [], "int8": []}
        scored = []
        for path in files:
            try:
                samples = decode(path, max_seconds=s.max_audio_seconds)
            except EmotionQError as exc:
                click.echo(f"{path.name}: skipped ({exc.message})", err=True)
                continue
            for name, loaded in models.items():
                results[name].append(loaded.predict(samples, embedding=True, window_s=s.window_seconds))
            scored.append(path.name)
    finally:
        for loaded in models.values():
            loaded.close()
    if not scored:
        raise click.ClickException(f"no recording in {folder} could be decoded")
    found = agreement(results["fp32"], results["int8"])
    for name, pair in zip(scored, found["pairs"]):
        click.echo(f"{name}: fp32 {pair['fp32']}, int8 {pair['int8']}, scores within {pair['max_score_diff']:.4f}, "
                   f"embedding cosine {pair['cosine']:.5f}")
    n, same = found["items"], found["same_top_label"]
    click.echo(f"top label agrees on {same} of {n} recordings ({same / n:.1%}); scores differ by at most "
               f"{found['max_score_diff']:.4f} (mean of the largest per recording {found['mean_max_score_diff']:.4f}); "
               f"embedding cosine at least {found['min_cosine']:.5f}")
