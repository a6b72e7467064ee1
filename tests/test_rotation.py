import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from emage_core.motion import rotation as R

finite = st.floats(-3.0, 3.0, allow_nan=False, width=64)
aa_arrays = arrays(np.float64, (8, 3), elements=finite)


def _rotate_equal(a, b, atol=1e-9):
    return np.allclose(R.axis_angle_to_matrix(a), R.axis_angle_to_matrix(b), atol=atol)


@settings(max_examples=200, deadline=None)
@given(aa_arrays)
def test_matrix_is_a_rotation(aa):
    M = R.axis_angle_to_matrix(aa)
    assert np.allclose(M @ np.swapaxes(M, -1, -2), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(M), 1.0, atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(aa_arrays)
def test_axis_angle_round_trip(aa):
    back = R.matrix_to_axis_angle(R.axis_angle_to_matrix(aa))
    assert np.all(np.linalg.norm(back, axis=-1) <= np.pi + 1e-9)  # canonical angle range
    assert _rotate_equal(aa, back)
    small = np.linalg.norm(aa, axis=-1) < np.pi - 1e-3  # unique there: must be the same vector
    assert np.allclose(back[small], aa[small], atol=1e-8)


@settings(max_examples=200, deadline=None)
@given(aa_arrays)
def test_rot6d_round_trip_and_layout(aa):
    M = R.axis_angle_to_matrix(aa)
    d6 = R.matrix_to_rot6d(M)
    assert np.allclose(d6[:, :3], M[:, 0, :]) and np.allclose(d6[:, 3:], M[:, 1, :])  # first two rows
    assert np.allclose(R.rot6d_to_matrix(d6), M, atol=1e-12)
    assert _rotate_equal(R.rot6d_to_axis_angle(R.axis_angle_to_rot6d(aa)), aa)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, (6,), elements=st.floats(-2, 2, allow_nan=False)))
def test_rot6d_decoding_orthonormalises_any_input(d6):
    first, second = d6[:3], d6[3:]
    if np.linalg.norm(first) < 1e-3 or np.linalg.norm(np.cross(first, second)) < 1e-3:
        return  # degenerate: no rotation is defined
    M = R.rot6d_to_matrix(d6)
    assert np.allclose(M @ M.T, np.eye(3), atol=1e-9) and np.isclose(np.linalg.det(M), 1.0)
    assert np.allclose(M[0], first / np.linalg.norm(first))


def test_identity_and_known_rotation():
    assert np.array_equal(R.axis_angle_to_rot6d(np.zeros(3)), [1, 0, 0, 0, 1, 0])
    M = R.axis_angle_to_matrix(np.array([0, 0, np.pi / 2]))  # 90 degrees about z: x -> y
    assert np.allclose(M @ [1, 0, 0], [0, 1, 0])
    assert np.allclose(R.matrix_to_axis_angle(R.axis_angle_to_matrix(np.array([np.pi, 0, 0]))), [np.pi, 0, 0])


def test_torch_and_numpy_agree_and_keep_dtype():
    aa = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    out_np = R.axis_angle_to_rot6d(aa)
    out_t = R.axis_angle_to_rot6d(torch.from_numpy(aa))
    assert out_np.dtype == np.float32 and isinstance(out_t, torch.Tensor)
    assert np.allclose(out_np, out_t.numpy(), atol=1e-7)


@settings(max_examples=100, deadline=None)
@given(aa_arrays, aa_arrays, st.floats(0, 1))
def test_slerp_endpoints_and_constant_speed(a, b, t):
    q0, q1 = R.axis_angle_to_quaternion(a), R.axis_angle_to_quaternion(b)
    assert _rotate_equal(R.quaternion_to_axis_angle(R.quaternion_slerp(q0, q1, np.zeros(8))), a, 1e-7)
    assert _rotate_equal(R.quaternion_to_axis_angle(R.quaternion_slerp(q0, q1, np.ones(8))), b, 1e-7)
    # the angle travelled is proportional to t
    qt = R.quaternion_slerp(q0, q1, np.full(8, t))
    total = 2 * np.arccos(np.clip(np.abs((q0 * q1).sum(-1)), 0, 1))
    part = 2 * np.arccos(np.clip(np.abs((q0 * qt).sum(-1)), 0, 1))
    assert np.allclose(part, t * total, atol=1e-5)


@settings(max_examples=50, deadline=None)
@given(aa_arrays, aa_arrays)
def test_quaternion_product_composes_rotations(a, b):
    qa, qb = R.axis_angle_to_quaternion(a), R.axis_angle_to_quaternion(b)
    composed = R.quaternion_to_axis_angle(R.quaternion_multiply(qa, qb))
    np.testing.assert_allclose(R.axis_angle_to_matrix(composed),
                               R.axis_angle_to_matrix(a) @ R.axis_angle_to_matrix(b), atol=1e-9)
    identity = R.quaternion_multiply(qa, R.quaternion_conjugate(qa))
    np.testing.assert_allclose(identity, np.broadcast_to([1.0, 0, 0, 0], identity.shape), atol=1e-12)
