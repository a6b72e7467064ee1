"""Explicit style controls: identity when neutral, each control moves its own statistic the intended
way, length / locks / smoothness are kept, presets and parsing behave."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from emage_core import Motion
from emage_core.motion.kinematics import forward_kinematics, joint_positions, rest_skeleton
from emage_core.edit.locks import Lock, LockError
from emage_core.motion.skeleton import JAW, PARTS
from emage_core.edit.style import (
    AMPLITUDE_JOINTS,
    CONTROL_RANGES,
    EMOTIONS,
    NEUTRAL,
    PRESETS,
    StyleControls,
    StyleError,
    apply_style,
    describe,
    parse_style,
    phrase_boundaries,
    preset,
    rest_posture,
    tempo_warp,
)

BEAT2 = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "beat2"
REAL_CLIP = BEAT2 / "2_scott_0_1_1.npz"
WRISTS = [20, 21]


def _synthetic(T: int = 300, seed: int = 0) -> Motion:
    """Arms down, gesture bursts (2 s period, about half active) with small mocap-like jitter, head nods
    over a slow drift, a talking jaw and smooth random expressions."""
    rng = np.random.default_rng(seed)
    t = np.arange(T) / 30
    env = np.clip(2 * np.sin(2 * np.pi * t / 2.0), 0, 1)  # gesture phrases and holds
    g = env * np.sin(2 * np.pi * 1.5 * t)
    poses = np.zeros((T, 55, 3))
    poses[:, 16] = [0, 0, -1.2]  # left arm down
    poses[:, 17] = [0, 0, 1.2]
    poses[:, 16] += g[:, None] * [0.5, 0.4, 0.3]
    poses[:, 17] += g[:, None] * [0.4, -0.5, -0.3]
    poses[:, 18] += np.abs(g)[:, None] * [0, -0.8, 0]
    poses[:, 19] += np.abs(g)[:, None] * [0, 0.8, 0]
    poses[:, [3, 6, 9], 1] += 0.05 * g[:, None]
    poses[:, 15, 0] = 0.08 * np.sin(2 * np.pi * 2.5 * t) + 0.15 * np.sin(2 * np.pi * 0.2 * t)
    poses[:, 12, 1] = 0.05 * np.sin(2 * np.pi * 1.7 * t)
    poses[:, JAW, 0] = 0.06 * (1 + np.sin(2 * np.pi * 4 * t)) / 2
    poses[:, 25:55] = 0.2 * np.sin(2 * np.pi * 0.7 * t)[:, None, None]
    poses[:, :25] += rng.normal(0, 0.003, (T, 25, 3))  # mocap jitter: gives jerk to smooth away
    expr = np.cumsum(rng.normal(0, 0.05, (T, 100)), axis=0)
    return Motion(poses=poses, expressions=expr, trans=np.zeros((T, 3)))


@pytest.fixture(scope="module")
def real() -> Motion:
    if not REAL_CLIP.exists():
        pytest.skip(f"needs the real BEAT2 clip {REAL_CLIP} (shared test data beside the repository); absent here")
    from emage_core.motion.beat2 import read_beat2
    return read_beat2(REAL_CLIP)


@pytest.fixture(scope="module", params=["synthetic", "real"])
def clip(request) -> Motion:
    return _synthetic() if request.param == "synthetic" else request.getfixturevalue("real")


# -- measurements ---------------------------------------------------------------------------------------
def _max_step(m: Motion) -> float:
    """Largest frame-to-frame displacement of any joint, metres."""
    return float(np.linalg.norm(np.diff(joint_positions(m), axis=0), axis=-1).max())


def _wrist_speed(m: Motion) -> np.ndarray:
    pos = joint_positions(m).astype(np.float64)
    return np.linalg.norm(np.diff(pos[:, WRISTS] - pos[:, :1], axis=0), axis=-1)


def _world_rotations(m: Motion) -> np.ndarray:
    rest, parents = rest_skeleton()
    return forward_kinematics(m.poses.astype(np.float64), m.trans, rest, parents)[1]


def _head_pitch_down(m: Motion) -> np.ndarray:
    """(T,) degrees the head's forward axis points below horizontal."""
    forward = _world_rotations(m)[:, 15] @ np.array([0.0, 0.0, 1.0])
    return np.degrees(np.arcsin(-forward[:, 1]))


def _head_angular_speed(m: Motion) -> float:
    """Mean frame-to-frame rotation angle of the head in the world, radians (what a viewer sees)."""
    r = Rotation.from_matrix(_world_rotations(m)[:, 15])
    return float((r[1:] * r[:-1].inv()).magnitude().mean())


def _jerk(m: Motion, joints=tuple(range(25))) -> float:
    pos = joint_positions(m).astype(np.float64)[:, list(joints)]
    return float(np.abs(np.diff(pos, n=3, axis=0)).mean())


# -- identity, length, validity ----------------------------------------------------------------------
def test_neutral_is_identity(clip):
    for controls in (StyleControls(), preset("neutral"), preset("anger", 0.0), parse_style([])):
        out = apply_style(clip, controls)
        assert out is not clip
        for name in ("poses", "expressions", "trans", "betas"):
            assert np.array_equal(getattr(out, name), getattr(clip, name)), name
        assert out.meta["style"]["kind"] == "explicit edit" and out.meta["style"]["changed"] == {}


@pytest.mark.parametrize("name", EMOTIONS)
def test_presets_keep_length_and_validity(clip, name):
    out = apply_style(clip, preset(name))
    assert out.n_frames == clip.n_frames and out.fps == clip.fps
    assert np.array_equal(out.trans, clip.trans) and np.array_equal(out.betas, clip.betas)
    lower = list(PARTS["lower"])
    assert np.array_equal(out.poses[:, lower], clip.poses[:, lower])  # legs are never edited
    style = out.meta["style"]
    assert style["preset"] == name and style["intensity"] == 1.0 and style["edited"] is False
    json.dumps(out.meta["style"])


# -- each control moves its statistic ------------------------------------------------------------------
def _rest_clip(m: Motion) -> Motion:
    """The clip with the amplitude joints held at the rest posture amplitude scales about."""
    rest = m.slice()
    rest.poses[:, list(AMPLITUDE_JOINTS)] = rest_posture(m)[list(AMPLITUDE_JOINTS)]
    return rest


def _wrist_distance_from_rest(m: Motion, rest: Motion) -> float:
    return float(np.linalg.norm(joint_positions(m)[:, WRISTS] - joint_positions(rest)[:, WRISTS], axis=-1).mean())


def test_amplitude_scales_wrist_excursion_from_rest(clip):
    rest = _rest_clip(clip)
    base = _wrist_distance_from_rest(clip, rest)
    up = _wrist_distance_from_rest(apply_style(clip, StyleControls(amplitude=1.3)), rest) / base
    down = _wrist_distance_from_rest(apply_style(clip, StyleControls(amplitude=0.7)), rest) / base
    assert 1.15 < up < 1.45 and 0.55 < down < 0.85, (up, down)
    zero = apply_style(clip, StyleControls(amplitude=0.0))
    assert _wrist_distance_from_rest(zero, rest) < 1e-4  # amplitude 0 = the rest posture


def test_tempo_redistributes_speed_and_keeps_anchors(clip):
    v0 = _wrist_speed(clip)
    for tempo, faster in ((1.3, True), (0.75, False)):
        tau = tempo_warp(clip, tempo)
        assert tau[0] == 0 and tau[-1] == clip.n_frames - 1 and np.all(np.diff(tau) > 0)
        bounds = phrase_boundaries(clip)
        assert np.array_equal(tau[bounds], bounds)  # phrases are pinned
        out = apply_style(clip, StyleControls(tempo=tempo))
        assert out.n_frames == clip.n_frames
        np.testing.assert_allclose(out.poses[bounds], clip.poses[bounds], atol=1e-6)  # incl. endpoints
        assert np.array_equal(out.expressions, clip.expressions)  # the face keeps its lip sync
        v1 = _wrist_speed(out)
        peak = np.percentile(v1, 95) / np.percentile(v0, 95)
        assert (peak > 1.05) if faster else (peak < 0.95), (tempo, peak)
        assert abs(v1.mean() / v0.mean() - 1) < 0.05  # same path, same duration: same mean speed
        assert np.max(np.diff(tau)) <= max(tempo, 4.0) + 1e-9


def test_fluidity_reduces_jerk(clip):
    """Fluidity smooths the gesturing arms and hands (the legs and the pelvis it leaves alone, and the
    SMPL-X skeleton's long pelvis-to-spine offset carries their jerk into the trunk's positions)."""
    arms = [16, 17, 18, 19, 20, 21, *range(25, 55)]
    base = _jerk(clip, arms)
    j1 = _jerk(apply_style(clip, StyleControls(fluidity=0.5)), arms)
    j2 = _jerk(apply_style(clip, StyleControls(fluidity=1.5)), arms)
    assert j2 < j1 < 0.9 * base, (base, j1, j2)
    assert _jerk(apply_style(clip, StyleControls(fluidity=1.5))) < _jerk(clip)  # and all 25 body joints too


def test_head_activity_scales_head_angular_speed(clip):
    base = _head_angular_speed(clip)
    more = _head_angular_speed(apply_style(clip, StyleControls(head_activity=1.5))) / base
    less = _head_angular_speed(apply_style(clip, StyleControls(head_activity=0.5))) / base
    assert 1.25 < more < 1.6 and 0.45 < less < 0.8, (more, less)


def test_face_intensity_scales_jaw_and_expressions(clip):
    out = apply_style(clip, StyleControls(face_intensity=1.4))
    np.testing.assert_allclose(out.expressions, clip.expressions * 1.4, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.poses[:, JAW], clip.poses[:, JAW] * 1.4, atol=1e-6)
    body = [j for j in range(55) if j != JAW]
    assert np.array_equal(out.poses[:, body], clip.poses[:, body])
    opened = apply_style(clip, StyleControls(jaw_open=0.1))
    assert np.mean(opened.poses[:, JAW, 0] - clip.poses[:, JAW, 0]) == pytest.approx(0.1, abs=0.01)


def _only_changed(out: Motion, m: Motion, joints):
    others = [j for j in range(55) if j not in joints]
    assert np.array_equal(out.poses[:, others], m.poses[:, others])
    assert np.array_equal(out.expressions, m.expressions)


def test_posture_controls_move_their_joints(clip):
    pos0, rot0 = joint_positions(clip).astype(np.float64), _world_rotations(clip)

    flexed = apply_style(clip, StyleControls(spine_flexion=0.2))
    _only_changed(flexed, clip, [3, 6, 9])
    pos = joint_positions(flexed).astype(np.float64)
    lean = lambda p: np.degrees(np.arctan2(p[:, 12, 2] - p[:, 0, 2], p[:, 12, 1] - p[:, 0, 1]))  # noqa: E731
    assert 5 < np.mean(lean(pos) - lean(pos0)) < 12  # neck moves forward over the pelvis

    pitched = apply_style(clip, StyleControls(head_pitch=0.2))
    _only_changed(pitched, clip, [12, 15])
    assert np.mean(_head_pitch_down(pitched) - _head_pitch_down(clip)) == pytest.approx(np.degrees(0.2), abs=1.5)
    up = apply_style(clip, StyleControls(head_pitch=-0.2))
    assert np.mean(_head_pitch_down(up) - _head_pitch_down(clip)) < -10

    turned = apply_style(clip, StyleControls(head_turn=0.2))
    fwd0, fwd = (r[:, 15] @ np.array([0.0, 0, 1]) for r in (rot0, _world_rotations(turned)))
    yaw = np.degrees(np.arctan2(fwd[:, 0], fwd[:, 2]) - np.arctan2(fwd0[:, 0], fwd0[:, 2]))
    assert 8 < np.mean(yaw) < 14  # toward the speaker's left (+X)

    raised = apply_style(clip, StyleControls(shoulder_raise=0.15))
    _only_changed(raised, clip, [13, 14, 16, 17])
    pos, rot = joint_positions(raised).astype(np.float64), _world_rotations(raised)
    assert np.all(pos[:, [16, 17], 1] - pos0[:, [16, 17], 1] > 0.005)  # both shoulders up
    np.testing.assert_allclose(rot[:, [16, 17]], rot0[:, [16, 17]], atol=1e-5)  # arms keep their orientation


def test_sadness_lowers_head_and_slows_wrists(clip):
    out = apply_style(clip, preset("sadness"))
    assert np.mean(_head_pitch_down(out) - _head_pitch_down(clip)) > 8
    assert _wrist_speed(out).mean() < 0.8 * _wrist_speed(clip).mean()
    happy = apply_style(clip, preset("happiness"))
    assert np.mean(_head_pitch_down(happy) - _head_pitch_down(clip)) < -3
    assert _wrist_speed(happy).mean() > 1.1 * _wrist_speed(clip).mean()


# -- smoothness and locks ----------------------------------------------------------------------------------
MODERATE = [StyleControls(amplitude=1.3), StyleControls(amplitude=0.5), StyleControls(tempo=1.3),
            StyleControls(tempo=0.7), StyleControls(fluidity=1.0), StyleControls(head_activity=1.5),
            StyleControls(spine_flexion=0.3, head_pitch=-0.3, head_turn=0.3, shoulder_raise=0.2),
            StyleControls(face_intensity=1.5, jaw_open=0.1)] + [preset(n) for n in EMOTIONS]


@pytest.mark.parametrize("controls", MODERATE, ids=lambda c: c.preset or ",".join(describe(c)["changed"]))
def test_bounded_frame_to_frame_change(clip, controls):
    base = _max_step(clip)
    assert _max_step(apply_style(clip, controls)) < 1.5 * base + 1e-3


ALL_CONTROLS = StyleControls(amplitude=1.3, tempo=1.2, spine_flexion=0.2, head_pitch=0.2, head_turn=0.2,
                             shoulder_raise=0.15, fluidity=0.5, head_activity=1.4, face_intensity=1.3, jaw_open=0.1)


@pytest.mark.parametrize("part", list(PARTS))
def test_locked_spans_are_bit_identical(clip, part):
    locks = [Lock(part, 1.0, 2.5), Lock(part, 5.0, 6.0)]
    out = apply_style(clip, ALL_CONTROLS, locks=locks)
    free = apply_style(clip, ALL_CONTROLS)
    joints = list(PARTS[part])
    ramp = 9  # 0.3 s at 30 fps
    inside = np.r_[30:75, 150:180]
    far = np.setdiff1d(np.arange(clip.n_frames), np.r_[30 - ramp:75 + ramp + 1, 150 - ramp:180 + ramp + 1])
    assert np.array_equal(out.poses[inside][:, joints], clip.poses[inside][:, joints])
    if part == "face":
        assert np.array_equal(out.expressions[inside], clip.expressions[inside])
    if part == "global":
        assert np.array_equal(out.trans, clip.trans)
    assert np.array_equal(out.poses[far], free.poses[far])  # the edit is untouched away from spans
    assert np.array_equal(out.expressions[far], free.expressions[far])
    # no pop at the hand-over: steps stay within what the edit itself produces
    assert _max_step(out) < max(1.5 * _max_step(clip), 1.05 * _max_step(free)) + 1e-3
    assert out.meta["style"]["locks"] == [str(lock) for lock in locks]


def test_lock_ramp_is_smooth_at_the_boundary():
    m = _synthetic()
    controls = StyleControls(spine_flexion=0.4, head_pitch=0.4)  # a big constant offset to fade out
    out = apply_style(m, controls, locks=[Lock("upper", 4.0, 6.0)])
    step = np.linalg.norm(np.diff(joint_positions(out), axis=0), axis=-1).max(axis=1)
    base = np.linalg.norm(np.diff(joint_positions(m), axis=0), axis=-1).max(axis=1)
    window = slice(120 - 12, 180 + 12)
    assert step[window].max() < 1.5 * base.max() + 1e-3


def test_invalid_locks_are_refused():
    with pytest.raises(LockError, match="unknown part"):
        apply_style(_synthetic(60), ALL_CONTROLS, locks=[Lock("tail", 0, 1)])
    with pytest.raises(LockError, match="after the speech"):
        apply_style(_synthetic(60), ALL_CONTROLS, locks=[Lock("upper", 1, 3)])


# -- presets, parsing, description ---------------------------------------------------------------------------
def test_presets_cover_beat_labels_and_interpolate():
    assert set(PRESETS) == {"neutral", "happiness", "anger", "sadness", "contempt", "surprise", "fear", "disgust"}
    for name in EMOTIONS:
        assert preset(name, 0.0) == NEUTRAL
        assert preset(name, 1.0) == PRESETS[name]
        half, full = preset(name, 0.5).values(), PRESETS[name].values()
        for key, value in NEUTRAL.values().items():
            assert half[key] == pytest.approx((value + full[key]) / 2)
    assert preset("Sadness", 1.5).head_pitch == pytest.approx(1.5 * PRESETS["sadness"].head_pitch)
    with pytest.raises(StyleError, match="outside"):
        preset("sadness", 3.0)  # amplitude would go negative
    with pytest.raises(StyleError, match="unknown emotion preset 'joy'"):
        preset("joy")
    with pytest.raises(StyleError, match=">= 0"):
        preset("anger", -1)
    edited = replace(PRESETS["fear"], tempo=1.0)
    assert edited.tempo == 1.0 and PRESETS["fear"].tempo != 1.0  # presets are frozen, edits are copies
    assert describe(replace(preset("fear"), tempo=1.0))["edited"] is True


def test_sadness_and_anger_directions():
    sad, angry = PRESETS["sadness"], PRESETS["anger"]
    assert sad.amplitude < 1 < angry.amplitude and sad.tempo < 1 < angry.tempo
    assert sad.head_pitch > 0 and sad.spine_flexion > 0 and angry.fluidity == 0


def test_parse_style():
    c = parse_style(["amplitude=1.2", "tempo = 0.9", "head-pitch=0.1,fluidity=0.5"])
    assert (c.amplitude, c.tempo, c.head_pitch, c.fluidity) == (1.2, 0.9, 0.1, 0.5) and c.preset is None
    c = parse_style(["preset=sadness", "intensity=0.5", "tempo=1.0"])
    assert c.preset == "sadness" and c.intensity == 0.5 and c.tempo == 1.0
    assert c.amplitude == pytest.approx(preset("sadness", 0.5).amplitude)
    assert parse_style("preset=anger") == PRESETS["anger"]
    for bad, match in [(["loudness=2"], "unknown style control 'loudness'"), (["amplitude=big"], "not a number"),
                       (["amplitude"], "expected KEY=VALUE"), (["tempo=1", "tempo=2"], "given twice"),
                       (["intensity=0.5"], "needs a preset"), (["amplitude=nan"], "finite"),
                       (["tempo=0"], "outside"), (["fluidity=-1"], "outside"), (["preset=calm"], "unknown emotion")]:
        with pytest.raises(StyleError, match=match):
            parse_style(bad)
    assert issubclass(StyleError, ValueError)


def test_describe_is_json_and_complete():
    d = describe(preset("fear", 0.5))
    assert json.loads(json.dumps(d)) == d
    assert d["kind"] == "explicit edit" and d["preset"] == "fear" and d["intensity"] == 0.5
    assert set(d["controls"]) == set(CONTROL_RANGES) and d["edited"] is False
    assert set(d["changed"]) == {k for k, v in PRESETS["fear"].values().items() if v != NEUTRAL.values()[k]}
    with pytest.raises(StyleError, match="must be a number"):
        StyleControls(amplitude="1")


def test_meta_keeps_earlier_style_and_provenance():
    m = _synthetic(90)
    m.meta["model"] = "emage"
    once = apply_style(m, preset("anger"))
    twice = apply_style(once, StyleControls(tempo=1.1))
    assert twice.meta["model"] == "emage" and twice.meta["style"]["previous"]["preset"] == "anger"
    assert "style" not in m.meta  # the input is never modified


def test_short_clips():
    for T in (1, 2, 5):
        out = apply_style(_synthetic(T), ALL_CONTROLS)
        assert out.n_frames == T and np.isfinite(out.poses).all()
