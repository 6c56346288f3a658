"""The cache of exported graphs: one directory per model, valid only for the weights and software it was built from.

``<cache_dir>/<model>-<id hash>/`` holds the graphs (``emotionq.inference.export.GRAPHS``: ``local.onnx``,
``context.onnx``) and ``manifest.json``: the key (``cache_key``: the weights as funasr loaded them, the
model's config, the versions of torch, funasr, onnxruntime and onnx, ``EXPORTER_VERSION``/``OPSET``) and
each file's sha256. ``cached`` opens a valid entry, or builds it (again) under a file lock when its manifest
is missing, stale or does not match the files, or when the caller cannot open them; a build is written
aside and moved in, manifest last, so a build cut short never leaves a valid entry. The int8 graphs are a
second entry beside the first (``emotionq.inference.runtime``), keyed by the fp32 key and the recipe.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

MANIFEST = "manifest.json"
T = TypeVar("T")

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """Where the graphs go when no ``cache_dir`` is given (the worker gives its setting, ``runtime_cache_dir``):
    $XDG_CACHE_HOME/emotionq/onnx (~/.cache/...)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "emotionq" / "onnx"


def cache_entry(cache_dir: str | Path, model_id: str) -> Path:
    """The directory of ``model_id``'s graphs under ``cache_dir`` (one per model; its key is in the manifest)."""
    path = Path(model_id).expanduser()
    ident = str(path.resolve()) if path.is_dir() else model_id
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(ident).name or ident).strip("-.")[:60] or "model"
    return Path(cache_dir) / f"{slug}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"


def cache_key(module) -> str:
    """What the graphs depend on: the loaded weights and config, and the exporting and running software."""
    import torch
    from omegaconf import OmegaConf

    from emotionq.inference.export import EXPORTER_VERSION, OPSET

    digest = hashlib.sha256()
    versions = {name: version(name) for name in ("torch", "funasr", "onnx", "onnxruntime")}
    digest.update(json.dumps({"exporter": EXPORTER_VERSION, "opset": OPSET, "versions": versions,
                              "config": OmegaConf.to_container(module.cfg, resolve=True)},
                             sort_keys=True, default=str).encode())
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(np.ascontiguousarray(tensor.detach().to("cpu", torch.float32 if tensor.dtype == torch.bfloat16
                                                                 else tensor.dtype).numpy()).data)
    return digest.hexdigest()


def invalid(entry: Path, key: str) -> str | None:
    """Why the cached graphs in ``entry`` must not be used, or None."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
    except FileNotFoundError:
        return "none cached"
    except (OSError, ValueError):
        return "unreadable manifest"
    if manifest.get("key") != key:
        return "stale: built for other weights or software"
    for name, digest in (manifest.get("files") or {}).items():
        path = entry / name
        if not path.is_file() or sha256(path) != digest:
            return f"corrupt: {name} does not match its manifest"
    if set(manifest.get("files") or {}) != {p.name for p in paths(entry).values()}:
        return "incomplete manifest"
    return None


def cached(entry: Path, key: str, make: Callable[[Path], dict[str, Path]], open_graphs: Callable[[dict[str, Path]], T],
           *, rebuild: bool, verb: str) -> tuple[T, str]:
    """``open_graphs(paths)`` of the graphs in ``entry`` if they are valid for ``key`` (and it opens them), else of
    the graphs made (again) by ``make(directory)``; and how they came."""
    import fcntl

    entry.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.with_name(entry.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # worker processes of one host start together: one builds
        reason = "rebuilt after failing its check" if rebuild else invalid(entry, key)
        if reason is None:
            try:
                return open_graphs(paths(entry)), "cached graphs"
            except Exception as exc:  # noqa: BLE001 - onnxruntime refuses the file: rebuild it
                reason = f"onnxruntime could not load the cached graphs ({type(exc).__name__})"
        log.info("writing the %s onnx graphs of the model to %s (%s)", verb, entry, reason)
        began = time.perf_counter()
        write(entry, key, make)
        return open_graphs(paths(entry)), f"{verb} ({reason}) in {time.perf_counter() - began:.1f} s"


def write(entry: Path, key: str, make) -> None:
    """``make(directory)`` into a temporary directory, then move the graphs in; the manifest goes last."""
    entry.mkdir(parents=True, exist_ok=True)
    (entry / MANIFEST).unlink(missing_ok=True)  # a build cut short leaves no valid entry
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=entry.parent))
    try:
        paths = make(tmp)
        files = {path.name: sha256(path) for path in paths.values()}
        for path in paths.values():
            os.replace(path, entry / path.name)
        manifest = {"key": key, "files": files, "created_at": time.time(),
                    "versions": {name: version(name) for name in ("torch", "funasr", "onnx", "onnxruntime")}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp / MANIFEST, entry / MANIFEST)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def paths(entry: Path) -> dict[str, Path]:
    from emotionq.inference.export import GRAPHS

    return {name: entry / f"{name}.onnx" for name in GRAPHS}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
