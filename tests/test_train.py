"""Training: smoke runs on data made here, the released layout, exact resume, CLI, the bundled default."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from emage_core.models import hub
from emage_core.motion.beat2 import read_beat2, sidecar_path, write_beat2
from emage_core.cli.train import SIZE_NAMES, add_train_parsers
from emage_core.models.emage.inference import run
from emage_core.motion.clip import Motion
from emage_core.generate.emage import EmageGenerator
from emage_core.train.emage import SIZES, TrainConfig, make_configs, mask_ratio, train

from conftest import EMAGE_REF, REPO

SR = 16000
SMALL = dict(hidden_size=32, audio_f=16, motion_f=16, codebook=16)  # tiny's layout, narrower: fast tests


def _speechlike(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    env = np.clip(np.sin(2 * np.pi * 2.7 * t + seed), 0, None)
    return (0.3 * env * np.sin(2 * np.pi * 150 * t) + 0.01 * rng.normal(size=n)).astype(np.float32)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Two clips of smooth random motion (100 and 90 frames) with speech-like audio."""
    root = tmp_path_factory.mktemp("data")
    for i, T in enumerate((100, 90)):
        rng = np.random.default_rng(i)
        t = np.arange(T)[:, None, None] / 30
        poses = 0.3 * np.sin(2 * np.pi * rng.uniform(0.2, 1, (1, 55, 3)) * t + rng.uniform(0, 6, (1, 55, 3)))
        trans = np.concatenate([0.1 * np.sin(t[:, 0]), np.full((T, 1), 0.9), 0.02 * t[:, 0]], axis=1)
        expr = 0.3 * np.sin(2 * np.pi * rng.uniform(0.5, 2, (1, 100)) * t[:, 0])
        write_beat2(Motion(poses=poses, expressions=expr, trans=trans), root / f"2_test_0_{i + 1}_{i + 1}.npz")
        sf.write(root / f"2_test_0_{i + 1}_{i + 1}.wav", _speechlike(-(-T * SR // 30), i), SR)
    return root


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train fastest on one thread (and do not suffer from a busy CPU); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(data_dir, out, **kw) -> TrainConfig:
    base = dict(data=str(data_dir), out=str(out), steps=6, vq_steps=6, batch_size=4, stride=8, save_every=1000,
                overrides=SMALL, device="cpu")
    return TrainConfig(**{**base, **kw})


def _state_dicts(models) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v for name, m in models.as_dict().items() for k, v in m.state_dict().items()}


def test_smoke_training_lowers_the_loss_and_reloads_exactly(data_dir, tmp_path):
    history: dict[str, list[float]] = {"vq": [], "audio": []}
    models = train(_config(data_dir, tmp_path / "run", steps=20, vq_steps=40, mirror=True, lr=1e-3),
                   on_step=lambda stage, step, losses: history[stage].append(losses["loss"]))
    assert len(history["vq"]) == 40 and len(history["audio"]) == 20
    for stage, losses in history.items():
        assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), (stage, losses)

    # the released layout, loaded strictly by the generator, gives the same motion as in memory
    out = tmp_path / "run"
    for sub in ("", *hub.SUBMODEL_FOLDERS.values()):
        assert (out / sub / "config.json").is_file() and (out / sub / "model.safetensors").is_file()
    gen = EmageGenerator.from_pretrained(out, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(_state_dicts(models).values(), _state_dicts(gen.models).values()))
    audio = torch.from_numpy(_speechlike(3 * SR, 7))[None]
    ours, theirs = run(models, audio), run(gen.models, audio)
    for key in ("motion_axis_angle", "expression", "trans", "upper_index"):
        assert torch.equal(ours[key], theirs[key]), key
    config = json.loads((out / "config.json").read_text())
    assert config["emage_studio"]["training"]["audio_steps_done"] == 20
    assert config["hidden_size"] == 32 and config["vae_codebook_size"] == 16


def test_resume_continues_exactly(data_dir, tmp_path):
    """4 steps, stop, resume to 6 (and 3 audio steps): the same weights as one 6 + 3 run."""
    straight = train(_config(data_dir, tmp_path / "a", vq_steps=6, steps=3))
    train(_config(data_dir, tmp_path / "b", vq_steps=4, stage="vq"))
    seen = []
    resumed = train(_config(data_dir, tmp_path / "b", vq_steps=6, steps=3, resume=True),
                    on_step=lambda stage, step, losses: seen.append((stage, step)))
    assert seen[0] == ("vq", 5) and seen[-1] == ("audio", 3)
    a, b = _state_dicts(straight), _state_dicts(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]

    with pytest.raises(FileExistsError, match="--resume"):
        train(_config(data_dir, tmp_path / "b"))
    with pytest.raises(FileNotFoundError, match="no training state"):
        train(_config(data_dir, tmp_path / "c", resume=True))


def test_configs_have_the_released_keys():
    audio, parts = make_configs("official")
    assert (audio["hidden_size"], audio["audio_f"], audio["motion_f"], audio["vae_codebook_size"]) == (768, 256, 256, 256)
    assert {p: c["vae_layer"] for p, c in parts.items()} == {"face": 2, "upper": 2, "hands": 2, "lower": 4, "global": 4}
    assert {p: c["vae_test_dim"] for p, c in parts.items()} == {"face": 106, "upper": 78, "hands": 180, "lower": 61,
                                                                  "global": 61}
    golden = EMAGE_REF / "golden"
    if not golden.is_dir():
        pytest.skip(f"needs {golden} to compare config keys; absent here")
    assert set(json.loads((golden / "config.json").read_text())) <= set(audio)
    for part in hub.SUBMODELS:
        assert set(json.loads((golden / "emage_vq" / part / "config.json").read_text())) <= set(parts[part])


def test_dead_codes_restart_from_encoder_outputs():
    from emage_core.models.emage.model import EmageModels
    from emage_core.train.emage import _restart_dead_codes

    audio_cfg, parts = make_configs("tiny", **SMALL)
    models = EmageModels.from_configs(audio_cfg, parts)
    batch = {p: torch.randn(2, 8, parts[p]["vae_test_dim"]) for p in ("face", "upper", "hands", "lower")}
    usage = {p: torch.zeros(16, dtype=torch.long) for p in batch}
    usage["face"][3] = 5  # the only code in use
    before = models.face.quantizer.embedding.weight.clone()
    _restart_dead_codes(models, batch, usage, torch.Generator().manual_seed(0))
    after = models.face.quantizer.embedding.weight
    assert torch.equal(after[3], before[3]) and not torch.equal(after[0], before[0])
    z = models.face.encoder(batch["face"]).reshape(-1, 16)
    assert all((z - after[i]).abs().sum(dim=1).min() < 1e-5 for i in (0, 1, 15))  # now encoder outputs
    assert all(int(u.sum()) == 0 for u in usage.values())  # counting starts again


def test_cli_sizes_and_mask_ramp():
    assert SIZE_NAMES == tuple(SIZES)
    assert mask_ratio(0, 100) == pytest.approx(0.05) and mask_ratio(50, 100) == pytest.approx(0.525)
    assert mask_ratio(100, 100) == mask_ratio(1000, 100) == 1.0


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_train_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_metrics_command(tmp_path, capsys):
    pytest.importorskip("librosa")
    wav = tmp_path / "s.wav"
    sf.write(wav, _speechlike(3 * SR, 3), SR)
    a, b = Motion.zeros(90), Motion.zeros(90)
    b.poses[:, 16, 2] = np.linspace(0, 1, 90)
    write_beat2(a, tmp_path / "a.npz")
    write_beat2(b, tmp_path / "b.npz")
    assert _cli(["metrics", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--audio", str(wav)]) == 0
    out = capsys.readouterr().out
    assert "jerk" in out and "a.npz" in out and "L1 diversity" in out
    assert _cli(["metrics", str(tmp_path / "a.npz"), "--audio", str(wav), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["motions"][0]["jaw_envelope_corr"] == 0 and result["motions"][0]["jerk"] == 0


# --- the bundled default checkpoint ---------------------------------------------------------


def test_bundled_default_loads_offline(monkeypatch):
    monkeypatch.delenv("EMAGE_REPO_ID", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = hub.BUNDLED_CHECKPOINT
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 25 * 1024 * 1024
    assert not (folder / "training_state").exists()  # only what inference needs ships
    assert "CC BY-NC 4.0" in (folder / "README.md").read_text()
    gen = EmageGenerator.from_pretrained(device="cpu")  # no source: the bundled default
    assert gen.model_id == str(folder) and gen.provenance["kind"] == "local"
    clip = gen.generate(_speechlike(2 * SR, 1), seed=0)[0]
    assert clip.n_frames == 60 and np.isfinite(clip.poses).all()
    assert clip.poses.std(axis=0).max() > 0.01  # it moves


def test_generate_command_works_offline_with_no_weights(tmp_path):
    wav = tmp_path / "speech.wav"
    sf.write(wav, _speechlike(2 * SR, 2), SR)
    env = {k: v for k, v in os.environ.items() if k != "EMAGE_REPO_ID"}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "empty_cache"))  # no Hub, nothing cached
    out = tmp_path / "out.npz"
    subprocess.run([sys.executable, "-m", "emage_core", "generate", str(wav), "-o", str(out), "--seed", "0"],
                   cwd=REPO, env=env, check=True, capture_output=True, timeout=120)
    assert read_beat2(out).n_frames == 60
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["model_id"] == "emage"  # the family's default: the bundled checkpoint
    assert meta["weights"]["source"].endswith("emage_studio_default")
    assert meta["weights"]["kind"] == "local" and "model.safetensors" in meta["weights"]["files"]


def test_aligned_audio_adds_no_parameters_and_lets_a_frame_read_its_own_audio():
    """The flag changes the forward only: same state_dict; a change to one audio frame then moves
    that frame's face output most, where the released forward spreads it over the window."""
    from emage_core.models.emage.model import EmageModels

    assert make_configs("tiny")[0]["aligned_audio"] is True
    assert "aligned_audio" not in make_configs("tiny", aligned_audio=False)[0]
    ratios = {}
    for aligned in (False, True):
        audio_cfg, parts = make_configs("tiny", aligned_audio=aligned, **SMALL)
        torch.manual_seed(0)
        net = EmageModels.from_configs(audio_cfg, parts).audio.eval()
        if aligned:
            assert {k: v.shape for k, v in net.state_dict().items()} == shapes
        shapes = {k: v.shape for k, v in net.state_dict().items()}
        T, t0 = 64, 30
        g = torch.Generator().manual_seed(1)
        face, body = (torch.randn(1, T, net.config.audio_f, generator=g) for _ in range(2))
        motion = torch.zeros(1, T, net.config.motion_dim)
        args = (None, torch.zeros(1, 1, dtype=torch.long), motion, torch.ones_like(motion))
        with torch.no_grad():
            a = net(*args, audio_features=(face, body))["rec_face"]
            face2 = face.clone()
            face2[:, t0] += 3.0
            b = net(*args, audio_features=(face2, body))["rec_face"]
        change = (b - a).abs().mean(-1)[0]  # (T,)
        others = torch.cat([change[: t0 - 2], change[t0 + 3 :]])
        ratios[aligned] = float(change[t0] / others.median())
    assert ratios[True] > 3 and ratios[True] > 2 * ratios[False], ratios


def test_cli_aligned_audio_switch(tmp_path):
    parser = argparse.ArgumentParser()
    add_train_parsers(parser.add_subparsers(dest="command", required=True))
    base = ["train", "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    assert parser.parse_args(base).aligned_audio is True
    assert parser.parse_args(base + ["--no-aligned-audio"]).aligned_audio is False
