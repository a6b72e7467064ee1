"""DiffSHEG checkpoints in our safe layout, and the reference's files turned into it.

A checkpoint folder (local or a Hub repo) holds::

    config.json        {"family": "diffsheg", "model": {DiffSHEGConfig}, "sampler": {SamplerConfig},
                        "speakers": [...], "hubert_model_id": ..., "notes": ...}
    model.safetensors  the denoiser's state dict (the reference's key names)
    statistics.npz     norm_mean_232, norm_std_232 (float32): what the model's motion is normalised by

Nothing here unpickles arbitrary objects: `import_reference` reads the reference's ``.tar`` with
``torch.load(weights_only=True)`` (numpy scalar metadata allow-listed) and its statistics file with a
restricted unpickler (`channels.load_talkshow_stats`).
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
from .channels import load_talkshow_stats, norm_stats_232
from .diffusion import SamplerConfig
from .model import DiffSHEGConfig, DiffSHEGDenoiser, load_state_dict_file

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
STATS_NAME = "statistics.npz"
FAMILY = "diffsheg"


@dataclass
class DiffshegCheckpoint:
    """A loaded checkpoint: the denoiser (eval mode), its normalisation and default sampler settings."""

    model: DiffSHEGDenoiser
    config: DiffSHEGConfig
    mean: np.ndarray  # (232,)
    std: np.ndarray  # (232,)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    speakers: tuple[str, ...] = ()  # one name per speaker one-hot slot (config.style_dim of them)
    hubert_model_id: str | None = None
    extra: dict = field(default_factory=dict)  # the rest of config.json (training notes, data)


def _computed(key: str) -> bool:
    """State-dict keys that are functions of the config (the PE tables), not learned."""
    return key.endswith("PE.pe")


def save_pretrained(folder: str | os.PathLike, model: DiffSHEGDenoiser, mean: np.ndarray, std: np.ndarray, *,
                    sampler: SamplerConfig | None = None, speakers=(), hubert_model_id: str | None = None,
                    extra: dict | None = None) -> Path:
    """Write a checkpoint folder (atomic writes: an interrupted save never leaves half a file)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # The sinusoidal PE tables are computed from the config (1.2 MB at any size): not stored.
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if not _computed(k)}
    atomic_write(folder / WEIGHTS_NAME, write=lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    stats = {"norm_mean_232": np.asarray(mean, np.float32), "norm_std_232": np.asarray(std, np.float32)}
    from ...motion.beat2 import npz_bytes

    atomic_write(folder / STATS_NAME, npz_bytes(stats))
    config = {"family": FAMILY, "model": dataclasses.asdict(model.cfg),
              "sampler": dataclasses.asdict(sampler or SamplerConfig()), "speakers": list(speakers),
              "hubert_model_id": hubert_model_id if model.cfg.use_hubert else None, **(extra or {})}
    atomic_write(folder / CONFIG_NAME, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
    return folder


def load_pretrained(folder: str | os.PathLike, device: str | torch.device = "cpu") -> DiffshegCheckpoint:
    """Read a checkpoint folder; the denoiser loads with ``strict=True``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    for name in (CONFIG_NAME, WEIGHTS_NAME, STATS_NAME):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder.name}: not a DiffSHEG checkpoint (no {name})")
    config = json.loads((folder / CONFIG_NAME).read_text())
    if config.get("family") != FAMILY:
        raise ValueError(f"{folder.name}: config.json says family {config.get('family')!r}, not {FAMILY!r}")
    cfg = DiffSHEGConfig(**config["model"])
    model = DiffSHEGDenoiser(cfg)
    state = load_file(str(folder / WEIGHTS_NAME))
    # computed buffers a file leaves out are rebuilt; every stored key must still fit exactly
    state.update({k: v for k, v in model.state_dict().items() if _computed(k) and k not in state})
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{folder.name}: weights do not fit the DiffSHEG configuration: "
                         f"{str(e).splitlines()[0]}") from None
    with np.load(folder / STATS_NAME, allow_pickle=False) as z:
        mean, std = z["norm_mean_232"].astype(np.float32), z["norm_std_232"].astype(np.float32)
    known = {"family", "model", "sampler", "speakers", "hubert_model_id"}
    return DiffshegCheckpoint(model.to(device).eval(), cfg, mean, std, SamplerConfig(**config.get("sampler", {})),
                              tuple(config.get("speakers") or ()), config.get("hubert_model_id"),
                              {k: v for k, v in config.items() if k not in known})


def import_reference(checkpoint: str | os.PathLike, stats: str | os.PathLike, out: str | os.PathLike, *,
                     config: DiffSHEGConfig | None = None,
                     hubert_model_id: str = "facebook/hubert-large-ls960-ft") -> Path:
    """The reference's released files -> a checkpoint folder in our layout.

    checkpoint: the reference's ``.tar`` (``torch.save`` of a dict with the state dict under ``encoder``),
    read with ``weights_only=True``. stats: its ``talkshow_mean_std.npy``, read without unpickling
    anything but numpy arrays. The jaw-statistics quirk the released weights depend on is kept.
    config: the model's shape (default: the released SHOW configuration).
    """
    cfg = config or DiffSHEGConfig()
    model = DiffSHEGDenoiser(cfg)
    model.load_state_dict(load_state_dict_file(str(checkpoint)), strict=True)
    s = load_talkshow_stats(str(stats))
    mean, std = norm_stats_232(s["pose_mean"], s["pose_std"], s["expression_mean"], s["expression_std"])
    return save_pretrained(out, model, mean, std, hubert_model_id=hubert_model_id,
                           speakers=tuple(f"speaker_{k}" for k in range(cfg.style_dim)),
                           extra={"imported_from": {"checkpoint": Path(checkpoint).name, "stats": Path(stats).name},
                                  "notes": "the reference's released SHOW weights, imported by emage_core"})
