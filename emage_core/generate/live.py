"""Live generation: speech in chunks -> motion chunks, and the take (the speech heard + the motion shown).

    gen = EmageGenerator.from_pretrained()
    live = gen.live(GenerationSettings(seed=0))          # a `LiveStream`
    for samples in mic_chunks:                           # (n,) float32 16 kHz
        chunk = live.push(samples)                       # a `MotionChunk` (maybe of 0 frames)
    last = live.finish()
    take = live.take()                                   # `Motion` of floor(N * 30 / 16000) frames, meta says "live"

    for chunk in gen.stream(chunks, settings): ...       # the same as a generator of chunks

Family-independent: a family that can stream provides an object with ``push(samples) -> dict`` and
``finish() -> dict`` of new frames (poses (n, 55, 3), expressions (n, 100), trans (n, 3)) and ``lookahead``
(frames of speech each frame hears after itself); this module adds the idle layer (`edit.idle`), timing,
limits, the recording and the labels (`serve.live.write_take` writes the take as files). The recording goes
to disk when a folder is given (a long session keeps nothing growing in memory), else to memory.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..audio import DEFAULT_MAX_SECONDS, SAMPLE_RATE
from ..edit.idle import Idle
from ..motion.clip import DEFAULT_FPS, Motion
from ..motion.skeleton import N_JOINTS

MAX_CHUNK_SECONDS = 2.0  # a larger piece of speech at once is not live


@dataclass
class MotionChunk:
    """Frames [start, start + n) of the live motion, produced after ``heard_s`` of speech."""

    start: int
    poses: np.ndarray  # (n, 55, 3) axis-angle
    expressions: np.ndarray  # (n, 100)
    trans: np.ndarray  # (n, 3)
    heard_s: float  # speech received when it was produced
    compute_s: float  # time the push took
    fps: float = DEFAULT_FPS

    @property
    def n_frames(self) -> int:
        return int(self.poses.shape[0])


@dataclass
class _Recording:
    """The take so far: in memory, or appended to raw float32 files in ``folder``."""

    folder: Path | None = None
    memory: dict[str, list[np.ndarray]] = field(default_factory=lambda: {k: [] for k in _TRACKS})

    def add(self, track: str, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, np.float32)
        if self.folder is None:
            self.memory[track].append(values)
        else:
            with open(self.folder / f"{track}.f32", "ab") as fh:
                fh.write(values.tobytes())

    def read(self, track: str) -> np.ndarray:
        width = _TRACKS[track]
        if self.folder is None:
            parts = self.memory[track]
            flat = np.concatenate([p.reshape(-1) for p in parts]) if parts else np.zeros(0, np.float32)
        else:
            path = self.folder / f"{track}.f32"
            flat = np.fromfile(path, np.float32) if path.exists() else np.zeros(0, np.float32)
        return flat if width == 1 else flat.reshape(-1, *width)


_TRACKS = {"speech": 1, "poses": (N_JOINTS, 3), "expressions": (100,), "trans": (3,)}


class LiveStream:
    """One live session: see the module docstring. Not thread-safe (one caller pushes)."""

    def __init__(self, backend, meta: dict, *, seed: int, idle: bool = True,
                 record_dir: str | Path | None = None, max_seconds: float = DEFAULT_MAX_SECONDS,
                 fps: float = DEFAULT_FPS):
        self.backend, self.fps, self.lookahead = backend, fps, backend.lookahead
        self.max_seconds = max_seconds
        self.idle = Idle(seed=seed, fps=fps) if idle else None
        self.recording = _Recording(Path(record_dir) if record_dir is not None else None)
        if self.recording.folder is not None:
            self.recording.folder.mkdir(parents=True, exist_ok=True)
        self.meta = meta
        self.n_samples = 0
        self.frames = 0
        self.finished = False
        self._stats = {"pushes": 0, "compute_s_total": 0.0, "compute_s_max": 0.0}
        self._pending_audio = np.zeros(0, np.float32)  # samples of frames not yet emitted (for the idle layer)

    @property
    def heard_s(self) -> float:
        return self.n_samples / SAMPLE_RATE

    def push(self, samples) -> MotionChunk:
        """Add (n,) float32 16 kHz speech; returns the motion that became ready (0 frames early on)."""
        if self.finished:
            raise RuntimeError("this live session has finished")
        samples = np.asarray(samples, np.float32).reshape(-1)
        if samples.shape[0] > MAX_CHUNK_SECONDS * SAMPLE_RATE:
            raise ValueError(f"a live chunk holds at most {MAX_CHUNK_SECONDS:g} s of speech, "
                             f"got {samples.shape[0] / SAMPLE_RATE:.2f} s")
        if not np.isfinite(samples).all():
            raise ValueError("audio chunk contains NaN or infinite samples")
        if self.n_samples + samples.shape[0] > self.max_seconds * SAMPLE_RATE:
            raise ValueError(f"the live session reached its limit of {self.max_seconds:.0f} s of speech")
        t0 = time.perf_counter()
        self.n_samples += samples.shape[0]
        self.recording.add("speech", samples)
        self._pending_audio = np.concatenate([self._pending_audio, samples])
        return self._emit(self.backend.push(samples), t0)

    def finish(self) -> MotionChunk:
        """The speech ended: the rest of the motion (the take then covers floor(N * 30 / 16000) frames)."""
        t0 = time.perf_counter()
        chunk = self._emit(self.backend.finish(), t0)
        self.finished = True
        return chunk

    def _emit(self, new: dict, t0: float) -> MotionChunk:
        n = new["poses"].shape[0]
        poses = new["poses"]
        if n:
            spf = SAMPLE_RATE / self.fps
            used = int(round((self.frames + n) * spf)) - int(round(self.frames * spf))
            if self.idle is not None:
                poses = self.idle.apply(poses, self._pending_audio[:used])
            self._pending_audio = self._pending_audio[used:]
            for track, values in (("poses", poses), ("expressions", new["expressions"]), ("trans", new["trans"])):
                self.recording.add(track, values)
        chunk = MotionChunk(self.frames, poses.astype(np.float32), new["expressions"].astype(np.float32),
                            new["trans"].astype(np.float32), self.heard_s, time.perf_counter() - t0, self.fps)
        self.frames += n
        self._stats["pushes"] += 1
        self._stats["compute_s_total"] += chunk.compute_s
        self._stats["compute_s_max"] = max(self._stats["compute_s_max"], chunk.compute_s)
        return chunk

    def speech(self) -> np.ndarray:
        """(N,) float32 16 kHz: everything received."""
        return self.recording.read("speech")

    def take(self) -> Motion:
        """The motion shown, as one clip labelled live (model, settings, look-ahead, idle edit, timing)."""
        motion = Motion(poses=self.recording.read("poses"), expressions=self.recording.read("expressions"),
                        trans=self.recording.read("trans"), fps=self.fps)
        pushes = max(self._stats["pushes"], 1)
        motion.meta = {**self.meta, "live": {
            "generated_live": True,
            "lookahead_frames": self.lookahead,
            "lookahead_s": round(self.lookahead / self.fps, 4),
            "what_lookahead_means": "each emitted frame heard at most this much speech after it: motion trails "
                                    "the speech by it plus compute and transport",
            "speech_seconds": round(self.heard_s, 3),
            "pushes": self._stats["pushes"],
            "compute_s_mean": round(self._stats["compute_s_total"] / pushes, 4),
            "compute_s_max": round(self._stats["compute_s_max"], 4),
            "idle": self.idle.describe() if self.idle is not None else None,
        }}
        return motion


def stream(live: LiveStream, chunks: Iterable) -> Iterator[MotionChunk]:
    """Push every chunk of ``chunks`` ((n,) float32 16 kHz each), yielding a `MotionChunk` per chunk, then
    the final one once they run out."""
    for samples in chunks:
        yield live.push(samples)
    yield live.finish()
