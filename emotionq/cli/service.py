"""``emotionq run``, ``api``, ``worker``, ``janitor`` and ``flower``: the service's processes, in the foreground."""

from __future__ import annotations

import contextlib
import os
import sys

import click

from emotionq.cli import supervisor
from emotionq.settings import get_settings


def _announce_mode() -> None:
    s = get_settings()
    if s.embedded:
        click.echo(f"emotionq: EMBEDDED mode (no servers): file broker in {s.broker_dir}, "
                   f"SQLite store {s.effective_store_url}; set EMOTIONQ_BROKER_URL and EMOTIONQ_STORE_URL "
                   "for RabbitMQ + Redis", err=True)
    else:
        click.echo(f"emotionq: DISTRIBUTED mode: broker {s.effective_broker_url.split('@')[-1]}, "
                   f"store {s.effective_store_url.split('@')[-1]}", err=True)
    if s.auth == "disabled":
        click.echo("emotionq: API keys are NOT required (EMOTIONQ_AUTH=disabled): every caller is one "
                   "anonymous client; for local use only", err=True)
    click.echo(f"emotionq: model {s.model} (revision {s.model_revision or 'hub default'}), "
               f"devices {', '.join(supervisor.devices(s))}, blobs in {s.effective_blob_url}", err=True)


ROLES = ("all", "inference", "webhooks")


def _worker_commands(extra_env: dict[str, str], role: str = "all") -> list[tuple[str, list[str], dict[str, str]]]:
    s = get_settings()
    commands = []
    if role in ("all", "inference"):
        commands += [(f"worker[{dev}]", *supervisor.worker_command(s, dev)) for dev in supervisor.devices(s)]
    if role in ("all", "webhooks"):
        commands.append(("webhooks", *supervisor.webhook_worker_command(s)))
    return [(name, cmd, {**env, **extra_env}) for name, cmd, env in commands]


def _supervise_with_workers(*others: tuple[str, list[str], dict[str, str]], role: str = "all") -> None:
    """Supervise ``others`` and the workers, serving the workers' metrics meanwhile; exits with their code."""
    from emotionq import metrics
    from emotionq.errors import ConfigurationError

    s = get_settings()
    with contextlib.ExitStack() as stack:
        try:
            env = stack.enter_context(metrics.worker_exporter(s))
        except ConfigurationError as exc:
            raise click.ClickException(exc.message) from exc
        code = supervisor.supervise([*others, *_worker_commands(env, role)],
                                    drain_timeout_s=s.effective_drain_timeout_s)
    sys.exit(code)


@click.command()
def run() -> None:
    """The API, one worker per device and the janitor, in the foreground; Ctrl-C stops all."""
    _announce_mode()
    s = get_settings()
    click.echo(f"emotionq: API on http://{s.host}:{s.port}", err=True)
    _supervise_with_workers(("api", supervisor.api_command(), {}), ("janitor", supervisor.janitor_command(), {}))


@click.command()
def janitor() -> None:
    """Fail runs whose worker vanished, re-queue stalled webhooks, delete unused audio; one active across hosts."""
    from emotionq import janitor as sweeper

    _announce_mode()
    sweeper.run(get_settings())


@click.command()
def api() -> None:
    """The HTTP API only."""
    _announce_mode()
    s = get_settings()
    sys.exit(supervisor.supervise([("api", supervisor.api_command(), {})],
                                  drain_timeout_s=s.effective_drain_timeout_s))


@click.command()
@click.option("--role", type=click.Choice(ROLES), default="all", show_default=True,
              help="inference: the workers per device only; webhooks: the webhook worker only (a CPU host)")
def worker(role: str) -> None:
    """One Celery worker per device (EMOTIONQ_DEVICES), each running one job at a time, and a webhook worker.

    SIGTERM drains: the jobs in hand finish first (see EMOTIONQ_DRAIN_TIMEOUT_S); a second SIGTERM
    stops at once, and those jobs go back to the queue.
    """
    _announce_mode()
    _supervise_with_workers(role=role)


@click.command()
def flower() -> None:
    """Flower, Celery's web monitor, on EMOTIONQ_HOST:EMOTIONQ_FLOWER_PORT, behind basic auth.

    EMOTIONQ_FLOWER_AUTH=user:password is required; EMOTIONQ_FLOWER_AUTH=disabled opens it to anyone
    who can reach the port (local use only).
    """
    s = get_settings()
    env = dict(os.environ)
    user, _, password = s.flower_auth.partition(":")
    if s.flower_auth == "disabled":
        click.echo(f"emotionq: Flower has NO authentication (EMOTIONQ_FLOWER_AUTH=disabled): anyone who reaches "
                   f"{s.host}:{s.flower_port} sees every task and can shut workers down; for local use only",
                   err=True)
        env["FLOWER_UNAUTHENTICATED_API"] = "true"  # else Flower's HTTP API answers only 401
    elif user and password and "," not in s.flower_auth:
        env["FLOWER_BASIC_AUTH"] = s.flower_auth  # in the environment: `ps` shows arguments to everyone
    else:
        raise click.ClickException("set EMOTIONQ_FLOWER_AUTH=user:password (no comma) for Flower's basic auth, "
                                   "or EMOTIONQ_FLOWER_AUTH=disabled for local use without any")
    if s.flower_broker_api:
        env["FLOWER_BROKER_API"] = s.flower_broker_api
    click.echo(f"emotionq: Flower on http://{s.host}:{s.flower_port}, broker "
               f"{s.effective_broker_url.split('@')[-1]}", err=True)
    argv = [sys.executable, "-m", "celery", "-A", "emotionq", "flower", f"--port={s.flower_port}",
            f"--address={s.host}"]
    os.execve(sys.executable, argv, env)

