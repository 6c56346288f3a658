"""SenseVoiceSmall: the checkpoint `emotionq model init --arch sensevoice-tiny` writes loads whole through
funasr, and the service's decode is funasr's own ``generate``, batched or one segment at a time."""

from __future__ import annotations

import numpy as np
import pytest

from emotionq.errors import ConfigurationError
from emotionq.inference import decode
from emotionq.inference.sensevoice_tokens import EMOTION_IDS, EVENT_IDS, LANGUAGE_IDS, TEXTNORM_IDS, VOCAB_SIZE


@pytest.fixture(scope="module")
def sensevoice(sensevoice_dir):
    from emotionq.inference.contract import family

    model = family("sensevoice").load(str(sensevoice_dir), device="cpu", threads=1)
    yield model
    model.close()


@pytest.fixture(scope="module")
def segments(two_speakers):
    """The two turns and a stretch across both (different lengths: they share padded passes)."""
    samples = decode(two_speakers[0])
    return [samples[8000:40000], samples[40000:90000], samples[20000:70000], samples[9000:17000]]


def test_the_checkpoint_loads_whole_with_the_tags_at_funasrs_ids(sensevoice, sensevoice_dir):
    import sentencepiece
    import torch

    saved = torch.load(sensevoice_dir / "model.pt", map_location="cpu", weights_only=True)
    loaded = sensevoice._automodel.model.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)  # every weight is the checkpoint's
    sp = sentencepiece.SentencePieceProcessor(model_file=str(sensevoice_dir / "bpe.model"))
    assert sp.GetPieceSize() == VOCAB_SIZE == sensevoice._automodel.model.vocab_size
    assert [sp.IdToPiece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert sp.IdToPiece(LANGUAGE_IDS["en"]) == "<|en|>" and sp.IdToPiece(EMOTION_IDS["happy"]) == "<|HAPPY|>"
    assert sp.IdToPiece(EVENT_IDS["laughter"]) == "<|Laughter|>" and sp.IdToPiece(TEXTNORM_IDS["woitn"]) == "<|woitn|>"
    module = sensevoice._automodel.model
    assert module.lid_int_dict == {LANGUAGE_IDS[k]: module.lid_dict[k] for k in ("zh", "en", "yue", "ja", "ko", "nospeech")}
    assert module.emo_dict["happy"] == EMOTION_IDS["happy"] and module.emo_dict["unk"] == EMOTION_IDS["unknown"]
    assert sp.DecodeIds([LANGUAGE_IDS["en"], EMOTION_IDS["sad"], 300]) == "<|en|><|SAD|>" + sp.IdToPiece(300)
    info = sensevoice.info()
    assert info.untrained and info.runtime == "torch" and info.id == str(sensevoice_dir)


@pytest.mark.parametrize("language,itn", [("auto", False), ("en", True)])
def test_the_decode_is_funasrs_generate_batched_or_alone(sensevoice, segments, language, itn):
    automodel = sensevoice._automodel
    theirs = [automodel.generate(input=s, language=language, use_itn=itn, disable_pbar=True)[0]["text"]
              for s in segments]
    batched = sensevoice.decode(segments, language=language, itn=itn)
    alone = [sensevoice.decode([s], language=language, itn=itn)[0] for s in segments]
    assert [d.raw for d in batched] == theirs
    assert [d.tokens for d in alone] == [d.tokens for d in batched]
    tokenizer = automodel.kwargs["tokenizer"]
    assert [tokenizer.decode(d.tokens) for d in batched] == theirs
    for d in batched:
        assert "<|" not in d.text
        for posteriors in (d.language, d.emotion, d.event):
            assert sum(posteriors.values()) == pytest.approx(1.0)
        window = d.window()
        assert window["emotion_tag"]["label"] == max(d.emotion, key=d.emotion.get)
        assert set(window["emotion_tag"]["scores"]) == set(EMOTION_IDS)


def test_the_query_frames_hold_the_posteriors(sensevoice, segments):
    """Frame 1's log-softmax over the emotion tags is what the result reports (not only the arg-max)."""
    import torch

    [d] = sensevoice.decode([segments[0]])
    module, kwargs = sensevoice._automodel.model, sensevoice._automodel.kwargs
    from funasr.utils.load_utils import extract_fbank

    speech, lengths = extract_fbank([torch.from_numpy(segments[0])], data_type="sound", frontend=kwargs["frontend"])
    queries = module.embed(torch.LongTensor([[0, 1, 2, module.textnorm_dict["woitn"]]]))
    with torch.no_grad():
        out, _ = module.encoder(torch.cat((queries, speech), dim=1), lengths + 4)
        logp = module.ctc.log_softmax(out)[0, 1, list(EMOTION_IDS.values())].double()
    expected = (logp.exp() / logp.exp().sum()).numpy()
    assert np.allclose([d.emotion[k] for k in EMOTION_IDS], expected, atol=1e-5)


def test_predict_batch_fails_a_bad_item_alone(sensevoice, segments):
    good, bad_language, bad_bounds = sensevoice.predict_batch(
        [segments[0], segments[0], segments[0]],
        options=[{"bounds": [(0, 16000), (16000, 32000)], "language": "en"}, {"language": "fr"},
                 {"bounds": [(0, 10**7)]}])
    assert [set(w) for w in good["timeline"]] == [{"text", "language", "events", "emotion_tag"}] * 2
    assert isinstance(bad_language, ValueError) and isinstance(bad_bounds, ValueError)


def test_an_emotion2vec_directory_is_refused(tiny_model_dir):
    from emotionq.inference.sensevoice import SenseVoiceModel

    with pytest.raises(ConfigurationError, match="not SenseVoiceSmall"):
        SenseVoiceModel.load(str(tiny_model_dir), threads=1)
