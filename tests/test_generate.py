"""The generator as users call it: from_pretrained + generate, locks, variants, lengths, CLI."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from conftest import EMAGE_REF, need
from parity import assert_axis_angle_matches
from emage_core import Motion
from emage_core.motion.beat2 import read_beat2, write_beat2
from emage_core.models.hub import BUNDLED_CHECKPOINT, WeightsError
from emage_core.edit.locks import Lock, LockError
from emage_core.generate.emage import EmageGenerator, masked_motion
from emage_core.motion.rotation import axis_angle_to_matrix
from emage_core.motion.skeleton import PARTS


@pytest.fixture(scope="module")
def golden() -> Path:
    """The reference's small random-weight checkpoint with its golden outputs (shared data)."""
    return need(EMAGE_REF / "golden")


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    """The bundled default: always in the package, so these tests run without the shared data."""
    return BUNDLED_CHECKPOINT


@pytest.fixture(scope="module")
def gen(checkpoint) -> EmageGenerator:
    return EmageGenerator.from_pretrained(checkpoint, device="cpu")


def _speech(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(round(seconds * 16000))
    t = np.arange(n) / 16000
    # syllable-like bursts of a harmonic tone with noise: speech-shaped enough for a random model
    env = np.clip(np.sin(2 * np.pi * 3.1 * t), 0, None)
    return (0.3 * env * np.sin(2 * np.pi * 160 * t) + 0.02 * rng.normal(size=n)).astype(np.float32)


def test_matches_golden_outputs(golden):
    """generate() at temperature 0 with the reference's windows and face decoding is the official pipeline's motion."""
    gen = EmageGenerator.from_pretrained(golden, device="cpu")
    with np.load(golden / "inputs.npz") as x, np.load(golden / "outputs_b2p5s.npz") as ref:
        clip = gen.generate(x["b2p5s"], overlap=0, snap_face=True, exact_audio_timing=False,
                            audio_context="window", precision="float32")[0]
        assert clip.meta["window_overlap"] == 0 and clip.meta["snap_face"] is True
        assert clip.n_frames == 75
        assert_axis_angle_matches(clip.poses, ref["motion_axis_angle"][0])
        np.testing.assert_allclose(clip.expressions, ref["expression"][0], atol=1e-4)
        np.testing.assert_allclose(clip.trans, ref["trans"][0], atol=1e-4)


@pytest.mark.parametrize("seconds", [0.3, 0.31, 1.0, 64 / 30, 66 / 30, 4.7])
def test_exact_frame_count_for_any_length(gen, seconds):
    wav = _speech(seconds)
    clip = gen.generate(wav, seed=0)[0]
    assert clip.n_frames == wav.shape[0] * 30 // 16000
    assert np.isfinite(clip.poses).all() and clip.fps == 30


def test_too_short_or_bad_audio(gen):
    with pytest.raises(ValueError, match="too short"):
        gen.generate(_speech(0.29))
    with pytest.raises(ValueError, match="NaN"):
        gen.generate(np.full(16000, np.nan, np.float32))
    with pytest.raises(ValueError, match="mono"):
        gen.generate(np.zeros((2, 16000), np.float32))


def test_seeds_and_variants(gen):
    wav = _speech(3.0)
    a = gen.generate(wav, seed=5, variants=2, temperature=1.0)
    b = gen.generate(wav, seed=5, variants=2, temperature=1.0)
    c = gen.generate(wav, seed=6, temperature=1.0)
    assert [m.meta["seed"] for m in a] == [5, 6]
    assert all(x.allclose(y, atol=0) for x, y in zip(a, b))  # same seed, same motion
    assert not a[0].allclose(a[1], atol=1e-3)  # variants differ
    assert c[0].allclose(a[1], atol=0)  # variant k is seed + k
    greedy = [gen.generate(wav, seed=s)[0] for s in (1, 2)]
    assert greedy[0].allclose(greedy[1], atol=0)  # temperature 0 ignores the seed
    assert gen.generate(wav, variants=1, temperature=1.0)[0].meta["seed"] >= 0  # a random seed is recorded


def test_meta_records_provenance(gen, checkpoint):
    meta = gen.generate(_speech(1.0), seed=3)[0].meta
    import hashlib

    assert meta["weights"]["files"]["model.safetensors"] == hashlib.sha256(
        (checkpoint / "model.safetensors").read_bytes()).hexdigest()
    assert meta["seed"] == 3 and meta["temperature"] == 0.0 and meta["audio_seconds"] == 1.0
    assert len(meta["audio_sha256"]) == 64 and meta["versions"]["torch"] == torch.__version__


def _reference(n_frames: int) -> Motion:
    rng = np.random.default_rng(42)
    return Motion(poses=rng.normal(0, 0.3, (n_frames, 55, 3)), expressions=rng.normal(size=(n_frames, 100)),
                  trans=np.cumsum(rng.normal(0, 0.01, (n_frames, 3)), 0))


@pytest.mark.parametrize("part", list(PARTS))
def test_locked_spans_equal_the_reference(gen, part):
    wav = _speech(4.0)
    ref = _reference(120)
    locks = [Lock(part, 1.0, 2.0), Lock(part, 3.5, 4.0)]
    clip = gen.generate(wav, seed=1, locks=locks, reference=ref)[0]
    assert clip.n_frames == 120
    joints = list(PARTS[part])
    for lock in locks:
        span = slice(*lock.frames())
        if joints:
            R_out = axis_angle_to_matrix(clip.poses[span][:, joints])
            R_ref = axis_angle_to_matrix(ref.poses[span][:, joints])
            assert np.abs(R_out - R_ref).max() < 1e-5
        if part == "face":
            assert np.array_equal(clip.expressions[span], ref.expressions[span])
        if part == "global":
            assert np.array_equal(clip.trans[span], ref.trans[span])
    far = np.r_[0:20, 70:95]  # farther than the 0.2 s crossfade from both spans
    if joints:
        assert not np.allclose(clip.poses[far][:, joints], ref.poses[far][:, joints], atol=1e-3)  # model's own
    assert clip.meta["locks"] == [str(lock) for lock in locks]


def test_masked_motion_marks_only_locked_channels():
    ref = _reference(60)
    given, mask = masked_motion(ref, [Lock("hands", 0.5, 1.0), Lock("global", 0, 0.1)], 60)
    assert given.shape == mask.shape == (60, 337)
    assert (mask == 0).sum() == 15 * 30 * 6 + 3 * 3
    assert np.all(mask[15:30, 25 * 6:55 * 6] == 0) and np.all(mask[:3, 330:333] == 0)
    assert np.allclose(given[20, 25 * 6:26 * 6], ref.rot6d()[20, 25])
    assert np.allclose(given[40, 25 * 6:26 * 6], [1, 0, 0, 0, 1, 0])  # unlocked: the model's default


def test_lock_errors(gen):
    wav = _speech(2.0)
    with pytest.raises(LockError, match="after the speech"):
        gen.generate(wav, locks=[Lock("upper", 1.0, 2.5)], reference=_reference(90))
    with pytest.raises(LockError, match="reference motion has only"):
        gen.generate(wav, locks=[Lock("upper", 1.0, 1.9)], reference=_reference(30))
    with pytest.raises(LockError, match="unknown part"):
        gen.generate(wav, locks=[Lock("tail", 0, 1)], reference=_reference(60))
    with pytest.raises(LockError, match="need a reference"):
        gen.generate(wav, locks=[Lock("face", 0, 1)])


def test_progress_is_reported_per_window(gen):
    seen = []
    gen.generate(_speech(5.0), seed=0, variants=2, temperature=0.5, progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert len(seen) == 2 * 3 and "variant 2/2" in seen[-1][1]  # 150 frames: 3 windows per variant


def test_weights_that_do_not_fit_fail_clearly(checkpoint, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoint, ckpt, ignore=shutil.ignore_patterns("*.npz", "golden_summary.json"))
    sd = load_file(ckpt / "emage_vq" / "hands" / "model.safetensors")
    sd.pop(next(iter(sd)))
    save_file(sd, ckpt / "emage_vq" / "hands" / "model.safetensors")
    with pytest.raises(WeightsError, match="emage_vq/hands.*do not fit"):
        EmageGenerator.from_pretrained(ckpt)


def test_cli_generate_writes_variants_and_sidecars(checkpoint, tmp_path):
    wav = tmp_path / "speech.flac"
    sf.write(wav, _speech(2.0), 16000)
    ref = write_beat2(_reference(60), tmp_path / "ref.npz")
    out = tmp_path / "out" / "clip.npz"
    r = subprocess.run([sys.executable, "-m", "emage_core", "generate", str(wav), "-o", str(out),
                        "--weights", str(checkpoint), "--seed", "11", "--variants", "2", "--temperature", "0.8",
                        "--lock", "upper:0.5-1", "--reference", str(ref), "--crossfade", "0.1"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for k, seed in ((1, 11), (2, 12)):
        m = read_beat2(tmp_path / "out" / f"clip_{k}.npz")
        meta = json.loads((tmp_path / "out" / f"clip_{k}.json").read_text())
        assert m.n_frames == 60 and meta["seed"] == seed and meta["locks"] == ["upper:0.5-1"]
        assert meta["crossfade"] == 0.1 and meta["model_id"] == f"emage:{checkpoint}"  # a model reference
    bad = subprocess.run([sys.executable, "-m", "emage_core", "generate", str(wav), "-o", str(out),
                          "--weights", str(checkpoint), "--lock", "upper:0.5-1"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--reference" in bad.stderr and "Traceback" not in bad.stderr
