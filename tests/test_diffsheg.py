"""DiffSHEG in the studio: loading our layout and the reference's files, exact lengths, seeds, locks,
labels, streaming, the command line. A small random checkpoint made here stands in for trained weights."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import REPO, SHARED, need
from emage_core.edit.locks import Lock
from emage_core.generate.diffsheg import DiffshegGenerator
from emage_core.generate.settings import DiffshegOptions, GenerationSettings, SettingsError
from emage_core.models.diffsheg.checkpoint import load_pretrained, save_pretrained
from emage_core.models.diffsheg.model import DiffSHEGConfig, DiffSHEGDenoiser
from emage_core.motion.beat2 import read_beat2, write_beat2
from emage_core.motion.clip import Motion
from emage_core.motion.skeleton import PARTS

FAST = DiffshegOptions(steps=5, window=24, overlap=4, repeats=1)  # small and quick; the defaults are 25/88/10/5


def _speech(seconds: float, seed: int = 0) -> np.ndarray:
    n = int(round(seconds * 16000))
    t = np.arange(n) / 16000
    env = np.clip(np.sin(2 * np.pi * 3.1 * t), 0, None)
    return (0.3 * env * np.sin(2 * np.pi * 160 * t) + 0.02 * np.random.default_rng(seed).normal(size=n)).astype(np.float32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A tiny random DiffSHEG in our layout (statistics with a realistic spread)."""
    torch.manual_seed(0)
    cfg = DiffSHEGConfig(latent_dim=32, num_layers=2, ff_size=64, num_heads=4, audio_latent_dim=16, style_dim=2,
                         use_hubert=False)
    rng = np.random.default_rng(0)
    out = tmp_path_factory.mktemp("diffsheg") / "ckpt"
    return save_pretrained(out, DiffSHEGDenoiser(cfg), rng.normal(0, 0.05, 232), rng.uniform(0.05, 0.3, 232),
                           speakers=("2_scott", "1_wayne"))


@pytest.fixture(scope="module")
def gen(folder) -> DiffshegGenerator:
    return DiffshegGenerator.from_pretrained(folder, device="cpu")


def test_checkpoint_round_trip_is_strict(folder, tmp_path):
    ckpt = load_pretrained(folder)
    assert ckpt.config.latent_dim == 32 and ckpt.speakers == ("2_scott", "1_wayne") and ckpt.mean.shape == (232,)
    assert json.loads((folder / "config.json").read_text())["family"] == "diffsheg"
    from safetensors.torch import load_file, save_file

    sd = load_file(str(folder / "model.safetensors"))
    sd.pop(next(iter(sd)))
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("config.json", "statistics.npz"):
        (bad / name).write_bytes((folder / name).read_bytes())
    save_file(sd, str(bad / "model.safetensors"))
    with pytest.raises(ValueError, match="weights do not fit"):
        load_pretrained(bad)


def test_position_tables_are_rebuilt_not_stored(folder, tmp_path):
    """The PE tables are computed from the config: our files leave them out (1.2 MB less), and a file
    that has them (the reference's layout, imported) still loads strictly."""
    from safetensors.torch import load_file, save_file

    stored = load_file(str(folder / "model.safetensors"))
    assert not [k for k in stored if k.endswith("PE.pe")]
    ckpt = load_pretrained(folder)
    fresh = DiffSHEGDenoiser(ckpt.config).state_dict()
    pe_keys = [k for k in fresh if k.endswith("PE.pe")]
    assert pe_keys and all(torch.equal(ckpt.model.state_dict()[k], fresh[k]) for k in pe_keys)
    full = tmp_path / "full"
    full.mkdir()
    for name in ("config.json", "statistics.npz"):
        (full / name).write_bytes((folder / name).read_bytes())
    save_file({**stored, **{k: fresh[k].contiguous() for k in pe_keys}}, str(full / "model.safetensors"))
    again = load_pretrained(full)
    for k, v in ckpt.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[k], v), k


@pytest.mark.parametrize("seconds", [0.3, 0.8, 1.0, 2.37])
def test_exact_frame_count(gen, seconds):
    wav = _speech(seconds)
    clip = gen.generate(wav, GenerationSettings(seed=1, diffsheg=FAST))[0]
    assert clip.n_frames == wav.shape[0] * 30 // 16000 and np.isfinite(clip.poses).all()
    assert not clip.poses[:, list(PARTS["lower"])].any() and not clip.trans.any()  # not modelled: at rest


def test_seeds_variants_and_labels(gen, folder):
    wav = _speech(1.5)
    a = gen.generate(wav, GenerationSettings(seed=4, variants=2, diffsheg=FAST))
    b = gen.generate(wav, GenerationSettings(seed=4, variants=2, diffsheg=FAST))
    assert [c.meta["seed"] for c in a] == [4, 5]
    assert all(np.array_equal(x.poses, y.poses) for x, y in zip(a, b))  # same seed, same motion
    assert not np.allclose(a[0].poses, a[1].poses)  # seeds differ
    meta = a[0].meta
    assert meta["family"] == "diffsheg" and meta["parts"]["at_rest"] == ["lower", "global"]
    assert meta["sampler"]["ddim_steps"] == 5 and meta["sampler"]["cond_scale"] == 1.15  # the checkpoint's default
    import hashlib

    assert meta["weights"]["files"]["model.safetensors"] == hashlib.sha256(
        (folder / "model.safetensors").read_bytes()).hexdigest()
    assert gen.capabilities.parts == frozenset({"face", "upper", "hands"}) and gen.capabilities.streaming
    with pytest.raises(SettingsError, match="window must be"):
        gen.generate(wav, GenerationSettings(diffsheg=DiffshegOptions(window=5000)))
    with pytest.raises(SettingsError, match="no learned speaker 'x'"):
        gen.generate(wav, GenerationSettings(speaker="x", diffsheg=FAST))


def test_locks_hold_exactly_and_the_motion_fits_them(gen):
    wav = _speech(2.0)
    rng = np.random.default_rng(3)
    ref = Motion(poses=rng.normal(0, 0.2, (60, 55, 3)), expressions=rng.normal(0, 0.5, (60, 100)),
                 trans=np.cumsum(rng.normal(0, 0.01, (60, 3)), 0))
    locks = [Lock("upper", 0.5, 1.2), Lock("face", 0.0, 0.6), Lock("lower", 1.0, 2.0)]
    clip = gen.generate(wav, GenerationSettings(seed=2, locks=locks, reference=ref, diffsheg=FAST))[0]
    for lock in locks:
        span, joints = slice(*lock.frames()), list(PARTS[lock.part])
        np.testing.assert_allclose(clip.poses[span][:, joints], ref.poses[span][:, joints], atol=1e-5)
    np.testing.assert_allclose(clip.expressions[:18], ref.expressions[:18], atol=1e-4)
    free = gen.generate(wav, GenerationSettings(seed=2, diffsheg=FAST))[0]
    # inpainting: the sampled motion near the upper lock follows it more than a free sample does
    near = slice(12, 15)
    upper = list(PARTS["upper"])
    assert np.abs(clip.poses[near][:, upper] - ref.poses[15][upper]).mean() < \
        np.abs(free.poses[near][:, upper] - ref.poses[15][upper]).mean()
    assert clip.meta["locks"] == [str(lock) for lock in locks]


def test_streaming_yields_windows_as_speech_arrives(gen):
    wav = _speech(3.0)
    chunks = [wav[i:i + 3200] for i in range(0, len(wav), 3200)]  # 0.2 s chunks
    consumed = []

    def feed():
        for k, c in enumerate(chunks):
            consumed.append(k)
            yield c

    pieces, seen = [], []
    for piece in gen.stream(feed(), GenerationSettings(seed=1, diffsheg=FAST)):
        pieces.append(piece)
        seen.append(len(consumed))
    total = sum(p.n_frames for p in pieces)
    assert abs(total - wav.shape[0] * 30 // 16000) <= 1
    assert len(pieces) > 1 and seen[0] < len(chunks)  # the first window came before the speech ended


def test_import_reference_files_round_trip(tmp_path):
    """The reference's .tar (state dict under 'encoder', numpy scalar metadata) and its pickled
    statistics become our layout without unpickling anything else; the weights are the same."""
    golden = need(SHARED / "reference" / "diffsheg" / "golden")
    from safetensors.torch import load_file

    sd = load_file(str(golden / "model.safetensors"))
    torch.save({"encoder": sd, "epoch": 2599, "fgd": np.float64(1.5)}, tmp_path / "ckpt_e2599.tar")
    rng = np.random.default_rng(0)
    stats = {"pose_mean": rng.normal(size=165), "pose_std": rng.uniform(0.1, 1, 165),
             "expression_mean": rng.normal(size=100), "expression_std": rng.uniform(0.1, 1, 100)}
    np.save(tmp_path / "talkshow_mean_std.npy", stats, allow_pickle=True)
    r = subprocess.run([sys.executable, "-m", "emage_core", "import", "diffsheg", str(tmp_path / "ckpt_e2599.tar"),
                        "--stats", str(tmp_path / "talkshow_mean_std.npy"), "--config", str(golden / "config.json"),
                        "-o", str(tmp_path / "imported")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    ckpt = load_pretrained(tmp_path / "imported")
    for k, v in ckpt.model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert np.allclose(ckpt.std[129:132], np.float32(stats["pose_mean"][0:3]))  # the jaw quirk kept
    wav = tmp_path / "s.wav"
    sf.write(wav, _speech(1.0), 16000)
    out = tmp_path / "out.npz"
    r = subprocess.run([sys.executable, "-m", "emage_core", "generate", str(wav), "-o", str(out), "--model",
                        f"diffsheg:{tmp_path / 'imported'}", "--seed", "3"], cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert read_beat2(out).n_frames == 30 and json.loads(out.with_suffix(".json").read_text())["seed"] == 3


def test_cli_generate_with_a_lock(folder, tmp_path):
    wav = tmp_path / "s.wav"
    sf.write(wav, _speech(1.2), 16000)
    rng = np.random.default_rng(1)
    ref = write_beat2(Motion(poses=rng.normal(0, 0.2, (36, 55, 3)), expressions=np.zeros((36, 100)),
                             trans=np.zeros((36, 3))), tmp_path / "ref.npz")
    out = tmp_path / "out.npz"
    r = subprocess.run([sys.executable, "-m", "emage_core", "generate", str(wav), "-o", str(out), "--model",
                        f"diffsheg:{folder}", "--seed", "1", "--lock", "hands:0.2-0.8", "--reference", str(ref)],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    m, want = read_beat2(out), read_beat2(ref)
    hands = list(PARTS["hands"])
    np.testing.assert_allclose(m.poses[6:24][:, hands], want.poses[6:24][:, hands], atol=1e-5)


def test_without_a_bundled_default_the_family_says_so_without_server_paths(tmp_path, monkeypatch):
    """No bundled DiffSHEG (this version ships none): `--model diffsheg` names what to load instead, never a
    server folder, and the page's selector does not offer a default it cannot load."""
    from emage_core.generate import diffsheg as module
    from emage_core.generate import registry
    from emage_core.models import hub

    monkeypatch.setattr(module, "BUNDLED", tmp_path / "absent")
    with pytest.raises(hub.WeightsError) as e:
        DiffshegGenerator.from_pretrained(device="cpu")
    assert "diffsheg:" in str(e.value) and str(tmp_path) not in str(e.value) and str(hub.CHECKPOINTS) not in str(e.value)
    assert "diffsheg" not in [ref for _, ref in registry.choices()]
    assert "emage" in [ref for _, ref in registry.choices()]
