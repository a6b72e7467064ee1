"""Training data: finding pairs, BEAT2 names and emotions, windows, mirroring, foot contact."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from emage_core.train import data
from emage_core.motion.beat2 import write_beat2
from emage_core.motion.kinematics import joint_positions
from emage_core.motion.clip import Motion
from emage_core.motion.skeleton import JOINT_NAMES, joint_index

SR = 16000


def _motion(T: int, seed: int = 0) -> Motion:
    """Smooth random motion: slow sinusoids on every joint, a drifting root."""
    rng = np.random.default_rng(seed)
    t = np.arange(T)[:, None, None] / 30
    poses = 0.3 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0, (1, 55, 3)) * t + rng.uniform(0, 6, (1, 55, 3)))
    trans = np.stack([0.1 * np.sin(t[:, 0, 0]), 1.0 + 0.0 * t[:, 0, 0], 0.05 * t[:, 0, 0]], axis=1)
    expr = 0.3 * np.sin(2 * np.pi * rng.uniform(0.5, 2, (1, 100)) * t[:, 0])
    return Motion(poses=poses, expressions=expr, trans=trans)


def _write_pair(folder, stem, T, audio_dir=None, seed=0, audio_frames=None):
    folder.mkdir(parents=True, exist_ok=True)
    write_beat2(_motion(T, seed), folder / f"{stem}.npz")
    n = -(-(audio_frames or T) * SR // 30)  # ceil: the frames are fully covered
    audio = (np.arange(n) / n).astype(np.float32)  # a ramp: each sample says where it is
    (audio_dir or folder).mkdir(parents=True, exist_ok=True)
    sf.write((audio_dir or folder) / f"{stem}.wav", audio, SR, subtype="FLOAT")


# --- names and emotions ------------------------------------------------------------------


def test_parse_beat2_names():
    n = data.parse_beat2_name("2_scott_0_1_1")
    assert (n.speaker_id, n.speaker, n.kind, n.seq, n.emotion) == (2, "scott", 0, 1, "neutral")
    assert data.parse_beat2_name("/data/smplxflame_30/10_kieks_1_103_103.npz").emotion == "fear"
    assert data.parse_beat2_name("my_take.npz") is None
    assert data.parse_beat2_name("2_scott_0_1") is None


@pytest.mark.parametrize("seq, emotion", [
    (0, "neutral"), (64, "neutral"), (65, "happiness"), (72, "happiness"), (73, "anger"), (80, "anger"),
    (81, "sadness"), (86, "sadness"), (87, "contempt"), (94, "contempt"), (95, "surprise"), (102, "surprise"),
    (103, "fear"), (110, "fear"), (111, "disgust"), (118, "disgust"),
])
def test_emotion_table(seq, emotion):
    assert data.emotion_of(seq) == emotion


def test_emotion_out_of_table():
    with pytest.raises(ValueError):
        data.emotion_of(119)


# --- files and windows -------------------------------------------------------------------


def test_find_pairs_flat_and_beat2_layouts(tmp_path):
    flat = tmp_path / "flat"
    _write_pair(flat, "a", 70)
    _write_pair(flat, "b", 70)
    write_beat2(_motion(70), flat / "no_audio.npz")  # skipped: no speech
    assert [p[0].name for p in data.find_pairs(flat)] == ["a.npz", "b.npz"]

    beat = tmp_path / "BEAT2" / "beat_english_v2.0.0"
    _write_pair(beat / "smplxflame_30", "2_scott_0_1_1", 70, audio_dir=beat / "wave16k")
    _write_pair(beat / "smplxflame_30", "2_scott_0_66_66", 70, audio_dir=beat / "wave16k")
    for root in (tmp_path / "BEAT2", beat, beat / "smplxflame_30"):
        pairs = data.find_pairs(root)
        assert [(p[0].stem, p[1].parent.name) for p in pairs] == [("2_scott_0_1_1", "wave16k"), ("2_scott_0_66_66", "wave16k")]
    ds = data.MotionWindows.from_folder(tmp_path / "BEAT2", stride=10)
    assert [c.emotion for c in ds.clips] == [0, 1] and [c.speaker for c in ds.clips] == [2, 2]
    with pytest.raises(FileNotFoundError):
        data.MotionWindows.from_folder(tmp_path / "BEAT2", speakers=[4])


def test_windows_and_stride(tmp_path):
    _write_pair(tmp_path, "a", 200)
    _write_pair(tmp_path, "short", 50)  # shorter than a window: contributes none
    ds = data.MotionWindows.from_folder(tmp_path, stride=20)
    assert len(ds.clips) == 2 and len(ds) == (200 - 64) // 20 + 1 == 7
    assert [s for _, s in ds.index] == [0, 20, 40, 60, 80, 100, 120]
    assert len(data.MotionWindows(ds.clips, stride=1)) == 137
    assert len(data.MotionWindows.from_folder(tmp_path, stride=20, mirror=True)) == 14

    item = ds[2]  # frames 40..103
    shapes = {k: tuple(v.shape) for k, v in item.items()}
    assert shapes == {"motion": (64, 337), "face": (64, 106), "upper": (64, 78), "hands": (64, 180),
                      "lower": (64, 61), "global": (64, 7), "audio": (64 * 533,), "speaker": (), "emotion": ()}
    n = -(-200 * SR // 30)
    assert item["audio"][0] == pytest.approx(40 * 533 / n) and item["audio"][-1] == pytest.approx((104 * 533 - 1) / n)
    clip = ds.clips[0]
    assert torch.equal(item["motion"], torch.from_numpy(clip.features["motion"][40:104]))


def test_features_layout():
    m = _motion(80)
    contact = np.zeros((80, 4), np.float32)
    contact[::2] = 1
    f = data.motion_features(m, contact)
    rot = m.rot6d()
    assert np.allclose(f["motion"][:, :330], rot.reshape(80, 330), atol=1e-6)
    assert np.allclose(f["motion"][:, 330:333], m.trans) and np.array_equal(f["motion"][:, 333:], contact)
    assert np.allclose(f["face"][:, :6], rot[:, 22], atol=1e-6) and np.allclose(f["face"][:, 6:], m.expressions)
    assert np.allclose(f["lower"][:, 54:57], m.trans) and np.array_equal(f["lower"][:, 57:], contact)
    # global target: (vx, y, vz) that inference integrates back to the translation
    v = f["global"][:, :3]
    x = m.trans[0, 0] + np.concatenate([[0], np.cumsum(v[:-1, 0] / 30)])
    assert np.allclose(x, m.trans[:, 0], atol=1e-5) and np.allclose(v[:, 1], m.trans[:, 1])


def test_audio_shorter_than_motion_is_padded(tmp_path):
    _write_pair(tmp_path, "a", 100, audio_frames=90)
    clip = data.MotionWindows.from_folder(tmp_path).clips[0]
    assert clip.n_frames == 90 and clip.audio.shape == (90 * 533,)


# --- mirroring ---------------------------------------------------------------------------


def test_mirror_joint_map():
    m = data.MIRROR_JOINTS
    assert all(m[m[j]] == j for j in range(55))
    assert JOINT_NAMES[m[joint_index("left_wrist")]] == "right_wrist"
    assert JOINT_NAMES[m[joint_index("right_thumb3")]] == "left_thumb3"
    assert m[joint_index("jaw")] == joint_index("jaw") and m[0] == 0


def test_mirroring_twice_is_identity():
    m = _motion(40)
    twice = data.mirror_motion(data.mirror_motion(m))
    assert twice.allclose(m, atol=0)


def test_left_arm_motion_becomes_right_arm_motion():
    T = 30
    m = Motion.zeros(T)
    m.trans[:, 1] = 1.0
    m.poses[:, joint_index("left_shoulder"), 2] = np.linspace(0, 1.2, T)  # raise the left arm (about z)
    m.poses[:, joint_index("left_elbow"), 1] = np.linspace(0, -0.8, T)  # and bend its elbow
    mirrored = data.mirror_motion(m)
    p, q = joint_positions(m), joint_positions(mirrored)
    lw, rw = joint_index("left_wrist"), joint_index("right_wrist")
    reflect = np.array([-1.0, 1.0, 1.0])
    # the right wrist now does what the left one did, reflected across x = 0 (within the SMPL-X neutral
    # skeleton's own left/right asymmetry, up to 3.1 cm) ...
    assert np.abs(q[:, rw] - p[:, lw] * reflect).max() < 0.035
    assert q[-1, rw, 1] - q[0, rw, 1] > 0.3  # ... rising
    # ... and the left arm stays put
    assert np.abs(q[:, lw] - q[0, lw]).max() < 1e-6
    assert np.allclose(mirrored.trans, m.trans * reflect)


def test_mirrored_clip_swaps_contacts(tmp_path):
    _write_pair(tmp_path, "a", 80)
    plain = data.load_clip(tmp_path / "a.npz", tmp_path / "a.wav")
    mirrored = data.load_clip(tmp_path / "a.npz", tmp_path / "a.wav", mirror=True)
    assert np.array_equal(mirrored.features["lower"][:, 57:], plain.features["lower"][:, [58, 57, 60, 59]])
    assert mirrored.name == "a_mirror" and np.array_equal(mirrored.audio, plain.audio)


# --- foot contact --------------------------------------------------------------------------


def test_contact_from_positions_threshold():
    T = 10
    feet = np.zeros((T, 4, 3))
    feet[:, 0, 0] = np.arange(T) * 0.02  # 0.6 m/s: moving
    feet[:, 1, 0] = np.arange(T) * 0.005  # 0.15 m/s: planted (under 1 cm per frame)
    c = data.contact_from_positions(feet, fps=30)
    assert c.shape == (T, 4) and c.dtype == np.float32
    assert (c[:, 0] == 0).all() and (c[:, 1:] == 1).all()


def test_foot_contact_of_a_step():
    """The body slides for a second, then stands: no contact while sliding, contact after."""
    T = 60
    m = Motion.zeros(T)
    m.trans[:, 2] = np.minimum(np.arange(T), 30) * (1.0 / 30)  # 1 m/s forward, then stop
    c = data.foot_contact(m)
    assert (c[:29] == 0).all() and (c[31:] == 1).all()
    # lifting only the left leg (hip flexion) takes only the left foot off the ground
    m = Motion.zeros(T)
    m.poses[:, joint_index("left_hip"), 0] = -np.linspace(0, 1.5, T)
    c = data.foot_contact(m)
    assert c[:, [1, 3]].all() and not c[5:-5, [0, 2]].any()
