"""Training EmotionGesture on BEAT2 (or any folder of paired motion + speech [+ TextGrid]).

    python -m emage_core train --family emotiongesture --data DIR --out runs/eg [--size tiny|base] [--steps N] [--resume]

    from emage_core.train.emotiongesture import EmotionGestureTrainConfig, train_emotiongesture
    train_emotiongesture(EmotionGestureTrainConfig(data="../shared/fixtures/beat2", out="runs/eg", steps=3000))

The data (`load_takes`): every take's SMPL-X upper body and hands as 43 joints in 6D
(`models.emotiongesture.channels`), its log-mel (one row per frame), its transcript as one word row per
frame from a Praat TextGrid beside the motion or speech (or in a ``textgrid``/``TextGrid`` folder next
to them), and its emotion from its BEAT2 name (or given). A take without a TextGrid trains without the
beat-text loss (the log says which). Windows of S + T frames (seed + generated) every ``stride`` frames.

Each step: the seed is the window's first S real frames (with a little noise, or with probability
``rest_seed_prob`` the rest seed inference starts from), the label is the take's learned emotion (or "no
label" with probability ``label_dropout``, for guidance), and the objective is
``rec + forecast_weight fc + smooth_weight ms + nce_weight nce + cls_weight cls + vae_weight vae_rec
+ kl_weight kl``
(`models.emotiongesture.losses` has the formulas). Adam (linear warm-up, then constant), gradient-norm
clip. Seeded, resumable
(``training_state/state.pt``, read with ``weights_only=True``), progress with every loss term.
"""
from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..audio import load_audio
from ..files import atomic_write
from ..models.emotiongesture import losses as L
from ..models.emotiongesture.audio import log_mel
from ..models.emotiongesture.channels import from_smplx
from ..models.emotiongesture.checkpoint import Statistics, save_pretrained
from ..models.emotiongesture.model import EmotionGestureConfig, EmotionGestureModel
from ..models.emotiongesture.text import frame_words, read_textgrid
from ..motion.beat2 import read_beat2
from ..motion.clip import DEFAULT_FPS as FPS
from .data import EMOTIONS, find_pairs, mirror_motion, parse_beat2_name

#: Model widths by name (`EmotionGestureConfig` fields).
SIZES = {
    "tiny": dict(hidden=128, ff=256, heads=4, encoder_layers=2, decoder_layers=2, emotion_dim=64, beat_dim=64,
                 text_dim=64, contrast_dim=64),
    "base": dict(hidden=256, ff=768, heads=8, encoder_layers=4, decoder_layers=4, emotion_dim=128, beat_dim=128,
                 text_dim=128, contrast_dim=128),
}
STATE_DIR, STATE_FILE = "training_state", "state.pt"
MIN_POSE_STD = 1e-2  # channels that barely move must not blow up when normalised
MIN_MEL_STD = 1e-3


@dataclass
class EmotionGestureTrainConfig:
    data: str
    out: str
    size: str = "tiny"
    steps: int = 3000
    batch_size: int = 16
    lr: float = 1e-3  # after a linear warm-up over `warmup` steps (constant: a resumed run can go on longer)
    warmup: int = 100
    window: int = 64  # T, generated frames per training window (S seed frames come before)
    stride: int = 4
    mirror: bool = False
    emotions: str | Sequence[str] | None = "all"  # labels the VAE learns: "all" = those in the data; None = none
    label_dropout: float = 0.15
    seed_noise: float = 0.02  # std of the noise on seed frames (normalised units): robustness to its own output
    rest_seed_prob: float = 0.1  # windows seeded with the rest pose, as the first window at inference is
    forecast_weight: float = 0.5
    smooth_weight: float = 1.0
    nce_weight: float = 0.1
    cls_weight: float = 0.1
    vae_weight: float = 0.1
    kl_weight: float = 1e-4  # small: the other terms are means over many elements, the KL a sum over Z
    clip_norm: float = 1.0
    seed: int = 0
    device: str | None = None
    save_every: int = 500
    resume: bool = False
    overrides: dict = field(default_factory=dict)  # EmotionGestureConfig fields over the size's


@dataclass
class Take:
    """One recording, ready to window."""

    name: str
    poses: np.ndarray  # (T, 258) 6D channels, not normalised
    mel: np.ndarray  # (T, 80) log-mel, not normalised
    words: np.ndarray | None  # (T,) int64 word rows; None = no transcript
    emotion: str | None  # a BEAT label, None = unknown


def find_textgrid(npz: Path, audio: Path) -> Path | None:
    """The TextGrid of a take: ``stem.TextGrid`` beside the speech or motion, or in a ``textgrid`` /
    ``TextGrid`` folder beside their folders (BEAT2's layout)."""
    stem = Path(npz).stem
    folders = [Path(audio).parent, Path(npz).parent]
    folders += [f.parent / name for f in folders for name in ("textgrid", "TextGrid")]
    return next((f / f"{stem}.TextGrid" for f in folders if (f / f"{stem}.TextGrid").is_file()), None)


def load_take(npz: str | Path, audio: str | Path | np.ndarray, *, textgrid: str | Path | None = None,
              emotion: str | None = None, mirror: bool = False, buckets: int = 2048, name: str | None = None) -> Take:
    """Read one take: motion (resampled to 30 fps), speech, transcript (optional) and emotion (``emotion``,
    else from the BEAT2 name). The take keeps the frames that have both motion and speech."""
    if emotion is not None and emotion not in EMOTIONS:
        raise ValueError(f"unknown emotion {emotion!r}; choose from {', '.join(EMOTIONS)}")
    motion = read_beat2(npz)
    motion = motion if motion.fps == FPS else motion.resample(FPS)
    wav = audio if isinstance(audio, np.ndarray) else load_audio(audio, max_seconds=6 * 3600)
    mel = log_mel(wav)
    T = min(motion.n_frames, mel.shape[0])
    motion = motion.slice(0, T)
    if mirror:
        motion = mirror_motion(motion)
    words = frame_words(read_textgrid(textgrid), T, buckets) if textgrid is not None else None
    if emotion is None and (parsed := parse_beat2_name(Path(npz).stem)) is not None:
        try:
            emotion = parsed.emotion
        except ValueError:  # a sequence number past BEAT's table
            emotion = None
    return Take((name or Path(npz).stem) + ("_mirror" if mirror else ""), from_smplx(motion.poses), mel[:T],
                words, emotion)


def load_takes(root: str | Path, mirror: bool = False, buckets: int = 2048) -> list[Take]:
    """Every (motion, speech) pair under ``root`` (`data.find_pairs`), with its TextGrid when there is one."""
    pairs = find_pairs(root)
    if not pairs:
        raise FileNotFoundError(f"no motion .npz with matching speech found under {root}")
    takes = []
    for npz, audio in pairs:
        wav = load_audio(audio, max_seconds=6 * 3600)
        grid = find_textgrid(npz, audio)
        for m in (False, True) if mirror else (False,):
            takes.append(load_take(npz, wav, textgrid=grid, mirror=m, buckets=buckets))
    return takes


def resolve_labels(spec: str | Sequence[str] | None, takes: Sequence[Take]) -> list[str]:
    """The emotion labels the VAE learns: ``"all"`` = those of ``takes`` (in BEAT's order), a list (or
    comma-separated names), or None / "none" = no labels (only "no label")."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none")):
        return []
    if isinstance(spec, str) and spec.strip().lower() == "all":
        labels = [e for e in EMOTIONS if any(t.emotion == e for t in takes)]
        if not labels:
            raise ValueError("emotions 'all': no take has a known emotion (BEAT2 names, or labels given to load_take)")
        return labels
    names = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    unknown = [s for s in names if s not in EMOTIONS]
    if unknown:
        raise ValueError(f"unknown emotion(s) {unknown}; choose from {', '.join(EMOTIONS)} or 'all'")
    return list(dict.fromkeys(names))


def statistics(takes: Sequence[Take]) -> Statistics:
    """Per-channel mean and std of the poses and the log-mel over every training frame (std floored)."""
    poses = np.concatenate([t.poses for t in takes]).astype(np.float64)
    mel = np.concatenate([t.mel for t in takes]).astype(np.float64)
    return Statistics(poses.mean(0).astype(np.float32), np.maximum(poses.std(0), MIN_POSE_STD).astype(np.float32),
                      mel.mean(0).astype(np.float32), np.maximum(mel.std(0), MIN_MEL_STD).astype(np.float32))


def _state_path(out: Path) -> Path:
    return out / STATE_DIR / STATE_FILE


def train_emotiongesture(config: EmotionGestureTrainConfig, takes: Sequence[Take] | None = None,
                         log: Callable[[str], None] | None = None) -> Path:
    """Train (or resume) and write the checkpoint to ``config.out``; returns that folder.

    takes: the training data (default: `load_takes` of ``config.data``), e.g. takes labelled by hand."""
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    if config.size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {config.size!r}")
    out = Path(config.out)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = EmotionGestureConfig(**{**SIZES[config.size], "window": config.window,
                                  "max_window": max(256, config.window), **config.overrides})
    takes = list(takes) if takes is not None else load_takes(config.data, config.mirror, cfg.word_buckets)
    labels = resolve_labels(config.emotions, takes)
    cfg = dataclasses.replace(cfg, n_labels=len(labels))
    S, T = cfg.seed_frames, config.window
    windows = [(i, s) for i, t in enumerate(takes) for s in range(0, len(t.poses) - (S + T) + 1, config.stride)]
    if not windows:
        raise ValueError(f"no take is {S + T} frames long (seed {S} + window {T})")
    stats = statistics(takes)

    torch.manual_seed(config.seed)
    model = EmotionGestureModel(cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    rng = random.Random(config.seed)
    step = 0
    if config.resume and _state_path(out).is_file():
        state = torch.load(_state_path(out), map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        rng.setstate((3, tuple(int(v) for v in state["rng"]), None))
        step = int(state["step"])
        stats = Statistics(*(state[k].numpy() for k in ("pose_mean", "pose_std", "mel_mean", "mel_std")))
        log(f"resumed at step {step}")

    poses = [((t.poses - stats.pose_mean) / stats.pose_std).astype(np.float32) for t in takes]
    mels = [((t.mel - stats.mel_mean) / stats.mel_std).astype(np.float32) for t in takes]
    no_text = [t.name for t in takes if t.words is None]
    log(f"{len(takes)} takes, {len(windows)} windows of {S} seed + {T} frames, learned emotions: "
        f"{', '.join(labels) or 'none'}; {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{config.size}, on {device}")
    if no_text:
        log(f"{len(no_text)} take(s) without a TextGrid train without the beat-text loss: {', '.join(no_text)}")

    def batch() -> dict[str, torch.Tensor]:
        picks = [windows[rng.randrange(len(windows))] for _ in range(config.batch_size)]
        x = np.stack([poses[i][s:s + S + T] for i, s in picks])
        words = np.stack([takes[i].words[s:s + S + T] if takes[i].words is not None else np.zeros(S + T, np.int64)
                          for i, s in picks])
        label = [labels.index(takes[i].emotion) if takes[i].emotion in labels else cfg.null_label for i, _ in picks]
        label = [cfg.null_label if rng.random() < config.label_dropout else v for v in label]
        seed = x[:, :S].copy()
        for b in range(len(picks)):
            seed[b] = 0.0 if rng.random() < config.rest_seed_prob else seed[b]
        arrays = {"x": x, "seed": seed, "mel": np.stack([mels[i][s:s + S + T] for i, s in picks]), "words": words,
                  "has_text": np.array([takes[i].words is not None for i, _ in picks]),
                  "label": np.array(label, np.int64),
                  "emotion": np.array([EMOTIONS.index(takes[i].emotion) if takes[i].emotion else -1 for i, _ in picks]),
                  "label_emotion": np.array([EMOTIONS.index(labels[v]) if v < len(labels) else -1 for v in label])}
        return {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}

    def learning_rate(step: int) -> float:
        return config.lr * min(1.0, (step + 1) / max(1, config.warmup))

    t0, running = time.monotonic(), {}
    while step < config.steps:
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step)
        b = batch()
        seed = b["seed"] + config.seed_noise * torch.randn_like(b["seed"])
        o = model(b["mel"], seed, b["label"], motion=b["x"])
        target = b["x"][:, S:]
        beat, text = model.contrast_features(o.beat, b["words"])
        terms = {
            "rec": L.motion_reconstruction_loss(torch.cat([seed, o.poses], 1), b["x"], S),
            "fc": L.reconstruction_loss(o.forecast, target),
            "ms": L.motion_smooth_loss(torch.cat([seed, o.poses], 1), b["x"]),
            "nce": L.beat_text_infonce(beat, text, b["words"], b["has_text"]),
            "cls": L.emotion_classification_loss(o.logits, b["emotion"])
                   + L.emotion_classification_loss(o.logits_hat, b["label_emotion"]),
            "vae_rec": L.vae_reconstruction(o.emotion_hat, o.emotion),
            "kl": L.vae_kl(o.mu, o.logvar),
        }
        loss = (terms["rec"] + config.forecast_weight * terms["fc"] + config.smooth_weight * terms["ms"]
                + config.nce_weight * terms["nce"] + config.cls_weight * terms["cls"]
                + config.vae_weight * terms["vae_rec"] + config.kl_weight * terms["kl"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
        optimizer.step()
        step += 1
        for k, v in {"loss": loss, **terms}.items():
            running[k] = 0.98 * running.get(k, v.item()) + 0.02 * v.item()
        if step % 100 == 0 or step == config.steps:
            log(f"step {step}/{config.steps}  " + "  ".join(f"{k} {v:.4f}" for k, v in running.items())
                + f"  ({time.monotonic() - t0:.0f} s)")
        if step % config.save_every == 0 or step == config.steps:
            _save(out, model, optimizer, rng, step, config, stats, labels, running, no_text, len(takes))
    return out


def _save(out: Path, model, optimizer, rng, step, config, stats, labels, losses, no_text, n_takes) -> None:
    training = {**dataclasses.asdict(config), "final_step": step, "takes": n_takes,
                "takes_without_transcript": no_text, "losses": {k: round(v, 5) for k, v in losses.items()}}
    save_pretrained(out, model, stats, emotion_labels=labels, extra={"training": training})
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
             "step": torch.tensor(step), "rng": torch.tensor(rng.getstate()[1], dtype=torch.int64),
             **{k: torch.from_numpy(np.asarray(getattr(stats, k))) for k in ("pose_mean", "pose_std", "mel_mean", "mel_std")}}
    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    atomic_write(_state_path(out), write=lambda p: torch.save(state, p))
    (out / STATE_DIR / "progress.json").write_text(json.dumps({"step": step}) + "\n")
