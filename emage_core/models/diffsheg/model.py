"""The DiffSHEG denoiser (Chen et al., CVPR 2024): a unified expression -> gesture transformer.

One network predicts the noise of a 232-channel motion window, ``x = [gesture 129 | expression 103]``
(SMPL-X axis-angle upper body and hands, jaw + 100 expression coefficients; see ``motion.py``):

    mel ─► audio encoder ─► audio = [mel, audio_feat]
    expression branch(x_expr | audio, HuBERT)              ─► eps_expr
    expr_x0 = c1 * x_expr - c2 * eps_expr    (detached: information flows expression -> gesture only)
    gesture branch(x_ges | audio, HuBERT, expr_x0)          ─► eps_ges
    eps = [eps_ges, eps_expr]

Each branch is a stack of linear-attention transformer layers whose every layer re-injects the
frame-aligned condition. Classifier-free guidance happens *inside* the model (the expression branch
is guided before its x0 feeds the gesture branch), so ``forward`` takes the guidance scale.

Parameter and buffer names mirror the reference (``JeremyCJM/DiffSHEG``, class ``UniDiffuser``),
so its state dicts load with ``strict=True``. Tensors are batch-first ``(B, T, C)`` everywhere.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

import torch
import torch.nn as nn


@dataclass
class DiffSHEGConfig:
    """Shape-defining configuration; defaults are the released SHOW model.

    ``from_dict`` reads the reference's field names (``config.json`` of a checkpoint), e.g.
    ``audio_latent_dim`` and ``addHubert``/``encode_hubert``.
    """

    dim_pose: int = 129  # gesture channels (first block of x)
    expression_dim: int = 103  # jaw 3 + 100 expression coefficients (second block)
    audio_dim: int = 128  # mel bins
    style_dim: int = 4  # speaker one-hot
    latent_dim: int = 512  # L
    num_layers: int = 8
    ff_size: int = 1024
    num_heads: int = 8  # changes no shape
    audio_latent_dim: int = 256  # A, the projected audio condition
    use_hubert: bool = True  # reference: addHubert and encode_hubert
    hubert_dim: int = 1024
    hubert_encoded_dim: int = 128
    classifier_free: bool = True  # adds the learned null condition `null_cond_emb`
    pe_period: int = 600  # sinusoidal PE rows before repetition
    pe_buffer_len: int = 1200  # rows of the PE buffer = the longest window
    dropout: float = 0.0  # every dropout of the released model is 0

    @property
    def n_channels(self) -> int:
        return self.dim_pose + self.expression_dim  # 232

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.latent_dim

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DiffSHEGConfig":
        """Build from a reference-style dict; unknown keys (sampler settings, notes) are ignored."""
        d = dict(d)
        if "addHubert" in d or "encode_hubert" in d:
            add, enc = bool(d.get("addHubert", False)), bool(d.get("encode_hubert", False))
            if add != enc:
                raise ValueError("only addHubert == encode_hubert is supported (raw 1024-d HuBERT is not)")
            d["use_hubert"] = add
        if not d.get("unidiffuser", True) or d.get("model_base", "transformer_encoder") != "transformer_encoder":
            raise ValueError("only the unified (UniEG) transformer-encoder model is supported")
        if d.get("PE", "pe_sinu") != "pe_sinu":
            raise ValueError(f"only the sinusoidal PE ('pe_sinu') is supported, got {d['PE']!r}")
        if d.get("cond_projection", "mlp_includeX") != "mlp_includeX" or not d.get("cond_residual", True):
            raise ValueError("only cond_projection='mlp_includeX' with cond_residual=True is supported")
        names = {f.name for f in dataclasses.fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in names})
        derived = {"time_embed_dim": cfg.time_embed_dim, "n_channels": cfg.n_channels, "split_pos": cfg.dim_pose}
        for k, v in derived.items():
            if k in d and d[k] != v:
                raise ValueError(f"{k}={d[k]} is inconsistent with the configuration (expected {v})")
        return cfg


class DenoiserOutput(NamedTuple):
    eps: torch.Tensor  # (B, T, 232) predicted noise [gesture | expression], guided if scale != 1
    expr_x0: torch.Tensor  # (B, T, 103) the expression x0 handed to the gesture branch
    audio_feat: torch.Tensor  # (B, T, 128) output of the audio encoder


# -----------------------------------------------------------------------------
# Embeddings


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) timesteps -> (B, dim) float32 features ``[cos(t f), sin(t f)]``, f_i = max_period^(-i/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).to(t.device)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class SinusoidalPE(nn.Module):
    """Additive sinusoidal position encoding; ``period`` rows tiled to ``buffer_len`` (buffer ``pe``)."""

    def __init__(self, dim: int, period: int, buffer_len: int):
        super().__init__()
        position = torch.arange(period, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, dim, 2).float() * (-math.log(10000.0) / dim))
        pe = torch.zeros(period, dim)
        pe[:, 0::2] = torch.sin(position * div)
        pe[:, 1::2] = torch.cos(position * div)
        reps = -(-buffer_len // period)
        self.register_buffer("pe", pe.repeat(reps, 1)[:buffer_len][None])  # (1, buffer_len, dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: (B, T, D), T <= buffer_len."""
        if h.shape[1] > self.pe.shape[1]:
            raise ValueError(f"window of {h.shape[1]} frames exceeds the PE buffer ({self.pe.shape[1]})")
        return h + self.pe[:, : h.shape[1]]


def _mlp(d_in: int, d_out: int) -> nn.Sequential:
    """Linear -> SiLU -> Linear (keys ``0`` and ``2``)."""
    return nn.Sequential(nn.Linear(d_in, d_out), nn.SiLU(), nn.Linear(d_out, d_out))


# -----------------------------------------------------------------------------
# Transformer pieces (MotionDiffuse-style linear attention with stylisation)


class Stylization(nn.Module):
    """Conditions a block's output on the embedding e: ``Linear(SiLU(LN(h)(1 + scale) + shift))``."""

    def __init__(self, dim: int, emb_dim: int, dropout: float):
        super().__init__()
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * dim))
        self.norm = nn.LayerNorm(dim)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        nn.init.zeros_(self.out_layers[2].weight)  # zero-initialised in the reference
        nn.init.zeros_(self.out_layers[2].bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """h: (B, T, D), emb: (B, E) -> (B, T, D)."""
        scale, shift = self.emb_layers(emb)[:, None].chunk(2, dim=-1)  # (B, 1, D) each
        return self.out_layers(self.norm(h) * (1 + scale) + shift)


class LinearSelfAttention(nn.Module):
    """Linear attention over time: per head, y = softmax_d(q) (sum_t softmax_t(k)^T v); residual."""

    def __init__(self, dim: int, num_heads: int, emb_dim: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(dim)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.proj_out = Stylization(dim, emb_dim, dropout)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """h: (B, T, D), emb: (B, E) -> (B, T, D)."""
        B, T, D = h.shape
        n = self.norm(h)
        q = self.query(n).view(B, T, self.num_heads, -1).softmax(dim=-1)  # over each head's channels
        k = self.key(n).view(B, T, self.num_heads, -1).softmax(dim=1)  # over time
        v = self.value(n).view(B, T, self.num_heads, -1)
        context = torch.einsum("bthd,bthl->bhdl", k, v)  # (B, H, d, d)
        y = torch.einsum("bthd,bhdl->bthl", q, context).reshape(B, T, D)
        return h + self.proj_out(y, emb)


class FFN(nn.Module):
    """Position-wise feed-forward (no pre-norm), stylised residual."""

    def __init__(self, dim: int, hidden: int, emb_dim: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        nn.init.zeros_(self.linear2.weight)  # zero-initialised in the reference
        nn.init.zeros_(self.linear2.bias)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.proj_out = Stylization(dim, emb_dim, dropout)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """h: (B, T, D), emb: (B, E) -> (B, T, D)."""
        y = self.linear2(self.dropout(self.activation(self.linear1(h))))
        return h + self.proj_out(y, emb)


class AudioEncoderLayer(nn.Module):
    """The reference's condition-free layer on the mel (width 128, no projection).

    Quirk reproduced: its "condition residual" adds the input to itself, so attention and FFN
    run on ``2 * mel``.
    """

    def __init__(self, dim: int, ff_size: int, num_heads: int, emb_dim: int, dropout: float):
        super().__init__()
        self.sa_block = LinearSelfAttention(dim, num_heads, emb_dim, dropout)
        self.ffn = FFN(dim, ff_size, emb_dim, dropout)

    def forward(self, mel: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """mel: (B, T, 128), emb: (B, 4L) -> (B, T, 128)."""
        h = mel + mel
        return self.ffn(self.sa_block(h, emb), emb)


class ConditionedLayer(nn.Module):
    """A branch layer: fuse [h, condition] with an MLP (residual on h), then attention and FFN.

    Rows in ``null_rows`` get the learned null vector in place of the whole fused input
    ``[h, condition]`` (classifier-free guidance); their residual h is kept.
    """

    def __init__(self, cond_dim: int, cfg: DiffSHEGConfig):
        super().__init__()
        L, E = cfg.latent_dim, cfg.time_embed_dim
        self.feat_proj = nn.Sequential(
            nn.LayerNorm(L + cond_dim), nn.Linear(L + cond_dim, 2 * L), nn.SiLU(), nn.Linear(2 * L, L)
        )
        self.sa_block = LinearSelfAttention(L, cfg.num_heads, E, cfg.dropout)
        self.ffn = FFN(L, cfg.ff_size, E, cfg.dropout)

    def forward(
        self,
        h: torch.Tensor,
        cond: torch.Tensor,
        emb: torch.Tensor,
        null_emb: torch.Tensor | None,
        null_rows: torch.Tensor | None,
    ) -> torch.Tensor:
        """h: (B, T, L), cond: (B, T, P - L), emb: (B, 4L), null_emb: (1, P), null_rows: (B,) bool."""
        z = torch.cat([h, cond], dim=-1)
        if null_rows is not None:
            z = torch.where(null_rows[:, None, None], null_emb[None].to(z.dtype), z)
        h = self.feat_proj(z) + h
        return self.ffn(self.sa_block(h, emb), emb)


class HubertEncoder(nn.Sequential):
    """HuBERT 1024 -> 128 over time: Conv1d(k3, no bias), BatchNorm, GELU, Conv1d(k3, no bias)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__(
            nn.Conv1d(d_in, d_out, 3, padding=1, bias=False),
            nn.BatchNorm1d(d_out),
            nn.GELU(),
            nn.Conv1d(d_out, d_out, 3, padding=1, bias=False),
        )

    def forward(self, hubert: torch.Tensor) -> torch.Tensor:
        """hubert: (B, T, 1024) -> (B, T, 128); zero padding at the window edges."""
        return super().forward(hubert.transpose(1, 2)).transpose(1, 2)


# -----------------------------------------------------------------------------
# Branches and the full denoiser


class Branch(nn.Module):
    """One motion branch (the reference's ``MotionTransformer``): x (B, T, C) -> eps (B, T, C).

    Condition per frame: ``[audio_proj(audio), HuBERT128 (optional), extra (optional)]``; for the
    gesture branch ``extra`` is the expression x0 (``extra_dim`` = 103).
    """

    def __init__(self, n_feats: int, extra_dim: int, cfg: DiffSHEGConfig):
        super().__init__()
        L, E = cfg.latent_dim, cfg.time_embed_dim
        hub = cfg.hubert_encoded_dim if cfg.use_hubert else 0
        cond_dim = cfg.audio_latent_dim + hub + extra_dim
        # registration order = the reference's state-dict order
        self.null_cond_emb = nn.Parameter(torch.randn(1, L + cond_dim)) if cfg.classifier_free else None
        self.PE = SinusoidalPE(L, cfg.pe_period, cfg.pe_buffer_len)
        self.joint_embed = nn.Linear(n_feats, L)
        self.audio_proj = nn.Linear(2 * cfg.audio_dim, cfg.audio_latent_dim)
        self.hubert_encoder = HubertEncoder(cfg.hubert_dim, hub) if cfg.use_hubert else None
        self.time_embed = _mlp(L, E)
        self.pid_embed = _mlp(cfg.style_dim, E)
        self.temporal_decoder_blocks = nn.ModuleList(ConditionedLayer(cond_dim, cfg) for _ in range(cfg.num_layers))
        self.out = nn.Linear(L, n_feats)
        self.latent_dim = L

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        audio: torch.Tensor,
        person_id: torch.Tensor,
        hubert128: torch.Tensor | None,
        extra: torch.Tensor | None,
        null_rows: torch.Tensor | None,
    ) -> torch.Tensor:
        """x: (B, T, C), t: (B,), audio: (B, T, 256), person_id: (B, 4), hubert128: (B, T, 128),
        extra: (B, T, X), null_rows: (B,) bool or None -> (B, T, C)."""
        emb = self.time_embed(timestep_embedding(t, self.latent_dim)) + self.pid_embed(person_id)
        h = self.PE(self.joint_embed(x))
        cond = torch.cat([c for c in (self.audio_proj(audio), hubert128, extra) if c is not None], dim=-1)
        for layer in self.temporal_decoder_blocks:
            h = layer(h, cond, emb, self.null_cond_emb, null_rows)
        return self.out(h)

    def guided(self, scale: float, x, t, audio, person_id, hubert128, extra) -> torch.Tensor:
        """Classifier-free guided output ``u + scale (c - u)``; one conditional pass when scale == 1.

        As the reference, the batch is doubled, the first half gets the null condition.
        """
        if scale == 1.0:
            return self.forward(x, t, audio, person_id, hubert128, extra, None)
        if self.null_cond_emb is None:
            raise ValueError("guidance scale != 1 needs a classifier-free model")
        B = x.shape[0]
        two = lambda a: None if a is None else torch.cat([a, a])  # noqa: E731
        null_rows = torch.arange(2 * B, device=x.device) < B
        out = self.forward(two(x), two(t), two(audio), two(person_id), two(hubert128), two(extra), null_rows)
        uncond, cond = out[:B], out[B:]
        return uncond + scale * (cond - uncond)


class DiffSHEGDenoiser(nn.Module):
    """UniEG: audio encoder + expression branch -> (x0) -> gesture branch. Predicts epsilon."""

    def __init__(self, cfg: DiffSHEGConfig):
        super().__init__()
        self.cfg = cfg
        L, E = cfg.latent_dim, cfg.time_embed_dim
        self.time_embed = _mlp(L, E)
        self.encoder_aud = AudioEncoderLayer(cfg.audio_dim, cfg.ff_size, cfg.num_heads, E, cfg.dropout)
        self.encoder_exp = Branch(cfg.expression_dim, 0, cfg)
        self.encoder_ges = Branch(cfg.dim_pose, cfg.expression_dim, cfg)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        c1: torch.Tensor,
        c2: torch.Tensor,
        mel: torch.Tensor,
        person_id: torch.Tensor,
        hubert: torch.Tensor | None = None,
        cond_scale: float = 1.0,
        null_rows: torch.Tensor | None = None,
    ) -> DenoiserOutput:
        """Predict the noise of x.

        x: (B, T, 232) noisy normalised motion; t: (B,) int original (0-999) timesteps;
        c1, c2: (B,) float32 sqrt(1/abar_t), sqrt(1/abar_t - 1) from the scheduler's tables;
        mel: (B, T, 128); person_id: (B, 4) one-hot; hubert: (B, T, 1024) if ``cfg.use_hubert``;
        cond_scale: guidance scale (only used with ``null_rows`` None);
        null_rows: (B,) bool, rows given the null condition in every layer (training).
        """
        cfg = self.cfg
        if (hubert is not None) != cfg.use_hubert:
            raise ValueError("pass hubert features exactly when the model was built with use_hubert")
        if null_rows is not None and cond_scale != 1.0:
            raise ValueError("null_rows (training) and guidance (sampling) are exclusive")
        x_ges, x_expr = x.split([cfg.dim_pose, cfg.expression_dim], dim=-1)

        # 1-2. audio encoder on the mel, with the shared timestep embedding
        e0 = self.time_embed(timestep_embedding(t, cfg.latent_dim))
        audio_feat = self.encoder_aud(mel, e0)
        audio = torch.cat([mel, audio_feat], dim=-1)  # (B, T, 256)

        # HuBERT is encoded per branch (each has its own encoder), before any batch doubling
        hub_exp = self.encoder_exp.hubert_encoder(hubert) if cfg.use_hubert else None
        hub_ges = self.encoder_ges.hubert_encoder(hubert) if cfg.use_hubert else None

        def run(branch: Branch, xb, hub, extra):
            if null_rows is not None:
                return branch(xb, t, audio, person_id, hub, extra, null_rows)
            return branch.guided(cond_scale, xb, t, audio, person_id, hub, extra)

        # 3-4. expression branch, then its x0 estimate (no gradient flows back through it)
        eps_expr = run(self.encoder_exp, x_expr, hub_exp, None)
        expr_x0 = c1[:, None, None] * x_expr - c2[:, None, None] * eps_expr.detach()

        # 5-6. gesture branch conditioned on the expression x0
        eps_ges = run(self.encoder_ges, x_ges, hub_ges, expr_x0)
        return DenoiserOutput(torch.cat([eps_ges, eps_expr], dim=-1), expr_x0, audio_feat)


# -----------------------------------------------------------------------------
# Loading


def _numpy_scalar_globals() -> list:
    """What ``torch.save`` of numpy float/int scalars needs under ``weights_only=True``, and no more."""
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    dtype_classes = [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32")]
    return [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype,
            *dtype_classes]


def load_state_dict_file(path: str) -> dict[str, torch.Tensor]:
    """Read a denoiser state dict from ``.safetensors`` or a reference ``.tar``/``.pt`` checkpoint.

    Reference checkpoints (``torch.save`` of a dict holding the state dict under ``encoder``) are read
    with ``weights_only=True``; only numpy scalar metadata (FGD etc.) is allow-listed.
    """
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path))
    with torch.serialization.safe_globals(_numpy_scalar_globals()):
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    return ckpt["encoder"] if "encoder" in ckpt else ckpt


def load_denoiser(path: str, cfg: DiffSHEGConfig) -> DiffSHEGDenoiser:
    """Build the denoiser for ``cfg`` and load ``path`` with ``strict=True``; eval mode."""
    model = DiffSHEGDenoiser(cfg)
    model.load_state_dict(load_state_dict_file(path), strict=True)
    return model.eval()
