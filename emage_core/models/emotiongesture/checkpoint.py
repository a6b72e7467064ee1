"""EmotionGesture checkpoints: a folder (local or a Hub repo) holding

    config.json        {"family": "emotiongesture", "model": {EmotionGestureConfig},
                        "emotion_labels": [...], ...training notes}
    model.safetensors  the network's state dict (the word encoder included: training-only, kept for resuming)
    statistics.npz     pose_mean, pose_std (258,), mel_mean, mel_std (80,) float32: the normalisation

``emotion_labels`` are the labels the emotion VAE learned (the generator's learned emotions); their
number fixes the label embedding's rows (+1 for "no label"). Nothing here unpickles anything.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...files import atomic_write
from ...motion.beat2 import EMOTIONS, npz_bytes
from .model import EmotionGestureConfig, EmotionGestureModel

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
STATS_NAME = "statistics.npz"
FILES = (CONFIG_NAME, WEIGHTS_NAME, STATS_NAME)
FAMILY = "emotiongesture"
STAT_KEYS = ("pose_mean", "pose_std", "mel_mean", "mel_std")


@dataclass
class Statistics:
    pose_mean: np.ndarray  # (258,)
    pose_std: np.ndarray
    mel_mean: np.ndarray  # (80,)
    mel_std: np.ndarray


@dataclass
class EmotionGestureCheckpoint:
    """A loaded checkpoint: the network (eval mode), its normalisation and learned labels."""

    model: EmotionGestureModel
    config: EmotionGestureConfig
    stats: Statistics
    emotion_labels: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)  # the rest of config.json (training, notes)


def save_pretrained(folder: str | os.PathLike, model: EmotionGestureModel, stats: Statistics, *,
                    emotion_labels=(), extra: dict | None = None) -> Path:
    """Write a checkpoint folder (atomic writes: an interrupted save never leaves half a file)."""
    from safetensors.torch import save_file

    emotion_labels = list(emotion_labels)
    if len(emotion_labels) != model.cfg.n_labels:
        raise ValueError(f"{len(emotion_labels)} emotion labels for a model with {model.cfg.n_labels}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(folder / WEIGHTS_NAME, write=lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    atomic_write(folder / STATS_NAME, npz_bytes({k: np.asarray(getattr(stats, k), np.float32) for k in STAT_KEYS}))
    config = {"family": FAMILY, "model": dataclasses.asdict(model.cfg), "emotion_labels": emotion_labels,
              **(extra or {})}
    atomic_write(folder / CONFIG_NAME, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
    return folder


def load_pretrained(folder: str | os.PathLike, device: str | torch.device = "cpu") -> EmotionGestureCheckpoint:
    """Read a checkpoint folder; the network loads with ``strict=True``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    for name in FILES:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder.name}: not an EmotionGesture checkpoint (no {name})")
    config = json.loads((folder / CONFIG_NAME).read_text())
    if config.get("family") != FAMILY:
        raise ValueError(f"{folder.name}: config.json says family {config.get('family')!r}, not {FAMILY!r}")
    labels = tuple(config.get("emotion_labels") or ())
    unknown = [label for label in labels if label not in EMOTIONS]
    if unknown:
        raise ValueError(f"{folder.name}: unknown emotion labels {unknown}; BEAT's are {', '.join(EMOTIONS)}")
    cfg = EmotionGestureConfig.from_dict(config["model"])
    if cfg.n_labels != len(labels):
        raise ValueError(f"{folder.name}: {len(labels)} emotion_labels for a model built with {cfg.n_labels}")
    model = EmotionGestureModel(cfg)
    try:
        model.load_state_dict(load_file(str(folder / WEIGHTS_NAME)), strict=True)
    except RuntimeError as e:
        raise ValueError(f"{folder.name}: weights do not fit the EmotionGesture configuration: "
                         f"{str(e).splitlines()[0]}") from None
    with np.load(folder / STATS_NAME, allow_pickle=False) as z:
        stats = Statistics(**{k: z[k].astype(np.float32) for k in STAT_KEYS})
    if stats.pose_mean.shape != (cfg.pose_dim,) or stats.mel_mean.shape != (cfg.n_mels,):
        raise ValueError(f"{folder.name}: statistics do not fit the model ({stats.pose_mean.shape}, {stats.mel_mean.shape})")
    known = {"family", "model", "emotion_labels"}
    return EmotionGestureCheckpoint(model.to(device).eval(), cfg, stats, labels,
                                    {k: v for k, v in config.items() if k not in known})
