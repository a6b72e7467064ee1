import numpy as np
import pytest

from emage_core import Motion
from emage_core.edit.locks import Lock, LockError, apply_locks, crossfade_weights, part_frame_masks, validate_locks
from emage_core.motion.skeleton import PARTS


def _motion(T, seed):
    rng = np.random.default_rng(seed)
    return Motion(poses=rng.normal(0, 0.5, (T, 55, 3)), expressions=rng.normal(size=(T, 100)),
                  trans=rng.normal(size=(T, 3)))


def test_parse_and_frames():
    lock = Lock.parse("upper:1.5-3")
    assert lock == Lock("upper", 1.5, 3.0) and lock.frames() == (45, 90) and str(lock) == "upper:1.5-3"
    for bad in ("upper", "upper:3", "upper:a-b", ":1-2"):
        with pytest.raises(LockError, match="PART:START-END"):
            Lock.parse(bad)


@pytest.mark.parametrize("lock, ref_frames, match", [
    (Lock("tail", 0, 1), 90, "unknown part 'tail'"),
    (Lock("upper", 2, 1), 90, "start must be before end"),
    (Lock("upper", 1, 1), 90, "start must be before end"),
    (Lock("upper", 1, 4), 150, "after the speech"),
    (Lock("upper", 0, 2.5), 60, "reference motion has only 2.00 s"),
    (Lock("upper", 0.01, 0.012), 90, "shorter than one frame"),
])
def test_invalid_locks(lock, ref_frames, match):
    with pytest.raises(LockError, match=match):
        validate_locks([lock], n_frames=90, reference=_motion(ref_frames, 0))


def test_locks_need_a_reference():
    with pytest.raises(LockError, match="need a reference"):
        validate_locks([Lock("face", 0, 1)], 90, None)


def test_masks_merge_spans_per_part():
    masks = part_frame_masks([Lock("hands", 0, 0.5), Lock("hands", 1, 1.2), Lock("global", 0, 3)], 90)
    assert set(masks) == {"hands", "global"}
    assert masks["hands"].sum() == 15 + 6 and masks["hands"][14] and not masks["hands"][15] and masks["hands"][30]
    assert masks["global"].all()


def test_weights_ease_out():
    w = crossfade_weights(np.arange(8), 6)
    assert w[0] == 1 and w[7] == 0 and np.all(np.diff(w) < 0)
    assert np.array_equal(crossfade_weights(np.array([0, 1, 2]), 0), [1, 0, 0])


@pytest.mark.parametrize("part", list(PARTS))
def test_apply_locks_copies_spans_and_only_blends_nearby(part):
    gen, ref = _motion(90, 1), _motion(90, 2)
    out = apply_locks(gen, ref, [Lock(part, 1.0, 2.0)], crossfade=0.2)  # frames 30..59, fade 6 frames
    joints = list(PARTS[part])
    span, far = slice(30, 60), np.r_[0:23, 67:90]
    if joints:
        assert np.allclose(out.poses[span][:, joints], ref.poses[span][:, joints], atol=1e-5)
        assert np.array_equal(out.poses[far][:, joints], gen.poses[far][:, joints])
        near = out.poses[24:30][:, joints]
        assert not np.allclose(near, gen.poses[24:30][:, joints]) and not np.allclose(near, ref.poses[24:30][:, joints])
    other = [j for j in range(55) if j not in joints]
    assert np.array_equal(out.poses[:, other], gen.poses[:, other])  # other parts untouched
    extra = {"face": "expressions", "global": "trans"}
    for name in ("expressions", "trans"):
        if extra.get(part) == name:
            assert np.array_equal(getattr(out, name)[span], getattr(ref, name)[span])
            assert np.array_equal(getattr(out, name)[far], getattr(gen, name)[far])
        else:
            assert np.array_equal(getattr(out, name), getattr(gen, name))
    assert out.n_frames == gen.n_frames


def test_crossfade_zero_is_a_hard_cut_and_blend_is_continuous():
    gen = Motion.zeros(60)
    ref = Motion.zeros(60); ref.poses[:, 18, 0] = 1.0  # left elbow bent 1 rad in the reference
    hard = apply_locks(gen, ref, [Lock("upper", 1.0, 1.5)], crossfade=0)
    assert hard.poses[29, 18, 0] == 0 and hard.poses[30, 18, 0] == 1 and hard.poses[45, 18, 0] == 0
    soft = apply_locks(gen, ref, [Lock("upper", 1.0, 1.5)], crossfade=0.2)
    angle = soft.poses[:, 18, 0]
    assert np.abs(np.diff(angle)).max() < 0.35  # no jump larger than a fraction of the 1 rad step
    assert np.all(np.diff(angle[20:31]) >= 0) and angle[23] == 0  # eases in, nothing beyond 6 frames
