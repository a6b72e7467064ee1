"""Read and write motion in the BEAT2 ``.npz`` format (SMPL-X + FLAME), as the official tools do.

A BEAT2 file holds ``betas`` (300,), ``poses`` (T, 165) axis-angle of 55 joints, ``expressions``
(T, 100) FLAME, ``trans`` (T, 3), ``model`` ('smplx2020'), ``gender`` and ``mocap_frame_rate``.
Files come from users, so reading never unpickles (``allow_pickle=False``) and every array
is checked before it becomes a `Motion`.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from .motion import Motion, MotionError
from .skeleton import N_BETAS, N_EXPRESSIONS, N_JOINTS

#: Default cap on frames read from a file: 10 minutes at 30 fps (the audio limit), plus slack.
MAX_FRAMES = 30 * 60 * 12

_REQUIRED = ("poses", "trans", "expressions")


class MotionFileError(MotionError):
    """A motion file that cannot be read: names the file and the problem."""


def read_beat2(source: str | os.PathLike | bytes, *, max_frames: int = MAX_FRAMES) -> Motion:
    """Load a BEAT2 ``.npz`` (path or bytes) as a `Motion` at the file's frame rate.

    ``betas`` may be absent (zeros); ``mocap_frame_rate`` may be absent (30).
    Raises `MotionFileError` for a file that is not an npz, holds pickled objects, lacks a key,
    has wrong shapes, NaN/inf values, zero frames, or more than ``max_frames`` frames.
    """
    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else os.fspath(source)

    def fail(msg: str) -> MotionFileError:
        return MotionFileError(f"{name}: {msg}")

    try:
        fh = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    except OSError as e:
        raise fail(f"cannot open ({e.strerror or e})") from None
    with fh:
        try:
            npz = np.load(fh, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise fail(f"not a readable .npz file ({e})") from None
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise fail("is a single .npy array, expected an .npz archive with poses/trans/expressions")
        with npz:
            missing = [k for k in _REQUIRED if k not in npz.files]
            if missing:
                raise fail(f"missing key(s) {', '.join(missing)} (has: {', '.join(npz.files) or 'nothing'})")
            arrays = {}
            for key in (*_REQUIRED, "betas", "mocap_frame_rate"):
                if key not in npz.files:
                    continue
                try:
                    arrays[key] = npz[key]
                except ValueError as e:  # object arrays need pickle, which we refuse
                    raise fail(f"'{key}' holds Python objects, which are not loaded for safety ({e})") from None
                if arrays[key].dtype.kind not in "fiu":
                    raise fail(f"'{key}' has dtype {arrays[key].dtype}, expected numbers")

    poses, trans, expr = arrays["poses"], arrays["trans"], arrays["expressions"]
    if poses.ndim != 2 or poses.shape[1] != N_JOINTS * 3:
        raise fail(f"'poses' has shape {poses.shape}, expected (T, {N_JOINTS * 3})")
    T = poses.shape[0]
    if T == 0:
        raise fail("has zero frames")
    if T > max_frames:
        raise fail(f"has {T} frames, more than the limit of {max_frames}")
    for key, arr, width in (("trans", trans, 3), ("expressions", expr, N_EXPRESSIONS)):
        if arr.shape != (T, width):
            raise fail(f"'{key}' has shape {arr.shape}, expected ({T}, {width}) to match 'poses'")
    betas = arrays.get("betas", np.zeros(N_BETAS, np.float32)).reshape(-1)
    if betas.shape[0] > N_BETAS:
        raise fail(f"'betas' has {betas.shape[0]} values, expected at most {N_BETAS}")
    betas = np.pad(betas, (0, N_BETAS - betas.shape[0]))  # some tools store 10 or 16 shape coefficients
    fps = float(arrays["mocap_frame_rate"]) if "mocap_frame_rate" in arrays else 30.0
    for key, arr in (("poses", poses), ("trans", trans), ("expressions", expr), ("betas", betas)):
        if not np.isfinite(arr).all():
            raise fail(f"'{key}' contains NaN or infinite values")
    if not (0 < fps <= 1000):
        raise fail(f"'mocap_frame_rate' is {fps}, expected a positive frame rate")
    return Motion(poses=poses.reshape(T, N_JOINTS, 3), expressions=expr, trans=trans, betas=betas, fps=fps)


def beat2_arrays(motion: Motion) -> dict[str, np.ndarray]:
    """The arrays of a BEAT2 file for ``motion``, dtypes as the official writer uses them."""
    if motion.fps != round(motion.fps):
        raise MotionError(f"BEAT2 stores an integer frame rate; resample first (fps={motion.fps})")
    return {
        "betas": motion.betas.astype(np.float32),
        "poses": motion.poses.reshape(motion.n_frames, N_JOINTS * 3).astype(np.float32),
        "expressions": motion.expressions.astype(np.float32),
        "trans": motion.trans.astype(np.float32),
        "model": np.array("smplx2020"),
        "gender": np.array("neutral"),
        "mocap_frame_rate": np.array(int(round(motion.fps)), dtype=np.int64),
    }


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz archive (what ``np.savez`` writes) with fixed zip timestamps: equal arrays, equal bytes.

    ``np.savez`` stamps each entry with the current time, so saving the same motion twice would give
    files with different sha256, which breaks provenance checks and idempotent reruns.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system, info.external_attr = 3, 0o644 << 16  # the same on every platform
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(value), allow_pickle=False)
    return buf.getvalue()


def write_beat2(motion: Motion, path: str | os.PathLike) -> Path:
    """Save ``motion`` as a BEAT2 ``.npz`` (``np.savez`` layout, no pickled objects); returns the path.

    When the clip carries ``meta`` (generated clips do: model, weights, seed, settings), it is
    written beside it as ``<name>.json``, since the BEAT2 format has no place for it.
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")  # np.savez would append it silently otherwise
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(npz_bytes(beat2_arrays(motion)))
    if motion.meta:
        sidecar_path(path).write_text(json.dumps(motion.meta, indent=2, sort_keys=True, default=str) + "\n")
    return path


def sidecar_path(npz_path: str | os.PathLike) -> Path:
    """``out.npz`` -> ``out.json``: where a motion file's provenance is written."""
    return Path(npz_path).with_suffix(".json")
