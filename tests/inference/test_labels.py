"""emotionq.inference.labels: funasr's bilingual tokens to English."""

from emotionq.inference.labels import LABELS, TOKENS, english


def test_tokens_map_to_the_english_labels_in_order():
    assert [english(t) for t in TOKENS] == list(LABELS)
    assert LABELS == ("angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised", "unknown")


def test_english():
    assert english("生气/angry") == "angry"
    assert english("<unk>") == "unknown"
    assert english("neutral") == "neutral"
