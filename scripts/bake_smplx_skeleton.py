"""Bake what EMAGE Studio takes from mannequin-x into ``emage_core/assets/`` (run once, by a developer).

    pip install mannequin-x==0.3.0        # Python >= 3.11, numpy >= 2 (build time and tests only)
    python scripts/bake_smplx_skeleton.py [--only skeleton|mannequin] [--out-dir emage_core/assets]

Writes, and copies mannequin-x's Apache-2.0 licence beside them as ``LICENSE.mannequin-x.txt``:

``smplx_skeleton.npz`` (about 35 KB; read by `emage_core.motion.smplx_skeleton`, float32 / int32 /
unicode only, metres, SMPL-X model frame: Y up, facing +Z; SMPL-X's 55-joint order):

- ``rest_joints`` (55, 3), ``joint_dirs`` (55, 3, 10): rest joints = rest_joints + joint_dirs @ betas[:10].
  52 joints are mannequin-x's calibration (``joint_rest`` / ``joint_dirs``, which mannequin-x baked
  from the SMPL-X neutral model's joint regressor), reordered from its 54-joint layout (no jaw or
  eyes; zero-length L_Hand / R_Hand at the wrists) to SMPL-X's 55. Jaw (22) and eyes (23, 24) are not
  in mannequin-x: they are ESTIMATED from the Anny body's head (its jaw and eye bones relative to its
  head joint and head box, mapped into SMPL-X's head box, which mannequin-x calibrates), listed in
  ``estimated_joints``;
- ``hand_mean`` (30, 3): SMPL-X's mean hand pose (left 15, then right 15; SMPL-X finger order) and
  ``mean_pose`` (55, 3), the same at joints 25..54;
- ``sole_y_rest`` (K,), ``sole_y_dirs`` (K, 10): heights of SMPL-X's sole vertices at zero pose;
- ``sole_points`` (P, 3), ``sole_joints`` (P,): a footprint (the lowest point of each 1 cm cell of
  mannequin-x's wooden feet, which mannequin-x fits to the SMPL-X floor), relative to the joint that
  carries each point (ankle 7/8 or foot 10/11);
- ``joint_names``, ``parents``, ``licence``, ``licence_text`` (the full Apache-2.0 text), ``provenance``.

``mannequin_body.npz`` (about 0.5 MB; read by `emage_core.body.mannequin`): mannequin-x's neutral
wooden mannequin as mannequin-x skins it (its 4 strongest influences per vertex), with its joints
renamed to SMPL-X's (its L_Hand / R_Hand skinning joints sit at the wrists with no rotation of their
own, so they are the wrists here): ``rest_vertices`` (V, 3), ``faces`` (F, 3), ``skin_joints``,
``skin_weights`` (V, 4), ``rest_joints`` (55, 3), ``licence``, ``licence_text``, ``provenance``.

Runtime code never imports mannequin-x; ``tests/test_smplx_skeleton.py`` uses it as an independent
oracle (its own forward kinematics and skinning) when installed.
"""
from __future__ import annotations

import argparse
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emage_core.assets import ANNY_BODY, ASSETS, MANNEQUIN_BODY, MANNEQUIN_LICENSE, SMPLX_SKELETON  # noqa: E402
from emage_core.motion.skeleton import JOINT_NAMES, PARENTS  # noqa: E402

COMMAND = "python scripts/bake_smplx_skeleton.py"
_FINGERS = ("index", "middle", "pinky", "ring", "thumb")
# mannequin-x's body joint names in SMPL-X order: body-models' SMPL-X names with 7 renamed
# (Torso = spine1, Spine = spine2, Chest = spine3, L/R_Toe = foot, L/R_Thorax = collar)
_MX_BODY = ("Pelvis", "L_Hip", "R_Hip", "Torso", "L_Knee", "R_Knee", "Spine", "L_Ankle", "R_Ankle", "Chest",
            "L_Toe", "R_Toe", "Neck", "L_Thorax", "R_Thorax", "Head", "L_Shoulder", "R_Shoulder",
            "L_Elbow", "R_Elbow", "L_Wrist", "R_Wrist")
ESTIMATED = (22, 23, 24)  # jaw, left eye, right eye


def mannequin_to_smplx(mx_names: list[str], *, hands_to_wrists: bool = False) -> dict[int, int]:
    """mannequin-x joint index -> SMPL-X joint index for the 52 joints both have (checked by name);
    with ``hands_to_wrists`` also its L_Hand / R_Hand skinning joints -> the wrists (20, 21)."""
    out = {}
    for m, name in enumerate(mx_names):
        if name in _MX_BODY:
            out[m] = _MX_BODY.index(name)
        elif name in ("L_Hand", "R_Hand"):
            if hands_to_wrists:
                out[m] = 20 if name[0] == "L" else 21
        elif name[2:-1].lower() in _FINGERS:
            side = {"L": "left", "R": "right"}[name[0]]
            out[m] = JOINT_NAMES.index(f"{side}_{name[2:-1].lower()}{name[-1]}")
        else:
            raise ValueError(f"unknown mannequin-x joint {name!r}")
    shared = sorted(set(out.values()))
    if shared != [j for j in range(55) if j not in ESTIMATED]:
        raise ValueError("mannequin-x's joints do not map onto SMPL-X's 52 body and hand joints")
    return out


def _raw_names(model) -> list[str]:
    """mannequin-x's own joint names (its public ``joint_names`` renames 7 of them to body-models')."""
    return list(model._weights.joint_names)  # noqa: SLF001 (build time only)


def _anny_head(anny_path: Path):
    """Anny's head joint, jaw and eye joints (3, 3), and the box of its head region (T-pose, Y up)."""
    with np.load(anny_path, allow_pickle=False) as a:
        names = [str(s) for s in a["bone_names"]]
        V = a["rest_vertices"].astype(np.float64)
        W = np.zeros((len(V), len(names)))
        np.add.at(W, (a["skin_vertex"], a["skin_bone"]), a["skin_weight"])
        rj = a["rest_joints"].astype(np.float64)
    region = np.isin(W.argmax(1), [names.index(b) for b in ("Head", "HeadEnd", "Jaw", "LeftEye", "RightEye")])
    return rj[15], rj[list(ESTIMATED)], V[region].min(0), V[region].max(0)


def estimate_face_joints(head, box_min, box_max, anny_head, anny_face, anny_min, anny_max) -> np.ndarray:
    """Jaw and eye positions (3, 3) in a target head: x and z keep their relative place in the head
    region's box; y keeps its offset from the head joint, scaled by (box top - head joint)."""
    out = np.empty((3, 3))
    for k in (0, 2):
        u = (anny_face[:, k] - anny_min[k]) / (anny_max[k] - anny_min[k])
        out[:, k] = box_min[k] + u * (box_max[k] - box_min[k])
    out[:, 1] = head[1] + (anny_face[:, 1] - anny_head[1]) * (box_max[1] - head[1]) / (anny_max[1] - anny_head[1])
    return out


def _sole_points(model, rest_floor0: float) -> tuple[np.ndarray, np.ndarray]:
    """Footprint of the neutral wooden mannequin: the lowest vertex of each 1 cm cell under each foot
    within 3 cm of the floor, relative to its carrier SMPL-X joint (ankle or foot)."""
    names = list(model.joint_names)
    ident = model._identity  # noqa: SLF001 (build time only: the shaped rest mesh and its bind joints)
    V = ident["skin_vertices"].astype(np.float64)
    J = ident["skin_bind_positions"].astype(np.float64)
    idx, w = model._skin_joint_indices, model._skin_weights  # noqa: SLF001
    points, joints = [], []
    for side, ankle, toe in (("L", 7, 10), ("R", 8, 11)):
        ia, it = names.index(f"{side}_Ankle"), names.index(f"{side}_Foot")
        wa = np.where(idx == ia, w, 0).sum(1)
        wt = np.where(idx == it, w, 0).sum(1)
        foot = (wa + wt > 0.5) & (V[:, 1] < rest_floor0 + 0.03)
        sel = V[foot]
        cells = np.floor(sel[:, [0, 2]] / 0.01).astype(np.int64)
        _, inv = np.unique(cells, axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        keep = [np.flatnonzero(inv == c)[np.argmin(sel[inv == c, 1])] for c in range(inv.max() + 1)]
        for v in np.flatnonzero(foot)[keep]:
            carrier, mx = (toe, it) if wt[v] > wa[v] else (ankle, ia)
            points.append(V[v] - J[mx])
            joints.append(carrier)
    return np.array(points), np.array(joints)


def _licence_text(mannequin_module) -> str:
    dist = Path(mannequin_module.__file__).parent.parent / f"mannequin_x-{version('mannequin-x')}.dist-info"
    for name in ("licenses/LICENSE", "LICENSE", "licenses/LICENSE.txt"):
        if (dist / name).is_file():
            return (dist / name).read_text()
    raise FileNotFoundError(f"mannequin-x's LICENSE not found in {dist}")


def bake_skeleton(out: Path, anny_path: Path = ANNY_BODY) -> dict[str, np.ndarray]:
    import mannequin
    from mannequin import Mannequin

    mx = version("mannequin-x")
    with np.load(Path(mannequin.__file__).parent / "assets" / "smplx_calibration.npz", allow_pickle=False) as z:
        cal = {k: z[k].astype(np.float64) for k in z.files}
    model = Mannequin("wooden")  # zero shape
    mapping = mannequin_to_smplx(_raw_names(model))

    rest, dirs = np.zeros((55, 3)), np.zeros((55, 3, 10))
    for m, j in mapping.items():
        rest[j], dirs[j] = cal["joint_rest"][m], cal["joint_dirs"][m]

    a_head, a_face, a_min, a_max = _anny_head(anny_path)

    def face(beta):  # linear in betas, as the head joint and the head box are
        head = rest[15] + dirs[15] @ beta
        lo = cal["head_min_rest"] + cal["head_min_dirs"] @ beta
        hi = cal["head_max_rest"] + cal["head_max_dirs"] @ beta
        return estimate_face_joints(head, lo, hi, a_head, a_face, a_min, a_max)

    f0 = face(np.zeros(10))
    rest[list(ESTIMATED)] = f0
    for i in range(10):
        dirs[list(ESTIMATED), :, i] = face(np.eye(10)[i]) - f0

    mean_pose = np.zeros((55, 3))
    mean_pose[25:55] = cal["hand_mean"]
    sole_points, sole_joints = _sole_points(model, float(cal["sole_y_rest"].min()))
    licence = (f"Derived from mannequin-x {mx} (Apache-2.0, Andrea Boscolo Camiletto; the licence text is in "
               "licence_text and LICENSE.mannequin-x.txt): its smplx_calibration.npz (which mannequin-x computed from "
               "the SMPL-X neutral model; the hand mean is MANO's) and its wooden mannequin's feet. MODIFIED by "
               f"{COMMAND}: reordered to SMPL-X's 55 joints, jaw and eye joints estimated from the Anny body "
               "(Apache-2.0 / CC0), sole footprint sampled.")
    arrays = {
        "joint_names": np.array(JOINT_NAMES),
        "parents": np.array(PARENTS, np.int32),
        "rest_joints": rest.astype(np.float32),
        "joint_dirs": dirs.astype(np.float32),
        "estimated_joints": np.array(ESTIMATED, np.int32),
        "hand_mean": cal["hand_mean"].astype(np.float32),
        "mean_pose": mean_pose.astype(np.float32),
        "sole_y_rest": cal["sole_y_rest"].astype(np.float32),
        "sole_y_dirs": cal["sole_y_dirs"].astype(np.float32),
        "sole_points": sole_points.astype(np.float32),
        "sole_joints": sole_joints.astype(np.int32),
        "licence": np.array([licence]),
        "licence_text": np.array([_licence_text(mannequin)]),
        "provenance": np.array([f"{COMMAND}; mannequin-x {mx}; jaw/eyes from {anny_path.name}"]),
    }
    np.savez_compressed(out, **arrays)
    return arrays


def bake_mannequin(out: Path, skeleton: Path = SMPLX_SKELETON) -> dict[str, np.ndarray]:
    import mannequin
    from mannequin import Mannequin

    m = Mannequin("wooden")  # the neutral shape
    mapping = mannequin_to_smplx(_raw_names(m), hands_to_wrists=True)
    ident = m._identity  # noqa: SLF001 (build time only)
    idx = np.vectorize(mapping.get)(m._skin_joint_indices)  # noqa: SLF001
    with np.load(skeleton, allow_pickle=False) as z:
        rest = z["rest_joints"]
    # mannequin-x skins on its own bind joints: at zero shape they are the calibration's rest joints
    bind = ident["skin_bind_positions"].astype(np.float64)
    for mi, j in mapping.items():
        if not np.allclose(bind[mi], rest[j], atol=1e-5):
            raise ValueError(f"mannequin-x's bind joint {m.joint_names[mi]} is not SMPL-X's {JOINT_NAMES[j]}")
    mx = version("mannequin-x")
    arrays = {
        "rest_vertices": ident["skin_vertices"].astype(np.float32),
        "faces": np.asarray(m.faces, np.int32),
        "skin_joints": idx.astype(np.int16),
        "skin_weights": m._skin_weights.astype(np.float32),  # noqa: SLF001
        "rest_joints": rest.astype(np.float32),
        "licence": np.array([f"mannequin-x {mx} wooden mannequin (Apache-2.0, Andrea Boscolo Camiletto; the package "
                             "does not name the mesh's source), neutral shape, baked by " + COMMAND +
                             " with its joints renamed to SMPL-X's; see LICENSE.mannequin-x.txt"]),
        "licence_text": np.array([_licence_text(mannequin)]),
        "provenance": np.array([f"{COMMAND}; mannequin-x {mx}; Mannequin('wooden')"]),
    }
    np.savez_compressed(out, **arrays)
    return arrays


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=("skeleton", "mannequin"), default=None)
    ap.add_argument("--out-dir", type=Path, default=ASSETS)
    args = ap.parse_args(argv)
    import mannequin

    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "skeleton"):
        a = bake_skeleton(out / SMPLX_SKELETON.name)
        print(f"wrote {out / SMPLX_SKELETON.name}: {len(a['sole_points'])} sole points")
    if args.only in (None, "mannequin"):
        a = bake_mannequin(out / MANNEQUIN_BODY.name, out / SMPLX_SKELETON.name)
        print(f"wrote {out / MANNEQUIN_BODY.name}: {len(a['rest_vertices'])} vertices, {len(a['faces'])} triangles")
    (out / MANNEQUIN_LICENSE.name).write_text(_licence_text(mannequin))
    print(f"wrote {out / MANNEQUIN_LICENSE.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
