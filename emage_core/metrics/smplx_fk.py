"""SMPL-X forward kinematics as the official evaluation runs it, from a user-supplied model file.

The official BC and L1div read the first 55 SMPL-X joints, and face MSE / LVD all 10,475 SMPL-X
vertices, both from ``smplx.create(model_type="smplx", gender="NEUTRAL_2020", num_betas=300,
num_expression_coeffs=100, use_pca=False, ext="npz")`` (``flat_hand_mean`` left False, so SMPL-X's
mean hand pose is added to the finger rotations). The model file (``SMPLX_NEUTRAL_2020.npz``) is
licence-restricted and never shipped here: the user supplies it (``evaluate --smplx``). This module
re-implements the ``smplx`` package's linear blend skinning (float32 torch, the same operations,
``batch_rodrigues``' 1e-8 included) so that no extra dependency is needed; the tests check it against
the package.

    model = SMPLXModel.load("SMPLX_NEUTRAL_2020.npz")
    joints = model.body_joints(poses, betas)                 # (T, 55, 3): BC / L1div positions
    verts = model.face_vertices(jaw, expressions, betas)     # (T, V, 3): face MSE / LVD vertices
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..files import sha256_file
from ..motion.skeleton import N_JOINTS
from .official import body_fk_poses

__all__ = ["SMPLXModel", "SMPLXModelError", "batch_rodrigues", "rigid_transform", "lbs"]

N_SHAPE_2020 = 300  # the 2020 models: 300 shape + 100 expression components in ``shapedirs``
N_EXPR = 100
_HAND_START = 25  # joints 25-39 left hand, 40-54 right hand
_REQUIRED = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")


class SMPLXModelError(ValueError):
    """The SMPL-X model file is missing, unreadable or not an SMPL-X model."""


def batch_rodrigues(rot_vecs: torch.Tensor) -> torch.Tensor:
    """(N, 3) axis-angle -> (N, 3, 3), exactly as ``smplx.lbs.batch_rodrigues`` (1e-8 in the norm)."""
    n = rot_vecs.shape[0]
    angle = torch.norm(rot_vecs + 1e-8, dim=1, keepdim=True)
    rot_dir = rot_vecs / angle
    cos = torch.unsqueeze(torch.cos(angle), dim=1)
    sin = torch.unsqueeze(torch.sin(angle), dim=1)
    rx, ry, rz = torch.split(rot_dir, 1, dim=1)
    zeros = torch.zeros((n, 1), dtype=rot_vecs.dtype, device=rot_vecs.device)
    K = torch.cat([zeros, -rz, ry, rz, zeros, -rx, -ry, rx, zeros], dim=1).view((n, 3, 3))
    ident = torch.eye(3, dtype=rot_vecs.dtype, device=rot_vecs.device).unsqueeze(dim=0)
    return ident + sin * K + (1 - cos) * torch.bmm(K, K)


def rigid_transform(rot_mats: torch.Tensor, joints: torch.Tensor, parents: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose a skeleton: rot_mats (B, J, 3, 3), rest joints (B, J, 3) -> posed joints (B, J, 3) and the
    joints' transforms relative to their rest positions (B, J, 4, 4) (``smplx.lbs.batch_rigid_transform``)."""
    joints = torch.unsqueeze(joints, dim=-1)
    rel = joints.clone()
    rel[:, 1:] -= joints[:, parents[1:]]
    R = rot_mats.reshape(-1, 3, 3)
    t = rel.reshape(-1, 3, 1)
    mats = torch.cat([F.pad(R, [0, 0, 0, 1]), F.pad(t, [0, 0, 0, 1], value=1)], dim=2).reshape(-1, joints.shape[1], 4, 4)
    chain = [mats[:, 0]]
    for i in range(1, len(parents)):
        chain.append(torch.matmul(chain[parents[i]], mats[:, i]))
    transforms = torch.stack(chain, dim=1)
    posed = transforms[:, :, :3, 3]
    homogen = F.pad(joints, [0, 0, 0, 1])
    rel_transforms = transforms - F.pad(torch.matmul(transforms, homogen), [3, 0, 0, 0, 0, 0, 0, 0])
    return posed, rel_transforms


def lbs(v_shaped: torch.Tensor, J: torch.Tensor, pose: torch.Tensor, posedirs: torch.Tensor, parents: list[int],
        weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear blend skinning of shaped vertices (B, V, 3) with rest joints (B, J, 3) and axis-angle
    poses (B, J*3); posedirs (P, V*3); weights (V, J) -> vertices (B, V, 3), posed joints (B, J, 3).
    The second half of ``smplx.lbs.lbs`` (the shape blend is the caller's)."""
    b = pose.shape[0]
    rot_mats = batch_rodrigues(pose.reshape(-1, 3)).view(b, -1, 3, 3)
    ident = torch.eye(3, dtype=pose.dtype, device=pose.device)
    pose_feature = (rot_mats[:, 1:, :, :] - ident).view(b, -1)
    v_posed = torch.matmul(pose_feature, posedirs).view(b, -1, 3) + v_shaped
    posed_joints, A = rigid_transform(rot_mats, J, parents)
    W = weights.unsqueeze(dim=0).expand(b, -1, -1)
    T = torch.matmul(W, A.view(b, A.shape[1], 16)).view(b, -1, 4, 4)
    homo = torch.cat([v_posed, torch.ones((b, v_posed.shape[1], 1), dtype=pose.dtype, device=pose.device)], dim=2)
    verts = torch.matmul(T, homo.unsqueeze(-1))[:, :, :3, 0]
    return verts, posed_joints


@dataclass
class SMPLXModel:
    """An SMPL-X model (arrays as ``smplx.SMPLX`` holds them), float32 torch on ``device``.

    v_template (V, 3); shapedirs (V, 3, n_betas) and exprdirs (V, 3, n_expr); posedirs (P, V*3);
    J_regressor (55, V); weights (V, 55); parents (55,); pose_mean (55, 3) = the mean hand pose on
    joints 25-54 (``flat_hand_mean=False``), zero elsewhere.
    """

    v_template: torch.Tensor
    shapedirs: torch.Tensor
    exprdirs: torch.Tensor
    posedirs: torch.Tensor
    J_regressor: torch.Tensor
    weights: torch.Tensor
    parents: list[int]
    pose_mean: torch.Tensor
    path: str = ""
    sha256: str = ""

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "SMPLXModel":
        """Read an SMPL-X ``.npz`` (``SMPLX_NEUTRAL_2020.npz``: 300 shape + 100 expression components).

        Only numeric arrays are read (``allow_pickle=False``); the file's sha256 is recorded.
        Raises SMPLXModelError naming the file and what is wrong.
        """
        path = Path(path)
        if not path.is_file():
            raise SMPLXModelError(f"SMPL-X model file {str(path)!r} does not exist")
        try:
            with np.load(path, allow_pickle=False) as npz:
                missing = [k for k in _REQUIRED if k not in npz.files]
                if missing:
                    raise SMPLXModelError(f"{path}: not an SMPL-X model file (no {', '.join(missing)})")
                arrays = {k: np.asarray(npz[k]) for k in _REQUIRED}
                for k in ("hands_meanl", "hands_meanr"):
                    arrays[k] = np.asarray(npz[k]) if k in npz.files else np.zeros(45)
        except SMPLXModelError:
            raise
        except Exception as err:  # not a zip, truncated, object arrays among the required ones
            raise SMPLXModelError(f"cannot read SMPL-X model file {str(path)!r}: {type(err).__name__}: {err}") from err
        return cls.from_arrays(arrays, device=device, path=str(path), sha256=sha256_file(path))

    @classmethod
    def from_arrays(cls, a: dict, device: str | torch.device = "cpu", path: str = "", sha256: str = "") -> "SMPLXModel":
        """From the model file's arrays (keys as in the ``.npz``), as ``smplx.SMPLX.__init__`` reads them."""
        f32 = dict(dtype=torch.float32, device=device)
        v_template = np.asarray(a["v_template"], np.float64)
        n_vert = v_template.shape[0]
        parents = [int(p) for p in np.asarray(a["kintree_table"])[0].astype(np.int64)]
        parents[0] = -1  # 2**32-1 in the file
        if len(parents) != N_JOINTS:
            raise SMPLXModelError(f"{path or 'model'}: {len(parents)} joints, SMPL-X has {N_JOINTS}")
        shapedirs = np.asarray(a["shapedirs"])
        if shapedirs.shape[-1] >= N_SHAPE_2020 + N_EXPR:
            n_shape, n_expr = N_SHAPE_2020, N_EXPR
        else:  # older SMPL-X files: 10 shape + 10 expression (smplx does the same split)
            n_shape = n_expr = shapedirs.shape[-1] // 2
        posedirs = np.asarray(a["posedirs"])
        posedirs = posedirs.reshape(-1, posedirs.shape[-1]).T  # (P, V*3) as smplx reshapes it
        pose_mean = np.zeros((N_JOINTS, 3))
        pose_mean[_HAND_START:_HAND_START + 15] = np.asarray(a["hands_meanl"]).reshape(15, 3)
        pose_mean[_HAND_START + 15:] = np.asarray(a["hands_meanr"]).reshape(15, 3)
        J_regressor = np.asarray(a["J_regressor"])
        if J_regressor.shape != (N_JOINTS, n_vert):
            raise SMPLXModelError(f"{path or 'model'}: J_regressor {J_regressor.shape}, expected ({N_JOINTS}, {n_vert})")
        return cls(
            v_template=torch.tensor(v_template, **f32),
            shapedirs=torch.tensor(shapedirs[:, :, :n_shape], **f32),
            exprdirs=torch.tensor(shapedirs[:, :, n_shape:n_shape + n_expr], **f32),
            posedirs=torch.tensor(posedirs, **f32),
            J_regressor=torch.tensor(J_regressor, **f32),
            weights=torch.tensor(np.asarray(a["weights"]), **f32),
            parents=parents,
            pose_mean=torch.tensor(pose_mean, **f32),
            path=path,
            sha256=sha256,
        )

    @property
    def n_vertices(self) -> int:
        return self.v_template.shape[0]

    def _shape_components(self, betas: np.ndarray, expressions: np.ndarray | None, n: int) -> torch.Tensor:
        """(n, n_betas + n_expr): the ground truth's betas (padded / cut to the model's count) and expressions."""
        dev = self.v_template.device
        nb, ne = self.shapedirs.shape[-1], self.exprdirs.shape[-1]
        b = np.zeros(nb, np.float32)
        src = np.asarray(betas, np.float32).reshape(-1)[:nb]
        b[:src.size] = src
        e = np.zeros((n, ne), np.float32)
        if expressions is not None:
            ex = np.asarray(expressions, np.float32).reshape(n, -1)[:, :ne]
            e[:, :ex.shape[1]] = ex
        return torch.cat([torch.from_numpy(b).to(dev).expand(n, nb), torch.from_numpy(e).to(dev)], dim=1)

    def _dirs(self) -> torch.Tensor:
        return torch.cat([self.shapedirs, self.exprdirs], dim=-1)

    @torch.no_grad()
    def body_joints(self, poses: np.ndarray, betas: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """The BC / L1div positions: (T, 55, 3) or (T, 165) axis-angle -> (T, 55, 3) float32 metres.

        As `evaluation_fn`: global orientation, translation, jaw, eyes and expressions zero
        (`body_fk_poses`), the mean hand pose added, ``betas`` the ground truth's (300,).
        Joints depend on the shape only through the rest skeleton, so no vertex is skinned.
        """
        p = body_fk_poses(np.asarray(poses, np.float32).reshape(len(poses), -1)).reshape(-1, N_JOINTS, 3)
        t = p.shape[0]
        comp = self._shape_components(betas, None, 1)
        v_shaped = self.v_template + torch.einsum("bl,mkl->bmk", comp, self._dirs())
        J = torch.einsum("bik,ji->bjk", v_shaped, self.J_regressor)  # (1, 55, 3)
        out = []
        for s in range(0, t, chunk):
            pose = torch.from_numpy(p[s:s + chunk]).to(self.v_template.device) + self.pose_mean
            b = pose.shape[0]
            rot = batch_rodrigues(pose.reshape(-1, 3)).view(b, -1, 3, 3)
            posed, _ = rigid_transform(rot, J.expand(b, -1, -1), self.parents)
            out.append(posed.cpu().numpy())
        return np.concatenate(out, 0) if out else np.zeros((0, N_JOINTS, 3), np.float32)

    @torch.no_grad()
    def face_vertex_chunks(self, jaw: np.ndarray, expressions: np.ndarray, betas: np.ndarray,
                           chunk: int = 64) -> Iterator[np.ndarray]:
        """The face MSE / LVD vertices, chunk by chunk: jaw (T, 3) axis-angle, expressions (T, 100),
        betas (300,) -> arrays (t_chunk, V*3) float32 metres, in frame order.

        Everything but the jaw and the expressions is zero (the mean hand pose still added, as
        ``flat_hand_mean=False`` does); ``betas`` the ground truth's. Chunks bound memory: a whole
        clip of full meshes is 125 kB per frame.
        """
        jaw = np.asarray(jaw, np.float32).reshape(-1, 3)
        t = jaw.shape[0]
        dev = self.v_template.device
        dirs = self._dirs()
        for s in range(0, t, chunk):
            n = min(chunk, t - s)
            pose = self.pose_mean.expand(n, -1, -1).clone()
            pose[:, 22] += torch.from_numpy(jaw[s:s + n]).to(dev)
            comp = self._shape_components(betas, np.asarray(expressions)[s:s + n], n)
            v_shaped = self.v_template + torch.einsum("bl,mkl->bmk", comp, dirs)
            J = torch.einsum("bik,ji->bjk", v_shaped, self.J_regressor)
            verts, _ = lbs(v_shaped, J, pose.reshape(n, -1), self.posedirs, self.parents, self.weights)
            yield verts.reshape(n, -1).cpu().numpy()

    def face_vertices(self, jaw: np.ndarray, expressions: np.ndarray, betas: np.ndarray) -> np.ndarray:
        """`face_vertex_chunks` joined: (T, V*3) float32 (mind the memory for long clips)."""
        parts = list(self.face_vertex_chunks(jaw, expressions, betas))
        return np.concatenate(parts, 0) if parts else np.zeros((0, 3 * self.n_vertices), np.float32)
