"""The model layer stays importable by the API: no torch, funasr, Celery or FastAPI at import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import emotionq.inference

PACKAGE = Path(emotionq.inference.__file__).parent


def test_import_is_cheap():
    code = "import sys, emotionq.inference; print([m for m in ('torch', 'funasr', 'celery', 'fastapi') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def _imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((alias.name, node) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield node.module or "", node


def test_imports_point_one_way():
    for path in PACKAGE.glob("*.py"):
        for name, _ in _imports(path):
            top = name.split(".")[0]
            assert top not in ("celery", "fastapi", "kombu", "starlette"), (path.name, name)
            if top == "emotionq":
                # errors, the package root (LABELS: stdlib only, shared with the client) and the VAD's options
                # (emotionq.vad: dependency-free, shared with the upload form)
                assert name in ("emotionq", "emotionq.errors", "emotionq.vad") or \
                    name.startswith("emotionq.inference"), (path.name, name)


def test_torch_and_funasr_only_inside_functions():
    for path in PACKAGE.glob("*.py"):
        module_level = ast.parse(path.read_text()).body
        names = [name for node in module_level for name, n in _imports_of(node)]
        assert not [n for n in names if n.split(".")[0] in ("torch", "funasr", "av", "soxr")], path.name


def _imports_of(node):
    if isinstance(node, ast.Import):
        return [(a.name, node) for a in node.names]
    if isinstance(node, ast.ImportFrom):
        return [(node.module or "", node)]
    return []
