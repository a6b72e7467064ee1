"""Metrics on synthetic signals whose answer is known, and on the real BEAT2 sample."""
from __future__ import annotations

import numpy as np
import pytest

from emage_core import metrics
from emage_core.motion.clip import Motion
from emage_core.motion.skeleton import JAW, UPPER_JOINTS

FPS = 30
SR = 16000


def _clicks(times: np.ndarray, seconds: float) -> np.ndarray:
    """Speech stand-in: short decaying noise bursts starting at ``times`` (clear onsets)."""
    rng = np.random.default_rng(0)
    audio = 0.001 * rng.normal(size=int(seconds * SR))
    burst = rng.normal(size=int(0.12 * SR)) * np.exp(-np.arange(int(0.12 * SR)) / 400)
    for t in times:
        i = int(t * SR)
        audio[i : i + burst.size] += burst[: audio.size - i]
    return audio.astype(np.float32)


def _pulsing_positions(minima_s: float, seconds: float, period: float = 1.0) -> np.ndarray:
    """(T, 55, 3) joints gliding along x with speed 1 - 0.6 cos(...): speed minima every ``period``
    seconds starting at ``minima_s`` (and never at rest, so every minimum is a beat)."""
    t = np.arange(int(seconds * FPS)) / FPS
    w = 2 * np.pi / period
    x = t - 0.6 / w * np.sin(w * (t - minima_s))  # dx/dt = 1 - 0.6 cos(w (t - minima_s))
    pos = np.zeros((t.size, 55, 3))
    pos[..., 0] = x[:, None]
    return pos


def test_jerk_of_a_cubic_is_six_a():
    t = np.arange(90) / FPS
    a = np.array([0.3, -0.2, 0.5])
    pos = np.zeros((90, 4, 3))
    pos[:] = (t[:, None] ** 3 * a)[:, None, :]
    assert metrics.jerk(pos, FPS) == pytest.approx(6 * np.linalg.norm(a), rel=1e-6)
    assert metrics.jerk(pos * 0 + 1.0, FPS) == 0  # still -> 0
    with pytest.raises(ValueError):
        metrics.jerk(pos[:3])


def test_beat_consistency_high_on_onsets_low_when_shifted():
    onsets = np.arange(0.5, 9.6, 1.0)
    aligned = metrics.beat_consistency(_pulsing_positions(0.5, 10.0), onsets)
    shifted = metrics.beat_consistency(_pulsing_positions(1.0, 10.0), onsets)  # half a period off
    assert aligned > 0.95
    assert shifted < 0.35
    # EMAGE's default joint set is the upper body; other joints do not count
    pos = _pulsing_positions(0.5, 10.0)
    pos[:, list(UPPER_JOINTS)] = _pulsing_positions(1.0, 10.0)[:, list(UPPER_JOINTS)]
    assert metrics.beat_consistency(pos, onsets) == pytest.approx(shifted)


def test_beat_consistency_from_audio_onsets():
    pytest.importorskip("librosa")
    times = np.arange(0.5, 9.6, 1.0)
    audio = _clicks(times, 10.0)
    found = metrics.speech_onsets(audio, SR)
    nearest = np.abs(found[:, None] - times[None]).min(axis=0)
    assert nearest.max() < 0.05  # every burst is found (hop 512 = 32 ms)
    aligned = metrics.beat_consistency(_pulsing_positions(0.5, 10.0), audio=audio)
    shifted = metrics.beat_consistency(_pulsing_positions(1.0, 10.0), audio=audio)
    assert aligned > 0.9 > 0.4 > shifted


def test_beat_consistency_edge_cases():
    still = np.zeros((90, 55, 3))
    assert metrics.beat_consistency(still, np.array([1.0])) == 0  # no motion beats at all
    assert np.isnan(metrics.beat_consistency(_pulsing_positions(0.5, 3.0), np.array([])))


def test_velocity_minima_skip_rests():
    speed = np.abs(np.sin(np.linspace(0, 4 * np.pi, 121)))[:, None]  # minima at speed 0: rests
    assert metrics.velocity_minima(speed)[0].size == 0
    assert metrics.velocity_minima(speed + 0.5)[0].size == 3


def test_variant_l1_distance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 55, 3))
    assert metrics.variant_l1_distance([x, x, x]) == 0
    # two variants differing by d in one coordinate: each is d/2 from the mean
    y = x.copy()
    y[:, 0, 0] += 0.4
    assert metrics.variant_l1_distance(np.stack([x, y])) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        metrics.variant_l1_distance(x[None])


def test_names_keep_the_two_families_apart():
    """Old names keep working; the official metrics have names of their own."""
    from emage_core.metrics import beat, motion, official

    assert metrics.l1_diversity is metrics.variant_l1_distance  # the old name, kept for callers
    assert metrics.l1div is official.l1div and metrics.l1div is not metrics.l1_diversity
    assert "Diversity" in metrics.variant_l1_distance.__doc__ and "NOT a distance between" in official.l1div.__doc__
    assert metrics.beat_consistency is motion.beat_consistency  # the quick per-clip BC, as before
    assert metrics.official_beat_consistency is beat.beat_consistency
    for name in metrics.__all__:
        assert getattr(metrics, name) is not None, name
    with pytest.raises(AttributeError):
        metrics.no_such_metric


def test_speech_envelope_is_rms_per_frame():
    audio = np.concatenate([np.full(SR // 2, 0.5), np.zeros(SR // 2)]).astype(np.float32)
    env = metrics.speech_envelope(audio, SR, FPS)
    assert env.shape == (30,)
    assert np.allclose(env[:14], 0.5) and np.allclose(env[16:], 0)


def test_jaw_envelope_correlation_follows_the_jaw():
    T = 300
    t = np.arange(T) / FPS
    loud = 0.5 + 0.5 * np.sin(2 * np.pi * 1.3 * t) ** 2  # syllable-rate loudness per frame
    rng = np.random.default_rng(1)
    audio = (np.repeat(loud, SR // FPS + 1)[: T * SR // FPS] * rng.choice([-1.0, 1.0], T * SR // FPS)).astype(np.float32)
    poses = np.zeros((T, 55, 3))
    poses[:, JAW, 0] = 0.2 * loud  # the jaw opens with the loudness
    assert metrics.jaw_envelope_correlation(poses, audio, SR, FPS) > 0.99
    poses[:, JAW, 0] = 0.2 * (1.5 - loud)  # closes when loud
    assert metrics.jaw_envelope_correlation(poses, audio, SR, FPS) < -0.99
    poses[:, JAW] = 0.1  # a still jaw follows nothing
    assert metrics.jaw_envelope_correlation(poses, audio, SR, FPS) == 0
    assert np.allclose(metrics.jaw_opening(poses.reshape(T, 165)), np.linalg.norm([0.1] * 3))


def test_motion_metrics_on_the_real_sample(beat2_dir):
    pytest.importorskip("librosa")
    from emage_core.audio import load_audio
    from emage_core.motion.beat2 import read_beat2

    motion = read_beat2(beat2_dir / "2_scott_0_1_1.npz")
    audio = load_audio(beat2_dir / "2_scott_0_1_1.wav")
    m = metrics.motion_metrics(motion, audio)
    assert m["frames"] == 1906
    assert 0.25 < m["jaw_envelope_corr"] < 0.35  # 0.29: real lips follow speech, loosely
    assert 20 < m["jerk"] < 200  # 63 m/s^3 over all 55 joints
    assert 0.4 < m["bc"] < 0.9  # 0.62
    still = Motion.zeros(1906)
    assert metrics.motion_metrics(still, audio)["jaw_envelope_corr"] == 0
