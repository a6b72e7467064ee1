"""Training DiffSHEG on BEAT2 (or any folder of paired motion + speech), as the reference trains it.

    python -m emage_core train --family diffsheg --data DIR --out runs/diffsheg [--size tiny] [--steps N] [--resume]

The data: every take's SMPL-X motion as DiffSHEG's 232 channels (upper body, hands, jaw, expressions;
`models.diffsheg.channels`), normalised by statistics computed from the training data and saved with the
checkpoint; conditions: the 128-bin mel at 30 fps and a speaker one-hot. No HuBERT (its weights are not
reachable offline; the model is built without it). Windows of ``window`` frames every ``stride``.

The reference's objective and optimiser: 1000 x MSE on the noise, the x0 velocity term, 100 x Huber on
x0 (`models.diffsheg.diffusion.training_losses`); Adam 2e-4; gradient-norm clip 0.5; each window's
condition dropped to the learned null with probability 0.2 (classifier-free guidance). Seeded and
resumable (``training_state/state.pt``, read with ``weights_only=True``).
"""
from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..audio import SAMPLE_RATE, load_audio
from ..files import atomic_write
from ..models.diffsheg.audio import mel_features
from ..models.diffsheg.channels import from_smplx, normalize
from ..models.diffsheg.checkpoint import save_pretrained
from ..models.diffsheg.diffusion import Conditions, SamplerConfig, make_optimizer, training_losses
from ..models.diffsheg.model import DiffSHEGConfig, DiffSHEGDenoiser
from ..motion.beat2 import read_beat2
from ..motion.clip import DEFAULT_FPS as FPS
from .data import find_pairs, mirror_motion, parse_beat2_name

#: Model widths by name. "official" is the released SHOW size (without HuBERT here).
SIZES = {
    "tiny": dict(latent_dim=128, num_layers=4, ff_size=256, num_heads=4, audio_latent_dim=64),
    "base": dict(latent_dim=256, num_layers=6, ff_size=512, num_heads=8, audio_latent_dim=128),
    "official": dict(latent_dim=512, num_layers=8, ff_size=1024, num_heads=8, audio_latent_dim=256),
}
STATE_DIR, STATE_FILE = "training_state", "state.pt"
MIN_STD = 1e-2  # channels that barely move in the data must not blow up when normalised


@dataclass
class DiffshegTrainConfig:
    data: str
    out: str
    size: str = "tiny"
    steps: int = 5000
    batch_size: int = 16
    lr: float = 2e-4
    window: int = 88
    stride: int = 10
    mirror: bool = False
    null_cond_prob: float = 0.2
    clip_norm: float = 0.5
    seed: int = 0
    device: str | None = None
    save_every: int = 1000
    resume: bool = False


@dataclass
class Take:
    name: str
    motion: np.ndarray  # (T, 232) raw (not normalised)
    mel: np.ndarray  # (T, 128)
    speaker: int


def load_takes(root: str | Path, mirror: bool = False) -> tuple[list[Take], list[str]]:
    """Every (motion, speech) pair under ``root`` as DiffSHEG's channels and mel; the speaker names."""
    pairs = find_pairs(root)
    if not pairs:
        raise FileNotFoundError(f"no motion .npz with matching speech found under {root}")
    names = []
    for npz, _ in pairs:
        parsed = parse_beat2_name(npz.stem)
        names.append(f"{parsed.speaker_id}_{parsed.speaker}" if parsed else "speaker")
    speakers = sorted(set(names))
    takes = []
    for (npz, wav_path), speaker in zip(pairs, names):
        wav = load_audio(wav_path, max_seconds=6 * 3600)
        mel = mel_features(wav, SAMPLE_RATE, FPS)
        motion = read_beat2(npz).resample()  # at 30 fps
        T = min(motion.n_frames, mel.shape[0])
        versions = [motion.slice(0, T)] + ([mirror_motion(motion.slice(0, T))] if mirror else [])
        for k, m in enumerate(versions):
            takes.append(Take(npz.stem + ("_mirror" if k else ""), from_smplx(m.poses, m.expressions),
                              mel[:T], speakers.index(speaker)))
    return takes, speakers


def statistics(takes: list[Take]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over every training frame (std floored at `MIN_STD`)."""
    allx = np.concatenate([t.motion for t in takes]).astype(np.float64)
    return allx.mean(0).astype(np.float32), np.maximum(allx.std(0), MIN_STD).astype(np.float32)


def _state_path(out: Path) -> Path:
    return out / STATE_DIR / STATE_FILE


def train_diffsheg(config: DiffshegTrainConfig, log: Callable[[str], None] | None = None) -> Path:
    """Train (or resume) and write the checkpoint to ``config.out``; returns that folder."""
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    if config.size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {config.size!r}")
    out = Path(config.out)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    takes, speakers = load_takes(config.data, config.mirror)
    mean, std = statistics(takes)
    windows = [(i, s) for i, t in enumerate(takes) for s in range(0, len(t.motion) - config.window + 1, config.stride)]
    if not windows:
        raise ValueError(f"no take is {config.window} frames long (the training window)")
    cfg = DiffSHEGConfig(**SIZES[config.size], style_dim=len(speakers), use_hubert=False,
                         pe_buffer_len=max(1200, config.window))
    torch.manual_seed(config.seed)
    model = DiffSHEGDenoiser(cfg).to(device)
    optimizer = make_optimizer(model, config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    rng = random.Random(config.seed)
    step = 0
    if config.resume and _state_path(out).is_file():
        state = torch.load(_state_path(out), map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        rng.setstate((3, tuple(int(v) for v in state["rng"]), None))
        step = int(state["step"])
        mean, std = state["mean"].numpy(), state["std"].numpy()
        log(f"resumed at step {step}")
    normed = [normalize(t.motion, mean, std).astype(np.float32) for t in takes]
    log(f"{len(takes)} takes, {len(windows)} windows of {config.window} frames, {len(speakers)} speaker(s), "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, {config.size}, on {device}")

    def batch() -> tuple[torch.Tensor, Conditions]:
        picks = [windows[rng.randrange(len(windows))] for _ in range(config.batch_size)]
        x0 = np.stack([normed[i][s:s + config.window] for i, s in picks])
        mel = np.stack([takes[i].mel[s:s + config.window] for i, s in picks])
        person = np.zeros((len(picks), len(speakers)), np.float32)
        person[np.arange(len(picks)), [takes[i].speaker for i, _ in picks]] = 1
        return (torch.from_numpy(x0).to(device),
                Conditions(torch.from_numpy(mel).to(device), torch.from_numpy(person).to(device)))

    sampler = SamplerConfig(window=config.window)
    t0, running = time.monotonic(), {}
    while step < config.steps:
        model.train()
        x0, cond = batch()
        optimizer.zero_grad(set_to_none=True)
        r = training_losses(model, x0, cond, generator=generator, null_cond_prob=config.null_cond_prob)
        r["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
        optimizer.step()
        step += 1
        for k in ("loss", "loss_eps", "loss_vel_logged", "loss_x0"):
            running[k] = 0.98 * running.get(k, r[k].item()) + 0.02 * r[k].item()
        if step % 100 == 0 or step == config.steps:
            log(f"step {step}/{config.steps}  " + "  ".join(f"{k} {v:.4f}" for k, v in running.items())
                + f"  ({time.monotonic() - t0:.0f} s)")
        if step % config.save_every == 0 or step == config.steps:
            _save(out, model, optimizer, generator, rng, step, config, mean, std, speakers, sampler, running)
    return out


def _save(out: Path, model, optimizer, generator, rng, step, config, mean, std, speakers, sampler, losses) -> None:
    extra = {"training": {**dataclasses.asdict(config), "final_step": step,
                          "losses": {k: round(v, 5) for k, v in losses.items()}}}
    save_pretrained(out, model, mean, std, sampler=sampler, speakers=speakers, extra=extra)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
             "step": torch.tensor(step), "rng": torch.tensor(rng.getstate()[1], dtype=torch.int64),
             "mean": torch.from_numpy(np.asarray(mean)), "std": torch.from_numpy(np.asarray(std))}
    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    atomic_write(_state_path(out), write=lambda p: torch.save(state, p))
    (out / STATE_DIR / "progress.json").write_text(json.dumps({"step": step}) + "\n")
