"""Tests for emage_core.audio: every format is generated here, inside a tmp dir.

The test signal is a 440 Hz sine (amplitude 0.5) plus a quiet 200->3000 Hz chirp, 1 s long.
All of it lies below 4 kHz, so the expected 16 kHz output is the same formula sampled at
16 kHz, whatever the input rate (8 kHz included).
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emage_core.audio import SAMPLE_RATE, AudioError, AudioInfo, load_audio, probe_audio

SHARED = Path(__file__).resolve().parents[2] / "shared"
BEAT2_WAV = SHARED / "fixtures" / "beat2" / "2_scott_0_2_2.wav"
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()

DURATION = 1.0
PADDING_TOLERANCE_S = 0.05  # codec priming/padding (MP3, AAC, Opus)


def signal(rate: int, duration: float = DURATION) -> np.ndarray:
    """(N,) float64 test signal sampled at ``rate``."""
    t = np.arange(round(duration * rate)) / rate
    chirp_phase = 2 * np.pi * (200 * t + (3000 - 200) / (2 * duration) * t**2)
    return 0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(chirp_phase)


def write_sf(path: Path, data: np.ndarray, rate: int, **kw) -> Path:
    sf.write(str(path), data, rate, **kw)
    return path


def ffmpeg_encode(src: Path, dst: Path, *args: str, fmt: str | None = None) -> Path:
    """Encode ``src`` with the bundled ffmpeg; ``fmt`` forces the muxer (name-independent)."""
    cmd = [FFMPEG, "-nostdin", "-y", "-loglevel", "error", "-i", str(src), *args]
    cmd += ["-f", fmt] if fmt else []
    subprocess.run([*cmd, str(dst)], check=True, capture_output=True, timeout=60)
    return dst


def dominant_frequency(x: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


def correlation(y: np.ndarray, expected: np.ndarray, max_lag_s: float = 0.0) -> float:
    """Pearson correlation over the common length, ignoring 50 ms at each edge.

    With ``max_lag_s`` the best alignment within that lag is used (decoder delay of
    formats that cannot signal it, such as raw ADTS AAC).
    """
    edge = int(0.05 * SAMPLE_RATE)
    best = -1.0
    for lag in range(0, int(max_lag_s * SAMPLE_RATE) + 1):
        shifted = y[lag:]
        n = min(len(shifted), len(expected))
        r = np.corrcoef(shifted[edge : n - edge], expected[edge : n - edge])[0, 1]
        best = max(best, float(r))
    return best


@pytest.fixture(scope="module")
def source_wav(tmp_path_factory) -> Path:
    """44.1 kHz stereo float WAV (both channels = signal), the input for ffmpeg encodes."""
    path = tmp_path_factory.mktemp("src") / "source.wav"
    x = signal(44100)
    return write_sf(path, np.stack([x, x], axis=1), 44100, subtype="FLOAT")


# Each case: (file name, expected probed format, maker(dir, source_wav) -> path).
# Names deliberately do not always match the content.
FORMAT_CASES = {
    "wav_pcm16": ("a.wav", "wav", "PCM_16",
                  lambda d, s: write_sf(d / "a.wav", signal(44100), 44100, subtype="PCM_16")),
    "wav_pcm24": ("a.wav", "wav", "PCM_24",
                  lambda d, s: write_sf(d / "a.wav", signal(48000), 48000, subtype="PCM_24")),
    "wav_float": ("a.wav", "wav", "FLOAT",
                  lambda d, s: write_sf(d / "a.wav", signal(22050), 22050, subtype="FLOAT")),
    "flac": ("a.flac", "flac", "PCM_16",
             lambda d, s: write_sf(d / "a.flac", signal(44100), 44100, format="FLAC")),
    "ogg_vorbis": ("a.ogg", "ogg", "VORBIS",
                   lambda d, s: write_sf(d / "a.ogg", signal(44100), 44100, format="OGG",
                                         subtype="VORBIS")),
    "aiff": ("a.aiff", "aiff", "PCM_16",
             lambda d, s: write_sf(d / "a.aiff", signal(44100), 44100, format="AIFF")),
    "mp3": ("a.mp3", "mp3", "MPEG_LAYER_III",
            lambda d, s: ffmpeg_encode(s, d / "a.mp3", "-c:a", "libmp3lame", "-b:a", "128k")),
    "m4a_aac": ("a.m4a", "m4a", "aac",
                lambda d, s: ffmpeg_encode(s, d / "a.m4a", "-c:a", "aac", "-b:a", "128k")),
    "webm_opus": ("a.webm", "webm", "opus",
                  lambda d, s: ffmpeg_encode(s, d / "a.webm", "-c:a", "libopus")),
    "adts_aac": ("a.aac", "aac", "aac",
                 lambda d, s: ffmpeg_encode(s, d / "a.aac", "-c:a", "aac", fmt="adts")),
}


@pytest.mark.parametrize("case", list(FORMAT_CASES))
def test_formats_decode_to_16k_mono_float32(case, tmp_path, source_wav):
    _, fmt, subtype, make = FORMAT_CASES[case]
    path = make(tmp_path, source_wav)

    y = load_audio(path)

    assert y.dtype == np.float32 and y.ndim == 1 and y.flags.c_contiguous
    assert abs(len(y) / SAMPLE_RATE - DURATION) <= PADDING_TOLERANCE_S
    assert abs(dominant_frequency(y) - 440) < 5
    # ADTS has no way to declare the encoder's priming samples (1024 at 44.1 kHz).
    max_lag = 0.03 if fmt == "aac" else 0.0
    assert correlation(y, signal(SAMPLE_RATE), max_lag) > 0.9
    info = probe_audio(path)
    assert (info.format, info.subtype) == (fmt, subtype)
    assert abs(info.duration - DURATION) <= PADDING_TOLERANCE_S


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 16000])
def test_resampling_preserves_the_signal(rate, tmp_path):
    path = write_sf(tmp_path / "a.wav", signal(rate), rate, subtype="FLOAT")
    y = load_audio(path)
    assert abs(len(y) - SAMPLE_RATE * DURATION) <= 1
    assert correlation(y, signal(SAMPLE_RATE)) > 0.999
    if rate == SAMPLE_RATE:  # no resampling: samples come through bit for bit
        np.testing.assert_array_equal(y, signal(SAMPLE_RATE).astype(np.float32))


def test_values_are_not_normalised(tmp_path):
    x = 0.05 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    y = load_audio(write_sf(tmp_path / "quiet.wav", x, 16000, subtype="PCM_16"))
    assert abs(np.abs(y).max() - 0.05) < 1e-3


def test_silence_is_accepted(tmp_path):
    y = load_audio(write_sf(tmp_path / "silence.wav", np.zeros(16000), 16000))
    assert y.shape == (16000,) and not y.any()


@pytest.mark.parametrize("container", ["wav", "m4a"])
def test_stereo_is_averaged(container, tmp_path):
    """left = sine, right = silence -> half the sine; left = -right -> silence."""
    x = signal(44100)
    half = write_sf(tmp_path / "half.wav", np.stack([x, np.zeros_like(x)], 1), 44100,
                    subtype="FLOAT")
    cancel = write_sf(tmp_path / "cancel.wav", np.stack([x, -x], 1), 44100, subtype="FLOAT")
    if container == "m4a":  # goes through ffmpeg, whose own -ac 1 would give 1/sqrt(2)
        half = ffmpeg_encode(half, tmp_path / "half.m4a", "-c:a", "aac", "-b:a", "192k")
        cancel = ffmpeg_encode(cancel, tmp_path / "cancel.m4a", "-c:a", "aac", "-b:a", "192k")

    y = load_audio(half)
    ref = signal(SAMPLE_RATE)
    n = min(len(y), len(ref))
    rms_ratio = np.sqrt(np.mean(y[:n] ** 2) / np.mean(ref[:n] ** 2))
    assert rms_ratio == pytest.approx(0.5, rel=0.05)
    assert correlation(y, ref) > 0.9
    assert np.sqrt(np.mean(load_audio(cancel) ** 2)) < 0.02


def test_content_wins_over_file_name(tmp_path, source_wav):
    mp3_named_wav = ffmpeg_encode(source_wav, tmp_path / "speech.wav", "-c:a", "libmp3lame",
                                  fmt="mp3")
    assert probe_audio(mp3_named_wav).format == "mp3"
    y = load_audio(mp3_named_wav)
    assert abs(len(y) / SAMPLE_RATE - DURATION) <= PADDING_TOLERANCE_S
    assert abs(dominant_frequency(y) - 440) < 5

    # MPEG frames without an ID3 tag or Xing header: detected from the frame sync alone.
    raw_mp3 = ffmpeg_encode(source_wav, tmp_path / "raw.wav", "-c:a", "libmp3lame",
                            "-id3v2_version", "0", "-write_xing", "0", fmt="mp3")
    assert raw_mp3.read_bytes()[:1] == b"\xff"
    assert probe_audio(raw_mp3).format == "mp3"
    assert abs(dominant_frequency(load_audio(raw_mp3)) - 440) < 5

    m4a_named_mp3 = ffmpeg_encode(source_wav, tmp_path / "voice.mp3", "-c:a", "aac", fmt="ipod")
    assert probe_audio(m4a_named_mp3).format == "m4a"
    assert abs(dominant_frequency(load_audio(m4a_named_mp3)) - 440) < 5


def test_probe_reports_the_original_file(tmp_path, source_wav):
    x = signal(44100, duration=1.5)
    path = write_sf(tmp_path / "a.wav", np.stack([x, x], 1), 44100, subtype="PCM_24")
    assert probe_audio(path) == AudioInfo(
        format="wav", subtype="PCM_24", sample_rate=44100, channels=2, duration=1.5, frames=66150
    )

    m4a = ffmpeg_encode(source_wav, tmp_path / "a.m4a", "-c:a", "aac", "-ar", "48000", "-ac", "1")
    info = probe_audio(m4a)
    assert (info.format, info.subtype, info.sample_rate, info.channels) == ("m4a", "aac", 48000, 1)
    assert info.duration == pytest.approx(1.0, abs=PADDING_TOLERANCE_S)
    assert info.frames == pytest.approx(48000, abs=PADDING_TOLERANCE_S * 48000)


def test_streamed_webm_without_duration(tmp_path, source_wav):
    """Browsers' MediaRecorder writes WebM with no duration in the header."""
    proc = subprocess.run(
        [FFMPEG, "-nostdin", "-loglevel", "error", "-i", str(source_wav), "-c:a", "libopus",
         "-f", "webm", "pipe:1"],
        check=True, capture_output=True, timeout=60,
    )
    path = tmp_path / "recording.webm"
    path.write_bytes(proc.stdout)  # written to a pipe: no seek-back, so no duration

    info = probe_audio(path)
    assert (info.format, info.sample_rate, info.channels) == ("webm", 48000, 2)
    assert info.duration == pytest.approx(1.0, abs=PADDING_TOLERANCE_S)
    assert len(load_audio(path)) == pytest.approx(16000, abs=PADDING_TOLERANCE_S * 16000)
    # The limit is still enforced, from the decoded samples.
    with pytest.raises(AudioError, match=r"recording\.webm is too long: 1\.0 s, the limit is 0\.5 s"):
        load_audio(path, max_seconds=0.5)


def test_bytes_input_matches_path_and_cleans_up(tmp_path, source_wav, monkeypatch):
    mp3 = ffmpeg_encode(source_wav, tmp_path / "a.mp3", "-c:a", "libmp3lame")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    from_bytes = load_audio(mp3.read_bytes())
    np.testing.assert_array_equal(from_bytes, load_audio(mp3))
    assert probe_audio(bytearray(mp3.read_bytes())).format == "mp3"
    with pytest.raises(AudioError):
        load_audio(b"not audio at all")
    assert list(scratch.iterdir()) == []  # temp files removed, also after an error


# ------------------------------------------------------------------------- failures


def test_text_file_named_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("hello, this is not audio\n")
    with pytest.raises(AudioError, match=r"notes\.wav is not a recognised audio file "
                                         r"\(it looks like a text file"):
        load_audio(path)
    html = tmp_path / "download.mp3"
    html.write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>")
    with pytest.raises(AudioError, match=r"download\.mp3 .*looks like HTML"):
        probe_audio(html)


def test_garbage_bytes(tmp_path):
    garbage = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(AudioError, match="not a recognised audio file"):
        load_audio(b"\x00\x01" + garbage)
    # A valid signature followed by garbage reaches the decoders, which must fail cleanly.
    for magic in (b"RIFF\x00\x10\x00\x00WAVE", b"fLaC", b"OggS", b"ID3\x04\x00\x00\x00\x00\x00\x00",
                  b"\x00\x00\x00\x18ftypM4A ", b"\x1a\x45\xdf\xa3webm", b"FORM\x00\x00\x10\x00AIFF"):
        with pytest.raises(AudioError, match="uploaded audio"):
            load_audio(magic + garbage)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    magic=st.sampled_from([b"", b"RIFF\xff\xff\x00\x00WAVEfmt ", b"fLaC", b"OggS", b"ID3\x03\x00",
                           b"\xff\xfb\x90\x44", b"\xff\xf1\x50\x80", b"\x00\x00\x00\x20ftypisom",
                           b"\x1a\x45\xdf\xa3", b"FORM\x00\x00\x00\x00AIFC"]),
    tail=st.binary(max_size=2048),
)
def test_arbitrary_bytes_only_raise_audio_error(magic, tail):
    try:
        y = load_audio(magic + tail, min_seconds=0.0)
    except AudioError:
        return
    assert y.dtype == np.float32 and y.ndim == 1 and np.isfinite(y).all()


def test_truncated_files(tmp_path, source_wav):
    wav = write_sf(tmp_path / "full.wav", signal(16000), 16000, subtype="PCM_16").read_bytes()

    cut_header = tmp_path / "cut_header.wav"
    cut_header.write_bytes(wav[:30])
    with pytest.raises(AudioError, match=r"cut_header\.wav is damaged or not a valid WAV file"):
        load_audio(cut_header)

    # Cut inside the samples: what is there is decoded, as every player does.
    cut_data = tmp_path / "cut_data.wav"
    cut_data.write_bytes(wav[: 44 + 2 * 8000])
    assert len(load_audio(cut_data)) == 8000
    cut_more = tmp_path / "cut_more.wav"
    cut_more.write_bytes(wav[: 44 + 2 * 1600])  # 0.1 s left
    with pytest.raises(AudioError, match=r"cut_more\.wav is too short: 0\.10 s"):
        load_audio(cut_more)

    # ffmpeg writes the MP4 index (moov) at the end: without it nothing can be decoded.
    m4a = ffmpeg_encode(source_wav, tmp_path / "full.m4a", "-c:a", "aac").read_bytes()
    cut_m4a = tmp_path / "cut.m4a"
    cut_m4a.write_bytes(m4a[: len(m4a) // 2])
    with pytest.raises(AudioError, match=r"cut\.m4a is damaged or not a valid M4A file"):
        load_audio(cut_m4a)


def test_empty_and_missing(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.wav is empty"):
        load_audio(empty)
    with pytest.raises(AudioError, match="uploaded audio is empty"):
        load_audio(b"")
    with pytest.raises(AudioError, match=r"nope\.wav: file not found"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="not a regular file"):
        load_audio(tmp_path)
    with pytest.raises(AudioError, match=r"header\.wav contains no audio samples|too short"):
        load_audio(write_sf(tmp_path / "header.wav", np.zeros(0), 16000))


def test_duration_limits(tmp_path, source_wav):
    short = write_sf(tmp_path / "short.wav", signal(16000, duration=0.2), 16000)
    with pytest.raises(AudioError, match=r"short\.wav is too short: 0\.20 s, at least 0\.3 s"):
        load_audio(short)
    assert len(load_audio(short, min_seconds=0.1)) == 3200

    one_second = write_sf(tmp_path / "long.wav", signal(48000), 48000)
    with pytest.raises(AudioError, match=r"long\.wav is too long: 1\.0 s, the limit is 0\.5 s"):
        load_audio(one_second, max_seconds=0.5)
    m4a = ffmpeg_encode(source_wav, tmp_path / "long.m4a", "-c:a", "aac")
    with pytest.raises(AudioError, match=r"long\.m4a is too long"):
        load_audio(m4a, max_seconds=0.5)
    with pytest.raises(ValueError):
        load_audio(one_second, min_seconds=2.0, max_seconds=1.0)


def test_long_file_is_rejected_from_the_header(tmp_path, monkeypatch):
    """An 11-minute file fails before any sample is decoded."""
    path = tmp_path / "lecture.wav"
    with sf.SoundFile(str(path), "w", 8000, 1, subtype="PCM_U8") as f:
        f.write(np.zeros(11 * 60 * 8000, dtype=np.float32))
    import emage_core.audio as audio_mod

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the header already says too long")

    monkeypatch.setattr(audio_mod, "_soundfile_decode", no_decoding)
    with pytest.raises(AudioError, match=r"lecture\.wav is too long: 660 s \(11 min 00 s\), "
                                         r"the limit is 600 s \(10 min 00 s\)"):
        load_audio(path)


def test_byte_size_cap(tmp_path):
    path = write_sf(tmp_path / "big.wav", signal(48000), 48000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"big\.wav is too large: 0\.2 MB, the limit is 0 MB"):
        load_audio(path, max_bytes=100_000)
    with pytest.raises(AudioError, match="too large"):
        load_audio(path.read_bytes(), max_bytes=100_000)
    assert len(load_audio(path, max_bytes=None)) == 16000


def test_nan_samples_are_rejected(tmp_path):
    x = signal(16000).astype(np.float32)
    x[100] = np.nan
    path = write_sf(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav contains invalid samples \(NaN or infinity\)"):
        load_audio(path)
    x[100] = np.inf
    with pytest.raises(AudioError, match="NaN or infinity"):
        load_audio(write_sf(tmp_path / "inf.wav", x, 16000, subtype="FLOAT"))


def test_audio_error_is_a_value_error():
    assert issubclass(AudioError, ValueError)


# ------------------------------------------------------------------ real recording


def test_real_beat2_recording():
    if not BEAT2_WAV.is_file():
        pytest.skip(f"BEAT2 fixture not found at {BEAT2_WAV} (shared fixtures not checked out)")
    info = probe_audio(BEAT2_WAV)
    assert (info.format, info.subtype, info.sample_rate, info.channels) == ("wav", "PCM_16", 16000, 1)
    y = load_audio(BEAT2_WAV)
    assert y.dtype == np.float32 and y.shape == (info.frames,)
    assert len(y) / SAMPLE_RATE == pytest.approx(info.duration)
    # 16 kHz input is passed through untouched.
    np.testing.assert_array_equal(y, sf.read(str(BEAT2_WAV), dtype="float32")[0])
    assert 0.01 < np.abs(y).max() <= 1.0
