"""Learned emotion conditioning: labels in the config, training with label dropout, guidance.

The main test trains a small model on a two-label set made here: 10 s of a real BEAT2 clip
labelled "neutral" and a copy with the upper-body rotations scaled by 1.6 (axis-angle, about the
rest pose) labelled "happiness", with the same speech. Only the label tells the two apart, so
generating that speech with each label must move the body like the label's data.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from emage_core.models import hub
from emage_core.train import labels as L
from emage_core.audio import load_audio
from emage_core.motion.beat2 import read_beat2, write_beat2
from emage_core.train.data import EMOTIONS, MotionWindows, load_clip
from emage_core.models.emage.inference import run
from emage_core.motion.kinematics import joint_positions
from emage_core.models.emage.model import VQ_PARTS, EmageAudioConfig, EmageAudioModel, EmageModels
from emage_core.motion.clip import Motion
from emage_core.generate.emage import EmageGenerator
from emage_core.motion.skeleton import UPPER_JOINTS
from emage_core.train.emage import TrainConfig, autoencoder_losses, make_configs, save_pretrained, train

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "beat2"
REF = Path(__file__).resolve().parents[2] / "shared" / "reference" / "emage"
SECONDS = 10
GAIN = 1.6  # upper-body rotation scale of the "happiness" copy
SMALL = dict(hidden_size=32, audio_f=16, motion_f=16, codebook=64)  # tiny's layout, narrower
WRISTS = [20, 21]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """The two labelled clips (same speech): calm = the recording, lively = upper body x GAIN."""
    npz, wav_path = FIXTURES / "2_scott_0_1_1.npz", FIXTURES / "2_scott_0_1_1.wav"
    if not (npz.is_file() and wav_path.is_file()):
        pytest.skip(f"needs the BEAT2 sample {npz} (+ .wav) from the shared test data; absent here")
    root = tmp_path_factory.mktemp("labelled")
    T = SECONDS * 30
    calm = read_beat2(npz).slice(0, T)
    lively = read_beat2(npz).slice(0, T)
    lively.poses[:, list(UPPER_JOINTS)] *= GAIN
    write_beat2(calm, root / "calm.npz")
    write_beat2(lively, root / "lively.npz")
    wav = load_audio(wav_path)[: T * 533 + 533]
    clips = [load_clip(root / "calm.npz", wav, emotion="neutral"), load_clip(root / "lively.npz", wav, emotion="happiness")]
    return {"dataset": MotionWindows(clips, stride=8), "wav": wav[: T * 16000 // 30], "calm": calm, "lively": lively}


def _train_autoencoders(ds, out: Path, steps: int = 200, seed: int = 0) -> Path:
    """Stage 1, briefly: codebooks started from encoder outputs (and dead codes restarted every 20
    steps) so that 200 steps already give the upper body distinct codes for both amplitudes."""
    torch.manual_seed(seed)
    audio_cfg, part_cfgs = make_configs("tiny", **SMALL)
    models = EmageModels.from_configs(audio_cfg, part_cfgs)
    data = {k: torch.stack([ds[i][k] for i in range(len(ds))]) for k in (*VQ_PARTS, "global")}
    gen = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def restart(all_codes: bool) -> None:
        for part in VQ_PARTS:
            q = getattr(models, part).quantizer
            z = getattr(models, part).encoder(data[part]).reshape(-1, q.e_dim)
            rows = torch.ones(q.n_e, dtype=torch.bool) if all_codes else torch.bincount(q.nearest(z), minlength=q.n_e) == 0
            q.embedding.weight[rows] = z[torch.randperm(len(z), generator=gen)[: int(rows.sum())]]

    modules = [models.face, models.upper, models.hands, models.lower, models.global_]
    opt = torch.optim.Adam([p for m in modules for p in m.parameters()], lr=3e-3)
    rng = np.random.default_rng(seed)
    restart(True)
    for step in range(steps):
        idx = rng.choice(len(ds), 8)
        losses, _ = autoencoder_losses(models, {k: v[idx] for k, v in data.items()}, gen)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        if step % 20 == 19 and step < 0.7 * steps:
            restart(False)
    return save_pretrained(models, out, audio_cfg, part_cfgs)


@pytest.fixture(scope="module")
def trained(labelled, tmp_path_factory) -> Path:
    """Checkpoint of a 150-step audio model conditioned on the labels found in the data."""
    root = tmp_path_factory.mktemp("emotion_run")
    vq = _train_autoencoders(labelled["dataset"], root / "vq")
    out = root / "run"
    cfg = TrainConfig(data="", out=str(out), steps=150, batch_size=4, lr=3e-3, mask_ramp=0.0, save_every=10**6,
                      overrides=SMALL, device="cpu", vq_from=str(vq), emotions="all", label_dropout=0.15)
    train(cfg, dataset=labelled["dataset"], log=lambda msg: None)
    return out


def _energy(poses: np.ndarray, wrist_mean: np.ndarray | None = None) -> tuple[float, float]:
    """(mean distance in metres of the wrists from ``wrist_mean`` in the body frame, mean upper-body
    angular speed in rad/s) of (T, 55, 3) axis-angles; wrist_mean None -> this motion's mean."""
    poses = poses.copy()
    poses[:, 0] = 0  # body frame: no root rotation, no translation
    T = len(poses)
    wrists = joint_positions(Motion(poses=poses, expressions=np.zeros((T, 100)), trans=np.zeros((T, 3))))[:, WRISTS]
    mean = wrists.mean(0) if wrist_mean is None else wrist_mean
    speed = np.linalg.norm(np.diff(poses[:, list(UPPER_JOINTS)], axis=0), axis=-1).mean() * 30
    return float(np.linalg.norm(wrists - mean, axis=-1).mean()), float(speed)


def _neutral_wrist_mean(calm: Motion) -> np.ndarray:
    poses = calm.poses.copy()
    poses[:, 0] = 0
    T = len(poses)
    return joint_positions(Motion(poses=poses, expressions=np.zeros((T, 100)), trans=np.zeros((T, 3))))[:, WRISTS].mean(0)


def test_labels_change_motion_energy_in_the_expected_direction(trained, labelled):
    config = json.loads((trained / "config.json").read_text())
    assert config["emotion_labels"] == ["neutral", "happiness"]  # "all" = the labels present in the data
    assert config["emage_studio"]["training"]["label_dropout"] == 0.15

    gen = EmageGenerator.from_pretrained(trained, device="cpu")  # strict=True
    assert gen.emotions == ("neutral", "happiness")
    assert gen.models.audio.emotion_embedding.weight.shape == (3, SMALL["hidden_size"])  # + the "no label" row

    wrist_mean = _neutral_wrist_mean(labelled["calm"])
    data = {name: _energy(labelled[key].poses, wrist_mean) for name, key in (("neutral", "calm"), ("happiness", "lively"))}
    out = {}
    for emotion in ("neutral", "happiness"):
        clip = gen.generate(labelled["wav"], seed=0, temperature=1.0, emotion=emotion)[0]
        assert clip.meta["emotion"] == emotion and clip.meta["guidance"] == 1.0
        out[emotion] = _energy(clip.poses, wrist_mean)
    wrist_ratio = out["happiness"][0] / out["neutral"][0]
    speed_ratio = out["happiness"][1] / out["neutral"][1]
    print(f"\nwrist distance from the neutral mean pose (m): data {data['neutral'][0]:.3f} / {data['happiness'][0]:.3f}, "
          f"generated {out['neutral'][0]:.3f} / {out['happiness'][0]:.3f} (ratio {wrist_ratio:.2f})\n"
          f"upper-body angular speed (rad/s): data {data['neutral'][1]:.3f} / {data['happiness'][1]:.3f}, "
          f"generated {out['neutral'][1]:.3f} / {out['happiness'][1]:.3f} (ratio {speed_ratio:.2f})")
    assert data["happiness"][0] > 1.3 * data["neutral"][0]  # what the labels mean in the data
    assert wrist_ratio > 1.25, out
    assert speed_ratio > 1.1, out


def test_guidance_interpolates_between_unconditional_and_conditional(trained, labelled):
    gen = EmageGenerator.from_pretrained(trained, device="cpu")
    models, audio = gen.models, torch.from_numpy(labelled["wav"][: 5 * 16000])[None]  # 150 frames: 3 windows
    cond = run(models, audio, emotion=1)
    uncond = run(models, audio)  # a labelled model without a label: the "no label" row
    assert torch.equal(run(models, audio, emotion=1, guidance=1.0)["motion_axis_angle"], cond["motion_axis_angle"])
    g0 = run(models, audio, emotion=1, guidance=0.0)  # the batched (cond, uncond) path
    for key in ("upper_index", "hands_index", "lower_index", "face_index", "motion_axis_angle"):
        assert torch.equal(g0[key], uncond[key]), key
    for key in ("latent_rec_upper", "latent_cls_upper", "latent_rec_face"):  # batch of 2 vs 1: rounding only
        torch.testing.assert_close(g0[key], uncond[key], atol=1e-5, rtol=0)
    g2 = run(models, audio, emotion=1, guidance=2.0)
    for key in ("latent_rec_upper", "latent_cls_hands", "latent_rec_face"):  # first window: same seeds everywhere
        torch.testing.assert_close(g2[key][:, :60], 2 * cond[key][:, :60] - uncond[key][:, :60], atol=1e-5, rtol=0)
    assert not torch.equal(g2["latent_cls_upper"], cond["latent_cls_upper"])

    clip = gen.generate(labelled["wav"][: 2 * 16000], seed=1, emotion="happiness", guidance=2.0)[0]
    assert clip.meta["guidance"] == 2.0 and clip.meta["expression"]["learned"] == "happiness"
    with pytest.raises(ValueError, match="guidance needs"):
        gen.generate(labelled["wav"][: 16000], guidance=2.0)
    explicit = gen.generate(labelled["wav"][: 16000], emotion="anger")[0].meta  # not learned: an explicit edit
    assert explicit["expression"]["learned"] is None and explicit["expression"]["explicit"]["preset"] == "anger"
    with pytest.raises(ValueError, match="learned no 'anger'"):
        gen.generate(labelled["wav"][: 16000], emotion="anger", guidance=2.0)
    with pytest.raises(ValueError, match="out of range"):
        run(models, audio, emotion=2)  # the null row is not a label


def test_released_and_golden_configs_build_no_emotion_parameters():
    with torch.device("meta"):  # the released size: shapes only
        released = EmageAudioModel(EmageAudioConfig())
    keys = list(released.state_dict())
    assert not [k for k in keys if "emotion" in k]
    manifest = REF / "manifest_official.json"
    if manifest.is_file():
        expected = [e["key"] for e in json.loads(manifest.read_text())["submodels"]["emage_audio"]["state_dict"]]
        assert keys == expected
    with pytest.raises(ValueError, match="no emotion embedding"):
        released(None, torch.zeros(1, 1, dtype=torch.long, device="meta"), torch.zeros(1, 8, 337, device="meta"),
                 torch.ones(1, 8, 337, device="meta"), audio_features=(torch.zeros(1, 8, 256, device="meta"),) * 2,
                 emotion=torch.zeros(1, 1, dtype=torch.long, device="meta"))
    audio_cfg, _ = make_configs("official")
    assert "emotion_labels" not in audio_cfg and "speaker_labels" not in audio_cfg

    bundled = hub.BUNDLED_CHECKPOINT
    if (bundled / "config.json").is_file():  # the colleague-trained default: strict load, no labels
        gen = EmageGenerator.from_pretrained(bundled, device="cpu")
        assert gen.emotions == () and gen.speakers == ()
        assert not [k for k in gen.models.audio.state_dict() if "emotion" in k]

    golden = REF / "golden"
    if not golden.is_dir():
        pytest.skip(f"needs the golden reference checkpoint {golden}; absent here")
    config = EmageAudioConfig.from_dict(json.loads((golden / "config.json").read_text()))
    assert config.emotion_labels is None and config.null_emotion is None
    with torch.device("meta"):
        model = EmageAudioModel(config)
    with safe_open(golden / "model.safetensors", "pt") as f:
        assert set(model.state_dict()) == set(f.keys())


def test_label_configs_and_window_labels():
    audio, _ = make_configs("tiny", emotion_labels=["neutral", "happiness"], speaker_labels=["2_scott", "4_lawrence"])
    assert audio["emotion_labels"] == ["neutral", "happiness"] and audio["speaker_dims"] == 3
    cfg = EmageAudioConfig.from_dict(audio)
    assert cfg.emotion_labels == ("neutral", "happiness") and cfg.null_emotion == 2 and cfg.null_speaker == 2
    with pytest.raises(ValueError, match="speaker_dims must be 2"):
        EmageAudioConfig(speaker_labels=["2_scott"])

    happiness, sadness = EMOTIONS.index("happiness"), EMOTIONS.index("sadness")
    batch = {"motion": torch.zeros(5, 64, 337), "emotion": torch.tensor([0, happiness, -1, sadness, happiness]),
             "speaker": torch.tensor([2, 4, -1, 2, 9])}
    gen = torch.Generator().manual_seed(0)
    speaker, emotion = L.window_labels(cfg, batch, 0.0, gen)
    assert emotion[:, 0].tolist() == [0, 1, 2, 2, 1]  # unknown and unlearned emotions -> "no label"
    assert speaker[:, 0].tolist() == [0, 1, 2, 0, 2]
    speaker, emotion = L.window_labels(cfg, batch, 1.0, gen)
    assert set(emotion.flatten().tolist()) == {2} and set(speaker.flatten().tolist()) == {2}
    plain = EmageAudioConfig()
    speaker, emotion = L.window_labels(plain, batch, 0.5, gen)
    assert emotion is None and speaker.flatten().tolist() == [0] * 5

    assert L.parse_labels("Neutral, happiness") == ["Neutral", "happiness"] and L.parse_labels("ALL") == L.ALL
    assert L.emotion_labels(["Neutral", "anger"]) == ["neutral", "anger"]
    with pytest.raises(ValueError, match="unknown emotion"):
        L.emotion_labels(["joy"])


def test_load_clip_takes_an_explicit_label(labelled, tmp_path):
    ds = labelled["dataset"]
    assert [c.emotion for c in ds.clips] == [EMOTIONS.index("neutral"), EMOTIONS.index("happiness")]
    assert int(ds[len(ds) - 1]["emotion"]) == EMOTIONS.index("happiness")
    assert L.emotion_labels(L.ALL, ds.clips) == ["neutral", "happiness"]
    with pytest.raises(ValueError, match="unknown emotion"):
        load_clip(tmp_path / "x.npz", labelled["wav"], emotion="joy")


def test_cli_options():
    from emage_core.cli.main import build_parser
    from emage_core.cli.train import add_train_parsers

    args = build_parser().parse_args(["generate", "s.wav", "-o", "o.npz", "--emotion", "happiness", "--guidance", "2.5"])
    assert args.guidance == 2.5 and args.emotion == "happiness"
    parser = argparse.ArgumentParser()
    add_train_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", "--data", "d", "--out", "o", "--emotions", "Neutral,happiness"])
    assert args.emotions == "neutral,happiness" and args.label_dropout == 0.15 and args.speakers is None


def test_jobs_pass_guidance_to_the_learned_emotion_only(trained, labelled, tmp_path, monkeypatch):
    """The page's guidance slider reaches generation through JobSettings; the neutral side of a
    comparison stays unconditioned; a model without that emotion refuses guidance."""
    import soundfile as sf

    from emage_core.serve.jobs import JobSettings, run_job

    speech = tmp_path / "s.wav"
    sf.write(speech, labelled["wav"][: 2 * 16000], 16000)
    gen = EmageGenerator.from_pretrained(trained, device="cpu")
    monkeypatch.setenv("EMAGE_CHECKPOINT_DIRS", str(trained.parent))  # jobs name models, never folders
    settings = JobSettings.of(model=f"local:{trained.name}", seed=1, emotion="happiness", guidance=2.0, compare_neutral=True,
                           renderer="stick", size=64)
    result = run_job(speech, settings, tmp_path / "job", generator_for=lambda source: gen)
    meta = json.loads(result.metadata.read_text())
    assert meta["settings"]["generation"]["guidance"] == 2.0
    sides = {p.stem: json.loads(p.with_suffix(".json").read_text()) for p in result.motions}
    assert sides["variant_1"]["guidance"] == 2.0 and sides["variant_1"]["expression"]["learned"] == "happiness"
    assert sides["neutral_1"]["guidance"] == 1.0 and sides["neutral_1"]["expression"]["learned"] is None
    with pytest.raises(ValueError, match="guidance applies to learned emotions only"):
        run_job(speech, JobSettings.of(model=f"local:{trained.name}", emotion="sadness", guidance=2.0, renderer="stick", size=64),
                tmp_path / "job2", generator_for=lambda source: gen)
    with pytest.raises(ValueError, match="guidance must be 0-5"):
        JobSettings.of(guidance=7.0).validate()


def test_cli_generate_speaker(tmp_path):
    """--speaker picks a learned speaker row (recorded in the side-car); a wrong name lists the known ones."""
    import subprocess
    import sys

    import soundfile as sf

    audio_cfg, parts = make_configs("tiny", speaker_labels=["2_scott", "4_lawrence"], **SMALL)
    torch.manual_seed(0)
    ckpt = save_pretrained(EmageModels.from_configs(audio_cfg, parts), tmp_path / "spk", audio_cfg, parts)
    wav = tmp_path / "s.wav"
    t = np.arange(32000) / 16000
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 150 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32), 16000)
    base = [sys.executable, "-m", "emage_core", "generate", str(wav), "--weights", str(ckpt), "--seed", "0"]
    outs = {}
    for who in ("2_scott", "4_lawrence"):
        r = subprocess.run(base + ["-o", str(tmp_path / f"{who}.npz"), "--speaker", who], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert json.loads((tmp_path / f"{who}.json").read_text())["speaker"] == who
        outs[who] = read_beat2(tmp_path / f"{who}.npz").poses
    assert not np.allclose(outs["2_scott"], outs["4_lawrence"])  # different embedding rows
    bad = subprocess.run(base + ["-o", str(tmp_path / "x.npz"), "--speaker", "9_nobody"], capture_output=True, text=True)
    assert bad.returncode != 0 and "2_scott, 4_lawrence" in bad.stderr and "Traceback" not in bad.stderr
