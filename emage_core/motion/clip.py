"""`Motion`: one clip of SMPL-X body + FLAME face motion, and operations on it in time.

Arrays (T = number of frames):

- ``poses``       (T, 55, 3) float32, axis-angle of the 55 SMPL-X joints, parent-relative;
- ``expressions`` (T, 100)   float32, FLAME expression coefficients;
- ``trans``       (T, 3)     float32, global translation in metres (Y up);
- ``betas``       (300,)     float32, body shape (constant over the clip);
- ``fps``         frames per second (EMAGE works at 30).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from . import rotation
from .skeleton import N_BETAS, N_EXPRESSIONS, N_JOINTS, PARTS

DEFAULT_FPS = 30


class MotionError(ValueError):
    """A motion whose arrays are inconsistent or unusable."""


@dataclass
class Motion:
    poses: np.ndarray
    expressions: np.ndarray
    trans: np.ndarray
    betas: np.ndarray = field(default_factory=lambda: np.zeros(N_BETAS, np.float32))
    fps: float = DEFAULT_FPS
    #: Where the clip came from (model, weights, seed, settings); written beside files, never into them.
    meta: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        self.poses = np.ascontiguousarray(self.poses, dtype=np.float32)
        if self.poses.ndim == 2 and self.poses.shape[1] == N_JOINTS * 3:
            self.poses = self.poses.reshape(-1, N_JOINTS, 3)
        self.expressions = np.ascontiguousarray(self.expressions, dtype=np.float32)
        self.trans = np.ascontiguousarray(self.trans, dtype=np.float32)
        self.betas = np.ascontiguousarray(self.betas, dtype=np.float32).reshape(-1)
        self.validate()

    # -- construction -------------------------------------------------------------------
    @classmethod
    def zeros(cls, n_frames: int, fps: float = DEFAULT_FPS) -> "Motion":
        """A rest-pose (T-pose) clip of ``n_frames`` frames."""
        return cls(
            poses=np.zeros((n_frames, N_JOINTS, 3), np.float32),
            expressions=np.zeros((n_frames, N_EXPRESSIONS), np.float32),
            trans=np.zeros((n_frames, 3), np.float32),
            fps=fps,
        )

    def validate(self) -> None:
        """Raise `MotionError` naming the first problem: shapes, frame counts, non-finite values, fps."""
        T = self.poses.shape[0]
        checks = (
            ("poses", self.poses, (T, N_JOINTS, 3)),
            ("expressions", self.expressions, (T, N_EXPRESSIONS)),
            ("trans", self.trans, (T, 3)),
            ("betas", self.betas, (N_BETAS,)),
        )
        for name, arr, shape in checks:
            if arr.shape != shape:
                raise MotionError(f"{name} has shape {arr.shape}, expected {shape}")
            if not np.isfinite(arr).all():
                raise MotionError(f"{name} contains NaN or infinite values")
        if not (np.isfinite(self.fps) and self.fps > 0):
            raise MotionError(f"fps must be positive, got {self.fps}")

    # -- basic properties ---------------------------------------------------------------
    @property
    def n_frames(self) -> int:
        return self.poses.shape[0]

    def __len__(self) -> int:
        return self.n_frames

    @property
    def duration(self) -> float:
        """Length in seconds (frames / fps)."""
        return self.n_frames / self.fps

    def part_values(self, part: str) -> np.ndarray:
        """(T, C) the raw values of one part: its joints' axis-angles, plus expressions for
        ``face`` and the translation for ``global``."""
        if part not in PARTS:
            raise KeyError(f"unknown part {part!r}; expected one of {', '.join(PARTS)}")
        cols = [self.poses[:, list(PARTS[part])].reshape(self.n_frames, -1)]
        if part == "face":
            cols.append(self.expressions)
        if part == "global":
            cols.append(self.trans)
        return np.concatenate(cols, axis=1)

    # -- time operations ----------------------------------------------------------------
    def slice(self, start: int | None = None, stop: int | None = None) -> "Motion":
        """Frames ``[start, stop)`` (Python slice semantics) as a new Motion."""
        s = slice(start, stop)
        return replace(self, poses=self.poses[s].copy(), expressions=self.expressions[s].copy(),
                       trans=self.trans[s].copy(), betas=self.betas.copy(), meta=dict(self.meta))

    def __getitem__(self, s: slice) -> "Motion":
        if not isinstance(s, slice) or s.step not in (None, 1):
            raise TypeError("Motion supports only contiguous frame slices, e.g. motion[10:40]")
        return self.slice(s.start, s.stop)

    @staticmethod
    def concat(motions: Sequence["Motion"]) -> "Motion":
        """Join clips in time. They must share fps; betas come from the first clip."""
        if not motions:
            raise MotionError("nothing to concatenate")
        fps = motions[0].fps
        if any(m.fps != fps for m in motions):
            raise MotionError(f"cannot concatenate clips of different fps: {[m.fps for m in motions]}")
        return Motion(
            poses=np.concatenate([m.poses for m in motions]),
            expressions=np.concatenate([m.expressions for m in motions]),
            trans=np.concatenate([m.trans for m in motions]),
            betas=motions[0].betas.copy(),
            fps=fps,
        )

    def resample(self, fps: float = DEFAULT_FPS) -> "Motion":
        """The clip at another frame rate: slerp for joint rotations, linear for the rest.

        Output frame i samples time i / fps; frames run while that time stays within the
        source clip, so ``n_out = floor((T - 1) * fps / self.fps) + 1``.
        """
        if fps == self.fps:
            return self.slice()
        T = self.n_frames
        n_out = int(np.floor((T - 1) * fps / self.fps + 1e-9)) + 1 if T else 0
        src = np.arange(n_out) * (self.fps / fps)  # fractional source frame of each output frame
        i0 = np.clip(np.floor(src).astype(int), 0, max(T - 1, 0))
        i1 = np.minimum(i0 + 1, T - 1)
        w = (src - i0).astype(np.float64)

        def lerp(a: np.ndarray) -> np.ndarray:
            ww = w.reshape((-1,) + (1,) * (a.ndim - 1))
            return ((1 - ww) * a[i0] + ww * a[i1]).astype(np.float32)

        q = rotation.axis_angle_to_quaternion(self.poses.astype(np.float64))  # (T, 55, 4)
        qs = rotation.quaternion_slerp(q[i0], q[i1], np.repeat(w[:, None], N_JOINTS, axis=1))
        poses = rotation.quaternion_to_axis_angle(qs).astype(np.float32)
        return Motion(poses=poses, expressions=lerp(self.expressions), trans=lerp(self.trans),
                      betas=self.betas.copy(), fps=fps)

    # -- representations ----------------------------------------------------------------
    def rot6d(self) -> np.ndarray:
        """(T, 55, 6) the poses in EMAGE's 6D representation (first two matrix rows)."""
        return rotation.axis_angle_to_rot6d(self.poses)

    def allclose(self, other: "Motion", atol: float = 1e-6) -> bool:
        """Same length and fps, and every array equal within ``atol``."""
        return (
            self.n_frames == other.n_frames
            and self.fps == other.fps
            and all(
                np.allclose(a, b, atol=atol, rtol=0)
                for a, b in ((self.poses, other.poses), (self.expressions, other.expressions),
                             (self.trans, other.trans), (self.betas, other.betas))
            )
        )
