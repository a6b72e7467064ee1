"""Forward kinematics of the SMPL-X skeleton (SMPL-X's own rest joints for a body shape; the check
against an independent SMPL-X forward kinematics is in test_smplx_skeleton.py)."""

import numpy as np
import pytest
import torch

from emage_core import Motion
from emage_core.motion.kinematics import forward_kinematics, joint_positions, rest_skeleton
from emage_core.motion.skeleton import JOINT_NAMES, PARENTS, joint_index


def _descendants(j: int) -> set[int]:
    out = {j}
    for c, p in enumerate(PARENTS):  # parents come before children
        if p in out:
            out.add(c)
    return out


def _random(T: int, seed: int = 0, scale: float = 0.5):
    rng = np.random.default_rng(seed)
    return (rng.normal(0, scale, (T, 55, 3)).astype(np.float32), rng.normal(0, 1, (T, 3)).astype(np.float32))


def test_rest_skeleton_is_smplx_t_pose_in_the_model_frame():
    rest, parents = rest_skeleton()
    assert rest.shape == (55, 3) and rest.dtype == np.float32 and parents == PARENTS
    assert not rest.flags.writeable and rest_skeleton()[0] is rest  # cached, shared read-only
    # SMPL-X's model frame (was: the Anny body's, pelvis at the origin): the neutral pelvis 0.35 m below it
    np.testing.assert_allclose(rest[0], [0.0031, -0.3514, 0.0120], atol=1e-4)
    j = {n: rest[i] for i, n in enumerate(JOINT_NAMES)}
    assert j["head"][1] > j["neck"][1] > j["spine3"][1] > j["pelvis"][1] > j["left_knee"][1] > j["left_ankle"][1]
    # T-pose: arms out along X, left on +X (SMPL-X's slope down about 5 cm); toes in front of the ankles
    for side, sign in (("left", 1), ("right", -1)):
        arm = j[f"{side}_wrist"] - j[f"{side}_shoulder"]
        assert sign * arm[0] > 0.45 and abs(arm[1]) < 0.06 and abs(arm[2]) < 0.06
        assert j[f"{side}_foot"][2] > j[f"{side}_ankle"][2] + 0.05
    assert j["left_eye"][2] > j["head"][2] and j["left_eye"][0] > 0 > j["right_eye"][0]


def test_rest_skeleton_follows_the_shape():
    betas = np.zeros(300, np.float32)
    betas[0] = 2.0  # SMPL-X's first shape direction: mostly size
    tall = rest_skeleton(betas)[0]
    neutral = rest_skeleton()[0]
    height = lambda r: r[joint_index("head"), 1] - r[joint_index("left_ankle"), 1]  # noqa: E731
    assert abs(height(tall) - height(neutral)) > 0.05
    assert rest_skeleton(betas)[0] is tall and rest_skeleton(np.zeros(300))[0] is neutral


def test_rest_pose_gives_rest_joints():
    rest, parents = rest_skeleton()
    pos, rot = forward_kinematics(np.zeros((3, 55, 3), np.float32), np.zeros((3, 3), np.float32), rest, parents)
    np.testing.assert_allclose(pos, np.broadcast_to(rest, pos.shape), atol=1e-7)
    np.testing.assert_allclose(rot, np.broadcast_to(np.eye(3), rot.shape), atol=1e-7)
    assert pos.dtype == rot.dtype == np.float32


def test_translation_moves_every_joint():
    rest, parents = rest_skeleton()
    poses, trans = _random(4)
    moved = forward_kinematics(poses, trans, rest, parents)[0]
    still = forward_kinematics(poses, np.zeros_like(trans), rest, parents)[0]
    np.testing.assert_allclose(moved - still, np.broadcast_to(trans[:, None], moved.shape), atol=1e-5)


def test_left_shoulder_moves_only_its_descendants():
    rest, parents = rest_skeleton()
    poses = np.zeros((1, 55, 3), np.float32)
    poses[0, joint_index("left_shoulder")] = [0.3, -0.4, 0.9]
    pos = forward_kinematics(poses, np.zeros((1, 3), np.float32), rest, parents)[0][0]
    arm = _descendants(joint_index("left_shoulder"))
    assert len(arm) == 2 + 1 + 15  # elbow, wrist, 15 finger joints, and the shoulder itself
    for j in range(55):
        moved = np.linalg.norm(pos[j] - rest[j])
        if j in arm and j != joint_index("left_shoulder"):
            assert moved > 0.05, JOINT_NAMES[j]
        else:
            assert moved < 1e-6, JOINT_NAMES[j]


def test_elbow_bent_90_degrees_puts_the_wrist_in_front():
    rest, parents = rest_skeleton()
    e, w = joint_index("left_elbow"), joint_index("left_wrist")
    poses = np.zeros((1, 55, 3), np.float64)
    poses[0, e] = [0, -np.pi / 2, 0]  # -90 deg about Y turns the T-posed forearm (+X) to the front (+Z)
    pos = forward_kinematics(poses, np.zeros((1, 3)), rest, parents)[0][0]
    ox, oy, oz = rest[w] - rest[e]
    np.testing.assert_allclose(pos[e], rest[e], atol=1e-7)
    np.testing.assert_allclose(pos[w], rest[e] + np.array([-oz, oy, ox]), atol=1e-6)
    assert pos[w][2] - pos[e][2] > 0.2  # a forearm's length in front of the elbow


def test_root_rotation_turns_the_body_about_the_pelvis():
    rest, parents = rest_skeleton()
    poses = np.zeros((1, 55, 3))
    poses[0, 0] = [0, np.pi, 0]  # half a turn about Y: now facing -Z
    trans = np.array([[0.5, 1.0, -2.0]])
    pos = forward_kinematics(poses, trans, rest, parents)[0][0]
    expected = (rest - rest[0]) * np.array([-1, 1, -1]) + rest[0] + trans[0]
    np.testing.assert_allclose(pos, expected, atol=1e-6)


def test_world_rotations_chain_the_local_ones():
    from emage_core.motion.rotation import axis_angle_to_matrix

    rest, parents = rest_skeleton()
    poses, trans = _random(2, seed=3)
    _, rot = forward_kinematics(poses.astype(np.float64), trans.astype(np.float64), rest, parents)
    local = axis_angle_to_matrix(poses.astype(np.float64))
    for j in (0, 4, 20, 22, 54):
        expected = local[:, j] if parents[j] < 0 else rot[:, parents[j]] @ local[:, j]
        np.testing.assert_allclose(rot[:, j], expected, atol=1e-12)


def test_torch_matches_numpy_and_is_differentiable():
    rest, parents = rest_skeleton()
    poses, trans = _random(5, seed=1)
    pos_np, rot_np = forward_kinematics(poses.astype(np.float64), trans.astype(np.float64), rest, parents)
    p = torch.tensor(poses, dtype=torch.float64, requires_grad=True)
    pos_t, rot_t = forward_kinematics(p, torch.tensor(trans, dtype=torch.float64), rest, parents)
    np.testing.assert_allclose(pos_t.detach().numpy(), pos_np, atol=1e-10)
    np.testing.assert_allclose(rot_t.detach().numpy(), rot_np, atol=1e-10)
    pos_t[:, joint_index("right_wrist")].sum().backward()
    assert p.grad[:, joint_index("right_elbow")].abs().sum() > 0
    assert p.grad[:, joint_index("left_elbow")].abs().sum() == 0


def test_bad_shapes_are_refused():
    rest, parents = rest_skeleton()
    with pytest.raises(ValueError, match="trans"):
        forward_kinematics(np.zeros((2, 55, 3)), np.zeros((3, 3)), rest, parents)
    with pytest.raises(ValueError, match="rest_joints"):
        forward_kinematics(np.zeros((2, 55, 3)), np.zeros((2, 3)), rest[:20], parents)
    with pytest.raises(ValueError, match="parents"):
        forward_kinematics(np.zeros((2, 55, 3)), np.zeros((2, 3)), rest, parents[:54])


def test_joint_positions_of_a_motion():
    """SMPL-X's skeleton for the motion's betas, and SMPL-X's mean hand pose added to the fingers."""
    from emage_core.motion.smplx_skeleton import with_mean_hands

    m = Motion.zeros(7)
    m.trans[:, 1] = 1.0
    pos = joint_positions(m)
    assert pos.shape == (7, 55, 3) and pos.dtype == np.float32
    body = list(range(25))
    np.testing.assert_allclose(pos[:, body], np.broadcast_to(rest_skeleton()[0][body] + [0, 1, 0], (7, 25, 3)),
                               atol=1e-6)
    relaxed = forward_kinematics(with_mean_hands(m.poses), m.trans, *rest_skeleton())[0]
    np.testing.assert_allclose(pos, relaxed, atol=1e-6)
    assert np.abs(pos[:, 25:] - (rest_skeleton()[0][25:] + [0, 1, 0])).max() > 0.01  # the fingers curl
    m.betas[:2] = [1.5, -1.0]
    shaped = joint_positions(m)
    np.testing.assert_allclose(shaped[0, 0], rest_skeleton(m.betas)[0][0] + [0, 1, 0], atol=1e-6)
    assert np.abs(shaped - pos).max() > 0.02
