"""`MannequinBody`: mannequin-x's neutral wooden mannequin, a second free body without identity cues
(for blind studies, where a human-looking body adds them).

Baked by ``scripts/bake_smplx_skeleton.py`` from the PyPI package mannequin-x 0.3.0 (Apache-2.0,
``assets/LICENSE.mannequin-x.txt``) into ``assets/mannequin_body.npz`` (0.5 MB): 24,256 vertices,
48,396 triangles, skinned to the SMPL-X joints with up to 4 influences, at the neutral SMPL-X shape.
Posing is plain linear blend skinning on SMPL-X's skeleton, as mannequin-x does it (same vertices
within 1e-5 m for the neutral shape), in NumPy; mannequin-x is never imported at run time.

Other body shapes (the first 10 betas) are made by the same rest-pose retargeting as the Anny body
(`anny.bone_maps`), feet put on SMPL-X's sole height. mannequin-x shapes its mannequin differently
(it also fits the head to SMPL-X's head box and keeps the torso shells rigid): on the BEAT2 sample
the two differ by 0.7 mm (median), 18 mm at most, mostly at the head and torso shells.

What it can show: body, head and fingers (SMPL-X's mean hand pose added, as for every body). It has
no jaw, eyes or face, so jaw and eye rotations and FLAME expressions move nothing.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import scipy.sparse

from ..assets import MANNEQUIN_BODY
from ..motion import smplx_skeleton
from ..motion.kinematics import forward_kinematics
from ..motion.skeleton import N_JOINTS, PARENTS
from .anny import _CHUNK, _FEET, _SHAPES_KEPT, BodyError, _check, blend_skin, bone_maps

__all__ = ["MannequinBody"]


class MannequinBody:
    """mannequin-x's wooden mannequin driven by SMPL-X motion; the same interface as `anny.Body`.

    Attributes:
        faces (F, 3) int32; rest_vertices (V, 3) float32 and rest_joints (55, 3) float32 at zero
        rotations (flat hands) for the neutral shape; parents; name ``"mannequin"``; skeleton ``"smplx"``.
    """

    name = "mannequin"
    skeleton = "smplx"
    _cache: dict[str, "MannequinBody"] = {}
    _lock = threading.Lock()

    @classmethod
    def load(cls, path=None) -> "MannequinBody":
        """The baked mannequin (``assets/mannequin_body.npz`` by default), read once per path."""
        key = str(path or MANNEQUIN_BODY)
        with cls._lock:
            if key not in cls._cache:
                cls._cache[key] = cls(key)
            return cls._cache[key]

    def __init__(self, path=MANNEQUIN_BODY):
        try:
            with np.load(path, allow_pickle=False) as z:
                self.faces = np.ascontiguousarray(z["faces"], np.int32)
                rest = z["rest_vertices"].astype(np.float64)
                joints = z["rest_joints"].astype(np.float64)
                j, w = z["skin_joints"].astype(np.int64), z["skin_weights"].astype(np.float32)
        except (OSError, ValueError, KeyError) as e:
            raise BodyError(f"cannot read the mannequin body {path}: {e}") from None
        if joints.shape != (N_JOINTS, 3) or j.shape != w.shape or j.min() < 0 or j.max() >= N_JOINTS:
            raise BodyError(f"{path}: not a mannequin skinned to the 55 SMPL-X joints")
        self.path = str(path)
        self.parents = PARENTS
        V, K = j.shape
        self._weights = scipy.sparse.csr_matrix((w.ravel(), (np.repeat(np.arange(V), K), j.ravel())),
                                                shape=(V, N_JOINTS))
        self._dense_weights = None  # (V, 55), made when a non-neutral shape is first needed
        self._neutral = (joints, rest)
        self._shapes: OrderedDict[bytes, tuple[np.ndarray, np.ndarray]] = OrderedDict(
            {smplx_skeleton.shape_key(None): self._neutral})
        self._shapes_lock = threading.Lock()
        self.rest_joints = joints.astype(np.float32)
        self.rest_vertices = rest.astype(np.float32)

    @property
    def n_vertices(self) -> int:
        return len(self.rest_vertices)

    def __repr__(self) -> str:
        return f"<MannequinBody: {self.n_vertices} vertices, {len(self.faces)} triangles, from {self.path}>"

    def _shape(self, betas) -> tuple[np.ndarray, np.ndarray]:
        """(rest joints (55, 3), rest vertices (V, 3)) float64 for a body shape (cached)."""
        key = smplx_skeleton.shape_key(betas)
        with self._shapes_lock:
            if key in self._shapes:
                self._shapes.move_to_end(key)
                return self._shapes[key]
        shaped = self._rerest(np.frombuffer(key, np.float32))
        with self._shapes_lock:
            self._shapes[key] = shaped
            while len(self._shapes) > _SHAPES_KEPT:
                first = next(iter(self._shapes))
                if first == smplx_skeleton.shape_key(None):
                    self._shapes.move_to_end(first)  # the neutral shape is the baked one: keep it
                    first = next(iter(self._shapes))
                del self._shapes[first]
        return shaped

    def _rerest(self, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        source, x = self._neutral
        target = smplx_skeleton.rest_joints(betas)
        M = bone_maps(source, target)
        if self._dense_weights is None:
            self._dense_weights = self._weights.toarray()
        W = self._dense_weights
        # each vertex: its joints' maps, blended with its skinning weights
        per_joint = np.einsum("jab,vjb->vja", M, x[:, None] - source[None]) + target[None]  # (V, 55, 3)
        v = np.einsum("vj,vja->va", W, per_joint)
        floor = smplx_skeleton.rest_floor(betas)
        for joints in _FEET:
            w = W[:, list(joints)].sum(1)
            foot = w > 0.5
            v[:, 1] += w * np.max((floor - v[foot, 1]) / w[foot])
        return target, v

    def rest_pose(self, betas=None) -> tuple[np.ndarray, np.ndarray]:
        """(rest_vertices (V, 3), rest_joints (55, 3)) float32 at zero rotations for a body shape."""
        joints, verts = self._shape(betas)
        return verts.astype(np.float32), joints.astype(np.float32)

    def joints(self, poses, trans, *, betas=None) -> np.ndarray:
        """(T, 55, 3) float32 world joint positions (SMPL-X's, mean hand added) for (T, 55, 3) poses."""
        poses, trans = _check(poses, trans)
        rest = self._shape(betas)[0].astype(np.float32)
        return forward_kinematics(smplx_skeleton.with_mean_hands(poses), trans, rest, self.parents)[0]

    def vertices(self, poses, trans, *, expressions=None, betas=None) -> np.ndarray:
        """(T, V, 3) float32 posed mesh for poses (T, 55, 3) as BEAT2 stores them (the mean hand pose is
        added here), trans (T, 3) and betas (B,) (first 10; None: neutral). ``expressions`` are ignored."""
        poses, trans = _check(poses, trans)
        poses = smplx_skeleton.with_mean_hands(poses)
        joints, rest = self._shape(betas)
        points = rest.astype(np.float32)
        out = np.empty((len(poses), len(rest), 3), np.float32)
        for s in range(0, len(poses), _CHUNK):
            P, G = forward_kinematics(poses[s:s + _CHUNK].astype(np.float64), trans[s:s + _CHUNK].astype(np.float64),
                                      joints, self.parents)
            t = P - (G @ joints[:, :, None])[..., 0]  # v -> G (v - J) + P
            out[s:s + _CHUNK] = blend_skin(self._weights, np.concatenate([G, t[..., None]], -1), points)
        return out
