"""Train EMAGE on paired motion + speech, writing checkpoints in the released layout.

Two stages, as the reference trains them:

1. **Motion autoencoders** (``stage="vq"``): the four part VQ-VAEs (face 106, upper 78, hands 180,
   lower 61 = 9 joints 6D + translation + foot contact) and the global autoencoder (lower 61 ->
   61, of which channels 54:57 are (vx, y, vz) and 57:61 contact). Loss: L1 reconstruction plus
   L1 on its 1st-3rd frame differences (against jitter), plus the quantizer's codebook + commitment terms
   (straight-through gradients); codes unused for 100 steps are restarted from encoder outputs
   during the first half.
2. **Audio model** (``stage="audio"``), with the VQ encoders frozen to give per-part target
   latents and code indices. Three forward passes per batch (reference README, "Training"):
   seed (only the first ``seed_frames`` frames given), random mask with audio, and the same mask
   without audio (masked gesture reconstruction, ``use_audio=False``). Each: MSE on latents x
   lu/ll/lh/lf + cross-entropy on codes x cu/cl/ch (cf = 0). Adam 1.5e-4, gradient clip 0.99,
   mask ratio ramped from 0.05 to 1 over the first ``mask_ramp`` of the steps.
   Optional learned labels (``emotions``, ``speakers``; see `emage_core.labels`): the audio config
   declares them and each window's label (dropped to "no label" with ``label_dropout``) conditions
   the three passes, for classifier-free guidance at inference.

Output folder (what `EmageGenerator.from_pretrained(out)` loads, like the released repo)::

    config.json + model.safetensors                   audio model
    emage_vq/{face,upper,hands,lower,global}/...      the five autoencoders
    training_state/state.pt                           optimizers, step, RNG: for --resume only

    python -m emage_core train --data DIR --out runs/x --size tiny --steps 2000 [--resume]

(the command line is in `emage_core.cli_train`).
"""
from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ..motion.clip import DEFAULT_FPS
from .. import __version__
from ..files import atomic_write
from ..models.hub import CONFIG_NAME, SUBMODEL_FOLDERS, SUBMODELS, load_checkpoint
from ..models.emage.model import (FACE_DIM, GLOBAL_JOINTS_SLICE, GLOBAL_VELOCITY_SLICE, HANDS_DIM, LOWER_DIM,
                                  UPPER_DIM, VQ_PARTS, EmageModels)

__all__ = ["SIZES", "TrainConfig", "make_configs", "save_pretrained", "train", "autoencoder_losses", "audio_losses",
           "part_targets", "mask_ratio"]

# Widths per size; layer counts, window (64) and seed frames (4) are the released ones everywhere.
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=128, audio_f=64, motion_f=64, codebook=64),  # 5.5 M params, 22 MB: CPU
    "base": dict(hidden_size=256, audio_f=128, motion_f=128, codebook=128),  # 21 M params, 83 MB
    "official": dict(hidden_size=768, audio_f=256, motion_f=256, codebook=256),  # 153 M, the release
}
PART_DIMS = {"face": FACE_DIM, "upper": UPPER_DIM, "hands": HANDS_DIM, "lower": LOWER_DIM, "global": LOWER_DIM}
PART_LAYERS = {"face": 2, "upper": 2, "hands": 2, "lower": 4, "global": 4}

STATE_DIR = "training_state"
STATE_FILE = "state.pt"
JAW_WEIGHT = 10.0  # the jaw moves ~0.01 rad in BEAT2, 30x less than expressions: weigh it up or the face VQ drops it
RESTART_EVERY = 100  # steps between restarts of codes no window used


# -----------------------------------------------------------------------------------------
# Configs and checkpoint files


def make_configs(size: str = "tiny", *, emotion_labels: list[str] | None = None,
                 speaker_labels: list[str] | None = None, aligned_audio: bool = True,
                 **overrides: int) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``config.json`` dicts of a size: (audio model, {face, upper, hands, lower, global}).

    Keys are those of the released configs (unused ones included, so other loaders accept
    them); ``overrides`` replace hidden_size, audio_f, motion_f or codebook (codes per part = the
    latent width, as the reference ties them). ``emotion_labels`` / ``speaker_labels`` (names)
    add learned conditioning (`emage_core.labels.label_config`); without them no key is added.
    ``aligned_audio`` (default on for our runs) lets output frames read their own audio frame (see
    `EmageAudioConfig.aligned_audio`); False keeps the released architecture and omits the key.
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
    s = {**SIZES[size], **overrides}
    K = s["codebook"]
    common = {"dtype": "float32", "name_pyfile": "models.emage_audio.modeling_emage_audio", "pose_fps": 30,
              "pose_length": 64, "stride": 20, "transformers_version": None,
              "emage_studio": {"version": __version__, "size": size}}
    audio = {
        **common,
        "architectures": ["EmageAudioModel"], "class_name": "EmageAudioModel", "model_type": "emage_audio",
        "audio_f": s["audio_f"], "audio_fps": 16000, "audio_norm": False, "audio_rep": "wave16k", "audio_sr": 16000,
        "hidden_size": s["hidden_size"], "motion_f": s["motion_f"], "speaker_f": s["hidden_size"], "speaker_dims": 1,
        "pose_dims": 330, "pose_rep": "smplx", "seed_frames": 4, "test_length": 64, "joint_mask": None,
        "vae_codebook_size": K, "lu": 3, "ll": 3, "lh": 3, "lf": 3, "cu": 1, "cl": 1, "ch": 1, "cf": 0,
    }
    if aligned_audio:
        audio["aligned_audio"] = True
    if emotion_labels or speaker_labels:
        from .labels import label_config

        audio.update(label_config(emotion_labels, speaker_labels))
    parts = {}
    for part in SUBMODELS:
        vq = part != "global"
        parts[part] = {
            **common,
            "architectures": ["EmageVQVAEConv" if vq else "EmageVAEConv"],
            "class_name": "EmageVQVAEConv" if vq else "EmageVAEConv",
            "model_type": "emage_vqvaeconv" if vq else "emage_vaeconv",
            "pose_dims": PART_DIMS[part], "vae_test_dim": PART_DIMS[part], "vae_layer": PART_LAYERS[part],
            "vae_length": K, "vae_codebook_size": K, "vae_quantizer_lambda": 1.0, "vae_grow": [1, 1, 2, 1],
            "vae_test_len": 64, "vae_test_stride": 20, "variational": False,
        }
    return audio, parts


def _module_name(part: str) -> str:
    return "global_" if part == "global" else part


def save_pretrained(models: EmageModels, out: str | Path, audio_config: dict, part_configs: dict[str, dict]) -> Path:
    """Write the six models in the released layout (config.json + model.safetensors each)."""
    out = Path(out)
    items = [("", models.audio, audio_config)]
    items += [(SUBMODEL_FOLDERS[p], getattr(models, _module_name(p)), part_configs[p]) for p in SUBMODELS]
    for sub, module, config in items:
        folder = out / sub
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
        atomic_write(folder / "model.safetensors", write=lambda p: save_file(tensors, p, metadata={"format": "pt"}))
        atomic_write(folder / CONFIG_NAME, write=lambda p: p.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n"))
    return out


def _load_models(source: str | Path) -> tuple[EmageModels, dict, dict[str, dict]]:
    """Models and configs from a checkpoint in the layout (strict: every tensor must fit)."""
    ckpt = load_checkpoint(source)
    part_cfgs = {p: c.config for p, c in ckpt.parts.items()}
    models = EmageModels.from_configs(ckpt.audio.config, part_cfgs)
    models.audio.load_state_dict(ckpt.audio.state_dict, strict=True)
    for p, c in ckpt.parts.items():
        getattr(models, _module_name(p)).load_state_dict(c.state_dict, strict=True)
    return models, ckpt.audio.config, part_cfgs


def _label_configs(c, dataset) -> dict[str, list[str] | None]:
    """make_configs' label arguments from a TrainConfig (names checked; "all" read from the data)."""
    if c.emotions is None and c.speakers is None:
        return {}
    from .labels import emotion_labels, parse_labels, speaker_labels

    clips = dataset.clips if dataset is not None else ()
    return {"emotion_labels": emotion_labels(parse_labels(c.emotions), clips),
            "speaker_labels": speaker_labels(parse_labels(c.speakers), clips)}


# -----------------------------------------------------------------------------------------
# Training settings


@dataclass
class TrainConfig:
    """Everything a run depends on; stored in the audio config.json under emage_studio.training."""

    data: str
    out: str
    size: str = "tiny"
    steps: int = 2000  # audio-model steps
    vq_steps: int | None = None  # autoencoder steps (default: steps)
    stage: str = "all"  # all | vq | audio
    batch_size: int = 16
    lr: float = 1.5e-4  # audio model (reference)
    vq_lr: float = 3e-4
    stride: int = 20  # frames between training windows (reference: 20)
    mirror: bool = False  # add left/right mirrored copies of every clip
    seed: int = 0
    device: str | None = None
    save_every: int = 500
    resume: bool = False
    vq_from: str | None = None  # take the autoencoders from this checkpoint instead of training them
    mask_ramp: float = 0.5  # fraction of the audio steps over which the mask ratio goes 0.05 -> 1
    grad_clip: float = 0.99
    overrides: dict[str, int] = field(default_factory=dict)  # size overrides, see make_configs
    # learned labels (emage_core.labels): names, or "all" = those present in the data; None = off
    emotions: list[str] | str | None = None  # from data.EMOTIONS, e.g. ["neutral", "happiness"]
    speakers: list[str] | str | None = None  # BEAT2 "{id}_{name}", e.g. ["2_scott"]
    label_dropout: float = 0.15  # chance a window's label becomes "no label" (classifier-free guidance)
    aligned_audio: bool = True  # frame-aligned audio in the audio model (False: the released architecture)

    @property
    def n_vq_steps(self) -> int:
        return self.steps if self.vq_steps is None else self.vq_steps


# -----------------------------------------------------------------------------------------
# Losses


DERIVATIVE_WEIGHTS = (1.0, 2.0, 4.0, 4.0)  # L1 of values, 1st, 2nd and 3rd frame differences


def _l1_with_derivatives(rec: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Channel-weighted L1 of (B, T, C) values and of their 1st-3rd frame differences.

    The difference terms keep frame-to-frame code switches from showing up as jitter: one code
    per frame from a small codebook otherwise decodes to motion about twice as jerky as the data.
    """
    w = 1.0 if weight is None else weight
    loss = rec.new_zeros(())
    for k in DERIVATIVE_WEIGHTS:
        loss = loss + k * ((rec - x).abs() * w).mean()
        rec, x = rec.diff(dim=1), x.diff(dim=1)
    return loss


def _face_weight(device) -> torch.Tensor:
    w = torch.ones(FACE_DIM, device=device)
    w[:6] = JAW_WEIGHT
    return w


def autoencoder_losses(models: EmageModels, batch: dict[str, torch.Tensor], generator: torch.Generator,
                       fps: float = DEFAULT_FPS) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Stage-1 losses of the four VQ-VAEs and the global autoencoder on a batch of windows.

    Returns (losses by part, code indices (B, T) by part, for usage statistics).
    """
    losses, codes = {}, {}
    for part in VQ_PARTS:
        vq, x = getattr(models, part), batch[part]
        z = vq.encoder(x)
        emb_loss, z_q, idx, _ = vq.quantizer(z)
        weight = _face_weight(x.device) if part == "face" else None
        losses[part] = _l1_with_derivatives(vq.decoder(z_q), x, weight) + emb_loss
        codes[part] = idx

    # Global: lower body -> (vx, y, vz) + contact. The reference feeds zeros for translation and
    # contact; at inference it gets the lower VQ's decoded ones. Zero them in half the windows so
    # the model works from the poses alone and does not break on real values.
    lower, target = batch["lower"], batch["global"]
    keep = (torch.rand(lower.shape[0], 1, 1, generator=generator, device=generator.device) < 0.5).to(lower)
    joints = GLOBAL_JOINTS_SLICE.stop
    inp = torch.cat([lower[..., :joints], lower[..., joints:] * keep], dim=-1)
    out = models.global_(inp)["rec_pose"]
    v, v_t = out[..., GLOBAL_VELOCITY_SLICE], target[..., :3]
    # positions as inference integrates them: pos[t] = pos[t-1] + v[t-1] / fps
    pos, pos_t = (torch.cumsum(a[:, :-1, 0::2], dim=1) / fps for a in (v, v_t))
    losses["global"] = (
        (v - v_t).abs().mean() + (v.diff(dim=1) - v_t.diff(dim=1)).abs().mean()
        + (pos - pos_t).abs().mean() + F.mse_loss(out[..., 57:61], target[..., 3:7])
    )
    return losses, codes


@torch.no_grad()
def part_targets(models: EmageModels, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Frozen VQ encoders -> {part}_index (B, T) and {part}_latent (B, T, K) of the ground truth."""
    out = {}
    for part in VQ_PARTS:
        vq = getattr(models, part)
        idx = vq.encode(batch[part])
        out[f"{part}_index"] = idx
        out[f"{part}_latent"] = vq.index_to_latent(idx)
    return out


def _pass_losses(pred: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent MSE (lu, ll, lh, lf) and code cross-entropy (cu, cl, ch, cf) of one forward pass."""
    rec = sum(getattr(cfg, w) * F.mse_loss(pred[f"rec_{p}"], targets[f"{p}_latent"])
              for p, w in (("upper", "lu"), ("lower", "ll"), ("hands", "lh"), ("face", "lf")))
    cls = pred["rec_face"].new_zeros(())
    for p, w in (("upper", "cu"), ("lower", "cl"), ("hands", "ch"), ("face", "cf")):
        if getattr(cfg, w) > 0:
            logits = pred[f"cls_{p}"]
            cls = cls + getattr(cfg, w) * F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets[f"{p}_index"].reshape(-1))
    return rec, cls


def mask_ratio(step: int, ramp_steps: int) -> float:
    """Share of channels masked in the random-mask passes: 0.05 at step 0, 1.0 from ``ramp_steps`` on."""
    return 1.0 if ramp_steps <= 0 else 0.05 + 0.95 * min(1.0, step / ramp_steps)


def audio_losses(models: EmageModels, batch: dict[str, torch.Tensor], ratio: float,
                 generator: torch.Generator, label_dropout: float = 0.0) -> dict[str, torch.Tensor]:
    """Stage-2 losses: the reference's three passes (seed; random mask + audio; random mask, no audio).

    The audio is encoded once and shared by the passes, and the two audio passes run as one
    batch: the same computation as three separate calls, done with fewer, larger operations.
    A model with learned labels gets each window's label (the same in all three passes), dropped
    to "no label" with probability ``label_dropout``.
    """
    net, cfg = models.audio, models.audio.config
    motion, audio = batch["motion"], batch["audio"]
    B, T, _ = motion.shape
    targets = part_targets(models, batch)
    speaker = torch.zeros(2 * B, 1, dtype=torch.long, device=motion.device)
    emotion = emotion2 = None
    if cfg.emotion_labels or cfg.speaker_labels:
        from .labels import window_labels

        speaker, emotion = window_labels(cfg, batch, label_dropout, generator)
        speaker = torch.cat([speaker, speaker])
        emotion2 = None if emotion is None else torch.cat([emotion, emotion])

    seed_mask = torch.ones_like(motion)
    seed_mask[:, : cfg.seed_frames] = 0
    rand_mask = (torch.rand(motion.shape, generator=generator, device=generator.device) < ratio).to(motion)

    face_feat, body_feat = net.encode_audio(audio)
    twice = lambda t: torch.cat([t, t], dim=0)  # noqa: E731
    pred = net(None, speaker, twice(motion), torch.cat([seed_mask, rand_mask]), use_audio=True,
               audio_features=(twice(face_feat), twice(body_feat)), emotion=emotion2)
    pred_seed = {k: v[:B] for k, v in pred.items()}
    pred_audio = {k: v[B:] for k, v in pred.items()}
    pred_mask = net(None, speaker[:B], motion, rand_mask, use_audio=False, audio_features=(face_feat, body_feat),
                    emotion=emotion)

    losses = {}
    for name, p in (("seed", pred_seed), ("audio", pred_audio), ("mask", pred_mask)):
        losses[f"rec_{name}"], losses[f"cls_{name}"] = _pass_losses(p, targets, cfg)
    return losses


# -----------------------------------------------------------------------------------------
# The loop


def _batch(ds, idx: np.ndarray, device) -> dict[str, torch.Tensor]:
    items = [ds[int(i)] for i in idx]
    return {k: torch.stack([it[k] for it in items]).to(device) for k in items[0]}


def _draw(rng: np.random.Generator, n: int, batch_size: int) -> np.ndarray:
    return rng.choice(n, size=batch_size, replace=n < batch_size)


def _restart_dead_codes(models: EmageModels, batch, usage: dict[str, torch.Tensor], generator: torch.Generator) -> None:
    """Codes that no window picked since the last restart get encoder outputs of this batch
    (a standard fix for codebook collapse: small data leaves most random codes unused)."""
    with torch.no_grad():
        for part in VQ_PARTS:
            dead = usage[part] == 0
            if dead.any():
                vq = getattr(models, part)
                z = vq.encoder(batch[part]).reshape(-1, vq.quantizer.e_dim)
                pick = torch.randint(z.shape[0], (int(dead.sum()),), generator=generator, device=generator.device)
                vq.quantizer.embedding.weight[dead] = z[pick.to(z.device)]
            usage[part].zero_()


def _rng_state(np_rng: np.random.Generator, gen: torch.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": np_rng.bit_generator.state, "python": random.getstate(), "generator": gen.get_state()}


def _set_rng_state(state: dict, np_rng: np.random.Generator, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_rng.bit_generator.state = state["numpy"]
    random.setstate(state["python"])
    gen.set_state(state["generator"])


def _postfix(avg: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in avg.items())


def train(config: TrainConfig, dataset=None, log: Callable[[str], None] | None = None,
          on_step: Callable[[str, int, dict[str, float]], None] | None = None) -> EmageModels:
    """Run (or resume) training as ``config`` says; returns the trained models (also saved in
    ``config.out``).

    ``dataset`` (a `data.MotionWindows`) replaces reading ``config.data``. Checkpoints are written
    every ``save_every`` steps, at the end of each stage and on Ctrl-C. ``on_step(stage, step,
    losses)`` is called after every step ("vq" or "audio", 1-based step, float losses).
    """
    from tqdm import tqdm

    from .data import MotionWindows

    log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
    c = config
    out = Path(c.out)
    state_path = out / STATE_DIR / STATE_FILE
    device = torch.device(c.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    # -- models, optimizers, RNG: fresh or resumed ------------------------------------------
    random.seed(c.seed)
    np.random.seed(c.seed)
    torch.manual_seed(c.seed)
    np_rng = np.random.default_rng(c.seed)
    gen = torch.Generator(device="cpu").manual_seed(c.seed + 1)  # masks and code restarts
    if c.resume:
        if not state_path.is_file():
            raise FileNotFoundError(f"--resume: no training state in {out} ({state_path} is missing)")
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        models, audio_cfg, part_cfgs = _load_models(out)
        log(f"resuming {out}: autoencoders at step {state['vq_step']}, audio model at step {state['audio_step']}")
    else:
        if state_path.exists():
            raise FileExistsError(f"{out} holds a training run; pass --resume to continue it or choose another --out")
        state = {"vq_step": 0, "audio_step": 0, "seconds": 0.0}
        if dataset is None and "all" in (c.emotions, c.speakers):  # the labels are read from the data
            dataset = MotionWindows.from_folder(c.data, stride=c.stride, mirror=c.mirror)
        audio_cfg, part_cfgs = make_configs(c.size, aligned_audio=c.aligned_audio, **c.overrides,
                                            **_label_configs(c, dataset))
        models = EmageModels.from_configs(audio_cfg, part_cfgs)
        if c.vq_from:
            vq_models, _, vq_cfgs = _load_models(c.vq_from)
            if vq_cfgs["face"]["vae_codebook_size"] != audio_cfg["vae_codebook_size"]:
                raise ValueError(f"--vq-from {c.vq_from} has {vq_cfgs['face']['vae_codebook_size']} codes per part; "
                                 f"size {c.size!r} needs {audio_cfg['vae_codebook_size']} (use the matching --size)")
            for part in SUBMODELS:
                setattr(models, _module_name(part), getattr(vq_models, _module_name(part)))
            part_cfgs = vq_cfgs
            state["vq_step"] = -1  # marks autoencoders taken from elsewhere
    models.to(device)
    vq_mods = [getattr(models, _module_name(p)) for p in SUBMODELS]
    vq_opt = torch.optim.Adam([p for m in vq_mods for p in m.parameters()], lr=c.vq_lr)
    audio_opt = torch.optim.Adam(models.audio.parameters(), lr=c.lr, betas=(0.9, 0.999), weight_decay=0.0)
    K = audio_cfg["vae_codebook_size"]
    usage = {p: torch.zeros(K, dtype=torch.long, device=device) for p in VQ_PARTS}
    if c.resume:
        vq_opt.load_state_dict(state["vq_opt"])
        audio_opt.load_state_dict(state["audio_opt"])
        for opt, lr in ((vq_opt, c.vq_lr), (audio_opt, c.lr)):  # the settings given now win over the saved ones
            for group in opt.param_groups:
                group["lr"] = lr
        usage = {p: u.to(device) for p, u in state["usage"].items()}
        _set_rng_state(state["rng"], np_rng, gen)

    # -- data ---------------------------------------------------------------------------------
    if dataset is None:
        dataset = MotionWindows.from_folder(c.data, stride=c.stride, mirror=c.mirror)
    if len(dataset) == 0:
        raise ValueError(f"no training windows: every clip in {c.data} is shorter than 64 frames")
    log(f"data: {len(dataset)} windows of 64 frames from {len(dataset.clips)} clip(s); device {device}")

    t_start = time.time() - state["seconds"]

    def save() -> None:
        state["seconds"] = time.time() - t_start
        training = {**{k: v for k, v in dataclasses.asdict(c).items() if k not in ("resume", "device", "out")},
                    "vq_steps_done": state["vq_step"], "audio_steps_done": state["audio_step"],
                    "windows": len(dataset), "clips": [cl.name for cl in dataset.clips][:50],
                    "seconds": round(state["seconds"], 1), "device": str(device)}
        audio_cfg["emage_studio"] = {**audio_cfg.get("emage_studio", {}), "training": training}
        save_pretrained(models, out, audio_cfg, part_cfgs)
        (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
        full = {**state, "vq_opt": vq_opt.state_dict(), "audio_opt": audio_opt.state_dict(),
                "usage": {p: u.cpu() for p, u in usage.items()}, "rng": _rng_state(np_rng, gen)}
        atomic_write(out / STATE_DIR / STATE_FILE, write=lambda p: torch.save(full, p))

    def run_stage(name: str, total: int, key: str, step_fn: Callable[[int], dict[str, float]]) -> None:
        if state[key] < 0 or state[key] >= total:
            return
        avg: dict[str, float] = {}
        bar = tqdm(total=total, initial=state[key], desc=name, file=sys.stderr, dynamic_ncols=True,
                   mininterval=0.5 if sys.stderr.isatty() else 30)
        try:
            while state[key] < total:
                losses = step_fn(state[key])
                state[key] += 1
                if on_step is not None:
                    on_step(key[:-5], state[key], losses)
                avg = {k: v if k not in avg else 0.95 * avg[k] + 0.05 * v for k, v in losses.items()}
                bar.update(1)
                bar.set_postfix_str(_postfix({k: avg[k] for k in list(avg)[:4]}), refresh=False)
                if state[key] % max(1, c.save_every) == 0 or state[key] == total:
                    save()
                    log(f"{name} step {state[key]}/{total}: {_postfix(avg)} (saved)")
        except KeyboardInterrupt:
            save()
            log(f"interrupted: saved {name} at step {state[key]}; continue with --resume")
            raise
        finally:
            bar.close()

    # -- stage 1: autoencoders ----------------------------------------------------------------
    def vq_step(step: int) -> dict[str, float]:
        for m in vq_mods:
            m.train()
        batch = _batch(dataset, _draw(np_rng, len(dataset), c.batch_size), device)
        losses, codes = autoencoder_losses(models, batch, gen)
        for p, idx in codes.items():
            usage[p] += torch.bincount(idx.flatten(), minlength=K)
        loss = sum(losses.values())
        vq_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for m in vq_mods for p in m.parameters()], 1.0)
        vq_opt.step()
        if (step + 1) % RESTART_EVERY == 0 and step + 1 <= c.n_vq_steps // 2:  # then let the codebook settle
            _restart_dead_codes(models, batch, usage, gen)
        return {"loss": loss.item(), **{k: v.item() for k, v in losses.items()}}

    # -- stage 2: audio model -----------------------------------------------------------------
    ramp = int(c.mask_ramp * c.steps)

    def audio_step(step: int) -> dict[str, float]:
        for m in vq_mods:
            m.eval()
        models.audio.train()
        batch = _batch(dataset, _draw(np_rng, len(dataset), c.batch_size), device)
        losses = audio_losses(models, batch, mask_ratio(step, ramp), gen, label_dropout=c.label_dropout)
        loss = sum(losses.values())
        audio_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(models.audio.parameters(), c.grad_clip)  # after backward (the reference clips before it)
        audio_opt.step()
        return {"loss": loss.item(), **{k: v.item() for k, v in losses.items()}}

    if c.stage in ("all", "vq"):
        run_stage("autoencoders", c.n_vq_steps, "vq_step", vq_step)
    if c.stage in ("all", "audio"):
        if state["vq_step"] == 0:
            raise ValueError("the audio model needs trained autoencoders: run --stage vq first or pass --vq-from")
        for m in vq_mods:
            m.requires_grad_(False)
        run_stage("audio model", c.steps, "audio_step", audio_step)
    if not (out / CONFIG_NAME).is_file():
        save()
    return models.eval()
