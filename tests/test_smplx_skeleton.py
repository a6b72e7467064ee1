"""The SMPL-X skeleton (motion.smplx_skeleton) against mannequin-x's own forward kinematics, an
independent oracle (its own 54-joint layout, hand handling, root handling and FK code): our forward
kinematics (`kinematics.joint_positions`) and our BVH files (read back with bvhio) put every joint
within 1 cm of where it does, on the real BEAT2 capture and on random poses and shapes.

mannequin-x is a test requirement (requirements-test.txt), so its tests skip only where it is missing
(a failure under CI's strict switch); the BEAT2 sample comes from ../shared.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import REPO
from emage_core import Motion
from emage_core.assets import MANNEQUIN_LICENSE, SMPLX_SKELETON
from emage_core.motion import smplx_skeleton as S
from emage_core.motion.bvh import BVH_SCALE, write_bvh
from emage_core.motion.kinematics import forward_kinematics, joint_positions, rest_skeleton
from emage_core.motion.skeleton import JOINT_NAMES, PARENTS

CM = 0.01
# mannequin-x drops jaw and eyes and puts zero-length L_Hand / R_Hand at 22 / 23: its index of each
# SMPL-X joint it has
SHARED = [j for j in range(55) if j not in S.ESTIMATED_JOINTS]
MX_SHARED = [j if j < 22 else j - 1 for j in SHARED]
TIPS = [JOINT_NAMES.index(f"{s}_{f}3") for s in ("left", "right") for f in ("index", "middle", "ring", "pinky")]


@pytest.fixture(scope="module")
def clip():
    from conftest import BEAT2
    from emage_core.motion.beat2 import read_beat2

    path = BEAT2 / "2_scott_0_1_1.npz"
    if not path.is_file():
        pytest.skip(f"needs the BEAT2 sample {path} (the shared test data beside the repository); absent here")
    return read_beat2(path)


def _mannequin(betas):
    mannequin = pytest.importorskip("mannequin", reason="the SMPL-X oracle tests need mannequin-x, a test "
                                    "requirement (pip install -r requirements-test.txt)")
    return mannequin.Mannequin("wooden", shape=np.asarray(betas, np.float64).reshape(-1)[:10],
                               flat_hand_mean=False)


def _oracle(betas, poses, trans) -> np.ndarray:
    """(T, 52, 3) joint positions by mannequin-x's forward kinematics (SHARED order) for SMPL-X
    motion as BEAT2 stores it (its mean hand pose added by mannequin-x, flat_hand_mean=False)."""
    poses = np.asarray(poses, np.float64)
    J = _mannequin(betas).forward_skeleton(body_pose=poses[:, 1:22], head_pose=poses[:, 22:25],
                                           hand_pose=poses[:, 25:55], pelvis_rotation=poses[:, 0],
                                           global_translation=np.asarray(trans, np.float64))
    return J[:, MX_SHARED][..., :3, 3]


def _bvhio_positions(path, frames) -> np.ndarray:
    """(len(frames), 55, 3) world joint positions in metres, computed by bvhio from the file."""
    bvhio = pytest.importorskip("bvhio", reason="the BVH tests read files back with bvhio (pip install bvhio)")
    root = bvhio.readAsHierarchy(str(path))
    joints = {joint.Name: joint for joint, _, _ in root.layout()}
    out = np.empty((len(frames), 55, 3))
    for i, f in enumerate(frames):
        root.loadPose(int(f))
        out[i] = [tuple(joints[n].PositionWorld) for n in JOINT_NAMES]
    return out / BVH_SCALE


def _random_motion(T: int, seed: int, scale: float = 0.7) -> Motion:
    rng = np.random.default_rng(seed)
    m = Motion.zeros(T)
    m.poses[:] = rng.normal(0, scale, (T, 55, 3))
    m.trans[:] = rng.normal(0, 1, (T, 3))
    m.betas[:] = rng.uniform(-2, 2, 300)
    return m


# -- the data -------------------------------------------------------------------------------------
def test_asset_layout_and_neutral_values():
    rest = S.rest_joints()
    assert rest.shape == (55, 3)
    np.testing.assert_allclose(rest[0], [0.0031, -0.3514, 0.0120], atol=1e-4)  # SMPL-X's neutral pelvis
    assert S.rest_floor() == pytest.approx(-1.3018, abs=1e-4)
    assert S.floor_height() == 0.0
    # SMPL-X's neutral joints are not left/right symmetric (the elbows by 3.1 cm in height); kept as they are
    left = [j for j, n in enumerate(JOINT_NAMES) if n.startswith("left_")]
    right = [JOINT_NAMES.index("right_" + JOINT_NAMES[j][5:]) for j in left]
    assert 0.02 < np.abs(rest[left] * [-1, 1, 1] - rest[right]).max() < 0.035
    # the estimated jaw and eyes: in the head, eyes in front and apart, jaw below them
    head = rest[15]
    jaw, le, re = rest[22], rest[23], rest[24]
    assert le[0] > 0.02 and re[0] < -0.02 and min(le[2], re[2]) > head[2] + 0.05
    assert jaw[1] < le[1] and np.linalg.norm(jaw - head) < 0.05


def test_only_the_first_ten_betas_shape_the_skeleton():
    rng = np.random.default_rng(1)
    b = rng.normal(0, 1, 300)
    b2 = b.copy()
    b2[10:] = rng.normal(0, 1, 290)
    np.testing.assert_array_equal(S.rest_joints(b), S.rest_joints(b2))
    np.testing.assert_allclose(S.rest_joints(b[:4]), S.rest_joints(np.r_[b[:4], np.zeros(6)]))
    assert np.abs(S.rest_joints(b) - S.rest_joints()).max() > 0.02  # they do change it
    assert S.shape_key(b) == S.shape_key(b2) != S.shape_key(None)
    # kinematics' cached skeleton follows
    rest, parents = rest_skeleton(b)
    assert parents == PARENTS and rest.dtype == np.float32 and not rest.flags.writeable
    assert rest_skeleton(b2)[0] is rest
    np.testing.assert_allclose(rest, S.rest_joints(b), atol=1e-6)


def test_hand_mean_left_then_right_mirrored():
    m = S.hand_mean()
    assert m.shape == (30, 3)
    np.testing.assert_allclose(m[15:], m[:15] * [1, -1, -1], atol=1e-6)  # MANO's mirror of axis-angles
    np.testing.assert_allclose(m[0], [0.1117, 0.0429, -0.4164], atol=1e-4)  # MANO's hands_mean, left index1
    p = S.with_mean_hands(np.zeros((2, 165), np.float32))
    assert p.shape == (2, 165) and p.dtype == np.float32
    p = p.reshape(2, 55, 3)
    assert not p[:, :25].any()
    np.testing.assert_allclose(p[:, 25:], np.broadcast_to(m, (2, 30, 3)), atol=1e-7)
    with pytest.raises(ValueError, match="55, 3"):
        S.with_mean_hands(np.zeros((2, 54, 3)))


def test_clip_floor_depends_on_the_shape_and_translation_only():
    b = np.r_[2.0, -1.0, np.zeros(298)]
    moving = np.array([[0.1, 1.3, 0.0], [0.2, 1.25, 0.1]])
    assert S.clip_floor(moving, b) == pytest.approx(S.rest_floor(b) - S.rest_floor())
    assert S.clip_floor(np.zeros((5, 3)), b) == pytest.approx(S.rest_floor(b))  # the global part at rest
    assert S.clip_floor(np.c_[np.linspace(0, 1, 5), np.zeros(5), np.zeros(5)], None) == pytest.approx(S.rest_floor())


# -- against mannequin-x's forward kinematics ---------------------------------------------------
def test_rest_joints_match_mannequin_x_for_random_shapes():
    rng = np.random.default_rng(2)
    for _ in range(5):
        b = rng.uniform(-2.5, 2.5, 10)
        model = _mannequin(b)
        pose = {k: v for k, v in model.rest_pose().items() if k != "hand_pose"}
        ref = model.forward_skeleton(**pose, hand_pose=-S.hand_mean())[MX_SHARED, :3, 3]  # flat hands: the rest
        np.testing.assert_allclose(S.rest_joints(b)[SHARED], ref, atol=1e-5)


def test_joint_positions_match_mannequin_x_on_the_real_clip(clip):
    """Every frame of the BEAT2 take, SMPL-X rest for the file's betas, mean hand added."""
    ours = joint_positions(clip)
    err = np.linalg.norm(ours[:, SHARED] - _oracle(clip.betas, clip.poses, clip.trans), axis=-1)
    assert err.max() < 1 * CM, err.max()
    assert err.max() < 1e-4  # in fact the same up to float32 round-off


def test_joint_positions_match_mannequin_x_on_random_poses_and_shapes():
    for seed in range(3):
        m = _random_motion(48, seed)
        err = np.linalg.norm(joint_positions(m)[:, SHARED] - _oracle(m.betas, m.poses, m.trans), axis=-1)
        assert err.max() < 1e-4, err.max()


def test_bvh_read_back_matches_mannequin_x_on_the_real_clip(clip, tmp_path):
    frames = np.arange(0, clip.n_frames, 37)
    got = _bvhio_positions(write_bvh(clip, tmp_path / "clip.bvh"), frames)
    ref = _oracle(clip.betas, clip.poses[frames], clip.trans[frames])
    err = np.linalg.norm(got[:, SHARED] - ref, axis=-1)
    assert err.max() < 1 * CM and err.max() < 1e-4, err.max()  # 6-decimal centimetres: ~1e-6 m
    # the jaw and eyes (not in mannequin-x) agree with our own kinematics
    np.testing.assert_allclose(got[:, list(S.ESTIMATED_JOINTS)], joint_positions(clip)[frames][:, list(S.ESTIMATED_JOINTS)],
                               atol=1e-4)


def test_bvh_read_back_matches_mannequin_x_on_random_poses(tmp_path):
    m = _random_motion(20, seed=6, scale=1.0)
    m.poses[3, 16] = [np.pi / 2, 0, 0]  # a gimbal-lock case of ZXY (x = 90 degrees)
    got = _bvhio_positions(write_bvh(m, tmp_path / "random.bvh"), np.arange(20))
    err = np.linalg.norm(got[:, SHARED] - _oracle(m.betas, m.poses, m.trans), axis=-1)
    assert err.max() < 1e-4, err.max()


def test_zero_hand_rotations_give_the_relaxed_mean_hand():
    zero = Motion.zeros(1)
    ours = joint_positions(zero)[0]
    model = _mannequin(np.zeros(10))
    ref = model.forward_skeleton(**model.rest_pose())[MX_SHARED, :3, 3]  # zero hand_pose, flat_hand_mean=False
    np.testing.assert_allclose(ours[SHARED], ref, atol=1e-5)
    flat = forward_kinematics(zero.poses, zero.trans, rest_skeleton()[0])[0][0]
    moved = np.linalg.norm(ours[TIPS] - flat[TIPS], axis=-1)
    assert moved.min() > 1 * CM  # the relaxed hand curls the fingers ...
    assert (ours[TIPS, 1] < flat[TIPS, 1] - 0.5 * CM).all()  # ... downwards (palms face -Y in the T-pose)


def test_matches_smplx_lbs_joint_chain():
    """The root turns about itself and children follow SMPL-X's rigid chain (smplx.lbs.batch_rigid_transform)."""
    torch = pytest.importorskip("torch")
    lbs = pytest.importorskip("smplx.lbs", reason="needs the smplx package, a test requirement")
    rng = np.random.default_rng(4)
    poses, trans = rng.normal(0, 0.6, (8, 55, 3)), rng.normal(0, 1, (8, 3))
    rest = S.rest_joints(rng.normal(0, 1, 10))
    from emage_core.motion.rotation import axis_angle_to_matrix

    R = torch.from_numpy(axis_angle_to_matrix(poses))
    J = torch.from_numpy(np.broadcast_to(rest, (8, 55, 3)).copy())
    posed, _ = lbs.batch_rigid_transform(R, J, torch.tensor(PARENTS))
    np.testing.assert_allclose(forward_kinematics(poses, trans, rest)[0], posed.numpy() + trans[:, None], atol=1e-9)


def test_torch_shape_and_mean_hands_are_differentiable():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    poses, trans, betas = rng.normal(0, 0.5, (4, 55, 3)), rng.normal(0, 1, (4, 3)), rng.normal(0, 1, 300)
    p = torch.tensor(poses, requires_grad=True)
    b = torch.tensor(betas, requires_grad=True)
    out = forward_kinematics(S.with_mean_hands(p), torch.tensor(trans), S.rest_joints(b))[0]
    ref = forward_kinematics(S.with_mean_hands(poses), trans, S.rest_joints(betas))[0]
    np.testing.assert_allclose(out.detach().numpy(), ref, atol=1e-10)
    out.square().sum().backward()
    assert torch.isfinite(p.grad).all() and b.grad[:10].abs().sum() > 0 and b.grad[10:].abs().sum() == 0


# -- the floor ----------------------------------------------------------------------------------
def test_soles_meet_the_floor_on_the_real_clip(clip):
    """The lowest sole point against the floor from the shape alone (no per-clip shift): BEAT2's
    translations keep the neutral shape's soles at y = 0."""
    dev = S.lowest_foot_point(clip.poses, clip.trans, clip.betas) - S.clip_floor(clip.trans, clip.betas)
    assert np.mean(np.abs(dev) < 3 * CM) > 0.9, np.percentile(dev, [5, 50, 95])
    assert abs(np.median(dev)) < 1 * CM


def test_sole_points_agree_with_mannequin_x_mesh(clip):
    """Our lowest foot point vs the lowest vertex of mannequin-x's skinned mesh (fitted to SMPL-X's floor)."""
    model = _mannequin(clip.betas)
    f = np.arange(0, clip.n_frames, 48)
    P, t = clip.poses[f].astype(np.float64), clip.trans[f].astype(np.float64)
    V = model.vertices(dict(body_pose=P[:, 1:22], head_pose=P[:, 22:25], hand_pose=P[:, 25:55], pelvis_rotation=P[:, 0],
                            global_translation=t, shape=np.broadcast_to(clip.betas[:10], (len(f), 10))))
    assert np.abs(V[..., 1].min(1) - S.lowest_foot_point(P, t, clip.betas)).max() < 1 * CM
    at_rest = S.lowest_foot_point(np.zeros((1, 55, 3)), np.zeros((1, 3)), clip.betas)[0]
    assert at_rest == pytest.approx(S.rest_floor(clip.betas))


# -- licensing ----------------------------------------------------------------------------------
def test_asset_carries_its_licence_and_is_plain():
    assert SMPLX_SKELETON.stat().st_size < 100_000
    with np.load(SMPLX_SKELETON, allow_pickle=False) as z:  # would raise on pickled objects
        assert all(z[k].dtype.kind in "fiU" for k in z.files)
        notice = str(z["licence"][0])
        assert "Apache-2.0" in notice and "mannequin-x" in notice and "MODIFIED" in notice and "SMPL-X" in notice
        assert "Apache License" in str(z["licence_text"][0])
        assert "scripts/bake_smplx_skeleton.py" in str(z["provenance"][0])
    assert S.licence() == notice
    assert "Apache License" in MANNEQUIN_LICENSE.read_text()
    assert (REPO / "scripts" / "bake_smplx_skeleton.py").is_file()


def test_runtime_never_imports_mannequin_x():
    import subprocess
    import sys

    code = ("import sys; from emage_core import Motion; from emage_core.motion.kinematics import joint_positions; "
            "from emage_core.body import load_body; import numpy as np; joint_positions(Motion.zeros(2)); "
            "load_body('mannequin').vertices(np.zeros((1, 55, 3)), np.zeros((1, 3)), betas=np.ones(10)); "
            "assert 'mannequin' not in sys.modules, 'runtime imported mannequin-x'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
