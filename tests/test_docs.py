"""The docs site (mkdocs.yml, docs/): it builds with ``mkdocs build --strict`` (a broken link, a missing page or
an unknown generated part fails), its reference pages follow the code they are generated from, and the README
stays a short start whose links lead somewhere."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from emotionq.settings import Settings
from harness import ROOT

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def _text(site: Path, page: str) -> str:
    """A built page's text, tags removed and entities decoded, so that code and table cells read as written."""
    raw = (site / page / "index.html").read_text()
    return html.unescape(re.sub(r"<[^>]+>", "", raw))


def test_the_configuration_page_lists_every_setting_with_its_description(site):
    text = _text(site, "reference/configuration")
    missing = [name for name in Settings.model_fields if f"EMOTIONQ_{name.upper()}" not in text]
    assert not missing, f"settings missing from the configuration page: {missing}"
    undescribed = [name for name, field in Settings.model_fields.items() if not (field.description or "").strip()]
    assert not undescribed, f"settings without a description (Field(..., description=...)): {undescribed}"


def test_the_errors_page_lists_every_code_the_package_gives(site):
    from emotionq import errors
    from emotionq.web.problems import EXAMPLES

    raw = (site / "api" / "errors" / "index.html").read_text()
    given = {cls.code for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors.EmotionQError) and "code" in vars(cls)}
    given |= {exc.code for exc in EXAMPLES.values()}
    for path in (ROOT / "emotionq").rglob("*.py"):  # read independently of the generator's own parse
        given |= set(re.findall(r'''code=["']([a-z_]+)["']''', path.read_text()))
        given |= set(re.findall(r'''["']code["']: ["']([a-z_]+)["']''', path.read_text()))
    missing = sorted(code for code in given if f"<td><code>{code}</code></td>" not in raw)  # a row of the table
    assert not missing, f"error codes missing from the errors page: {missing}"


def test_the_cli_page_lists_every_command_and_option(site):
    from emotionq.cli import main

    text = _text(site, "reference/cli")
    missing = []

    def walk(command: click.Command, path: str) -> None:
        if path not in text:
            missing.append(path)
        for param in command.params:
            if isinstance(param, click.Option) and not any(opt in text for opt in param.opts):
                missing.append(f"{path} {param.opts[0]}")
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(main, "emotionq")
    assert not missing, f"missing from the CLI page: {missing}"


def test_the_openapi_reference_is_the_apps_own_document(site):
    from emotionq.api import create_app

    document = create_app().openapi()
    assert json.loads((site / "api" / "openapi.json").read_text()) == document
    text = _text(site, "api/openapi")
    missing = [f"{m.upper()} {p}" for p, ops in document["paths"].items() for m in ops
               if f"{m.upper()} {p}" not in text]
    assert not missing, f"operations missing from the OpenAPI page: {missing}"


def test_the_development_page_lists_every_module(site):
    text = _text(site, "development")
    missing = [str(p.relative_to(ROOT)) for p in (ROOT / "emotionq").rglob("*.py") if str(p.relative_to(ROOT)) not in text]
    assert not missing, f"modules missing from the Development page: {missing}"


def test_the_readme_is_short_and_its_links_lead_somewhere():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    targets = re.findall(r"\]\((?!https?://|#)([^)#\s]+)", readme)
    assert targets, "the README links into the docs"
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"
