"""The ``emotionq`` command: run the service and its workers, administer it, score files as a client.

- ``service``: run, api, worker, janitor, flower (``supervisor`` keeps their processes)
- ``admin``: purge, keys, model
- ``scoring``: submit, status
"""

from __future__ import annotations

import logging

import click

from emotionq.cli import admin, scoring, service


@click.group()
@click.option("--log-level", default="INFO", show_default=True)
def main(log_level: str) -> None:
    """emotionq: speech emotion recognition as a queued service."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


for command in (service.run, service.api, service.worker, service.janitor, service.flower, admin.purge, admin.keys,
                admin.model,
                scoring.submit, scoring.status):
    main.add_command(command)
