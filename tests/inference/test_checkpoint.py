"""emotionq.inference.checkpoint: random-weight checkpoints that funasr loads, every key matched."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from emotionq.inference.checkpoint import (
    main,
    model_conf,
    unmatched_keys,
    write_checkpoint,
)


def _load_with_funasr(directory):
    from funasr import AutoModel

    return AutoModel(
        model=str(directory), device="cpu", disable_update=True, disable_pbar=True, ncpu=torch.get_num_threads()
    )


def _assert_all_keys_loaded(automodel, directory):
    saved = torch.load(directory / "model.pt")
    loaded = automodel.model.state_dict()
    assert set(loaded) == set(saved)
    for key, tensor in saved.items():
        assert torch.equal(loaded[key], tensor), key


def test_funasr_loads_every_key(tiny_model_dir, caplog):
    caplog.set_level(logging.INFO)

    automodel = _load_with_funasr(tiny_model_dir)

    _assert_all_keys_loaded(automodel, tiny_model_dir)
    assert "<All keys matched successfully>" in caplog.text
    assert unmatched_keys(automodel.model, tiny_model_dir / "model.pt") == []
    assert automodel.kwargs["tokenizer"].token_list[0] == "生气/angry"


def test_the_directory_can_be_moved(tmp_path, tiny_model_dir, monkeypatch):
    moved = tmp_path / "moved"
    shutil.copytree(tiny_model_dir, moved)
    monkeypatch.chdir(tmp_path)

    _assert_all_keys_loaded(_load_with_funasr(moved), moved)


def test_files_and_marker(tiny_model_dir):
    assert sorted(p.name for p in tiny_model_dir.iterdir()) == ["config.yaml", "emotionq.json", "model.pt", "tokens.txt"]
    assert json.loads((tiny_model_dir / "emotionq.json").read_text()) == {"untrained": True, "arch": "tiny", "seed": 0}
    assert (tiny_model_dir / "tokens.txt").read_text(encoding="utf-8").split("\n")[:9][-1] == "<unk>"
    config = (tiny_model_dir / "config.yaml").read_text()
    assert "scope_map" not in config and "init_param: model.pt" in config


def test_same_seed_same_weights_other_seed_other_weights(tmp_path, tiny_model_dir):
    again = torch.load(write_checkpoint(tmp_path / "again", seed=0) / "model.pt")
    other = torch.load(write_checkpoint(tmp_path / "other", seed=1) / "model.pt")
    first = torch.load(tiny_model_dir / "model.pt")

    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


@pytest.mark.parametrize(
    ("arch", "params", "dim", "heads"),
    [("large", 164_048_921, 1024, 16), ("base", 93_797_909, 768, 12), ("tiny", None, 64, 2)],
)
def test_architectures(arch, params, dim, heads):
    from funasr.models.emotion2vec.model import Emotion2vec

    conf = model_conf(arch)
    assert (conf["embed_dim"], conf["num_heads"], conf["modalities"]["audio"]["num_alibi_heads"]) == (dim, heads, heads)
    with torch.device("meta"):  # shapes only, no memory
        module = Emotion2vec(model_conf=conf, vocab_size=9)
    if params is not None:
        assert sum(p.numel() for p in module.parameters()) == params


def test_unknown_arch():
    with pytest.raises(ValueError, match="tiny"):
        model_conf("huge")


def test_command_line(tmp_path, capsys):
    main([str(tmp_path / "cli"), "--arch", "tiny", "--seed", "3"])

    assert json.loads((tmp_path / "cli" / "emotionq.json").read_text())["seed"] == 3
    assert str(tmp_path / "cli") in capsys.readouterr().out
