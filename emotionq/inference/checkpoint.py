"""Randomly initialised emotion2vec checkpoints, for machines that cannot download weights.

``write_checkpoint`` writes a directory that ``funasr.AutoModel(model=<dir>)``
loads through its normal local-directory path, every key matched:
``config.yaml``, ``model.pt``, ``tokens.txt`` and the marker ``emotionq.json``
({"untrained": true, ...}) by which results are flagged untrained.

Paths inside ``config.yaml`` are relative (``model.pt``, ``tokens.txt``), so the
directory can be moved. funasr points ``tokenizer_conf.token_list`` at
``<dir>/tokens.txt`` itself; for ``init_param`` it keeps the configured path
when that exists *relative to the working directory* and otherwise falls back to
``<dir>/model.pt``, so ``EmotionModel.load`` passes the absolute path explicitly.

Command line: ``python -m emotionq.inference.checkpoint DIR [--arch tiny|base|large] [--seed N]``.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

from emotionq.inference.labels import TOKENS

MARKER = "emotionq.json"

# model_conf of iic/emotion2vec_plus_large (its config.yaml), audio modality only.
_PLUS_LARGE: dict = {
    "_name": "data2vec_multi",
    "activation_dropout": 0.0,
    "adversarial_hidden_dim": 128,
    "adversarial_training": False,
    "adversarial_weight": 0.1,
    "attention_dropout": 0.1,
    "average_top_k_layers": 16,
    "batch_norm_target_layer": False,
    "clone_batch": 12,
    "cls_loss": 1.0,
    "cls_type": "chunk",
    "d2v_loss": 1.0,
    "decoder_group": False,
    "depth": 8,
    "dropout_input": 0.0,
    "ema_anneal_end_step": 20000,
    "ema_decay": 0.9997,
    "ema_encoder_only": False,
    "ema_end_decay": 1.0,
    "ema_same_dtype": True,
    "embed_dim": 1024,
    "encoder_dropout": 0.1,
    "end_drop_path_rate": 0.0,
    "end_of_block_targets": False,
    "instance_norm_target_layer": True,
    "instance_norm_targets": False,
    "layer_norm_first": False,
    "layer_norm_target_layer": False,
    "layer_norm_targets": False,
    "layerdrop": 0.0,
    "log_norms": True,
    "loss_beta": 0.0,
    "loss_scale": None,
    "mae_init": False,
    "max_update": 100000,
    "min_pred_var": 0.01,
    "min_target_var": 0.1,
    "mlp_ratio": 4.0,
    "normalize": True,
    "modalities": {
        "_name": None,
        "audio": {
            "add_masks": False,
            "alibi_max_pos": None,
            "alibi_scale": 1.0,
            "conv_pos_depth": 5,
            "conv_pos_groups": 16,
            "conv_pos_pre_ln": False,
            "conv_pos_width": 95,
            "decoder": {
                "add_positions_all": False,
                "add_positions_masked": False,
                "decoder_dim": 768,
                "decoder_groups": 16,
                "decoder_kernel": 7,
                "decoder_layers": 4,
                "decoder_residual": True,
                "input_dropout": 0.1,
                "projection_layers": 1,
                "projection_ratio": 2.0,
            },
            "ema_local_encoder": False,
            "encoder_zero_mask": True,
            "end_drop_path_rate": 0.0,
            "extractor_mode": "layer_norm",
            "feature_encoder_spec": "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]",
            "init_extra_token_zero": True,
            "inverse_mask": False,
            "keep_masked_pct": 0.0,
            "learned_alibi": False,
            "learned_alibi_scale": True,
            "learned_alibi_scale_per_head": True,
            "learned_alibi_scale_per_layer": False,
            "local_grad_mult": 1.0,
            "mask_channel_length": 64,
            "mask_channel_prob": 0.0,
            "mask_dropout": 0.0,
            "mask_length": 5,
            "mask_noise_std": 0.01,
            "mask_prob": 0.55,
            "mask_prob_adjust": 0.1,
            "mask_prob_min": None,
            "model_depth": 8,
            "num_alibi_heads": 16,
            "num_extra_tokens": 10,
            "prenet_depth": 4,
            "prenet_dropout": 0.1,
            "prenet_layerdrop": 0.0,
            "remove_masks": False,
            "start_drop_path_rate": 0.0,
            "type": "AUDIO",
            "use_alibi_encoder": True,
        },
    },
    "norm_affine": True,
    "norm_eps": 1.0e-05,
    "num_heads": 16,
    "post_mlp_drop": 0.1,
    "recon_loss": 0.0,
    "seed": 1,
    "shared_decoder": None,
    "skip_ema": False,
    "start_drop_path_rate": 0.0,
    "supported_modality": "AUDIO",
}

# Per arch: (top-level overrides, audio-modality overrides, decoder overrides).
ARCHS: dict[str, tuple[dict, dict, dict]] = {
    "large": ({}, {}, {}),  # 164,048,921 parameters, like emotion2vec_plus_large
    "base": (  # about 93.8M parameters, like emotion2vec_base / plus_base / plus_seed
        {"embed_dim": 768, "num_heads": 12},
        {"num_alibi_heads": 12},
        {"decoder_dim": 384},
    ),
    "tiny": (  # the same conv feature encoder, a 64-dim 1+2-block transformer: for tests
        {"embed_dim": 64, "num_heads": 2, "depth": 2},
        {"num_alibi_heads": 2, "prenet_depth": 1, "model_depth": 2},
        {"decoder_dim": 64, "decoder_layers": 1},
    ),
}


def model_conf(arch: str) -> dict:
    """The ``model_conf`` of one of ``ARCHS``."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}: choose one of {', '.join(ARCHS)}")
    top, audio, decoder = ARCHS[arch]
    conf = copy.deepcopy(_PLUS_LARGE)
    conf.update(top)
    conf["modalities"]["audio"].update(audio)
    conf["modalities"]["audio"]["decoder"].update(decoder)
    return conf


def write_checkpoint(directory: str | Path, *, arch: str = "tiny", seed: int = 0) -> Path:
    """Write a random-weight checkpoint of ``arch`` into ``directory``; deterministic per seed."""
    import torch
    import yaml
    from funasr.models.emotion2vec.model import Emotion2vec

    conf = model_conf(arch)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = Emotion2vec(model_conf=conf, vocab_size=len(TOKENS))
    torch.save(module.state_dict(), directory / "model.pt")
    (directory / "tokens.txt").write_text("".join(f"{t}\n" for t in TOKENS), encoding="utf-8")
    config = {
        "model": "Emotion2vec",
        "model_conf": conf,
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>", "split_with_space": True, "token_list": "tokens.txt"},
        "init_param": "model.pt",
    }
    header = f"# emotion2vec '{arch}' with random weights (seed {seed}), written by emotionq: untrained.\n"
    (directory / "config.yaml").write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    marker = {"untrained": True, "arch": arch, "seed": seed}
    (directory / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return directory


def read_marker(directory: str | Path) -> dict:
    """The ``emotionq.json`` marker of a local model directory, or ``{}``."""
    path = Path(directory) / MARKER
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def unmatched_keys(module, path: str | Path, scope_map=()) -> list[str] | None:
    """Keys of ``module`` that funasr's lenient loader left at their initial values.

    funasr skips missing keys and shape mismatches with a log line only; this
    repeats its matching on a memory-mapped checkpoint (no weights read).
    None when the file cannot be memory-mapped (the legacy, non-zip torch.save format).
    """
    import torch

    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception:  # noqa: BLE001 - legacy (non-zip) checkpoints: cannot check cheaply
        return None
    for wrapper in ("state_dict", "model_state_dict", "model"):  # as funasr unwraps
        if isinstance(state, dict) and wrapper in state:
            state = state[wrapper]
    pairs = list(scope_map) + ["module.", "None"]
    pairs = [("" if s.lower() == "none" else s, "" if d.lower() == "none" else d) for s, d in zip(pairs[::2], pairs[1::2])]
    missing = []
    for key, value in module.state_dict().items():
        sources = [key] + [
            key.replace(dst, src, 1) if dst else src + key for src, dst in pairs if not dst or key.startswith(dst)
        ]
        found = next((state[s] for s in sources if s in state), None)
        if found is None or tuple(found.shape) != tuple(value.shape):
            missing.append(key)
    return missing


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a random-weight emotion2vec checkpoint (untrained).")
    parser.add_argument("directory")
    parser.add_argument("--arch", choices=sorted(ARCHS), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_checkpoint(args.directory, arch=args.arch, seed=args.seed))


if __name__ == "__main__":
    main()
