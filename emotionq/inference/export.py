"""emotion2vec's forward as two ONNX graphs, traced from the funasr-loaded module.

The graphs split the forward where ``encoder.score_windows`` splits it, so that the
onnxruntime path does what the torch path does:

- ``local.onnx``: the conv feature encoder and its projection (``AudioEncoder.local_features``),
  ``source`` (B, S) layer-normed samples -> ``features`` (B, T, D); run one window at a time.
- ``context.onnx``: everything after it (positional convolutions, prenet, blocks, extra tokens
  removed), ``features`` (B, T, D) zero-padded + ``padding_mask`` (B, T) bool, True = padded
  frame -> ``frames`` (B, T, D).

The input layer norm (``F.layer_norm(x, x.shape)``, which does not export with a dynamic length),
the mean over frames and the ``proj`` head stay in torch, shared with the torch path. Tracing
funasr's code as it is would bake sizes into the graph; these changes, made only while tracing,
keep every length up to the window correct and give what funasr gives:

- ALiBi: funasr slices a cached bias of the longest length seen, so a trace fixes T (a graph
  exported at 5 s failed on longer input). Here the bias is computed in the graph from T
  (slope x -|i - j|, funasr's own formula and values) as one (1, H, T, T) row that broadcasts
  over the batch: no length limit, and no 150 MB constant of a 30 s bias in the file.
- The frame padding mask is an input (``convert_padding_mask`` is skipped), and padded frames are
  zeroed before each positional convolution, as ``funasr_patches.zeroed_padding`` does in torch.
- ``AltAttention``'s in-place ``attn[:, :H] += bias`` exports as ScatterND (two extra copies of
  the B x H x T x T scores per layer); with every head an ALiBi head it is a plain add. And the
  padding mask, which funasr applies to the scores in every layer (``masked_fill(-inf)`` after the
  add), is folded into the bias once: ``scores + bias.masked_fill(mask, -inf)`` gives the same
  values, and saves a pass over the scores per layer. All False without padding: no change.

``EXPORTER_VERSION`` goes into the cache key (see ``emotionq.inference.runtime``): bump it when
anything here changes what the graphs compute.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

EXPORTER_VERSION = 1
OPSET = 17
GRAPHS = ("local", "context")
_EXAMPLE_S = (2.0, 1.5)  # trace lengths; any lengths run afterwards


class NotExportable(Exception):
    """The module uses a variant of emotion2vec these graphs do not cover."""


def export(module, directory: str | Path) -> dict[str, Path]:
    """Write ``local.onnx`` and ``context.onnx`` for ``module`` (a loaded funasr Emotion2vec) into ``directory``."""
    import torch

    encoder = module.modality_encoders["AUDIO"]
    _check_exportable(module)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / f"{name}.onnx" for name in GRAPHS}
    dim = encoder.project_features[-1].out_features
    generator = torch.Generator().manual_seed(0)
    lengths = [int(s * 16000) for s in _EXAMPLE_S]
    frames = [_frames(encoder, n) for n in lengths]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():  # not inference_mode: funasr's ALiBi code rejects it
            warnings.simplefilter("ignore")  # TracerWarnings about Python values: the tests prove the graphs
            local, context = _wrappers(module, encoder)
            source = torch.randn(1, lengths[0], generator=generator)
            torch.onnx.export(
                local, (source,), str(paths["local"]), input_names=["source"],
                output_names=["features"], opset_version=OPSET, dynamo=False,
                dynamic_axes={"source": {0: "batch", 1: "samples"}, "features": {0: "batch", 1: "frames"}},
            )
            features = torch.randn(len(frames), max(frames), dim, generator=generator)
            padding_mask = torch.arange(max(frames))[None, :] >= torch.tensor(frames)[:, None]
            torch.onnx.export(
                context, (features, padding_mask), str(paths["context"]),
                input_names=["features", "padding_mask"], output_names=["frames"], opset_version=OPSET,
                dynamo=False, dynamic_axes={name: {0: "batch", 1: "frames"}
                                            for name in ("features", "padding_mask", "frames")},
            )
    finally:
        module.train(was_training)  # torch.onnx.export restores only the wrappers' own mode
    return paths


def _wrappers(module, encoder):
    """The two graphs' modules: ``local_features`` alone, and ``extract_features`` from conv features on."""
    import torch

    class Local(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, source):
            return self.encoder.local_features(source)

    class Context(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = module

        def forward(self, features, padding_mask):
            with _from_features(self.module, padding_mask):
                return self.module.extract_features(features, padding_mask=padding_mask)["x"]

    return Local().eval(), Context().eval()


@contextlib.contextmanager
def _from_features(module, padding_mask):
    """While tracing: funasr's forward from conv features and a frame mask, with a dynamic-length ALiBi bias."""
    import torch

    encoder = module.modality_encoders["AUDIO"]
    slopes = _alibi_slopes(encoder.modality_cfg.num_alibi_heads)

    def alibi_bias(batch_size, time_steps, heads, dtype, device, **_):  # funasr's get_alibi_bias, any T
        positions = torch.arange(time_steps, device=device)
        distance = (positions.unsqueeze(0) - positions.unsqueeze(1)).abs() * -1
        return (slopes.to(device).view(-1, 1, 1) * distance.unsqueeze(0)).to(dtype).unsqueeze(0)

    def zero_padded(conv, args):
        (x,) = args  # (B, D, T)
        return (x.masked_fill(padding_mask[:, None, :], 0),)

    patched = [(encoder, "local_features", lambda features: features),
               (encoder, "convert_padding_mask", lambda x, mask: mask),
               (encoder, "get_alibi_bias", alibi_bias)]
    folded: dict = {}  # the bias with the mask folded in, shared by every layer of the trace
    patched += [(block.attn, "forward", _attention(block.attn, folded)) for block in _blocks(module)]
    saved = [(obj, name, obj.__dict__.get(name, _MISSING)) for obj, name, _ in patched]
    positional = encoder.relative_positional_encoder
    handles = [m.register_forward_pre_hook(zero_padded) for m in positional.modules() if isinstance(m, torch.nn.Conv1d)]
    for obj, name, value in patched:
        obj.__dict__[name] = value  # instance attributes shadow the methods (get_alibi_bias is one already)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for obj, name, value in saved:
            if value is _MISSING:
                del obj.__dict__[name]
            else:
                obj.__dict__[name] = value


_MISSING = object()


def _attention(attn, folded: dict):
    """funasr's ``AltAttention.forward`` (non-cosine, eval), with the ALiBi slice add as an add and the
    padding mask folded into the bias (``folded`` keeps it per (bias, mask) pair, for every layer)."""
    import torch

    def forward(x, padding_mask=None, alibi_bias=None):
        batch, length, channels = x.shape
        qkv = attn.qkv(x).reshape(batch, length, 3, attn.num_heads, channels // attn.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = (q * attn.scale) @ k.transpose(-2, -1)
        mask = None if padding_mask is None else padding_mask.unsqueeze(1).unsqueeze(2).to(torch.bool)
        if alibi_bias is not None and alibi_bias.size(1) == attn.num_heads:
            if mask is not None:
                key = (id(alibi_bias), id(padding_mask))
                if key not in folded:
                    folded[key] = (alibi_bias, padding_mask, alibi_bias.masked_fill(mask, float("-inf")))
                alibi_bias, mask = folded[key][2], None
            scores = scores.type_as(alibi_bias) + alibi_bias
        elif alibi_bias is not None:
            scores = scores.type_as(alibi_bias)
            scores[:, : alibi_bias.size(1)] += alibi_bias
        if mask is not None:
            scores = scores.masked_fill(mask, float("-inf"))
        scores = scores.softmax(dim=-1, dtype=torch.float32).to(dtype=q.dtype)
        return attn.proj((scores @ v).transpose(1, 2).reshape(batch, length, channels))

    return forward


def _alibi_slopes(heads: int):
    """funasr's per-head ALiBi slopes (``get_alibi`` gives slope x -|i - j|; at distance 1 that is -slope)."""
    from funasr.models.emotion2vec.base import get_alibi

    return -get_alibi(2, heads)[:, 0, 1]


def _blocks(module) -> list:
    return [*module.modality_encoders["AUDIO"].context_encoder.blocks, *module.blocks]


def _frames(encoder, samples: int) -> int:
    """Frames the conv encoder makes of ``samples`` (funasr's output-length formula)."""
    for _, kernel, stride in encoder.feature_enc_layers:
        samples = (samples - kernel) // stride + 1
    return samples


def _check_exportable(module) -> None:
    """NotExportable for configurations the changes above do not reproduce exactly."""
    encoder = module.modality_encoders["AUDIO"]
    cfg = encoder.modality_cfg
    reasons = []
    if encoder.get_alibi_bias is None or cfg.learned_alibi:
        reasons.append("it has no fixed ALiBi bias (use_alibi_encoder off or learned_alibi on)")
    if encoder.alibi_scale is not None and encoder.alibi_scale.size(0) != 1:
        reasons.append("its ALiBi scale is per layer")
    if encoder.fixed_positional_encoder is not None or encoder.relative_positional_encoder is None:
        reasons.append("its positional encoder is not the convolutional one")
    if any(getattr(block.attn, "cosine_attention", False) for block in _blocks(module)):
        reasons.append("it uses cosine attention")
    if reasons:
        raise NotExportable("; ".join(reasons))
