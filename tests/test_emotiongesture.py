"""EmotionGesture in the studio: each loss term on its own, the transcript and audio inputs, windows of any
length, the checkpoint layout, the generator (exact lengths, seeds, emotions, locks, labels), a short
training run on a two-label set made here, resuming, and the command line.

The family is registered here (`registry.register`, undone after each test) until it is a built-in."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import BEAT2, REPO, need
from emage_core.edit.locks import Lock
from emage_core.generate import registry
from emage_core.generate.emotiongesture import BUNDLED, EmotionGestureGenerator
from emage_core.generate.settings import EmotionGestureOptions, GenerationSettings, SettingsError
from emage_core.models.emotiongesture import losses as L
from emage_core.models.emotiongesture.audio import log_mel
from emage_core.models.emotiongesture.channels import JOINTS, from_smplx, part_channels, to_smplx
from emage_core.models.emotiongesture.checkpoint import Statistics, load_pretrained, save_pretrained
from emage_core.models.emotiongesture.inference import lock_ends, rollout
from emage_core.models.emotiongesture.model import EmotionGestureConfig, EmotionGestureModel
from emage_core.models.emotiongesture.text import frame_words, read_textgrid, word_bucket
from emage_core.motion.beat2 import read_beat2, write_beat2
from emage_core.motion.clip import Motion
from emage_core.motion.kinematics import joint_positions
from emage_core.motion.skeleton import PARTS, UPPER_JOINTS

SMALL = dict(hidden=32, ff=64, heads=2, encoder_layers=1, decoder_layers=1, emotion_dim=16, beat_dim=16, text_dim=16,
             contrast_dim=16, latent_dim=8, word_buckets=256, seed_frames=8, window=32, max_window=64, gate_frames=8)
WRISTS = [20, 21]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _speech(seconds: float, seed: int = 0) -> np.ndarray:
    n = int(round(seconds * 16000))
    t = np.arange(n) / 16000
    env = np.clip(np.sin(2 * np.pi * 3.1 * t), 0, None)
    return (0.3 * env * np.sin(2 * np.pi * 160 * t) + 0.02 * np.random.default_rng(seed).normal(size=n)).astype(np.float32)


def _stats() -> Statistics:
    rest = np.tile(np.array([1, 0, 0, 0, 1, 0], np.float32), len(JOINTS))
    return Statistics(rest, np.full(258, 0.1, np.float32), np.full(80, -0.6, np.float32), np.full(80, 0.2, np.float32))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A tiny random EmotionGesture in our layout that learned two labels."""
    torch.manual_seed(0)
    model = EmotionGestureModel(EmotionGestureConfig(**SMALL, n_labels=2))
    return save_pretrained(tmp_path_factory.mktemp("eg") / "ckpt", model, _stats(), emotion_labels=["neutral", "happiness"])


@pytest.fixture(scope="module")
def gen(folder) -> EmotionGestureGenerator:
    return EmotionGestureGenerator.from_pretrained(folder, device="cpu")


# -- each loss term on its own ----------------------------------------------------------------------


def test_infonce_ranks_aligned_beat_and_word_features_above_misaligned():
    g = torch.Generator().manual_seed(0)
    words = torch.randint(1, 50, (4, 40), generator=g)
    words[:, ::5] = 0  # pauses
    text = torch.randn(4, 40, 16, generator=g)
    aligned = text + 0.3 * torch.randn(4, 40, 16, generator=g)
    shifted = torch.roll(aligned, 3, dims=1)  # the same features, three frames late
    other = torch.randn(4, 40, 16, generator=g)
    loss = {name: L.beat_text_infonce(b, text, words).item() for name, b in
            (("aligned", aligned), ("shifted", shifted), ("unrelated", other))}
    assert loss["aligned"] < 0.5 * loss["shifted"] and loss["aligned"] < 0.5 * loss["unrelated"], loss
    # only frames with a word are anchors: features of silent frames do not change the loss
    silent = aligned.clone()
    silent[words == 0] = torch.randn(int((words == 0).sum()), 16, generator=g)
    assert abs(L.beat_text_infonce(silent, text, words).item() - loss["aligned"]) < 1e-5
    # windows without a transcript take no part; none at all: zero
    none = torch.zeros(4, dtype=torch.bool)
    assert L.beat_text_infonce(aligned, text, words, has_text=none).item() == 0.0
    some = torch.tensor([True, True, False, False])
    torch.testing.assert_close(L.beat_text_infonce(aligned, text, words, has_text=some),
                               L.beat_text_infonce(aligned[:2], text[:2], words[:2]))


def _real_channels(seconds: float = 10) -> torch.Tensor:
    motion = read_beat2(need(BEAT2 / "2_scott_0_1_1.npz")).slice(0, int(seconds * 30))
    x = from_smplx(motion.poses)
    return torch.from_numpy((x - x.mean(0)) / np.maximum(x.std(0), 1e-2))[None]  # (1, T, 258), normalised


def test_motion_smooth_loss_prefers_a_smoothed_copy_of_a_jittery_clip():
    from scipy.ndimage import gaussian_filter1d

    clean = _real_channels()
    jittery = clean + 0.15 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    smoothed = torch.from_numpy(gaussian_filter1d(jittery.numpy(), 2.0, axis=1))
    windows = lambda x: x.unfold(1, 72, 72).permute(0, 1, 3, 2).reshape(-1, 72, 258)  # noqa: E731
    jit, smo, cle = windows(jittery), windows(smoothed), windows(clean)
    # the target is the jittery capture itself, as in training on jittery data
    assert L.motion_smooth_loss(smo, jit) < 0.5 * L.motion_smooth_loss(jit, jit)
    # alone it damps all motion (a still copy scores lower still); beside the reconstruction, as trained,
    # the smoothed copy beats both the jittery capture and a still pose
    still = cle.mean(dim=1, keepdim=True).expand_as(cle)
    total = {name: (L.reconstruction_loss(x, jit) + 10 * L.motion_smooth_loss(x, jit)).item()
             for name, x in (("smoothed", smo), ("jittery", jit), ("still", still))}
    assert total["smoothed"] < total["jittery"] and total["smoothed"] < total["still"], total
    # it is the KL of the temperature-softened real offsets to the generated ones (Γ = 10)
    d_hat, d = L.offsets(smo), L.offsets(jit)
    p = torch.softmax(d / 10, dim=1)
    want = (p * (torch.log(p) - torch.log_softmax(d_hat, dim=1))).sum(1).mean()
    torch.testing.assert_close(L.motion_smooth_loss(smo, jit), want)


def test_output_low_pass_removes_jitter_and_keeps_slow_motion():
    """The model's last layer: frame-to-frame alternation is cut ~30x, a 1 Hz swing keeps >90% of its
    amplitude, a straight ramp passes exactly (away from the ends), and sigma 0 is the identity."""
    from emage_core.models.emotiongesture.model import temporal_lowpass

    t = torch.arange(120, dtype=torch.float32)
    jitter = torch.where(t % 2 == 0, 1.0, -1.0)
    swing = torch.sin(2 * torch.pi * t / 30)
    ramp = 0.01 * t
    x = torch.stack([jitter, swing, ramp], dim=-1)[None]  # (1, 120, 3)
    y = temporal_lowpass(x, 2.0)
    assert y.shape == x.shape
    mid = slice(10, 110)
    assert y[0, mid, 0].abs().max() < 1 / 30
    assert y[0, mid, 1].abs().max() > 0.9
    torch.testing.assert_close(y[0, mid, 2], ramp[mid], atol=1e-5, rtol=0)
    assert torch.equal(temporal_lowpass(x, 0.0), x)


def test_classifier_vae_and_reconstruction_terms():
    logits = torch.tensor([[4.0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 9.0]])
    one = torch.nn.functional.cross_entropy(logits[:1], torch.tensor([0]))
    assert L.emotion_classification_loss(logits, torch.tensor([0, -1])).item() == pytest.approx(one.item())  # -1 ignored
    assert L.emotion_classification_loss(logits, torch.tensor([-1, -1])).item() == 0.0
    assert L.emotion_classification_loss(logits, torch.tensor([1, 7])) > 1.0
    assert L.vae_kl(torch.zeros(3, 8), torch.zeros(3, 8)).item() == 0.0
    assert L.vae_kl(torch.ones(3, 8), torch.zeros(3, 8)).item() == pytest.approx(4.0)
    e = torch.randn(2, 5, 4, requires_grad=True)
    e_hat = torch.zeros(2, 5, 4, requires_grad=True)
    L.vae_reconstruction(e_hat, e).backward()
    assert e.grad is None and e_hat.grad is not None  # the VAE follows the audio's features, not the reverse
    assert L.reconstruction_loss(torch.ones(2, 3, 4), torch.zeros(2, 3, 4)).item() == 1.0


# -- inputs -----------------------------------------------------------------------------------------


def test_textgrid_words_per_frame(tmp_path):
    words = read_textgrid(need(BEAT2 / "2_scott_0_1_1.TextGrid"))
    assert len(words) == 199 and (words[0].text, words[0].start, words[0].end) == ("the", 1.42, 1.52)
    rows = frame_words(words, 1906, 2048)
    assert rows[:42].max() == 0 and rows[43] == word_bucket("the", 2048) and 0.8 < (rows > 0).mean() < 0.95
    short = tmp_path / "short.TextGrid"  # Praat's short text format
    short.write_text('File type = "ooTextFile"\nObject class = "TextGrid"\n\n0\n1\n<exists>\n1\n"IntervalTier"\n'
                     '"words"\n0\n1\n3\n0\n0.2\n""\n0.2\n0.5\n"Hello"\n0.5\n1\n"say ""hi"""\n')
    got = read_textgrid(short)
    assert [(w.start, w.end, w.text) for w in got] == [(0.2, 0.5, "Hello"), (0.5, 1.0, 'say "hi"')]
    assert word_bucket("Hello", 64) == word_bucket("hello", 64) != 0 and word_bucket(" ", 64) == 0
    bad = tmp_path / "bad.TextGrid"
    bad.write_text("not a textgrid")
    with pytest.raises(ValueError, match="not a Praat TextGrid"):
        read_textgrid(bad)


@pytest.mark.parametrize("n", [4800, 16000, 16001, 37920, 533 * 7])
def test_log_mel_has_one_row_per_frame(n):
    mel = log_mel(_speech(n / 16000))
    assert mel.shape == (n * 30 // 16000, 80) and mel.dtype == np.float32
    assert -1.0 <= mel.min() and mel.max() <= 0.2
    silence = log_mel(np.zeros(n, np.float32))
    assert np.all(silence <= -0.8)  # digital silence stays quiet (no gain normalisation blows it up)


def test_channels_round_trip_and_parts():
    rng = np.random.default_rng(0)
    poses = rng.normal(0, 0.4, (5, 55, 3)).astype(np.float32)
    back = to_smplx(from_smplx(poses))
    np.testing.assert_allclose(back[:, list(JOINTS)], poses[:, list(JOINTS)], atol=1e-4)
    assert not back[:, [0, 1, 2, 22, 23, 24]].any()
    assert len(part_channels("upper")) == 13 * 6 and len(part_channels("hands")) == 30 * 6 and part_channels("face") == []


# -- windows ---------------------------------------------------------------------------------------


class _Recorder(torch.nn.Module):
    """Stands in for the network: records each window's seed and returns frames numbered by window."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg, self.w, self.seeds = cfg, torch.nn.Parameter(torch.zeros(1)), []

    def forward(self, mel, seed, label, z=None):
        self.seeds.append(seed[0].clone())
        T = mel.shape[1] - seed.shape[1]
        poses = torch.full((len(label), T, self.cfg.pose_dim), float(len(self.seeds)))
        return type("Out", (), {"poses": poses})


def test_rollout_seeds_each_window_with_the_frames_before_it_and_restarts_after_a_lock():
    cfg = EmotionGestureConfig(**SMALL)
    model = _Recorder(cfg)
    n, T = 100, 32
    known = np.full((n, 258), -7.0, np.float32)
    mask = np.zeros((n, 258), bool)
    mask[40:50, part_channels("upper")] = True  # an upper-body lock over frames 40-49
    assert lock_ends(mask) == [50]
    x = rollout(model, np.zeros((n, 80), np.float32), label=0, window=T, silence=np.zeros(80, np.float32),
                known=known, known_mask=mask)
    assert x.shape == (n, 258)
    assert torch.equal(model.seeds[0], torch.zeros(8, 258))  # the rest seed before frame 0
    assert torch.all(model.seeds[1] == 1)  # frames 24-31: window 1's
    # window 1 (frames 32-63) covers the lock: the next window restarts at its end (50), seeded by frames 42-49
    seed_after = model.seeds[2]
    assert torch.all(seed_after[:, part_channels("upper")] == -7) and torch.all(seed_after[:, part_channels("hands")] == 2)
    np.testing.assert_array_equal(x[40:50][:, part_channels("upper")], -7)  # locked frames are never overwritten
    assert np.all(x[50:82] == 3) and np.all(x[82:] == 4) and len(model.seeds) == 4  # windows at 0, 32, 50, 82


# -- the generator ----------------------------------------------------------------------------------


def test_checkpoint_round_trip_is_strict(folder, tmp_path):
    ckpt = load_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["family"] == "emotiongesture" and config["emotion_labels"] == ["neutral", "happiness"]
    assert ckpt.emotion_labels == ("neutral", "happiness") and ckpt.config.hidden == 32
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
    (bad / "config.json").write_text(json.dumps({**config, "emotion_labels": ["neutral"]}))
    with pytest.raises(ValueError, match="1 emotion_labels for a model built with 2"):
        load_pretrained(bad)


@pytest.mark.parametrize("seconds", [0.3, 0.8, 1.0, 2.37, 75.0])
def test_exact_frame_count_and_parts_at_rest(gen, seconds):
    wav = _speech(seconds)
    clip = gen.generate(wav, GenerationSettings(seed=1))[0]
    assert clip.n_frames == wav.shape[0] * 30 // 16000 and np.isfinite(clip.poses).all()
    assert np.abs(clip.poses[:, list(PARTS["upper"])]).max() > 1e-3
    not_modelled = list(PARTS["lower"]) + list(PARTS["face"]) + [23, 24]
    assert not clip.poses[:, not_modelled].any() and not clip.trans.any() and not clip.expressions.any()


def test_seeds_variants_and_metadata(gen, folder):
    wav = _speech(1.5)
    a = gen.generate(wav, GenerationSettings(seed=4, variants=2, temperature=1.0))
    b = gen.generate(wav, GenerationSettings(seed=4, variants=2, temperature=1.0))
    assert [c.meta["seed"] for c in a] == [4, 5]
    assert all(np.array_equal(x.poses, y.poses) for x, y in zip(a, b))  # same seed, same motion
    assert not np.allclose(a[0].poses, a[1].poses)  # another latent sample, another motion
    still = gen.generate(wav, GenerationSettings(seed=4, variants=2, temperature=0.0))
    assert np.array_equal(still[0].poses, still[1].poses)  # temperature 0: the latent's mean
    meta = a[0].meta
    for key in ("model", "family", "model_id", "weights", "device", "versions", "parts", "seed", "settings", "locks",
                "audio_sha256", "expression"):
        assert key in meta, key
    assert meta["family"] == "emotiongesture" and meta["parts"] == {
        "generated": ["upper", "hands"], "completed_by": {}, "at_rest": ["face", "lower", "global"]}
    assert meta["weights"]["files"]["model.safetensors"] == hashlib.sha256(
        (folder / "model.safetensors").read_bytes()).hexdigest()
    assert meta["audio_sha256"] == hashlib.sha256(wav.tobytes()).hexdigest() and meta["settings"]["seed"] == 4
    assert gen.capabilities.parts == gen.capabilities.lock_parts == frozenset({"upper", "hands"})
    assert gen.emotions == ("neutral", "happiness")


def test_emotions_learned_or_explicit_and_their_checks(gen):
    wav = _speech(1.2)
    happy = gen.generate(wav, GenerationSettings(seed=0, emotion="happiness"))[0]
    assert happy.meta["expression"] == {"learned": "happiness", "explicit": None} and happy.meta["emotion"] == "happiness"
    neutral = gen.generate(wav, GenerationSettings(seed=0, emotion="neutral"))[0]
    assert not np.allclose(happy.poses, neutral.poses)  # the label conditions the model
    anger = gen.generate(wav, GenerationSettings(seed=0, emotion="anger"))[0]  # not learned: the explicit preset
    assert anger.meta["expression"]["learned"] is None and anger.meta["expression"]["explicit"]["preset"] == "anger"
    guided = gen.generate(wav, GenerationSettings(seed=0, emotion="happiness", guidance=2.0))[0]
    assert guided.meta["guidance"] == 2.0 and not np.allclose(guided.poses, happy.poses)
    with pytest.raises(SettingsError, match="learned no 'anger'"):
        gen.generate(wav, GenerationSettings(emotion="anger", guidance=2.0))
    with pytest.raises(SettingsError, match="no learned speaker"):
        gen.generate(wav, GenerationSettings(speaker="2_scott"))
    with pytest.raises(SettingsError, match="window must be"):
        gen.generate(wav, window=1000)
    with pytest.raises(SettingsError, match="window must be"):
        EmotionGestureOptions(window=4).validate()
    assert gen.generate(wav, window=16)[0].meta["windows"] == {"window": 16, "overlap": 8, "seed_frames": 8}  # at most half
    options = EmotionGestureOptions(window=16, overlap=4)
    assert gen.generate(wav, GenerationSettings(emotiongesture=options))[0].meta["windows"]["overlap"] == 4
    with pytest.raises(SettingsError, match="overlap"):
        EmotionGestureOptions(window=16, overlap=16).validate()


def test_overlapping_windows_crossfade_into_the_previous_window(gen):
    """With overlap O, window k starts O frames before window k-1 stopped, is seeded by the S frames
    before that, and its first O frames blend from the previous window's into its own."""
    model, S, T, O = gen.ckpt.model, gen.ckpt.config.seed_frames, 16, 4
    rng = np.random.default_rng(0)
    mel = rng.normal(size=(40, 80)).astype(np.float32)
    silence = np.zeros(80, np.float32)
    seeds = []
    hook = model.register_forward_pre_hook(lambda m, args: seeds.append(args[1][0].clone()))
    try:
        x = rollout(model, mel, label=model.cfg.null_label, window=T, silence=silence, overlap=O)
    finally:
        hook.remove()
    starts = [0, T - O, 2 * (T - O)]
    assert len(seeds) == 3  # 0-16, 12-28, 24-40
    for start, seed in zip(starts[1:], seeds[1:]):
        np.testing.assert_allclose(seed.numpy(), x[start - S:start], atol=1e-6)  # final values before the blend
    no_blend = rollout(model, mel, label=model.cfg.null_label, window=T, silence=silence, overlap=0)
    np.testing.assert_allclose(x[:T - O], no_blend[:T - O], atol=1e-6)  # the first window is as without overlap
    assert not np.allclose(x[T - O:T], no_blend[T - O:T])  # the overlap is a blend, not the first window's


def test_locks_are_seeds_and_exact_copies(gen):
    wav = _speech(2.0)
    rng = np.random.default_rng(3)
    ref = Motion(poses=rng.normal(0, 0.2, (60, 55, 3)), expressions=rng.normal(0, 0.5, (60, 100)),
                 trans=np.cumsum(rng.normal(0, 0.01, (60, 3)), 0))
    locks = [Lock("upper", 0.5, 1.2), Lock("hands", 0.0, 0.4), Lock("face", 0.0, 0.6), Lock("lower", 1.0, 2.0)]
    clip = gen.generate(wav, GenerationSettings(seed=2, locks=locks, reference=ref))[0]
    for lock in locks:
        span, joints = slice(*lock.frames()), list(PARTS[lock.part])
        np.testing.assert_allclose(clip.poses[span][:, joints], ref.poses[span][:, joints], atol=1e-5)
    np.testing.assert_allclose(clip.expressions[:18], ref.expressions[:18], atol=1e-5)
    assert clip.meta["locks"] == [str(lock) for lock in locks]
    # after the upper-body lock the model continues from it: the window restarted at its end
    free = gen.generate(wav, GenerationSettings(seed=2))[0]
    upper = list(PARTS["upper"])
    assert not np.allclose(clip.poses[36:40][:, upper], free.poses[36:40][:, upper])


def test_complete_with_emage_labels_the_parts(gen):
    from emage_core.generate.complete import complete_parts

    wav = _speech(1.0)
    clips = gen.generate(wav, GenerationSettings(seed=1))
    done = complete_parts(clips, wav, gen.capabilities.parts, registry.load("emage", device="cpu"), GenerationSettings())
    np.testing.assert_allclose(done[0].poses[:, list(PARTS["upper"])], clips[0].poses[:, list(PARTS["upper"])], atol=1e-6)
    assert done[0].meta["parts"] == {"generated": ["upper", "hands"], "at_rest": [],
                                     "completed_by": {p: "emage" for p in ("face", "lower", "global")}}


def test_built_in_family_loads_by_reference(folder):
    assert "emotiongesture" in registry.families()
    assert ("EmotionGesture: bundled default", "emotiongesture") in registry.choices()  # the page's selector
    g = registry.load(f"emotiongesture:{folder}", device="cpu")
    assert g.model_id == f"emotiongesture:{folder}" and g.family == "emotiongesture"


# -- training ---------------------------------------------------------------------------------------

SECONDS = 10
GAIN = 1.6  # upper-body rotation scale of the "happiness" copy


@pytest.fixture(scope="module")
def labelled():
    """The two labelled takes, same speech and transcript: calm = the recording, lively = upper body x GAIN."""
    from emage_core.audio import load_audio
    from emage_core.train.emotiongesture import load_take

    npz, wav_path, grid = (need(BEAT2 / f"2_scott_0_1_1.{ext}") for ext in ("npz", "wav", "TextGrid"))
    T = SECONDS * 30
    calm = read_beat2(npz).slice(0, T)
    lively = calm.slice()
    lively.poses[:, list(UPPER_JOINTS)] *= GAIN
    wav = load_audio(wav_path)[: T * 16000 // 30]
    return {"calm": calm, "lively": lively, "wav": wav, "grid": grid, "load_take": load_take}


def _write_takes(labelled, root: Path) -> list:
    root.mkdir(parents=True, exist_ok=True)
    takes = []
    for name, emotion in (("calm", "neutral"), ("lively", "happiness")):
        write_beat2(labelled[name], root / f"{name}.npz")
        takes.append(labelled["load_take"](root / f"{name}.npz", labelled["wav"], textgrid=labelled["grid"],
                                           emotion=emotion, buckets=SMALL["word_buckets"]))
    return takes


def _wrists(poses: np.ndarray) -> np.ndarray:
    """(T, 2, 3) wrist positions in the body frame (no root rotation, no translation)."""
    poses = poses.copy()
    poses[:, 0] = 0
    T = len(poses)
    return joint_positions(Motion(poses=poses, expressions=np.zeros((T, 100)), trans=np.zeros((T, 3))))[:, WRISTS]


def _energy(poses: np.ndarray, wrist_mean: np.ndarray) -> float:
    """Mean distance (m) of the wrists from ``wrist_mean`` in the body frame."""
    return float(np.linalg.norm(_wrists(poses) - wrist_mean, axis=-1).mean())


def test_short_training_run_learns_the_labels_and_the_latent_varies_the_motion(labelled, tmp_path):
    from emage_core.train.emotiongesture import EmotionGestureTrainConfig, train_emotiongesture

    takes = _write_takes(labelled, tmp_path / "data")
    overrides = {k: v for k, v in SMALL.items() if k not in ("window",)}
    cfg = EmotionGestureTrainConfig(data="", out=str(tmp_path / "run"), steps=300, batch_size=8, lr=2e-3, window=32,
                                    stride=2, rest_seed_prob=0.3, seed=0, device="cpu", save_every=10**6,
                                    overrides=overrides)
    lines = []
    train_emotiongesture(cfg, takes=takes, log=lines.append)
    assert any("step 300/300" in line and "nce" in line and "ms" in line for line in lines)
    gen = EmotionGestureGenerator.from_pretrained(tmp_path / "run", device="cpu")
    assert gen.emotions == ("neutral", "happiness")

    wrist_mean = _wrists(labelled["calm"].poses).mean(0)
    wav = labelled["wav"]
    data = {"neutral": _energy(labelled["calm"].poses, wrist_mean), "happiness": _energy(labelled["lively"].poses, wrist_mean)}
    out = {e: _energy(gen.generate(wav, GenerationSettings(seed=0, emotion=e))[0].poses, wrist_mean)
           for e in ("neutral", "happiness")}
    print(f"\nwrist distance from the calm mean pose (m): data {data}, generated {out}")
    assert data["happiness"] > 1.3 * data["neutral"]
    assert out["happiness"] > 1.2 * out["neutral"], out

    a, b = (gen.generate(wav, GenerationSettings(seed=s, temperature=1.0, emotion="happiness"))[0] for s in (0, 1))
    pa, pb = _wrists(a.poses), _wrists(b.poses)
    apart = float(np.linalg.norm(pa - pb, axis=-1).mean())
    print(f"mean wrist distance between two latent samples: {apart:.3f} m")
    assert apart > 0.01  # a centimetre on average: different motion, not rounding


def test_training_from_a_folder_resumes_exactly(labelled, tmp_path):
    from safetensors.torch import load_file

    from emage_core.train.emotiongesture import EmotionGestureTrainConfig, load_takes, train_emotiongesture

    data = tmp_path / "data"
    _write_takes(labelled, data)
    sf.write(data / "calm.wav", labelled["wav"], 16000)
    sf.write(data / "lively.wav", labelled["wav"], 16000)
    (data / "calm.TextGrid").write_bytes(labelled["grid"].read_bytes())  # lively has none
    takes = load_takes(data, buckets=SMALL["word_buckets"])
    assert [t.words is not None for t in takes] == [True, False]

    overrides = {k: v for k, v in SMALL.items() if k not in ("window",)}
    base = dict(data=str(data), batch_size=4, lr=1e-3, window=16, stride=8, seed=3, device="cpu", emotions=None,
                save_every=6, overrides=overrides)
    straight = tmp_path / "straight"
    lines = []
    train_emotiongesture(EmotionGestureTrainConfig(out=str(straight), steps=12, **base), log=lines.append)
    assert any("without a TextGrid train without the beat-text loss: lively" in line for line in lines)
    assert json.loads((straight / "config.json").read_text())["emotion_labels"] == []
    halves = tmp_path / "halves"
    train_emotiongesture(EmotionGestureTrainConfig(out=str(halves), steps=6, **base), log=lambda m: None)
    lines = []
    train_emotiongesture(EmotionGestureTrainConfig(out=str(halves), steps=12, resume=True, **base), log=lines.append)
    assert lines[0] == "resumed at step 6"
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(halves / "model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


# -- the command line and the bundled default -----------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "emage_core", *args], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=600)


def test_cli_generate_with_a_lock(folder, tmp_path):
    wav = tmp_path / "s.wav"
    sf.write(wav, _speech(1.2), 16000)
    rng = np.random.default_rng(1)
    ref = write_beat2(Motion(poses=rng.normal(0, 0.2, (36, 55, 3)), expressions=np.zeros((36, 100)),
                             trans=np.zeros((36, 3))), tmp_path / "ref.npz")
    out = tmp_path / "out.npz"
    r = _cli("generate", str(wav), "-o", str(out), "--model", f"emotiongesture:{folder}", "--seed", "1",
             "--lock", "hands:0.2-0.8", "--reference", str(ref), "--emotion", "happiness")
    assert r.returncode == 0, r.stderr
    m, want = read_beat2(out), read_beat2(ref)
    hands = list(PARTS["hands"])
    np.testing.assert_allclose(m.poses[6:24][:, hands], want.poses[6:24][:, hands], atol=1e-5)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["family"] == "emotiongesture" and meta["expression"]["learned"] == "happiness"


def test_bundled_default_generates_offline_with_an_explicit_emotion(tmp_path):
    """The bundled default learned only "neutral": happiness is its explicit preset, and says so."""
    if not (BUNDLED / "model.safetensors").is_file():
        pytest.fail(f"the bundled default {BUNDLED} is missing")
    n = int(3.7 * 16000) + 5
    wav = tmp_path / "s.wav"
    sf.write(wav, _speech(n / 16000), 16000)
    out = tmp_path / "out.npz"
    r = _cli("generate", str(wav), "-o", str(out), "--model", "emotiongesture", "--emotion", "happiness", "--seed", "0")
    assert r.returncode == 0, r.stderr
    meta = json.loads(out.with_suffix(".json").read_text())
    assert read_beat2(out).n_frames == n * 30 // 16000
    assert meta["expression"]["learned"] is None and meta["expression"]["explicit"]["preset"] == "happiness"
    assert meta["model_id"] == "emotiongesture" and meta["weights"]["files"]["model.safetensors"]
    config = json.loads((BUNDLED / "config.json").read_text())
    assert config["family"] == "emotiongesture" and config["emotion_labels"] == ["neutral"]
    size = sum(f.stat().st_size for f in BUNDLED.iterdir() if f.is_file())
    assert size < 25e6 and (BUNDLED / "README.md").is_file()


def test_bundled_default_windows_meet_without_seams():
    """On unseen speech the jerk where windows meet (their crossfades and the frames around them) is like
    the jerk elsewhere."""
    from emage_core.audio import load_audio

    gen = EmotionGestureGenerator.from_pretrained(device="cpu")
    wav = load_audio(need(BEAT2 / "2_scott_0_2_2.wav"))[: 30 * 16000]
    clip = gen.generate(wav, GenerationSettings(seed=0))[0]
    pos = joint_positions(clip)[:, list(PARTS["upper"])]
    jerk = np.linalg.norm(np.diff(pos, n=3, axis=0), axis=-1).mean(axis=1) * 30**3  # (T - 3,) frame t..t+3
    T, O = clip.meta["windows"]["window"], clip.meta["windows"]["overlap"]
    starts = np.arange(T - O, clip.n_frames, T - O)  # where each later window begins (its crossfade)
    near = np.zeros(len(jerk), bool)
    for s in starts:
        near[max(0, s - 3):s + O + 1] = True  # every third difference that touches a crossfade's ends
    ratio = jerk[near].mean() / jerk[~near].mean()
    print(f"\njerk near {len(starts)} window joins / elsewhere: {ratio:.2f}")
    assert ratio < 1.5
