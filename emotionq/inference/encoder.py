"""emotion2vec's forward pass over windows on any runtime, and the torch runtime.

``score_windows`` runs what surrounds the encoder (layer norm in, the mean and the head out, as funasr's
``Emotion2vec.inference`` runs them); ``TorchRuntime`` runs the encoder on funasr's module (under autocast
on CUDA). ``emotionq.inference.runtime.OnnxRuntime`` is the other runtime.

Shared by the model (``EmotionModel``) and the runtime's check at load, which scores a probe batch on
each candidate runtime before the model is built with one.
"""

from __future__ import annotations

import contextlib

import numpy as np

from emotionq.inference.funasr_patches import local_features_per_window, zeroed_padding


class TorchRuntime:
    """funasr's module runs the encoder: under ``torch.autocast`` on CUDA (``autocast_dtype``), fp32 otherwise."""

    name = "torch"

    def __init__(self, module, autocast_dtype=None) -> None:
        self._module = module
        self.autocast_dtype = autocast_dtype  # None: full precision

    @property
    def dtype(self) -> str:
        """The compute dtype: autocast's on CUDA, float32 otherwise."""
        import torch

        return str(self.autocast_dtype or torch.float32).removeprefix("torch.")

    def autocast(self, device):
        """``torch.autocast`` at ``autocast_dtype`` on a CUDA ``device``; nothing elsewhere."""
        import torch

        if self.autocast_dtype is None or device.type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.autocast_dtype)

    def features(self, sources: list) -> tuple:
        """The module's frames (B, T, D) float32 of layer-normed windows, zero-padded, and each one's frame count."""
        import torch

        module = self._module
        device = sources[0].device
        lengths = [s.numel() for s in sources]
        if len(set(lengths)) == 1:
            batch, padding_mask = torch.stack(sources), None
        else:
            batch = sources[0].new_zeros(len(sources), max(lengths))
            for row, source in zip(batch, sources):
                row[: source.numel()] = source
            padding_mask = torch.arange(batch.shape[1], device=device)[None, :] >= torch.tensor(
                lengths, device=device
            )[:, None]
        with self.autocast(device), local_features_per_window(module, lengths), zeroed_padding(module, padding_mask):
            out = module.extract_features(batch, padding_mask=padding_mask)
        x = out["x"].float()  # (B, T, D)
        pad = out["padding_mask"]  # (B, T) True = padded frame, or None
        counts = [x.shape[1]] * len(sources) if pad is None else (~pad).sum(dim=-1).tolist()
        return x, counts

    def close(self) -> None:
        self._module = None


def score_windows(module, runtime, windows: list[np.ndarray], frames: list[bool]) -> list[dict]:
    """funasr's Emotion2vec.inference for several windows in one pass: per window ``n`` (its
    frame count), ``mean`` (1 x D float32, over its valid frames), ``scores``, ``frames`` (n x D or None).

    Each window is layer-normed over its own samples, then zero-padded to the longest; the
    sample-level ``padding_mask`` (True = padding) keeps padded frames out of attention and
    ``funasr_patches.zeroed_padding`` out of the positional convolution. Valid frames are those the
    model's returned ``padding_mask`` leaves False (funasr's conv output-length formula). ``runtime``
    gives the frames (``TorchRuntime`` or exported graphs, the same way); the mean and ``module``'s
    head run here, on torch.
    """
    import torch

    device = next(module.parameters()).device
    with torch.inference_mode():
        sources = []
        for window in windows:
            source = torch.from_numpy(window).to(device)
            sources.append(normalized(source) if module.cfg.normalize else source)
        x, counts = runtime.features(sources)
        results = []
        for i, n in enumerate(counts):
            valid = x[i, :n]  # the valid frames come first
            mean = valid.mean(dim=0, keepdim=True)
            results.append(
                {"n": n, "mean": mean, "scores": head_scores(module, mean), "frames": valid.cpu() if frames[i] else None}
            )
        return results


def normalized(source):
    """A window (1-d tensor of samples) layer-normed over its own samples, as funasr's Emotion2vec.inference does
    where the model's ``cfg.normalize`` asks for it."""
    import torch.nn.functional as F

    return F.layer_norm(source, source.shape)


def head_scores(module, mean) -> list[float]:
    """Softmax over the nine classes from a (1, D) mean feature, in float32."""
    import torch

    with torch.inference_mode():
        logits = module.proj(mean)
        return torch.softmax(logits, dim=-1)[0].cpu().tolist()
