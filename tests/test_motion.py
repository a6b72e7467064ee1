import numpy as np
import pytest

from emage_core import Motion, MotionError
from emage_core.motion.rotation import axis_angle_to_matrix
from emage_core.motion.skeleton import JOINT_NAMES, PARENTS, PARTS, joint_index


def _random_motion(T=20, fps=30, seed=0):
    rng = np.random.default_rng(seed)
    return Motion(poses=rng.normal(0, 0.4, (T, 55, 3)), expressions=rng.normal(size=(T, 100)),
                  trans=rng.normal(size=(T, 3)), betas=rng.normal(size=300), fps=fps)


def test_skeleton_tables():
    assert len(JOINT_NAMES) == len(PARENTS) == 55 and len(set(JOINT_NAMES)) == 55
    assert all(PARENTS[j] < j for j in range(1, 55)) and PARENTS[0] == -1  # topologically ordered
    assert joint_index("jaw") == 22 and joint_index("left_index1") == 25 and joint_index("right_thumb3") == 54
    assert PARENTS[joint_index("left_index1")] == joint_index("left_wrist")
    body = set(PARTS["face"]) | set(PARTS["upper"]) | set(PARTS["hands"]) | set(PARTS["lower"])
    assert body == set(range(55)) - {23, 24}  # every joint but the eyes belongs to exactly one part
    assert sum(len(v) for v in PARTS.values()) == len(body)


def test_part_values_layout():
    m = _random_motion()
    assert m.part_values("face").shape == (20, 3 + 100)
    assert m.part_values("upper").shape == (20, 13 * 3)
    assert m.part_values("hands").shape == (20, 90)
    assert m.part_values("lower").shape == (20, 27)
    assert np.array_equal(m.part_values("global"), m.trans)
    with pytest.raises(KeyError, match="unknown part"):
        m.part_values("tail")


def test_slicing_and_concat_round_trip():
    m = _random_motion(30)
    a, b = m[:12], m[12:]
    assert (a.n_frames, b.n_frames) == (12, 18)
    assert Motion.concat([a, b]).allclose(m, atol=0)
    a.poses[0] += 1  # slices are copies
    assert not np.allclose(a.poses[0], m.poses[0])
    with pytest.raises(MotionError, match="different fps"):
        Motion.concat([m, _random_motion(fps=60)])


@pytest.mark.parametrize("bad, match", [
    (dict(poses=np.zeros((5, 54, 3))), "poses has shape"),
    (dict(expressions=np.zeros((4, 100))), "expressions has shape"),
    (dict(trans=np.full((5, 3), np.nan)), "NaN"),
    (dict(betas=np.zeros(10)), "betas has shape"),
    (dict(fps=0), "fps"),
])
def test_invalid_motion_is_rejected(bad, match):
    args = dict(poses=np.zeros((5, 55, 3)), expressions=np.zeros((5, 100)), trans=np.zeros((5, 3)))
    args.update(bad)
    with pytest.raises(MotionError, match=match):
        Motion(**args)


def test_resample_60_to_30_keeps_even_frames():
    m = _random_motion(41, fps=60)
    r = m.resample(30)
    assert r.fps == 30 and r.n_frames == 21
    assert np.allclose(axis_angle_to_matrix(r.poses), axis_angle_to_matrix(m.poses[::2]), atol=1e-6)
    assert np.allclose(r.trans, m.trans[::2], atol=1e-6)


def test_resample_slerps_rotations_between_frames():
    # a joint turning at constant speed about z: halfway samples must be exactly halfway in angle
    T = 11
    angles = np.linspace(0, 2.0, T)
    poses = np.zeros((T, 55, 3)); poses[:, 16, 2] = angles
    m = Motion(poses=poses, expressions=np.zeros((T, 100)), trans=np.c_[angles, angles, angles], fps=20)
    r = m.resample(30)  # 1.5x the frames
    assert r.n_frames == 16
    t = np.arange(16) / 30
    assert np.allclose(r.poses[:, 16, 2], t * 20 * 0.2, atol=1e-5)  # 0.2 rad per source frame
    assert np.allclose(r.trans[:, 0], t * 20 * 0.2, atol=1e-5)
    assert np.allclose(r.poses[:, :16], 0) and np.allclose(r.poses[:, 17:], 0)


def test_rest_pose_is_identity_6d():
    d6 = Motion.zeros(3).rot6d()
    assert d6.shape == (3, 55, 6) and np.allclose(d6, [1, 0, 0, 0, 1, 0])
