"""Loading emotion2vec through funasr's ``AutoModel``, and refusing what is not a usable emotion2vec+.

A local directory or a hub id; the head must be the nine emotion2vec+ classes, fully loaded.
torch and funasr are imported only here, when a model is loaded.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from emotionq.errors import ConfigurationError
from emotionq.inference.checkpoint import read_marker, unmatched_keys
from emotionq.inference.labels import LABELS, english

log = logging.getLogger(__name__)


def load_automodel(model: str, *, revision: str | None, device: str, threads: int | None, hub: str,
                   check=None, what: str = "emotion model"):
    """(funasr's AutoModel, whether the checkpoint is marked untrained); ConfigurationError if it cannot load.
    ``check(automodel, model)`` refuses what is not the family's model (default: emotion2vec's)."""
    import torch

    local = local_dir(model)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigurationError(f"device {device!r} was asked for but CUDA is not available: use cpu")
    kwargs = dict(
        model=model,
        device=device,
        hub=hub,
        disable_update=True,
        disable_pbar=True,
        ncpu=threads or torch.get_num_threads(),  # funasr calls torch.set_num_threads(ncpu), default 4
    )
    if revision:
        kwargs["model_revision"] = revision
    if local is not None and (local / "model.pt").is_file():
        kwargs["init_param"] = str(local / "model.pt")  # funasr resolves a relative one against the cwd
    try:
        from funasr import AutoModel

        automodel = AutoModel(**kwargs)
    except Exception as exc:  # noqa: BLE001 - funasr raises anything from asserts to KeyError
        reason = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"  # funasr's can run to pages
        if local is None:
            reason = f"the hub did not provide it (no network, or no such id/revision?) [{reason}]"
        raise ConfigurationError(
            f"cannot load the {what} {model!r}: {reason}. "
            "Name a reachable hub id or a directory with config.yaml and model.pt "
            "(`emotionq model init DIR` writes an untrained one)"
        ) from exc
    if threads:
        torch.set_num_threads(threads)
    (check or check_module)(automodel, model)
    automodel.model.eval()
    model_path = automodel.kwargs.get("model_path")
    untrained = bool(model_path and os.path.isdir(model_path) and read_marker(model_path).get("untrained"))
    return automodel, untrained


def local_dir(model: str) -> Path | None:
    """The directory ``model`` names, None for a hub id; ConfigurationError for a path that is not a model."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not ((path / "config.yaml").is_file() or (path / "configuration.json").is_file()):
            raise ConfigurationError(
                f"{model!r} holds no config.yaml: point the model setting at a model directory "
                "(`emotionq model init DIR` writes an untrained one)"
            )
        return path.resolve()
    if model.startswith((".", "~", os.sep)) or path.exists():
        raise ConfigurationError(f"{model!r} is not a model directory: fix the path or name a hub id")
    return None


def check_module(automodel, model: str) -> None:
    """Refuse what is not emotion2vec with the nine-class head, and heads funasr left random."""
    module = automodel.model
    if not hasattr(module, "extract_features") or getattr(module, "proj", None) is None:
        raise ConfigurationError(f"{model!r} is not emotion2vec with a classification head: use an emotion2vec+ model")
    tokens = list(getattr(automodel.kwargs.get("tokenizer"), "token_list", None) or [])
    if [english(t) for t in tokens] != list(LABELS) or module.proj.out_features != len(LABELS):
        raise ConfigurationError(
            f"{model!r} has labels {tokens}, not the nine emotion2vec+ classes: pin a revision of an emotion2vec+ model"
        )
    missing = unmatched_keys(module, automodel.kwargs.get("init_param", ""), automodel.kwargs.get("scope_map") or [])
    if missing and any(k.startswith("proj.") for k in missing):
        raise ConfigurationError(
            f"the checkpoint of {model!r} lacks the classification head ({len(missing)} keys unmatched): "
            "check the model directory or revision"
        )
    if missing:
        log.warning("%d weights of %s were not in its checkpoint and stay random: %s", len(missing), model, missing[:5])


def autocast_dtype(device: str):
    """bf16 where the GPU supports it, else fp16; None (fp32) on CPU."""
    import torch

    if not device.startswith("cuda"):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
