"""Randomly initialised SenseVoiceSmall checkpoints, for machines that cannot download weights.

``write_sensevoice`` writes a directory that ``funasr.AutoModel(model=<dir>)`` loads through its normal
local-directory path (``model.pt``, ``config.yaml``, ``bpe.model``, ``am.mvn``), every key matched, and the
marker ``emotionq.json`` ({"untrained": true, ...}) that flags results untrained, as
``emotionq.inference.checkpoint`` does for emotion2vec.

The SentencePiece model is built here: exactly ``VOCAB_SIZE`` pieces (funasr sizes the CTC head from it),
``<unk>``/``<s>``/``</s>`` at 0-2, ordinary pieces (ASCII, CJK, kana, Hangul) up to ``FIRST_TAG``, and from
there the tags (``<|en|>``, ``<|HAPPY|>``, ``<|Laughter|>``, ...) at the ids funasr reads, as USER_DEFINED
pieces (other types vanish when decoding). The frontend's ``dither`` is 0, so a result is repeatable.
"""

from __future__ import annotations

import json
from pathlib import Path

from emotionq.inference.checkpoint import MARKER
from emotionq.inference.sensevoice_tokens import FIRST_TAG, SPECIALS, VOCAB_SIZE, tag

BPE_MODEL = "bpe.model"
CMVN = "am.mvn"
FEATURE_DIM = 560  # 80 mel bands x 7 stacked frames (lfr_m)

_ENCODER = {  # SenseVoiceSmall as published (iic/SenseVoiceSmall's config.yaml)
    "output_size": 512, "attention_heads": 4, "linear_units": 2048, "num_blocks": 50, "tp_blocks": 20,
    "dropout_rate": 0.1, "positional_dropout_rate": 0.1, "attention_dropout_rate": 0.1, "input_layer": "pe",
    "pos_enc_class": "SinusoidalPositionEncoder", "normalize_before": True, "kernel_size": 11, "sanm_shfit": 0,
    "selfattention_layer_type": "sanm",
}
ARCHS: dict[str, dict] = {
    "sensevoice-small": {},  # about 234M parameters, like iic/SenseVoiceSmall
    "sensevoice-tiny": {"output_size": 128, "linear_units": 256, "num_blocks": 2, "tp_blocks": 1},  # 3.8M: tests
}


def config(arch: str) -> dict:
    """The ``config.yaml`` of ``arch`` (paths relative to the directory)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}: choose one of {', '.join(ARCHS)}")
    return {
        "model": "SenseVoiceSmall",
        "model_conf": {"length_normalized_loss": True, "sos": 1, "eos": 2, "ignore_id": -1},
        "encoder": "SenseVoiceEncoderSmall",
        "encoder_conf": {**_ENCODER, **ARCHS[arch]},
        "input_size": FEATURE_DIM,
        "tokenizer": "SentencepiecesTokenizer",
        "tokenizer_conf": {"bpemodel": BPE_MODEL, "unk_symbol": "<unk>", "split_with_space": True},
        "frontend": "WavFrontend",
        "frontend_conf": {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25, "frame_shift": 10,
                          "lfr_m": 7, "lfr_n": 6, "cmvn_file": CMVN, "dither": 0.0},
        "init_param": "model.pt",
    }


def pieces() -> list[str]:
    """The vocabulary, in id order."""
    ordinary = [chr(c) for c in range(33, 127)] + ["\u2581"]
    ordinary += ["\u2581" + chr(c) for c in range(33, 127) if chr(c).isalnum()]
    for start, end in ((0x4E00, 0xA000), (0x3040, 0x3100), (0xAC00, 0xD7A4)):  # CJK, kana, Hangul
        ordinary += [chr(c) for c in range(start, end)]
    ordinary = ordinary[:FIRST_TAG - len(SPECIALS)]
    return [*SPECIALS, *ordinary, *(tag(i) for i in range(FIRST_TAG, VOCAB_SIZE))]


def write_bpe_model(path: str | Path) -> Path:
    """A SentencePiece (unigram) model of ``pieces()``, tags as user-defined pieces."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    kinds = pb.ModelProto.SentencePiece
    for i, piece in enumerate(pieces()):
        item = proto.pieces.add()
        item.piece = piece
        if i == 0:
            item.type, item.score = kinds.UNKNOWN, 0.0
        elif i < len(SPECIALS):
            item.type, item.score = kinds.CONTROL, 0.0
        elif i >= FIRST_TAG:
            item.type, item.score = kinds.USER_DEFINED, 0.0
        else:  # longer pieces first when encoding
            item.type, item.score = kinds.NORMAL, -1.0 - 1.0 / len(piece)
    spec = proto.trainer_spec
    spec.model_type = pb.TrainerSpec.UNIGRAM
    spec.vocab_size = VOCAB_SIZE
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = 0, 1, 2, -1
    norm = proto.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix, norm.remove_extra_whitespaces, norm.escape_whitespaces = True, True, True
    path = Path(path)
    path.write_bytes(proto.SerializeToString())
    return path


def write_cmvn(path: str | Path) -> Path:
    """A Kaldi nnet ``am.mvn`` as funasr's WavFrontend reads it: shift and scale per stacked feature
    (a rough normalisation of log-mel energies)."""
    shift = " ".join(["-8.0"] * FEATURE_DIM)
    scale = " ".join(["0.25"] * FEATURE_DIM)
    text = (f"<Nnet>\n<Splice> {FEATURE_DIM} {FEATURE_DIM}\n[ 0 ]\n<AddShift> {FEATURE_DIM} {FEATURE_DIM}\n"
            f"<LearnRateCoef> 0 [ {shift} ]\n<Rescale> {FEATURE_DIM} {FEATURE_DIM}\n"
            f"<LearnRateCoef> 0 [ {scale} ]\n</Nnet>\n")
    path = Path(path)
    path.write_text(text, encoding="utf-8")
    return path


def build_module(arch: str, *, seed: int = 0):
    """A randomly initialised ``SenseVoiceSmall`` of ``arch`` (deterministic per seed)."""
    import torch
    from funasr.models.sense_voice.model import SenseVoiceSmall

    conf = config(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SenseVoiceSmall(encoder=conf["encoder"], encoder_conf=conf["encoder_conf"],
                               input_size=FEATURE_DIM, vocab_size=VOCAB_SIZE, **conf["model_conf"])


def write_sensevoice(directory: str | Path, *, arch: str = "sensevoice-tiny", seed: int = 0, module=None) -> Path:
    """Write a checkpoint of ``arch`` into ``directory``: random weights (seed), or ``module``'s."""
    import torch
    import yaml

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    module = module if module is not None else build_module(arch, seed=seed)
    torch.save(module.state_dict(), directory / "model.pt")
    write_bpe_model(directory / BPE_MODEL)
    write_cmvn(directory / CMVN)
    header = f"# SenseVoiceSmall '{arch}' with random weights (seed {seed}), written by emotionq: untrained.\n"
    (directory / "config.yaml").write_text(header + yaml.safe_dump(config(arch), sort_keys=False), encoding="utf-8")
    marker = {"untrained": True, "family": "sensevoice", "arch": arch, "seed": seed}
    (directory / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return directory
