"""The FGD evaluator: EMAGE's skeleton-aware conv autoencoder (`VAESKConv`, file `AESKConv_240_100.bin`).

Only the encoder runs for FGD (`map2latent`): 4 layers of skeleton convolutions over the SMPL-X
bone graph, each halving time, so (B, T, 6*J) rot6d becomes (B, T/16, 240) latents. The decoder and
the fc_mu / fc_logvar heads exist so that the released state dict loads strictly (all 56 keys).

State-dict keys are the reference's (no `module.` prefix):
    fc_mu.*, fc_logvar.*
    encoder.layers.{i}.0.residual.0.{mask,weight,bias}   masked conv, kernel 4, stride 2, zero pad 1
    encoder.layers.{i}.0.residual.1.{weight,bias}        GroupNorm(10)
    encoder.layers.{i}.0.shortcut.{mask,weight,bias}     masked conv, kernel 1, stride 2
    encoder.layers.{i}.0.common.0.weight                 mean-pooling matrix (only where it pools)
    decoder.main.{0,1}.model.{0,2}.*, decoder.main.{3,6,9,12,14}.*
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..motion.skeleton import PARENTS
from .skeleton_topology import Edge, PoolPlan, build_edges, conv_mask, edge_neighbours, plan_pooling, pooling_matrix

__all__ = [
    "SMPLX_PARENTS", "FGDEncoderConfig", "LayerPlan", "plan_encoder", "topology_constants",
    "SkeletonConv", "SkeletonMeanPool", "SkeletonResBlock", "SkeletonEncoder", "LatentDecoder",
    "FGDAutoencoder", "build_fgd_encoder", "strip_module_prefix", "load_released_bin",
    "save_released_bin", "load_state_dict_file", "load_fgd_encoder", "RELEASED_FILE",
]

RELEASED_FILE = "AESKConv_240_100.bin"

#: SMPL-X's 55 parents (kintree_table[0] of SMPLX_NEUTRAL_2020.npz, root 2**32-1 read as -1): the
#: released evaluator's bone graph. The reference reads them from the SMPL-X file; they are standard.
SMPLX_PARENTS: tuple[int, ...] = PARENTS


@dataclass(frozen=True)
class FGDEncoderConfig:
    """Evaluator architecture. Defaults = the released `AESKConv_240_100` (`mertic.Arg`).

    joints: SMPL-X joint ids the encoder reads, in input order (6 rot6d channels each).
    parents: parent of each of those joints, as an index into ``joints`` (root -1).
    vae_test_len: FGD drops each clip's last ``T mod vae_test_len`` frames before encoding.
    The remaining fields are fixed inside the reference encoder; they are here to be checked.
    """

    joints: tuple[int, ...] = tuple(range(55))
    parents: tuple[int, ...] = SMPLX_PARENTS
    vae_layer: int = 4
    vae_grow: tuple[int, ...] = (1, 1, 2, 1)
    vae_length: int = 240
    vae_test_dim: int = 330
    vae_test_len: int = 32
    vae_test_stride: int = 20  # unused by the test FGD (no windows), kept for the record
    variational: bool = False
    channel_base: int = 6
    kernel_size: int = 4
    stride: int = 2
    skeleton_dist: int = 2
    group_norm_groups: int = 10

    def __post_init__(self):
        object.__setattr__(self, "joints", tuple(int(j) for j in self.joints))
        object.__setattr__(self, "parents", tuple(int(p) for p in self.parents))
        object.__setattr__(self, "vae_grow", tuple(int(g) for g in self.vae_grow))
        if len(self.joints) != len(self.parents):
            raise ValueError("joints and parents differ in length")
        if len(self.vae_grow) != self.vae_layer:
            raise ValueError("vae_grow needs one factor per layer")
        if self.vae_test_dim != self.channel_base * len(self.joints):
            raise ValueError(f"vae_test_dim {self.vae_test_dim} != {self.channel_base} x {len(self.joints)} joints")
        if self.variational:
            # the reference samples mu + sigma * noise in map2latent: not a deterministic metric
            raise ValueError("variational evaluators are not supported (the released one is not)")

    @classmethod
    def released(cls) -> "FGDEncoderConfig":
        return cls()

    @classmethod
    def from_dict(cls, d: Mapping) -> "FGDEncoderConfig":
        """From a golden-style config dict; unknown keys ignored, fixed ones checked."""
        fixed = {"padding": 1, "padding_mode": "constant", "skeleton_pool": "mean", "activation": "tanh"}
        for k, v in fixed.items():
            if k in d and d[k] != v:
                raise ValueError(f"config {k}={d[k]!r}: only {v!r} is implemented (as in the reference)")
        names = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names})

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "FGDEncoderConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def for_weights(cls, weights_path: str | os.PathLike) -> "FGDEncoderConfig":
        """config.json beside the weights if there is one (the golden), else the released config."""
        cfg = Path(weights_path).with_name("config.json")
        return cls.from_json(cfg) if cfg.exists() else cls.released()

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def frames_per_latent(self) -> int:
        return self.stride ** self.vae_layer


@dataclass(frozen=True)
class LayerPlan:
    """Layer i of the encoder: its edges, their neighbourhoods, channels per edge, pooling."""

    edges: tuple[Edge, ...]
    neighbours: tuple[tuple[int, ...], ...]
    c_in: int
    c_out: int
    pool: PoolPlan

    @property
    def in_channels(self) -> int:
        return self.c_in * len(self.edges)

    @property
    def out_channels(self) -> int:
        return self.c_out * len(self.edges)

    @property
    def pooled_channels(self) -> int:
        return self.c_out * (len(self.pool.groups) if self.pool.reduces else len(self.edges))


def plan_encoder(cfg: FGDEncoderConfig) -> list[LayerPlan]:
    """The encoder's per-layer topology, channel widths and pooling, from the config."""
    edges = build_edges(cfg.parents)
    c = cfg.channel_base
    plans = []
    for i in range(cfg.vae_layer):
        last = i == cfg.vae_layer - 1
        pool = plan_pooling(edges, last=last)
        nb = edge_neighbours(edges, cfg.skeleton_dist)
        plans.append(LayerPlan(tuple(edges), tuple(map(tuple, nb)), c, c * cfg.vae_grow[i], pool))
        # Reference quirk: the next layer's topology is the pooling's edge list even when the pool
        # was skipped (no reduction); that list is in chain order, not necessarily edge-id order.
        edges = list(pool.new_edges)
        c = c * cfg.vae_grow[i]
    out = plans[-1].pooled_channels
    if out != cfg.vae_length:
        raise ValueError(f"encoder output {out} channels != vae_length {cfg.vae_length}")
    return plans


def topology_constants(cfg: FGDEncoderConfig) -> dict[str, np.ndarray]:
    """The masks and pooling matrices of every layer, under their state-dict keys (float32)."""
    out = {}
    for i, lp in enumerate(plan_encoder(cfg)):
        pre = f"encoder.layers.{i}.0."
        out[pre + "residual.0.mask"] = conv_mask(lp.neighbours, lp.c_in, lp.c_out, cfg.kernel_size)
        out[pre + "shortcut.mask"] = conv_mask(lp.neighbours, lp.c_in, lp.c_out, 1)
        if lp.pool.reduces:
            out[pre + "common.0.weight"] = pooling_matrix(lp.pool.groups, len(lp.edges), lp.c_out)
    return out


def _frozen(t: torch.Tensor) -> nn.Parameter:
    # the reference stores masks / pooling matrices as non-trainable Parameters (so they are in
    # the state dict and in the parameter count)
    return nn.Parameter(t, requires_grad=False)


def _const(value: np.ndarray | None, shape, device) -> torch.Tensor:
    if value is None or torch.device(device).type == "meta":
        return torch.empty(shape, dtype=torch.float32, device=device)
    return torch.as_tensor(value, dtype=torch.float32, device=device).clone()


class SkeletonConv(nn.Module):
    """Conv1d whose weight is multiplied by a fixed 0/1 edge-neighbourhood mask at every call.

    x: (B, E*c_in, T) -> (B, E*c_out, T'), T' = (T + 2*padding - K) // stride + 1.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int,
                 mask: np.ndarray | None = None, device="cpu"):
        super().__init__()
        shape = (out_channels, in_channels, kernel_size)
        self.stride, self.padding = stride, padding
        self.mask = _frozen(_const(mask, shape, device))
        self.weight = nn.Parameter(torch.empty(shape, device=device))
        self.bias = nn.Parameter(torch.empty(out_channels, device=device))
        if torch.device(device).type != "meta":
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
            bound = 1 / math.sqrt(in_channels * kernel_size)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # explicit zero padding then an unpadded conv, as the reference does (F.pad "constant")
        if self.padding:
            x = F.pad(x, (self.padding, self.padding))
        return F.conv1d(x, self.weight * self.mask, self.bias, self.stride)


class SkeletonMeanPool(nn.Module):
    """Average merged edges' channels: (B, E*c, T) -> (B, G*c, T) with a fixed matrix."""

    def __init__(self, out_channels: int, in_channels: int, matrix: np.ndarray | None = None, device="cpu"):
        super().__init__()
        self.weight = _frozen(_const(matrix, (out_channels, in_channels), device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.weight, x)


class SkeletonResBlock(nn.Module):
    """One encoder layer: tanh(pool(GroupNorm(conv_k4_s2(x)) + conv_k1_s2(x)))."""

    def __init__(self, lp: LayerPlan, cfg: FGDEncoderConfig, consts: Mapping[str, np.ndarray] | None, prefix: str,
                 device="cpu"):
        super().__init__()
        consts = consts or {}
        cin, cout = lp.in_channels, lp.out_channels
        pad = (cfg.kernel_size - 1) // 2
        self.residual = nn.Sequential(
            SkeletonConv(cin, cout, cfg.kernel_size, cfg.stride, pad, consts.get(prefix + "residual.0.mask"), device),
            nn.GroupNorm(cfg.group_norm_groups, cout, device=device),
        )
        self.shortcut = SkeletonConv(cin, cout, 1, cfg.stride, 0, consts.get(prefix + "shortcut.mask"), device)
        common: list[nn.Module] = []
        if lp.pool.reduces:
            common.append(SkeletonMeanPool(lp.pooled_channels, cout, consts.get(prefix + "common.0.weight"), device))
        common.append(nn.Tanh())
        self.common = nn.Sequential(*common)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.common(self.residual(x) + self.shortcut(x))


class SkeletonEncoder(nn.Module):
    """(B, T, 6*J) rot6d -> (B, T / 2**layers, vae_length)."""

    def __init__(self, cfg: FGDEncoderConfig, consts: Mapping[str, np.ndarray] | None = None, device="cpu"):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(SkeletonResBlock(lp, cfg, consts, f"encoder.layers.{i}.0.", device))
            for i, lp in enumerate(plan_encoder(cfg))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)
        for layer in self.layers:
            h = layer(h)
        return h.transpose(1, 2)


class _ResBlock1d(nn.Module):
    def __init__(self, c: int, device="cpu"):
        super().__init__()
        self.model = nn.Sequential(
            nn.Conv1d(c, c, 3, padding=1, device=device), nn.LeakyReLU(0.2),
            nn.Conv1d(c, c, 3, padding=1, device=device),
        )

    def forward(self, x):
        return x + self.model(x)


class LatentDecoder(nn.Module):
    """The autoencoder's decoder (`VQDecoderV3`): (B, T', vae_length) -> (B, T' * 2**layers, vae_test_dim).

    Never used by FGD; present for strict loading and completeness.
    """

    def __init__(self, cfg: FGDEncoderConfig, device="cpu"):
        super().__init__()
        widths = [cfg.vae_length] * cfg.vae_layer + [cfg.vae_test_dim]
        mods: list[nn.Module] = [_ResBlock1d(widths[0], device), _ResBlock1d(widths[0], device)]
        for i in range(cfg.vae_layer):
            mods += [nn.Upsample(scale_factor=2, mode="nearest"),
                     nn.Conv1d(widths[i], widths[i + 1], 3, padding=1, device=device), nn.LeakyReLU(0.2)]
        mods.append(nn.Conv1d(widths[-1], widths[-1], 3, padding=1, device=device))
        self.main = nn.Sequential(*mods)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.transpose(1, 2)).transpose(1, 2)


class FGDAutoencoder(nn.Module):
    """The evaluator as released; `map2latent` is what FGD uses."""

    def __init__(self, cfg: FGDEncoderConfig, consts: Mapping[str, np.ndarray] | None = None, device="cpu"):
        super().__init__()
        self.config = cfg
        # registration order = the reference's state-dict order (fc heads, encoder, decoder)
        self.fc_mu = nn.Linear(cfg.vae_length, cfg.vae_length, device=device)
        self.fc_logvar = nn.Linear(cfg.vae_length, cfg.vae_length, device=device)
        self.encoder = SkeletonEncoder(cfg, consts, device)
        self.decoder = LatentDecoder(cfg, device)

    @torch.no_grad()
    def map2latent(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, vae_test_dim) rot6d, T a multiple of 16 -> (B, T/16, vae_length) latents."""
        if x.shape[-1] != self.config.vae_test_dim:
            raise ValueError(f"expected {self.config.vae_test_dim} input channels, got {x.shape[-1]}")
        if x.shape[1] % self.config.frames_per_latent:
            raise ValueError(f"T={x.shape[1]} is not a multiple of {self.config.frames_per_latent}")
        return self.encoder(x.to(self.fc_mu.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction (B, T, vae_test_dim) -> same shape (deterministic: not variational)."""
        return self.decoder(self.encoder(x))


def build_fgd_encoder(cfg: FGDEncoderConfig | None = None, device: str | torch.device = "cpu") -> FGDAutoencoder:
    """A fresh evaluator. On ``meta`` nothing is allocated (shape checks); elsewhere the masks and
    pooling matrices are derived from the topology and the trained weights randomly initialised."""
    cfg = cfg or FGDEncoderConfig.released()
    consts = None if torch.device(device).type == "meta" else topology_constants(cfg)
    return FGDAutoencoder(cfg, consts, device)


def strip_module_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DataParallel's ``module.``; like the reference, every occurrence in a key is removed."""
    return {k.replace("module.", ""): v for k, v in state.items()}


def load_released_bin(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """State dict of a released `AESKConv_240_100.bin` (``torch.save({"model_state": sd})``).

    Read with ``weights_only=True`` only: if the file holds anything but tensors and plain
    containers this raises rather than falling back to unsafe unpickling.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError and friends: report, never retry unsafely
        raise ValueError(f"{path}: not loadable with torch.load(weights_only=True): {err}") from err
    if not isinstance(obj, dict) or "model_state" not in obj:
        raise ValueError(f"{path}: expected a dict with 'model_state', got {type(obj).__name__}")
    state = obj["model_state"]
    bad = [k for k, v in state.items() if not torch.is_tensor(v)]
    if bad:
        raise ValueError(f"{path}: non-tensor entries in model_state: {bad[:5]}")
    return strip_module_prefix(state)


def save_released_bin(state: Mapping[str, torch.Tensor], path: str | os.PathLike, prefix: str = "module.") -> None:
    """Write a state dict in the released container (keys with DataParallel's prefix by default)."""
    torch.save({"model_state": {prefix + k: v.detach().cpu().contiguous() for k, v in state.items()}}, path)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` or released ``.bin`` file -> state dict (prefix stripped)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return strip_module_prefix(load_file(str(path)))
    return load_released_bin(path)


def load_fgd_encoder(path: str | os.PathLike, cfg: FGDEncoderConfig | None = None, device="cpu",
                     check_topology: bool = True) -> FGDAutoencoder:
    """Build on ``meta``, load the file strictly, and (by default) check that its masks and pooling
    matrices equal the ones the config's topology implies (a wrong joint list / parents fails here)."""
    cfg = cfg or FGDEncoderConfig.for_weights(path)
    state = load_state_dict_file(path)
    model = FGDAutoencoder(cfg, None, "meta")
    model.load_state_dict(state, strict=True, assign=True)
    if check_topology:
        for key, expected in topology_constants(cfg).items():
            if not np.array_equal(state[key].numpy(), expected):
                raise ValueError(f"{path}: {key} differs from the topology of the config")
    for p in model.parameters():  # assign=True keeps the loaded tensors' flags: re-freeze constants
        p.requires_grad_(False)
    return model.to(device).eval()
