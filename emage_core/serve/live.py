"""A live session inside the generation worker: speech chunks in, motion messages out, the take at the end
(`write_take`: its files, like a generated result's).

The web side (`serve.live_web`) starts it with `GenerationWorker.start_live`, forwards each chunk of speech
with `JobHandle.send_audio` and relays the worker's ``live`` events to the browser. The messages (JSON-able):

    {"type": "ready", "fps": 30, "lookahead_frames": 6, "model": ..., "seed": ..., "max_seconds": 600}
    {"type": "motion", "start": frame, "n": frames, "q": [n * 55 * 4 floats], "root": [n * 3 floats],
     "received": server time the chunk arrived (s), "heard": s of speech so far, "compute_ms": ...}

``q`` holds each joint's parent-relative rotation as a quaternion (x, y, z, w), SMPL-X's mean hand pose
included, and ``root`` the pelvis position (rest pelvis + translation, metres): exactly the rotations and root
translation of the exported ``.glb`` (`export.gltf`), so the page poses the same skinned body with them.
"""
from __future__ import annotations

import json
import logging
import queue
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..audio import SAMPLE_RATE
from ..generate.live import MAX_CHUNK_SECONDS, LiveStream, MotionChunk
from ..export.gltf import joint_channels
from ..motion.kinematics import rest_skeleton

logger = logging.getLogger(__name__)

IDLE_TIMEOUT_S = 30.0  # a session that receives no speech this long ends (a page left open, a lost stream)
MAX_LIVE_SECONDS = 600.0  # speech per session (and its wall-clock time: this plus IDLE_TIMEOUT_S)
MERGE_BYTES = int(MAX_CHUNK_SECONDS * SAMPLE_RATE) * 4  # the most queued speech one push takes at once


def _resampler(rate: int):
    """``resample(x, last=False)``: (n,) float32 at ``rate`` -> (m,) at 16 kHz, chunk by chunk with state
    (soxr's stream resampler; ``last`` flushes what it holds back)."""
    if rate == SAMPLE_RATE:
        return lambda x, last=False: x
    import soxr

    stream = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")
    return lambda x, last=False: stream.resample_chunk(np.ascontiguousarray(x, np.float32), last=last)


def wire_chunk(chunk: MotionChunk, rest_pelvis: np.ndarray, received: float) -> dict:
    """A `MotionChunk` as the page's motion message (see the module docstring)."""
    q, root = joint_channels(chunk.poses, chunk.trans, rest_pelvis)
    return {"type": "motion", "start": chunk.start, "n": chunk.n_frames,
            "q": np.round(q, 5).reshape(-1).tolist(), "root": np.round(root, 5).reshape(-1).tolist(),
            "received": received, "heard": round(chunk.heard_s, 3), "compute_ms": round(1000 * chunk.compute_s, 2)}


def run_live(request, audio: "queue.Queue", *, generator_for: Callable, emit: Callable[[dict], None],
             cancelled: Callable[[], bool], idle_timeout_s: float = IDLE_TIMEOUT_S,
             max_seconds: float = MAX_LIVE_SECONDS) -> dict:
    """Run one live session (in the worker process) until the page stops it; returns the take's files.

    ``audio`` yields ``(job_id, received time, float32 bytes or None)`` at ``request.sample_rate`` (resampled
    to 16 kHz here); items of other sessions (left over from an earlier one) are skipped; speech that queued
    up while a push ran goes into the next push together, so a session that fell behind catches up.
    ``emit`` sends a message to the page. Raises `worker.Cancelled` when ``cancelled()`` (the page went away).
    """
    from .worker import Cancelled

    settings = request.settings
    ref = settings.models()[0]
    gen = generator_for(ref)
    gen.model_id = ref.label  # outputs name the model by its reference, never by a folder
    if not gen.capabilities.live:
        raise ValueError(f"{ref.label} cannot generate live; choose a model that can (EMAGE)")
    out = Path(request.out_dir)
    live: LiveStream = gen.live(settings.generation, record_dir=out / "recording", max_seconds=max_seconds)
    live.meta["weights"] = {**live.meta["weights"], "source": ref.label}
    rest_pelvis = rest_skeleton(np.zeros(10, np.float32))[0][0].astype(np.float64)
    emit({"type": "ready", "fps": live.fps, "lookahead_frames": live.lookahead, "model": ref.label,
          "seed": live.meta["seed"], "max_seconds": max_seconds})
    resample = _resampler(request.sample_rate)
    started = last_heard = time.monotonic()
    while True:
        if cancelled():
            raise Cancelled()
        try:
            job_id, received, payload = audio.get(timeout=0.25)
        except queue.Empty:
            if time.monotonic() - last_heard > idle_timeout_s:
                raise ValueError(f"no speech arrived for {idle_timeout_s:.0f} s: the live session ended") from None
            continue
        if job_id != request.job_id:
            continue
        # behind (a slow machine, a burst): take what else is waiting at once, one push for all of it
        payloads = [payload]
        while payloads[-1] is not None and sum(len(p) for p in payloads) < MERGE_BYTES:
            try:
                more = audio.get_nowait()
            except queue.Empty:
                break
            if more[0] == request.job_id:
                payloads.append(more[2])
        stop = payloads[-1] is None
        data = b"".join(p for p in payloads if p is not None)
        if len(data) % 4:
            raise ValueError("live audio must be float32 samples (a multiple of 4 bytes)")
        if (data or stop) and live.heard_s < max_seconds:
            last_heard = time.monotonic()
            samples = resample(np.frombuffer(data, "<f4"), last=stop)  # the end: the resampler's tail too
            samples = samples[: int(max_seconds * SAMPLE_RATE) - live.n_samples]
            emit(wire_chunk(live.push(samples), rest_pelvis, received))
        if stop or live.heard_s >= max_seconds or time.monotonic() - started > max_seconds + idle_timeout_s:
            break  # stopped by the page, or a limit: the take ends here
    emit(wire_chunk(live.finish(), rest_pelvis, time.time()))
    files = write_take(live, out)
    shutil.rmtree(out / "recording")
    return {"files": {kind: str(path) for kind, path in files.items()}, "frames": live.frames,
            "seconds": round(live.heard_s, 3)}


def write_take(live: LiveStream, folder: str | Path, stem: str = "take") -> dict[str, Path]:
    """The take as files, like a generated result: ``take.npz`` (BEAT2), ``take.json`` beside it,
    ``take.bvh``, ``take.glb``, ``take.wav`` (the speech heard) and ``metadata.json``; returns them by kind (the side-car ``take.json`` goes with ``npz``)."""
    import soundfile as sf

    from ..export.gltf import write_glb
    from ..files import sha256_file
    from ..motion.beat2 import write_beat2
    from ..motion.bvh import write_bvh

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    motion = live.take()
    if motion.n_frames == 0:
        raise ValueError("the live session ended before any motion was made (speak for at least 0.3 s)")
    files = {"wav": folder / f"{stem}.wav"}
    sf.write(files["wav"], live.speech(), SAMPLE_RATE, subtype="PCM_16")
    motion.meta["audio_sha256"] = sha256_file(files["wav"])
    files["npz"] = write_beat2(motion, folder / f"{stem}.npz")
    files["bvh"] = write_bvh(motion, folder / f"{stem}.bvh")
    files["glb"] = write_glb(motion, folder / f"{stem}.glb")
    files["metadata"] = folder / "metadata.json"
    files["metadata"].write_text(json.dumps({**motion.meta, "frames": motion.n_frames, "fps": motion.fps},
                                            indent=2, default=str) + "\n")
    return files
