"""emotionq.inference.audio: real files in every format, and every way a file can be bad."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import soundfile as sf

from emotionq.errors import AudioError, AudioTooLong, BadInput
from emotionq.inference.audio import (
    MIN_SAMPLES,
    SAMPLE_RATE,
    check_samples,
    decode,
    probe,
)

DURATION_TOLERANCE_S = 0.05

FORMATS = [
    ("wav", 16000, 1),
    ("wav", 48000, 2),
    ("wav", 8000, 1),
    ("flac", 44100, 2),
    ("mp3", 22050, 1),
    ("ogg", 48000, 2),
    ("m4a", 44100, 1),
    ("opus", 48000, 1),
    ("webm", 48000, 2),
]


@pytest.mark.parametrize(("fmt", "rate", "channels"), FORMATS)
def test_decode_gives_16k_mono_float32_of_the_right_length(tmp_path, make_speech, fmt, rate, channels):
    path = make_speech(tmp_path / f"speech.{fmt}", seconds=3.0, rate=rate, channels=channels, fmt=fmt)

    samples = decode(path)

    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(samples.size / SAMPLE_RATE - 3.0) <= DURATION_TOLERANCE_S
    assert 0.01 < np.abs(samples).max() <= 1.5  # speech, at its level


@pytest.mark.parametrize(("fmt", "rate", "channels"), FORMATS)
def test_probe_reads_the_header(tmp_path, make_speech, fmt, rate, channels):
    path = make_speech(tmp_path / f"speech.{fmt}", seconds=3.0, rate=rate, channels=channels, fmt=fmt)

    info = probe(path)

    assert abs(info.duration_s - 3.0) <= DURATION_TOLERANCE_S
    assert info.channels == channels
    assert info.sample_rate == rate
    assert info.format


def test_channels_are_averaged(tmp_path, speech):
    left, right = speech, -0.5 * speech
    sf.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), SAMPLE_RATE, subtype="FLOAT")

    np.testing.assert_allclose(decode(tmp_path / "stereo.wav"), 0.25 * speech, atol=1e-7)


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_resampling_keeps_pitch_and_level(tmp_path, rate):
    t = np.arange(2 * rate) / rate
    sf.write(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 440.0 * t), rate, subtype="FLOAT")

    samples = decode(tmp_path / "tone.wav")

    assert samples.size == 2 * SAMPLE_RATE
    middle = samples[4000:-4000]
    peak_hz = np.argmax(np.abs(np.fft.rfft(middle))) * SAMPLE_RATE / middle.size
    assert abs(peak_hz - 440.0) < 2.0
    assert abs(np.sqrt(np.mean(middle**2)) - 0.5 / np.sqrt(2)) < 0.01


def test_silence_decodes(tmp_path):
    sf.write(tmp_path / "silence.wav", np.zeros(SAMPLE_RATE, np.int16), SAMPLE_RATE)

    assert not decode(tmp_path / "silence.wav").any()


def _code(path, call=decode) -> str:
    with pytest.raises(AudioError) as caught:
        call(path)
    assert isinstance(caught.value, BadInput) and not caught.value.retryable
    assert "upload" in caught.value.message  # says what to do next
    return caught.value.code


@pytest.mark.parametrize("call", [decode, probe])
def test_zero_byte_file_is_undecodable(tmp_path, call):
    (tmp_path / "empty.wav").write_bytes(b"")
    assert _code(tmp_path / "empty.wav", call) == "audio_undecodable"


@pytest.mark.parametrize("call", [decode, probe])
def test_non_audio_bytes_named_wav_are_undecodable(tmp_path, call):
    (tmp_path / "notes.wav").write_text("meeting notes, not a recording\n" * 50)
    assert _code(tmp_path / "notes.wav", call) == "audio_undecodable"


@pytest.mark.parametrize("call", [decode, probe])
def test_wav_header_without_its_data_is_undecodable(tmp_path, speech_wav, call):
    (tmp_path / "cut.wav").write_bytes(speech_wav.read_bytes()[:44])  # header declares 3 s, none present
    assert _code(tmp_path / "cut.wav", call) == "audio_undecodable"


def test_wav_truncated_mid_data_decodes_what_is_there(tmp_path, make_speech):
    path = make_speech(tmp_path / "speech.wav", seconds=3.0, rate=16000)
    (tmp_path / "cut.wav").write_bytes(path.read_bytes()[: 44 + 2 * 16000])  # 1 s of 16-bit mono

    assert abs(decode(tmp_path / "cut.wav").size / SAMPLE_RATE - 1.0) <= DURATION_TOLERANCE_S


def test_mp3_truncated_mid_stream_decodes_what_is_there(tmp_path, make_speech):
    path = make_speech(tmp_path / "speech.mp3", seconds=3.0, fmt="mp3")
    data = path.read_bytes()
    (tmp_path / "cut.mp3").write_bytes(data[: len(data) // 2])

    assert 1.0 < decode(tmp_path / "cut.mp3").size / SAMPLE_RATE < 2.0


@pytest.mark.parametrize("call", [decode, probe])
def test_wav_with_no_frames_is_empty(tmp_path, call):
    sf.write(tmp_path / "none.wav", np.zeros(0, np.int16), SAMPLE_RATE)
    assert _code(tmp_path / "none.wav", call) == "audio_empty"


def test_nan_samples_are_refused(tmp_path, speech):
    bad = speech.copy()
    bad[1000] = np.nan
    sf.write(tmp_path / "nan.wav", bad, SAMPLE_RATE, subtype="FLOAT")
    assert _code(tmp_path / "nan.wav") == "audio_not_finite"


def test_infinite_samples_are_refused(tmp_path, speech):
    bad = speech.copy()
    bad[-1] = np.inf
    sf.write(tmp_path / "inf.wav", bad, 48000, subtype="FLOAT")  # through the resampler too
    assert _code(tmp_path / "inf.wav") == "audio_not_finite"


def test_samples_far_beyond_any_audio_level_are_refused(tmp_path, speech):
    # The model's float32 layer norm overflows: scores came out NaN (a 500 on GET) or as silence
    sf.write(tmp_path / "loud.wav", speech * 1e30, SAMPLE_RATE, subtype="FLOAT")
    assert _code(tmp_path / "loud.wav") == "audio_out_of_range"
    with pytest.raises(AudioError) as caught:
        check_samples(speech * np.float32(-1e12))
    assert caught.value.code == "audio_out_of_range"


def test_unnormalised_float_audio_is_accepted(tmp_path, speech):
    # some tools write float WAV at integer scale (+-32768, or +-2**31); the model's layer norm copes
    sf.write(tmp_path / "int_scale.wav", speech * 2.0**31, SAMPLE_RATE, subtype="FLOAT")
    assert np.abs(decode(tmp_path / "int_scale.wav")).max() > 1e8


def test_16_bit_data_under_a_float_header_is_not_finite(tmp_path, speech):
    sf.write(tmp_path / "pcm.wav", speech, SAMPLE_RATE, subtype="PCM_16")
    data = bytearray((tmp_path / "pcm.wav").read_bytes())
    assert data[36:40] == b"data"
    data[20:22], data[28:32], data[32:34], data[34:36] = (  # format 3 (IEEE float), 32-bit, byte rate, align
        (3).to_bytes(2, "little"), (4 * SAMPLE_RATE).to_bytes(4, "little"), (4).to_bytes(2, "little"),
        (32).to_bytes(2, "little"))
    (tmp_path / "lying.wav").write_bytes(bytes(data))  # small negative samples read as NaN bit patterns
    assert _code(tmp_path / "lying.wav") == "audio_not_finite"


@pytest.mark.parametrize("call", [decode, probe])  # probe: refused at upload, not by a failed job
def test_10_ms_is_too_short(tmp_path, speech, call):
    sf.write(tmp_path / "blip.wav", speech[:160], SAMPLE_RATE)
    assert _code(tmp_path / "blip.wav", call) == "audio_too_short"


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000])
def test_probe_and_decode_agree_on_too_short(tmp_path, speech, rate):
    # around 25 ms at each rate: what probe lets through at upload, decode must accept in the worker
    centre = round(MIN_SAMPLES * rate / SAMPLE_RATE)
    for frames in range(centre - 3, centre + 4):
        path = tmp_path / f"{frames}.wav"
        sf.write(path, np.resize(speech[4000:], frames), rate, subtype="FLOAT")
        verdicts = []
        for call in (probe, decode):
            try:
                call(path)
                verdicts.append("ok")
            except AudioError as exc:
                verdicts.append(exc.code)
        assert verdicts[0] == verdicts[1], (rate, frames, verdicts)


def test_25_ms_is_enough(tmp_path, speech):
    sf.write(tmp_path / "short.wav", speech[:400], SAMPLE_RATE, subtype="FLOAT")
    assert decode(tmp_path / "short.wav").size == 400


@pytest.mark.parametrize("fmt", ["wav", "m4a"])
def test_max_seconds(tmp_path, make_speech, fmt):
    path = make_speech(tmp_path / f"speech.{fmt}", seconds=3.0, fmt=fmt)

    with pytest.raises(AudioTooLong) as caught:
        decode(path, max_seconds=2.0)
    assert caught.value.code == "audio_too_long" and "2 s" in caught.value.message
    assert decode(path, max_seconds=4.0).size > 0


def test_vbr_mp3_without_xing_header_decodes_to_the_end(tmp_path, make_speech):
    # libsndfile trusts its length estimate from the first frame and stopped at 6 of 20 s here
    wav = make_speech(tmp_path / "speech.wav", seconds=10.0, rate=44100)
    mp3 = tmp_path / "vbr.mp3"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(wav), "-c:a", "libmp3lame", "-q:a", "7",
                    "-write_xing", "0", str(mp3)], check=True)

    assert abs(probe(mp3).duration_s - 10.0) <= 0.1  # MP3 frames without gapless info: encoder delay stays
    assert abs(decode(mp3).size / SAMPLE_RATE - 10.0) <= 0.1


@pytest.mark.parametrize("fmt", ["flac", "wav"])
def test_files_written_as_a_stream_have_their_length(tmp_path, make_speech, fmt):
    # ffmpeg writing to a pipe cannot go back to fill in the length: FLAC says "unknown", WAV says "huge"
    wav = make_speech(tmp_path / "speech.wav", seconds=4.0, rate=44100)
    streamed = tmp_path / f"streamed.{fmt}"
    with streamed.open("wb") as out:
        subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(wav), "-f", fmt, "-"], stdout=out, check=True)

    assert abs(probe(streamed).duration_s - 4.0) <= DURATION_TOLERANCE_S
    assert abs(decode(streamed, max_seconds=5.0).size / SAMPLE_RATE - 4.0) <= DURATION_TOLERANCE_S


def test_decoding_holds_the_samples_once(tmp_path):
    """The output goes into one buffer of the declared length: no list of blocks concatenated at the end."""
    import tracemalloc

    rng = np.random.default_rng(0)
    path = tmp_path / "long.wav"
    sf.write(path, (rng.standard_normal((120 * 44100, 2)) * 3000).astype("int16"), 44100, subtype="PCM_16")

    tracemalloc.start()
    try:
        samples = decode(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert samples.size == pytest.approx(120 * 16000, abs=16)
    assert peak < 1.25 * samples.nbytes, (peak, samples.nbytes)  # was 2x and more


@pytest.mark.parametrize("expected", [None, 1000, 10**6])
def test_the_buffer_spills_to_blocks_when_the_header_understates(expected):
    from emotionq.inference.audio import _MonoResampler

    blocks = [np.random.default_rng(i).standard_normal((700, 1)).astype(np.float32) for i in range(5)]
    mixer = _MonoResampler(16000, None, expected)
    for block in blocks:
        mixer.add(block)
    np.testing.assert_array_equal(mixer.finish(), np.concatenate(blocks)[:, 0])
