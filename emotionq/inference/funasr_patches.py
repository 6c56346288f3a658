"""Where emotionq reaches into funasr's emotion2vec module, and why: three patches of its forward pass.

Padding, and why funasr's own ``padding_mask`` is not enough (the difference
reported in ddlBoJack/emotion2vec issues 37 and 63): attention masks padded
frames out exactly (``-inf`` before the softmax), ALiBi depends only on the
distance between two frames, and the conv feature encoder, its layer norms and
the MLPs work frame by frame, so none of them lets padding into a valid frame.
The positional encoder does: five grouped convolutions (kernel 19) over the
frames, which funasr feeds padded frames that are not zero (the conv features of
zero samples go through layer norms with biases) and whose hidden layers turn
padded frames non-zero again. Alone, a window's convolutions see zeros past its
end; padded, its last ~45 frames see the padding, and through attention every
frame changes. ``zeroed_padding`` zeroes padded frames before each of those
convolutions, which makes a padded window's frames those it gets alone.

- ``zeroed_padding``: the padding fix above.
- ``local_features_per_window``: the conv feature encoder on each window alone (speed; same output).
- ``trim_alibi_cache``: funasr's ALiBi bias cache shrunk back after each call (memory).

Each names the funasr attribute it touches; a funasr upgrade that renames one fails loudly here.
"""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def local_features_per_window(module, lengths: list[int]):
    """Run the conv feature encoder on each window alone, over its own samples only.

    The encoder works frame by frame (convolutions without padding, per-frame layer norms), so a
    window's frames are the same alone or in a batch; but on a batch its activations (512
    channels at 1/5 of the sample rate, x windows) outgrow the CPU caches, and it ran about half
    again slower per window than one window at a time. Per window it keeps that speed, skips
    the padding, and leaves padded frames zero (attention and ``_zeroed_padding`` ignore them).
    The transformer, where batching pays, still sees the whole batch.
    """
    encoder = module.modality_encoders["AUDIO"]
    if len(lengths) == 1:
        yield
        return
    local_features = encoder.local_features  # the bound method funasr's forward calls

    def per_window(features):  # (B, S) -> (B, T, D)
        rows = [local_features(features[i : i + 1, :n]) for i, n in enumerate(lengths)]
        out = rows[0].new_zeros(len(rows), max(r.shape[1] for r in rows), rows[0].shape[2])
        for i, row in enumerate(rows):
            out[i, : row.shape[1]] = row[0]
        return out

    encoder.local_features = per_window  # an instance attribute, for this call only (under the model lock)
    try:
        yield
    finally:
        del encoder.local_features


@contextlib.contextmanager
def zeroed_padding(module, padding_mask):
    """Zero padded frames at the input of each convolution of the positional encoder.

    Alone, a window's positional convolutions see zeros past its end (their own zero padding);
    padded in a batch they would see padded frames, which are not zero. The frame-level mask is
    the model's own (``AudioEncoder.convert_padding_mask``), the one its attention uses.
    """
    import torch

    encoder = module.modality_encoders["AUDIO"]
    positional = encoder.relative_positional_encoder
    if padding_mask is None or positional is None:
        yield
        return
    masks: dict[int, torch.Tensor] = {}

    def zero(conv, args):
        (x,) = args  # (B, D, T)
        if x.shape[-1] not in masks:
            frame_mask = encoder.convert_padding_mask(x.transpose(1, 2), padding_mask)  # (B, T), True = padded
            masks[x.shape[-1]] = frame_mask[:, None, :]
        return (x.masked_fill(masks[x.shape[-1]], 0),)

    handles = [m.register_forward_pre_hook(zero) for m in positional.modules() if isinstance(m, torch.nn.Conv1d)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def trim_alibi_cache(module) -> None:
    """Shrink funasr's ALiBi cache back to one batch row.

    funasr caches the bias as (largest batch seen x heads) x T x T for the longest T seen and
    never shrinks it, so a batch of short windows followed by one long window would keep
    batch x heads x T^2 floats for good; one row is what single windows need.
    """
    heads = module.modality_encoders["AUDIO"].modality_cfg.num_alibi_heads
    for key, cached in list(module.alibi_biases.items()):
        if cached.size(0) > heads:  # get_alibi(T, heads).repeat(batch, 1, 1): the first rows are one copy
            module.alibi_biases[key] = cached[:heads].clone()
