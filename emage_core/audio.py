"""Load speech audio for EMAGE: any common file -> float32 mono at 16 kHz.

Public API:

- ``load_audio(source, *, max_seconds=600.0, min_seconds=0.3, max_bytes=200 MB)``
  -> ``np.ndarray`` float32 of shape ``(N,)`` at :data:`SAMPLE_RATE` (16 kHz).
- ``probe_audio(source)`` -> :class:`AudioInfo` (format, codec, original rate,
  channels, duration) without decoding the whole file where possible.
- :class:`AudioError` (a ``ValueError``) for every problem a user can cause:
  missing/empty/oversized file, unknown content, corrupt data, too short or too long.

``source`` is a path (``str`` / ``pathlib.Path``) or the raw file content as ``bytes``.

The format is detected from the content (magic bytes), never from the file name:
real uploads include MP3s named ``.wav`` and HTML error pages named ``.mp3``.

Backends:

- soundfile (libsndfile) for WAV, FLAC, Ogg (Vorbis/Opus), MP3 and AIFF: fast, in-process,
  and exact frame counts from the header;
- the ffmpeg binary shipped with ``imageio-ffmpeg`` for M4A/MP4 (AAC), raw AAC (ADTS),
  WebM/Matroska (what browsers record from the microphone) and as a fallback when
  libsndfile cannot decode a file of a supported format (e.g. an unusual WAV codec).
  It runs as a subprocess (no shell, with a timeout) and writes a 16 kHz float WAV to stdout.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import soundfile as sf
import soxr

__all__ = [
    "SAMPLE_RATE",
    "DEFAULT_MAX_SECONDS",
    "DEFAULT_MIN_SECONDS",
    "DEFAULT_MAX_BYTES",
    "AudioError",
    "AudioInfo",
    "load_audio",
    "probe_audio",
]

SAMPLE_RATE = 16000
"""Output sample rate of :func:`load_audio` (what the EMAGE audio encoder expects)."""

DEFAULT_MAX_SECONDS = 600.0
DEFAULT_MIN_SECONDS = 0.3
DEFAULT_MAX_BYTES = 200 * 1024 * 1024
"""Upload size cap: 10 min of 48 kHz stereo 16-bit WAV is ~110 MB, so 200 MiB is generous."""

FFMPEG_TIMEOUT_S = 120.0
"""Wall-clock limit for one ffmpeg call; decoding 10 min of audio takes about a second."""

AudioSource = Union[str, os.PathLike, bytes, bytearray, memoryview]

# Formats libsndfile reads itself; the others (and libsndfile failures) go to ffmpeg.
_SOUNDFILE_FORMATS = frozenset({"wav", "flac", "ogg", "mp3", "aiff"})

# ffmpeg demuxer for each detected format. Forcing it (``-f``) means ffmpeg never
# guesses from the content or name on its own, so it decodes exactly what we detected.
_FFMPEG_DEMUXER = {
    "wav": "wav",
    "flac": "flac",
    "ogg": "ogg",
    "mp3": "mp3",
    "aiff": "aiff",
    "aac": "aac",
    "m4a": "mov",
    "mp4": "mov",
    "mov": "mov",
    "webm": "matroska",
    "matroska": "matroska",
}

_KNOWN_FORMATS_TEXT = "WAV, MP3, FLAC, Ogg, M4A/MP4, AAC, AIFF or WebM"

# A guard band when capping decoding at ``max_seconds``: decode a little more than the
# limit so that "too long" is detected from the data when headers lie or are missing.
_DECODE_MARGIN_S = 1.0


class AudioError(ValueError):
    """A user-facing audio problem; the message names the file and what is wrong."""


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`probe_audio` reports about a file, before any conversion.

    Attributes:
        format: container detected from the content: 'wav', 'mp3', 'flac', 'ogg',
            'm4a', 'mp4', 'mov', 'aac', 'aiff', 'webm' or 'matroska'.
        subtype: libsndfile subtype (e.g. 'PCM_16', 'FLOAT', 'VORBIS', 'MPEG_LAYER_III')
            or the ffmpeg codec name (e.g. 'aac', 'opus'); None if unknown.
        sample_rate: original sample rate in Hz.
        channels: original channel count; None if ffmpeg reports a layout we cannot count.
        duration: length in seconds.
        frames: original number of samples per channel (exact from libsndfile,
            ``round(duration * sample_rate)`` for the ffmpeg formats).
    """

    format: str
    subtype: str | None
    sample_rate: int
    channels: int | None
    duration: float
    frames: int


# --------------------------------------------------------------------------- public API


def load_audio(
    source: AudioSource,
    *,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    min_seconds: float = DEFAULT_MIN_SECONDS,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
) -> np.ndarray:
    """Decode ``source`` to float32 mono samples at 16 kHz.

    Args:
        source: path to an audio file, or the file's bytes (e.g. an upload).
        max_seconds: reject audio longer than this (checked from the header before
            decoding when the format allows, and again on the decoded samples).
        min_seconds: reject audio shorter than this.
        max_bytes: reject files larger than this many bytes (None: no cap).

    Returns:
        ``(N,)`` float32, C-contiguous, ``N ≈ duration * 16000``. Channels are averaged;
        the values are as decoded (no loudness normalisation).

    Raises:
        AudioError: the file is missing, empty, too big, not audio, corrupt,
            contains NaN/inf samples, or is outside ``[min_seconds, max_seconds]``.
    """
    if min_seconds > max_seconds:
        raise ValueError(f"min_seconds ({min_seconds}) must not exceed max_seconds ({max_seconds})")
    with _local_file(source, max_bytes) as (path, name):
        fmt = _detect_format(path, name)
        info, backend = _probe_path(path, name, fmt)
        # Cheap early rejection from the header, before decoding anything.
        _check_duration(info.duration, name, min_seconds, max_seconds)

        limit_s = max_seconds + _DECODE_MARGIN_S
        if backend == "soundfile":
            try:
                samples, rate = _soundfile_decode(path, limit_s)
            except (sf.LibsndfileError, RuntimeError) as exc:
                # libsndfile accepted the header but failed on the data; ffmpeg is more
                # tolerant of damaged streams and gets one chance before we give up.
                try:
                    samples, rate = _ffmpeg_decode(path, name, fmt, limit_s)
                except AudioError:
                    raise AudioError(
                        f"{name} is damaged or not a valid {fmt.upper()} file"
                        f" ({_clean(exc, path, name)})"
                    ) from None
        else:
            samples, rate = _ffmpeg_decode(path, name, fmt, limit_s)

    audio = _to_mono_16k(samples, rate, name)
    # Check again on the real samples: headers can be wrong (VBR MP3, streamed WAV, WebM).
    _check_duration(len(audio) / SAMPLE_RATE, name, min_seconds, max_seconds)
    return audio


def probe_audio(source: AudioSource, *, max_bytes: int | None = DEFAULT_MAX_BYTES) -> AudioInfo:
    """Describe an audio file (format, codec, original rate, channels, duration).

    Reads only the header for soundfile formats and asks ffmpeg otherwise; a file whose
    container has no duration (e.g. a browser-recorded WebM) is decoded to measure it.

    Raises:
        AudioError: as :func:`load_audio`, except that no length limits are applied.
    """
    with _local_file(source, max_bytes) as (path, name):
        fmt = _detect_format(path, name)
        info, _ = _probe_path(path, name, fmt)
    return info


# ------------------------------------------------------------------- input handling


@contextlib.contextmanager
def _local_file(source: AudioSource, max_bytes: int | None) -> Iterator[tuple[str, str]]:
    """Yield ``(path, display_name)`` of a readable, non-empty file no larger than the cap.

    Bytes are written to a private temporary directory (mode 0700) that is removed on exit,
    so both backends can read a seekable file.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = "the uploaded audio"
        _check_size(len(data), name, max_bytes)
        with tempfile.TemporaryDirectory(prefix="emage-audio-") as tmp:
            path = os.path.join(tmp, "upload")
            with open(path, "wb") as fh:
                fh.write(data)
            yield path, name
        return

    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path or bytes, not {type(source).__name__}")
    path = os.path.abspath(os.fspath(source))
    # Only the base name goes into messages: they are shown to users, server paths are not.
    name = Path(path).name or path
    if not os.path.exists(path):
        raise AudioError(f"{name}: file not found")
    if not os.path.isfile(path):
        raise AudioError(f"{name} is not a regular file")
    _check_size(os.path.getsize(path), name, max_bytes)
    yield path, name


def _check_size(size: int, name: str, max_bytes: int | None) -> None:
    if size == 0:
        raise AudioError(f"{name} is empty (0 bytes)")
    if max_bytes is not None and size > max_bytes:
        raise AudioError(
            f"{name} is too large: {size / 1e6:.1f} MB, the limit is {max_bytes / 1e6:.0f} MB"
        )


def _check_duration(duration: float | None, name: str, min_s: float, max_s: float) -> None:
    if duration is None:
        return
    if duration > max_s:
        raise AudioError(
            f"{name} is too long: {_fmt_seconds(duration)}, the limit is {_fmt_seconds(max_s)}"
        )
    if duration < min_s:
        raise AudioError(
            f"{name} is too short: {duration:.2f} s, at least {min_s:g} s of audio is needed"
        )


def _fmt_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{seconds:.0f} s ({minutes} min {secs:02d} s)"


# ------------------------------------------------------------------ format sniffing


def _detect_format(path: str, name: str) -> str:
    """Return the format key for the file's magic bytes, or raise AudioError."""
    with open(path, "rb") as fh:
        head = fh.read(64)
    fmt = _sniff(head)
    if fmt is None:
        raise AudioError(f"{name} is not a recognised audio file ({_describe_unknown(head)})")
    return fmt


def _sniff(head: bytes) -> str | None:
    """Map the first bytes of a file to a format key (None if unknown)."""
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand.startswith(b"M4"):  # M4A, M4B (audio books)
            return "m4a"
        return "mov" if brand == b"qt  " else "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML header; the DocType says WebM or Matroska
        return "webm" if b"webm" in head else "matroska"
    if head[:3] == b"ID3":  # ID3v2 tag, in practice always in front of MPEG audio
        return "mp3"
    if len(head) >= 4 and head[0] == 0xFF:
        b1, b2 = head[1], head[2]
        if b1 & 0xF6 == 0xF0:  # 12-bit sync + layer 00: ADTS AAC
            return "aac"
        # 11-bit MPEG frame sync with a valid version, layer, bitrate and sample-rate index.
        if (
            b1 & 0xE0 == 0xE0
            and (b1 >> 3) & 0x3 != 0x1
            and (b1 >> 1) & 0x3 != 0x0
            and b2 >> 4 != 0xF
            and (b2 >> 2) & 0x3 != 0x3
        ):
            return "mp3"
    return None


def _describe_unknown(head: bytes) -> str:
    """A short hint of what the content looks like, for the error message."""
    stripped = head.lstrip()
    if stripped[:1] == b"<":
        return f"it looks like HTML/XML, expected {_KNOWN_FORMATS_TEXT}"
    if stripped[:1] in (b"{", b"["):
        return f"it looks like JSON, expected {_KNOWN_FORMATS_TEXT}"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text):
        return f"it looks like a text file, expected {_KNOWN_FORMATS_TEXT}"
    return f"starts with bytes {head[:8].hex(' ')}, expected {_KNOWN_FORMATS_TEXT}"


# --------------------------------------------------------------------------- probing


def _probe_path(path: str, name: str, fmt: str) -> tuple[AudioInfo, str]:
    """Return the file's :class:`AudioInfo` and the backend that can read it."""
    if fmt in _SOUNDFILE_FORMATS:
        try:
            sfi = sf.info(path)
        except (sf.LibsndfileError, RuntimeError):
            pass  # e.g. a WAV with a codec libsndfile lacks: let ffmpeg try
        else:
            if sfi.samplerate > 0 and sfi.channels > 0:
                info = AudioInfo(
                    format=fmt,
                    subtype=sfi.subtype or None,
                    sample_rate=int(sfi.samplerate),
                    channels=int(sfi.channels),
                    duration=sfi.frames / sfi.samplerate,
                    frames=int(sfi.frames),
                )
                return info, "soundfile"
    return _ffmpeg_probe(path, name, fmt), "ffmpeg"


_DURATION_RE = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_AUDIO_STREAM_RE = re.compile(r"Stream #0:\d+.*?: Audio: (.+)")
_RATE_RE = re.compile(r"(\d+) Hz")
_NAMED_LAYOUTS = {"mono": 1, "stereo": 2, "quad": 4, "hexagonal": 6, "octagonal": 8}


def _ffmpeg_probe(path: str, name: str, fmt: str) -> AudioInfo:
    """Read the container header with ``ffmpeg -i`` (there is no ffprobe in imageio-ffmpeg).

    ffmpeg prints the input description on stderr and exits with an error because no
    output is given; we parse the ``Duration:`` and first ``Audio:`` stream lines.
    """
    proc = _run_ffmpeg(_ffmpeg_input_args(path, fmt), name, loglevel="info")
    log = proc.stderr.decode("utf-8", "replace")
    if "Input #0" not in log:
        raise AudioError(
            f"{name} is damaged or not a valid {fmt.upper()} file ({_last_line(log, path, name)})"
        )
    stream = _AUDIO_STREAM_RE.search(log)
    if stream is None:
        raise AudioError(f"{name} contains no audio stream")
    desc = stream.group(1)
    rate = _RATE_RE.search(desc)
    if rate is None:
        raise AudioError(f"{name}: could not determine the sample rate of the audio stream")
    sample_rate = int(rate.group(1))
    codec = re.split(r"[\s,]", desc, maxsplit=1)[0] or None
    # The field after "NNNN Hz" is the channel layout: "mono", "stereo", "5.1(side)", "3 channels".
    layout = desc[rate.end():].lstrip(", ").split(",")[0].strip()
    channels = _count_channels(layout)

    match = _DURATION_RE.search(log)
    if match:
        hours, minutes, seconds = match.groups()
        duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    else:
        # "Duration: N/A": e.g. WebM from MediaRecorder has no duration in its header.
        samples, rate_out = _ffmpeg_decode(path, name, fmt, limit_s=None)
        duration = samples.shape[0] / rate_out
    return AudioInfo(
        format=fmt,
        subtype=codec,
        sample_rate=sample_rate,
        channels=channels,
        duration=duration,
        frames=round(duration * sample_rate),
    )


def _count_channels(layout: str) -> int | None:
    """Channel count from an ffmpeg layout name: 'stereo' -> 2, '5.1(side)' -> 6."""
    if layout in _NAMED_LAYOUTS:
        return _NAMED_LAYOUTS[layout]
    match = re.match(r"(\d+) channels", layout)
    if match:
        return int(match.group(1))
    match = re.match(r"(\d+)\.(\d+)", layout)  # "<main>.<lfe>" as in 5.1, 7.1, 2.1
    if match:
        return int(match.group(1)) + int(match.group(2))
    return None


# -------------------------------------------------------------------------- decoding


def _soundfile_decode(path: str, limit_s: float) -> tuple[np.ndarray, int]:
    """Decode with libsndfile: ``(frames, channels)`` float32 and the file's rate.

    Reads at most ``limit_s`` seconds so a lying header cannot exhaust memory.
    """
    with sf.SoundFile(path) as f:
        frames = min(f.frames, int(limit_s * f.samplerate))
        data = f.read(frames, dtype="float32", always_2d=True)
        return data, int(f.samplerate)


def _ffmpeg_decode(path: str, name: str, fmt: str, limit_s: float | None) -> tuple[np.ndarray, int]:
    """Decode the first audio stream with ffmpeg: ``(frames, channels)`` float32 at 16 kHz.

    ffmpeg resamples (with its soxr resampler at high precision) but keeps the channels:
    its own ``-ac 1`` downmix weights stereo by 1/sqrt(2) instead of averaging. The output
    is a float WAV on stdout, whose header tells us the channel count.
    """
    cmd = [
        *_ffmpeg_input_args(path, fmt),
        "-map", "0:a:0", "-vn", "-sn", "-dn",
        "-af", f"aresample={SAMPLE_RATE}:resampler=soxr:precision=28",
        "-c:a", "pcm_f32le",
    ]
    if limit_s is not None:
        cmd += ["-t", f"{limit_s:.3f}"]
    cmd += ["-f", "wav", "pipe:1"]
    proc = _run_ffmpeg(cmd, name, loglevel="error")
    if proc.returncode != 0:
        log = proc.stderr.decode("utf-8", "replace")
        if "matches no streams" in log:
            raise AudioError(f"{name} contains no audio stream")
        raise AudioError(
            f"{name} is damaged or not a valid {fmt.upper()} file ({_last_line(log, path, name)})"
        )
    try:
        # ffmpeg cannot seek back on a pipe to fill in the WAV sizes; libsndfile then
        # reads up to the end of the data, which is what we want.
        data, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError):
        raise AudioError(f"{name} could not be decoded as {fmt.upper()}: no audio came out") from None
    return data, int(rate)


def _ffmpeg_input_args(path: str, fmt: str) -> list[str]:
    """Common ffmpeg arguments: quiet, no stdin, local files only, forced demuxer."""
    return [
        _ffmpeg_exe(), "-nostdin", "-hide_banner",
        # Only local files: container references (playlists, drefs) cannot reach the network.
        "-protocol_whitelist", "file",
        "-f", _FFMPEG_DEMUXER[fmt],
        # "file:" stops ffmpeg reading a name such as "x:y.wav" as protocol "x".
        "-i", "file:" + path,
    ]


def _run_ffmpeg(cmd: list[str], name: str, *, loglevel: str) -> subprocess.CompletedProcess:
    cmd = [cmd[0], "-loglevel", loglevel, *cmd[1:]]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=FFMPEG_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise AudioError(f"{name}: decoding took longer than {FFMPEG_TIMEOUT_S:.0f} s") from None
    except OSError as exc:
        raise AudioError(f"{name}: could not run ffmpeg to decode it ({exc})") from None


def _ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg
    except ImportError:
        raise AudioError("ffmpeg is not available: install the imageio-ffmpeg package") from None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        raise AudioError(f"ffmpeg is not available: {exc}") from None


def _last_line(log: str, path: str, name: str) -> str:
    """The last non-empty line of an ffmpeg log, with our temp/absolute path hidden."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    if not lines:
        return "unknown error"
    # "Error opening input files: Invalid data found ..." -> "Invalid data found ..."
    return _clean(lines[-1].removeprefix("Error opening input files: "), path, name)


def _clean(msg: object, path: str, name: str) -> str:
    return str(msg).replace("file:" + path, name).replace(path, name)


def _to_mono_16k(samples: np.ndarray, rate: int, name: str) -> np.ndarray:
    """``(frames, channels)`` at ``rate`` -> ``(N,)`` float32 at 16 kHz, checked finite."""
    if samples.shape[0] == 0:
        raise AudioError(f"{name} contains no audio samples")
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError(f"{name} contains invalid samples (NaN or infinity)")
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="VHQ")
    return np.ascontiguousarray(mono, dtype=np.float32)
