"""BVH export, read back by an independent reader (bvhio) and compared with our kinematics (the check
against an independent SMPL-X forward kinematics, mannequin-x's, is in test_smplx_skeleton.py)."""
from pathlib import Path

import numpy as np
import pytest

from emage_core import Motion
from emage_core.body.anny import Body
from emage_core.motion.bvh import BVH_SCALE, matrix_to_euler_zxy, write_bvh
from emage_core.motion.kinematics import BODY_ASSET, forward_kinematics, joint_positions, rest_skeleton
from emage_core.motion.rotation import axis_angle_to_matrix
from emage_core.motion.skeleton import JOINT_NAMES, PARENTS
from emage_core.motion.smplx_skeleton import hand_mean, with_mean_hands

BEAT2 = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "beat2"


def _random_motion(T: int = 40, seed: int = 0, fps: float = 30) -> Motion:
    rng = np.random.default_rng(seed)
    m = Motion.zeros(T, fps=fps)
    m.poses[:] = rng.normal(0, 0.6, (T, 55, 3))
    m.trans[:] = rng.normal(0, 1, (T, 3))
    return m


def _bvhio_positions(path: Path, n_frames: int) -> np.ndarray:
    """(T, 55, 3) world joint positions in metres, as bvhio computes them from the file."""
    bvhio = pytest.importorskip("bvhio", reason="the BVH tests read files back with bvhio (pip install bvhio)")
    root = bvhio.readAsHierarchy(str(path))
    joints = {joint.Name: joint for joint, _, _ in root.layout()}
    assert sorted(joints) == sorted(JOINT_NAMES)
    out = np.empty((n_frames, 55, 3))
    for f in range(n_frames):
        root.loadPose(f)
        out[f] = [tuple(joints[name].PositionWorld) for name in JOINT_NAMES]
    return out / BVH_SCALE


def test_euler_zxy_round_trip_including_gimbal_lock():
    rng = np.random.default_rng(0)
    R = axis_angle_to_matrix(rng.normal(0, 1.5, (500, 3)))
    z, x, y = np.moveaxis(matrix_to_euler_zxy(R), -1, 0)
    Rz = axis_angle_to_matrix(np.stack([0 * z, 0 * z, z], -1))
    Rx = axis_angle_to_matrix(np.stack([x, 0 * x, 0 * x], -1))
    Ry = axis_angle_to_matrix(np.stack([0 * y, y, 0 * y], -1))
    np.testing.assert_allclose(Rz @ Rx @ Ry, R, atol=1e-9)
    for pitch in (np.pi / 2, -np.pi / 2):  # gimbal lock: z and y turn about the same axis
        locked = (axis_angle_to_matrix(np.array([0, 0, 0.7])) @ axis_angle_to_matrix(np.array([pitch, 0, 0]))
                  @ axis_angle_to_matrix(np.array([0, 0.4, 0])))
        z, x, y = matrix_to_euler_zxy(locked)
        assert x == pytest.approx(pitch) and y == 0
        rebuilt = (axis_angle_to_matrix(np.array([0, 0, z])) @ axis_angle_to_matrix(np.array([x, 0, 0]))
                   @ axis_angle_to_matrix(np.array([0, y, 0])))
        np.testing.assert_allclose(rebuilt, locked, atol=1e-6)


def test_file_layout(tmp_path):
    m = _random_motion(T=5, fps=25)
    text = write_bvh(m, tmp_path / "m.bvh").read_text()
    lines = text.splitlines()
    assert lines[0] == "HIERARCHY" and lines[1] == "ROOT pelvis"
    assert text.count("JOINT ") == 54 and text.count("End Site") == sum(1 for j in range(55) if j not in PARENTS)
    assert "CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation" in text
    assert text.count("CHANNELS 3 Zrotation Xrotation Yrotation") == 54
    i = lines.index("MOTION")
    assert lines[i + 1] == "Frames: 5" and float(lines[i + 2].split(":")[1]) == pytest.approx(1 / 25)
    frames = np.array([[float(v) for v in line.split()] for line in lines[i + 3:]])
    assert frames.shape == (5, 3 + 55 * 3)
    np.testing.assert_allclose(frames[:, :3], (rest_skeleton()[0][0] + m.trans) * 100, atol=1e-4)  # centimetres


def test_random_motion_matches_our_kinematics(tmp_path):
    m = _random_motion()
    path = write_bvh(m, tmp_path / "random.bvh")
    err = np.abs(_bvhio_positions(path, len(m)) - joint_positions(m)).max()
    assert err < 1e-3, f"{err * 1e3:.3f} mm"


def test_rest_pose_offsets(tmp_path):
    m = Motion.zeros(2)
    # zero rotations show SMPL-X's relaxed mean hand; the stored rotations as they are show the T-pose
    path = write_bvh(m, tmp_path / "rest.bvh", mean_hands=False)
    np.testing.assert_allclose(_bvhio_positions(path, 2), np.broadcast_to(rest_skeleton()[0], (2, 55, 3)), atol=1e-6)
    relaxed = _bvhio_positions(write_bvh(m, tmp_path / "relaxed.bvh"), 2)
    np.testing.assert_allclose(relaxed, joint_positions(m), atol=1e-6)
    assert np.abs(relaxed[:, 25:] - rest_skeleton()[0][25:]).max() > 0.01


def test_finger_channels_hold_the_mean_hand(tmp_path):
    m = Motion.zeros(1)
    lines = write_bvh(m, tmp_path / "m.bvh").read_text().splitlines()
    order = [JOINT_NAMES.index(line.split()[1]) for line in lines if line.strip().startswith(("ROOT", "JOINT"))]
    values = np.array([float(v) for v in lines[lines.index("MOTION") + 3].split()])[3:].reshape(55, 3)
    channels = np.empty((55, 3))
    channels[order] = values
    assert not channels[:25].any()
    expected = np.degrees(matrix_to_euler_zxy(axis_angle_to_matrix(hand_mean())))
    np.testing.assert_allclose(channels[25:], expected, atol=1e-5)
    assert np.abs(expected).max() > 10  # the relaxed hand is no small correction


def test_skeleton_of_the_motion_shape(tmp_path):
    m = _random_motion(T=4, seed=5)
    m.betas[:3] = [1.5, -2.0, 0.7]
    text = write_bvh(m, tmp_path / "shaped.bvh").read_text()
    root_offset = [float(v) for v in text.splitlines()[3].split()[1:]]
    np.testing.assert_allclose(root_offset, rest_skeleton(m.betas)[0][0] * BVH_SCALE, atol=1e-4)
    assert np.abs(_bvhio_positions(tmp_path / "shaped.bvh", len(m)) - joint_positions(m)).max() < 1e-3


def test_custom_skeleton(tmp_path):
    rest = rest_skeleton()[0] * 1.1 + np.array([0.0, 0.9, 0.0], np.float32)  # taller, pelvis above the origin
    m = _random_motion(T=6, seed=3)
    path = write_bvh(m, tmp_path / "custom.bvh", skeleton=(rest, PARENTS))
    expected = forward_kinematics(with_mean_hands(m.poses), m.trans, rest, PARENTS)[0]
    assert np.abs(_bvhio_positions(path, len(m)) - expected).max() < 1e-3
    # a Body works as the skeleton too: the free body sits on SMPL-X's skeleton, the default
    body_text = write_bvh(m, tmp_path / "body.bvh", skeleton=Body.load(BODY_ASSET)).read_text()
    assert body_text == write_bvh(m, tmp_path / "default.bvh").read_text()
    with pytest.raises(ValueError, match="55 joints"):
        write_bvh(m, tmp_path / "bad.bvh", skeleton=(rest[:22], PARENTS[:22]))


def test_beat2_clip_matches_our_kinematics(tmp_path):
    npz = BEAT2 / "2_scott_0_1_1.npz"
    if not npz.exists():
        pytest.skip(f"needs the BEAT2 sample {npz} (shared test data beside the repository); absent here")
    from emage_core.motion.beat2 import read_beat2

    m = read_beat2(npz)[:60]
    path = write_bvh(m, tmp_path / "beat2.bvh")
    err = np.abs(_bvhio_positions(path, len(m)) - joint_positions(m)).max()
    assert err < 1e-3, f"{err * 1e3:.3f} mm"
