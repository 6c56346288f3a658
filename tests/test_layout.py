"""The package's layout: every module says what it is for (the docs' Development page lists them from their
docstrings), and imports point one way (api -> web -> jobs layer -> inference; workers -> jobs layer, inference)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from harness import ROOT

PACKAGE = ROOT / "emotionq"
# Which parts of emotionq each part may import (besides ALWAYS's small modules and itself).
ALLOWED = {
    "inference": {"inference"},
    "store": {"store"},
    "jobs": {"jobs", "queues", "inference"},
    "webhooks": {"webhooks", "jobs", "queues"},
    "queues": set(),
    "worker": {"worker", "jobs", "queues", "webhooks", "blobs", "inference"},
    "web": {"web", "jobs", "queues", "webhooks", "blobs"},
    "blobs": {"blobs"},
    "janitor": {"janitor", "jobs", "queues", "webhooks", "blobs"},
    "client": {"client"},
}
ALWAYS = {"errors", "settings", "metrics", "store", "retrying", "vad", "__version__", "LABELS"}


def _emotionq_imports(path: Path) -> set[str]:
    """What ``path`` imports from emotionq, as dotted names below ``emotionq.``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] if node.module != "emotionq" else [f"emotionq.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n.removeprefix("emotionq.") for n in names if n.startswith("emotionq.")}
    return found


def test_every_module_says_what_it_is_for():
    """The Development page's layout is each module's first docstring sentence (scripts/docs_hooks.py):
    a module without one would be a blank row there."""
    silent = [str(path.relative_to(ROOT)) for path in sorted(PACKAGE.rglob("*.py"))
              if not (ast.get_docstring(ast.parse(path.read_text())) or "").strip()]
    assert not silent, f"modules without a docstring saying what they are for: {silent}"


def test_no_two_parts_may_import_each_other():
    both = sorted({tuple(sorted((a, b))) for a, allowed in ALLOWED.items() for b in allowed
                   if b != a and b.split(".")[0] in ALLOWED and a in {x.split(".")[0] for x in ALLOWED[b.split(".")[0]]}})
    assert not both, f"parts that may import each other: {both}"


def test_imports_point_one_way():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        part = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if part not in ALLOWED:
            continue
        for name in _emotionq_imports(path):
            if name.split(".")[0] in ALWAYS:
                continue
            if not any(name == allowed or name.startswith(allowed + ".") for allowed in ALLOWED[part]):
                wrong.append(f"{path.relative_to(ROOT)} imports emotionq.{name}")
    assert not wrong, "\n".join(wrong)


def test_the_api_process_never_imports_torch_or_the_worker():
    code = ("import sys; from emotionq.api import create_app; create_app().openapi(); "
            "print(sorted(m for m in ('torch', 'funasr', 'emotionq.tasks', 'emotionq.worker.scoring') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_no_code_reaches_into_another_objects_private_attributes():
    """Parts meet through public names (the model contract, for one): ``x._attr`` only on ``self`` or ``cls``."""
    public_underscored = {"_replace", "_asdict", "_fields", "_make"}  # namedtuple's API
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and node.attr not in public_underscored
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
    assert not wrong, "\n".join(wrong)
