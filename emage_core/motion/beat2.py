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

from .clip import Motion, MotionError
from .skeleton import N_BETAS, N_EXPRESSIONS, N_JOINTS

#: BEAT's eight emotion labels, in BEAT's order (a take's emotion follows from its sequence number).
EMOTIONS = ("neutral", "happiness", "anger", "sadness", "contempt", "surprise", "fear", "disgust")

#: Default cap on frames read from a file: 10 minutes at 30 fps (the audio limit), plus slack.
MAX_FRAMES = 30 * 60 * 12

_REQUIRED = ("poses", "trans", "expressions")


class MotionFileError(MotionError):
    """A motion file that cannot be read: names the file and the problem."""


def read_beat2(source: str | os.PathLike | bytes, *, max_frames: int = MAX_FRAMES, name: str | None = None) -> Motion:
    """Load a BEAT2 ``.npz`` (path or bytes) as a `Motion` at the file's frame rate.

    ``betas`` may be absent (zeros); ``mocap_frame_rate`` may be absent (30). Files come from users:
    every member's header (dtype, shape, byte count) is checked before anything is allocated, and
    nothing is unpickled. Messages name the file by ``name`` (default: the file's own name, never
    its folder, which may be a server's).

    Raises `MotionFileError` for a file that is not an npz, holds pickled objects, lacks a key, has
    wrong shapes or sizes, NaN/inf values, zero frames, or more than ``max_frames`` frames.
    """
    if name is None:
        name = "<bytes>" if isinstance(source, (bytes, bytearray)) else Path(os.fspath(source)).name

    def fail(msg: str) -> MotionFileError:
        return MotionFileError(f"{name}: {msg}")

    try:
        fh = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    except OSError as e:
        raise fail(f"cannot open ({e.strerror or type(e).__name__})") from None
    with fh:
        head = fh.read(6)
        fh.seek(0)
        if head == b"\x93NUMPY":
            raise fail("is a single .npy array, expected an .npz archive with poses/trans/expressions")
        try:
            archive = zipfile.ZipFile(fh)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            raise fail("not an .npz file (no zip archive)") from None
        with archive:
            members = {n[:-4]: n for n in archive.namelist() if n.endswith(".npy")}
            missing = [k for k in _REQUIRED if k not in members]
            if missing:
                raise fail(f"missing key(s) {', '.join(missing)} (has: {', '.join(members) or 'nothing'})")
            headers = {key: _member_header(archive, members[key], key, fail)
                       for key in (*_REQUIRED, "betas", "mocap_frame_rate") if key in members}
            _check_shapes(headers, max_frames, fail)
            arrays = {key: _read_member(archive, members[key], key, fail) for key in headers}

    poses, trans, expr = arrays["poses"], arrays["trans"], arrays["expressions"]
    T = poses.shape[0]
    betas = arrays.get("betas", np.zeros(N_BETAS, np.float32)).reshape(-1)
    betas = np.pad(betas, (0, N_BETAS - betas.shape[0]))  # some tools store 10 or 16 shape coefficients
    fps = float(arrays["mocap_frame_rate"].reshape(-1)[0]) if "mocap_frame_rate" in arrays else 30.0
    for key, arr in (("poses", poses), ("trans", trans), ("expressions", expr), ("betas", betas)):
        if not np.isfinite(arr).all():
            raise fail(f"'{key}' contains NaN or infinite values")
    if not (0 < fps <= 1000):
        raise fail(f"'mocap_frame_rate' is {fps}, expected a positive frame rate")
    return Motion(poses=poses.reshape(T, N_JOINTS, 3), expressions=expr, trans=trans, betas=betas, fps=fps)


def _member_header(archive: zipfile.ZipFile, member: str, key: str, fail) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data bytes the member holds) from one ``.npy`` member's header."""
    info = archive.getinfo(member)
    try:
        with archive.open(info) as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(f)
            header_bytes = f.tell()
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, RuntimeError, SyntaxError):
        raise fail(f"'{key}' is not a readable NumPy array") from None
    if dtype.hasobject:
        raise fail(f"'{key}' holds Python objects (pickled data), which are never loaded")
    if dtype.kind not in "fiu":
        raise fail(f"'{key}' has dtype {dtype}, expected numbers")
    return tuple(shape), dtype, max(info.file_size - header_bytes, 0)


def _check_shapes(headers: dict, max_frames: int, fail) -> None:
    """Shapes of all members against each other and the frame limit, before any data is read."""
    shape = headers["poses"][0]
    if len(shape) != 2 or shape[1] != N_JOINTS * 3:
        raise fail(f"'poses' has shape {shape}, expected (T, {N_JOINTS * 3})")
    T = shape[0]
    if T == 0:
        raise fail("has zero frames")
    if T > max_frames:
        raise fail(f"'poses' claims {T:,} frames; the limit is {max_frames:,}")
    for key, width in (("trans", 3), ("expressions", N_EXPRESSIONS)):
        if headers[key][0] != (T, width):
            raise fail(f"'{key}' has shape {headers[key][0]}, expected ({T}, {width}) to match 'poses'")
    if "betas" in headers and int(np.prod(headers["betas"][0])) > N_BETAS:
        raise fail(f"'betas' has {int(np.prod(headers['betas'][0]))} values, expected at most {N_BETAS}")
    if "mocap_frame_rate" in headers and int(np.prod(headers["mocap_frame_rate"][0])) != 1:
        raise fail(f"'mocap_frame_rate' has shape {headers['mocap_frame_rate'][0]}, expected one number")
    for key, (shape, dtype, held) in headers.items():
        claimed = int(np.prod(shape)) * dtype.itemsize
        if held < claimed:
            raise fail(f"'{key}' claims shape {shape} ({claimed:,} bytes) but holds only {held:,} bytes")


def _read_member(archive: zipfile.ZipFile, member: str, key: str, fail) -> np.ndarray:
    try:
        with archive.open(member) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, RuntimeError) as e:
        raise fail(f"'{key}' cannot be read ({type(e).__name__})") from None


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
