"""Write mp4 files: RGB frames streamed into H.264, speech muxed in as AAC.

Uses the ffmpeg binary shipped with ``imageio-ffmpeg`` (no system ffmpeg needed). Frames go to
ffmpeg through a pipe one at a time, so a clip is never held in memory whole, and ffmpeg encodes
on another core while the next frame renders.

Public API:

- `VideoWriter(path, width, height, fps=30, *, audio=None)`: ``write(frame)`` per (H, W, 3) uint8
  frame, then ``close()`` (or use it as a context manager).
- `write_video(frames, path, *, fps, audio, n_frames, progress)`: drain an iterator of frames
  into one file, reporting progress.
- `probe_video(path)`: what ffmpeg sees in an mp4 (codec, pixel format, size, fps, durations);
  used by tests and handy for checking outputs. `read_video_frames(path)` decodes a small one.

Output: H.264 (libx264, yuv420p, so every browser and phone plays it; width and height must
be even), AAC audio at the speech's 16 kHz, ``+faststart`` so playback starts before the
download ends. Audio is trimmed or padded with silence to the video's exact length.
"""
from __future__ import annotations

from ..audio import SAMPLE_RATE
from ..motion.clip import DEFAULT_FPS

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Union

import numpy as np

__all__ = ["VideoError", "VideoWriter", "write_video", "probe_video", "read_video_frames", "Progress"]

AudioInput = Union[str, os.PathLike, np.ndarray, None]
#: ``progress(fraction in [0, 1], message)``
Progress = Callable[[float, str], None]

AUDIO_RATE = SAMPLE_RATE  # what emage_core.audio.load_audio returns
FFMPEG_TIMEOUT_S = 300.0  # for the final mux / probes; encoding itself runs as long as frames come


class VideoError(RuntimeError):
    """Encoding failed or the inputs cannot be encoded (odd size, wrong frame shape, ...)."""


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


class VideoWriter:
    """Stream RGB frames into an H.264 mp4, optionally with speech.

    Args:
        path: output ``.mp4``; its folder must exist. Written atomically: the file appears on
            `close` (a half-written clip never sits at ``path``).
        width, height: frame size in pixels, both even (yuv420p halves the colour resolution).
        fps: frames per second.
        audio: None, a path to any audio file `emage_core.audio.load_audio` reads, or a
            (N,) float32 array at 16 kHz. Trimmed/padded to the video length on `close`.
        crf: x264 quality (lower = better and bigger; 18-23 is visually clean for renders).
        preset: x264 speed preset; "veryfast" costs ~5 ms/frame at 512x512 on one CPU core.

    Frames are written to a temporary video-only file beside ``path``; `close` then muxes in the
    audio cut to exactly ``n_frames / fps`` seconds (only then is the length known) and moves
    the moov atom to the front (``+faststart``).
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float = DEFAULT_FPS, *,
                 audio: AudioInput = None, crf: int = 20, preset: str = "veryfast"):
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise VideoError(f"H.264/yuv420p needs positive even width and height, got {width}x{height}")
        if not fps > 0:
            raise VideoError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.n_frames = 0
        self._audio = _prepare_audio(audio)  # fail on bad audio before any encoding work
        self._tmpdir = tempfile.mkdtemp(prefix=".video-", dir=self.path.parent)
        self._video_path = os.path.join(self._tmpdir, "video.mp4")
        self._log = open(os.path.join(self._tmpdir, "ffmpeg.log"), "w+b")
        cmd = [
            _ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width}x{self.height}",
            "-framerate", f"{self.fps:g}", "-i", "pipe:0",
            "-c:v", "libx264", "-preset", preset, "-crf", str(int(crf)), "-pix_fmt", "yuv420p",
            "-f", "mp4", self._video_path,
        ]
        # stderr goes to a file, not a pipe: an unread pipe fills up and deadlocks ffmpeg.
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log)
        except OSError as exc:
            self._cleanup()
            raise VideoError(f"could not start ffmpeg: {exc}") from None
        self._closed = False

    # -- writing ------------------------------------------------------------------------
    def write(self, frame: np.ndarray) -> None:
        """Append one (height, width, 3) uint8 RGB frame."""
        if self._closed:
            raise VideoError("write() after close()")
        frame = np.asarray(frame)
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise VideoError(f"frame must be ({self.height}, {self.width}, 3) uint8, "
                             f"got {frame.shape} {frame.dtype}")
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).data)
        except BrokenPipeError:
            self._fail("ffmpeg stopped accepting frames")
        self.n_frames += 1

    def close(self) -> Path:
        """Finish encoding, mux the audio, move the file into place; returns ``path``."""
        if self._closed:
            return self.path
        self._closed = True
        try:
            self._proc.stdin.close()
            if self._proc.wait() != 0:
                self._fail(f"ffmpeg exited with status {self._proc.returncode}")
            if self.n_frames == 0:
                raise VideoError("no frames were written")
            self._finish()
        finally:
            self._cleanup()
        return self.path

    def abort(self) -> None:
        """Stop without producing a file (e.g. after an error while rendering)."""
        if not self._closed:
            self._closed = True
            self._proc.kill()
            self._proc.wait()
            self._cleanup()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- internals ----------------------------------------------------------------------
    def _finish(self) -> None:
        """Second, cheap ffmpeg pass: copy the video stream, add audio, +faststart."""
        duration = self.n_frames / self.fps
        out_tmp = os.path.join(self._tmpdir, "out.mp4")
        cmd = [_ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", self._video_path]
        if self._audio is not None:
            wav = os.path.join(self._tmpdir, "audio.wav")
            _write_wav(wav, _fit_length(self._audio, round(duration * AUDIO_RATE)))
            cmd += ["-i", wav, "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", "96k"]
        cmd += ["-c:v", "copy", "-movflags", "+faststart", out_tmp]
        proc = subprocess.run(cmd, capture_output=True, timeout=FFMPEG_TIMEOUT_S)
        if proc.returncode != 0:
            raise VideoError(f"muxing {self.path.name} failed: {_last_line(proc.stderr)}")
        os.replace(out_tmp, self.path)

    def _fail(self, what: str) -> None:
        self._proc.kill()
        self._proc.wait()
        self._log.seek(0)
        raise VideoError(f"encoding {self.path.name} failed: {what}: {_last_line(self._log.read())}")

    def _cleanup(self) -> None:
        self._log.close()
        shutil.rmtree(self._tmpdir, ignore_errors=True)


def write_video(frames: Iterable[np.ndarray], path: str | os.PathLike, *, fps: float = DEFAULT_FPS,
                audio: AudioInput = None, n_frames: int | None = None, progress: Progress | None = None,
                progress_every: int = 15, **writer_kw) -> Path:
    """Encode an iterator of (H, W, 3) uint8 frames into ``path`` (size taken from the first frame).

    ``n_frames`` (the expected count) only serves progress fractions. ``progress(fraction, message)``
    is called every ``progress_every`` frames and once at the end.
    """
    writer = None
    try:
        for i, frame in enumerate(frames):
            if writer is None:
                h, w = frame.shape[:2]
                writer = VideoWriter(path, w, h, fps, audio=audio, **writer_kw)
            writer.write(frame)
            if progress is not None and (i + 1) % progress_every == 0:
                frac = (i + 1) / n_frames if n_frames else 0.0
                progress(min(frac, 1.0) * 0.99, f"frame {i + 1}" + (f"/{n_frames}" if n_frames else ""))
        if writer is None:
            raise VideoError("no frames to encode")
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if progress is not None:
        progress(1.0, f"wrote {Path(path).name}")
    return Path(path)


# ------------------------------------------------------------------------------ audio

def _prepare_audio(audio: AudioInput) -> np.ndarray | None:
    """Path or array -> (N,) float32 at 16 kHz (or None)."""
    if audio is None:
        return None
    if isinstance(audio, np.ndarray):
        a = np.asarray(audio, dtype=np.float32)
        if a.ndim != 1:
            raise VideoError(f"audio array must be (N,) mono at {AUDIO_RATE} Hz, got shape {a.shape}")
        if not np.isfinite(a).all():
            raise VideoError("audio contains NaN or infinite samples")
        return a
    from ..audio import load_audio

    # min_seconds=0: a clip's speech can be very short; the length is fitted to the video anyway.
    return load_audio(audio, min_seconds=0.0)


def _fit_length(samples: np.ndarray, n: int) -> np.ndarray:
    """Cut or zero-pad to exactly ``n`` samples."""
    if len(samples) >= n:
        return samples[:n]
    return np.concatenate([samples, np.zeros(n - len(samples), np.float32)])


def _write_wav(path: str, samples: np.ndarray) -> None:
    import soundfile as sf

    sf.write(path, np.clip(samples, -1.0, 1.0), AUDIO_RATE, subtype="PCM_16")


def _last_line(log: bytes) -> str:
    lines = [ln.strip() for ln in log.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "no message from ffmpeg"


# ----------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class VideoInfo:
    """What ffmpeg reports about an mp4 (``None`` where there is no such stream)."""

    video_codec: str
    pix_fmt: str
    width: int
    height: int
    fps: float
    n_frames: int
    duration: float  # of the video stream, seconds
    audio_codec: str | None
    audio_rate: int | None
    audio_duration: float | None  # of the audio stream, seconds


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Inspect an mp4 with the bundled ffmpeg (imageio-ffmpeg ships no ffprobe).

    The file is decoded, so the frame count and the audio duration are measured, not read from
    headers: ``duration = n_frames / fps``, ``audio_duration = decoded samples / rate`` (after the
    AAC encoder delay is dropped, as players do).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VideoError(f"{path} is not a file")
    cmd = [_ffmpeg(), "-nostdin", "-hide_banner", "-i", path, "-map", "0:v:0", "-f", "null", "-"]
    log = subprocess.run(cmd, capture_output=True, timeout=FFMPEG_TIMEOUT_S).stderr.decode("utf-8", "replace")
    # e.g. "Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(progressive), 512x512 ..., 30 fps"
    v = re.search(r"Stream #\S+: Video: (\w+).*?, (\w+)(?:\([^)]*\))?, (\d+)x(\d+).*?, ([\d.]+) fps", log)
    if not v:
        raise VideoError(f"{path}: no video stream found ({_last_line(log.encode())})")
    frames = re.findall(r"frame=\s*(\d+)", log)  # progress lines; the last is the total
    n_frames, fps = int(frames[-1]) if frames else 0, float(v.group(5))

    a = re.search(r"Stream #\S+: Audio: (\w+).*?, (\d+) Hz", log)
    audio_duration = None
    if a:
        cmd = [_ffmpeg(), "-nostdin", "-loglevel", "error", "-i", path, "-map", "0:a:0",
               "-ac", "1", "-f", "s16le", "-"]
        pcm = subprocess.run(cmd, capture_output=True, timeout=FFMPEG_TIMEOUT_S).stdout
        audio_duration = len(pcm) / 2 / int(a.group(2))
    return VideoInfo(
        video_codec=v.group(1), pix_fmt=v.group(2), width=int(v.group(3)), height=int(v.group(4)),
        fps=fps, n_frames=n_frames, duration=n_frames / fps,
        audio_codec=a.group(1) if a else None, audio_rate=int(a.group(2)) if a else None,
        audio_duration=audio_duration,
    )


def read_video_frames(path: str | os.PathLike) -> np.ndarray:
    """(T, H, W, 3) uint8: every frame of a (small) video, decoded. For tests and checks."""
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(os.fspath(path))
    meta = next(gen)
    w, h = meta["size"]
    frames = [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in gen]
    return np.stack(frames) if frames else np.zeros((0, h, w, 3), np.uint8)
