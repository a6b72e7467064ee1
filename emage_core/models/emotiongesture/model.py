"""EmotionGesture (Qi et al., 2023, arXiv 2305.18891), rebuilt from the paper's description for SMPL-X.

The authors' partial code was not used; every module below follows the paper's text, and where the text
leaves a choice open the choice is ours (marked "ours"). One window of W = S + T frames:

    log-mel (B, W, 80) ─► AudioEncoder ─┬─► emotion features e (B, W, De) ─► EmotionClassifier ─► (B, 8) BEAT labels
                                        └─► beat features b    (B, W, Db) ─► (training) InfoNCE against the words
    e, label (+ the window's real motion, training only) ─► EmotionVAE.encode ─► q(z | ...) = N(mu, exp(logvar))   (B, Z)
    z, label ─► EmotionVAE.decode ─► ê (B, W, De)  the emotion features the motion is made from
                (training: z ~ q(z | ...); inference: z = temperature x N(0, I) per window, label = the request)
    ê ─► EmotionClassifier ─► (B, 8)   (training: ê must read as the label it was decoded for)
    ê, b ─► Fusion: beat(b) x (1 + gain(ê)) + emotion(ê) ─► + PE ─► Transformer encoder ─► memory (B, W, D)
    seed poses (B, S, P) ─► SpatialTemporalPrompter ─► queries (B, T, D), forecast (B, T, P)
    queries + proj(ê of their frames) + PE ─► Transformer decoder (attends to memory) ─► raw poses (B, T, P)
    [seed, raw poses] ─► Gaussian low-pass over time (sigma 2 frames) ─► poses (B, T, P)

S seed frames are given (the previous window's last frames, or locked frames of a reference); the T
frames after them are generated. P = 258: 43 SMPL-X joints in 6D (`channels`), normalised. Audio covers
the seed frames too, so the decoder hears what was said while the seed moved.

Ours, where the paper is silent or not reachable here: the conv audio trunk, the sizes, the hashed
learned word embedding (the paper: FastText); the VAE's window-level latent decoded frame by frame from
the frame's position in the window, with an encoder that also reads the window's motion (so the latent
holds what the speech does not decide); the classifier also reading the decoded features (so the label
shows in them even where the speech alone would not tell the emotions apart); the multiplicative fusion
and the decoded emotion features added to the queries (without both, a short run learned neither the
label nor the latent: the decoder read the beats and the seed and ignored the rest); the prompter's exact
layers (below); sinusoidal positions; the fixed low-pass at the end (`temporal_lowpass`): a decoder that
reads per-frame audio and per-frame queries puts frame-to-frame noise on every joint, and short CPU runs
did not train it away (jerk 9-13x the real capture's with the smooth loss alone; with sigma 1.5, 2.1-2.2x); the filter runs in
training too, over the seed and the generated frames together, so the model learns the motion that
passes it and consecutive windows join through it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

N_EMOTION_CLASSES = 8  # BEAT's eight emotions (`motion.beat2.EMOTIONS`), the classifier's output


@dataclass
class EmotionGestureConfig:
    """Everything that decides the network's shape (and the default window)."""

    pose_dim: int = 258  # 43 joints x 6D
    n_mels: int = 80
    hidden: int = 128  # D
    emotion_dim: int = 64  # De
    beat_dim: int = 64  # Db
    text_dim: int = 64
    contrast_dim: int = 64  # where beat and word features meet (InfoNCE)
    word_buckets: int = 2048  # hashed word embedding rows (row 0 = no word)
    latent_dim: int = 32  # Z, the emotion VAE's latent
    n_labels: int = 0  # learned emotion labels (config.json "emotion_labels"); the VAE has one more, "no label"
    encoder_layers: int = 2
    decoder_layers: int = 2
    heads: int = 4
    ff: int = 256
    dropout: float = 0.1
    seed_frames: int = 8  # S
    window: int = 64  # T at inference unless asked otherwise
    max_window: int = 256  # the longest T (the prompter's step embeddings)
    gate_frames: int = 16  # K: the first chunk the prompter's spatial gate refines
    memory_frames: int = 4  # M: the last seed frames the spatial memory holds
    smooth_sigma: float = 2.0  # the output's temporal low-pass, Gaussian sigma in frames (0 = none; ours)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EmotionGestureConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown EmotionGesture model settings: {', '.join(unknown)}")
        return cls(**dict(d))

    @property
    def null_label(self) -> int:
        """The VAE's "no label" row."""
        return self.n_labels


def sinusoids(length: int, dim: int, offset: int = 0, device=None) -> torch.Tensor:
    """(length, dim) sinusoidal positions offset..offset+length-1 (any length)."""
    pos = torch.arange(offset, offset + length, dtype=torch.float32, device=device)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe


def temporal_lowpass(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian low-pass over time, (B, L, C) -> (B, L, C); the ends are extended by their last frame.

    sigma in frames: 2 at 30 fps halves the amplitude at about 2.8 Hz and removes frame-to-frame jitter
    (93% of the velocity power of the capture's elbows and wrists is below 2 Hz); 0 returns x unchanged."""
    if sigma <= 0:
        return x
    radius = int(math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, -1).expand(x.shape[-1], 1, -1)
    padded = F.pad(x.transpose(1, 2), (radius, radius), mode="replicate")
    return F.conv1d(padded, kernel, groups=x.shape[-1]).transpose(1, 2)


class ConvBlock(nn.Module):
    """A residual dilated convolution over time: (B, T, C) -> (B, T, C), same length."""

    def __init__(self, dim: int, dilation: int, dropout: float, kernel: int = 5):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv1d(dim, dim, kernel, padding=dilation * (kernel // 2), dilation=dilation)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(F.gelu(self.conv(self.norm(x).transpose(1, 2)).transpose(1, 2)))


class AudioEncoder(nn.Module):
    """Log-mel (B, W, n_mels) -> emotion features (B, W, De) and beat features (B, W, Db).

    A shared trunk (a linear lift, then residual convolutions dilated 1, 2, 4: about +-0.5 s of context)
    with two heads, as the paper's Emotion-Beat Mining splits the audio into what it feels and when it
    stresses."""

    def __init__(self, cfg: EmotionGestureConfig):
        super().__init__()
        self.lift = nn.Linear(cfg.n_mels, cfg.hidden)
        self.trunk = nn.Sequential(*(ConvBlock(cfg.hidden, d, cfg.dropout) for d in (1, 2, 4)))
        self.emotion_head = nn.Sequential(nn.LayerNorm(cfg.hidden), nn.Linear(cfg.hidden, cfg.emotion_dim))
        self.beat_head = nn.Sequential(nn.LayerNorm(cfg.hidden), nn.Linear(cfg.hidden, cfg.beat_dim))

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shared = self.trunk(self.lift(mel))
        return self.emotion_head(shared), self.beat_head(shared)


class EmotionClassifier(nn.Module):
    """Emotion features (B, W, De) -> (B, 8) logits over BEAT's emotions (mean over time, then linear)."""

    def __init__(self, cfg: EmotionGestureConfig):
        super().__init__()
        self.out = nn.Linear(cfg.emotion_dim, N_EMOTION_CLASSES)

    def forward(self, emotion: torch.Tensor) -> torch.Tensor:
        return self.out(emotion.mean(dim=1))


class TextEncoder(nn.Module):
    """Per-frame word rows (B, W) int64 -> word features (B, W, C) in the contrastive space.

    Training only (inference needs audio only). A learned hashed word embedding (`text.word_bucket`;
    row 0 = no word) and one residual convolution, so a frame's feature also knows its neighbours."""

    def __init__(self, cfg: EmotionGestureConfig):
        super().__init__()
        self.embed = nn.Embedding(cfg.word_buckets, cfg.text_dim)
        self.context = ConvBlock(cfg.text_dim, 1, cfg.dropout)
        self.proj = nn.Linear(cfg.text_dim, cfg.contrast_dim)

    def forward(self, words: torch.Tensor) -> torch.Tensor:
        return self.proj(self.context(self.embed(words)))


class EmotionVAE(nn.Module):
    """The emotion-conditioned VAE over the emotion features.

        encode: e (B, W, De), label (B,), x (B, W, P) -> mu, logvar (B, Z)
                per-frame MLP on [e, label, x], mean over time
        decode: z (B, Z), label (B,), W -> ê (B, W, De)
                per-frame MLP on [z, label, position of the frame]

    One latent per window: it holds the course of the window's emotion features (the positions, sinusoids
    of the frame index within the window, are the decoder's only clock) and, as the encoder also reads
    the window's real motion x (training only), how this window moved beyond what the speech decides
    (both ours). The label gives their kind. Label row ``n_labels`` is "no label"."""

    def __init__(self, cfg: EmotionGestureConfig):
        super().__init__()
        self.clock_dim = cfg.emotion_dim
        self.label = nn.Embedding(cfg.n_labels + 1, cfg.emotion_dim)
        self.enc = nn.Sequential(nn.Linear(2 * cfg.emotion_dim + cfg.pose_dim, cfg.hidden), nn.GELU(),
                                 nn.Linear(cfg.hidden, cfg.hidden))
        self.to_stats = nn.Linear(cfg.hidden, 2 * cfg.latent_dim)
        self.dec = nn.Sequential(nn.Linear(cfg.latent_dim + 2 * cfg.emotion_dim, cfg.hidden), nn.GELU(),
                                 nn.Linear(cfg.hidden, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, cfg.emotion_dim))

    def encode(self, emotion: torch.Tensor, label: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.label(label)[:, None].expand(-1, emotion.shape[1], -1)
        mu, logvar = self.to_stats(self.enc(torch.cat([emotion, y, x], dim=-1)).mean(dim=1)).chunk(2, dim=-1)
        return mu, logvar.clamp(-10, 10)

    def decode(self, z: torch.Tensor, label: torch.Tensor, W: int) -> torch.Tensor:
        zy = torch.cat([z, self.label(label)], dim=-1)[:, None].expand(-1, W, -1)
        clock = sinusoids(W, self.clock_dim, device=z.device)[None].expand(len(z), -1, -1)
        return self.dec(torch.cat([zy, clock], dim=-1))


class SpatialTemporalPrompter(nn.Module):
    """Seed poses -> the decoder's queries for the T following frames, and its own forecast of them.

        h = embed(seed)                                 (B, S, D)  each seed pose as a feature
        trend = mlp(flatten(h))                         (B, D)     where the seed is heading
        coarse_t = trend + step_t, t < T                (B, T, D)  one query per following frame
        coarse += TemporalMemory(coarse, h)             softmax attention over the seed frames
        m = mean(h[:, -M:])                             (B, D)     spatial memory: the last M seed frames
        g = sigmoid(gate([coarse[:, :K], m]))           (B, K, D)  per-channel spatial gate
        coarse[:, :K] = g * coarse[:, :K] + (1 - g) * m the first chunk refined against the memory
        forecast = pose_head(coarse)                    (B, T, P)  trained against the target frames

    The paper describes a prompter that predicts the frames after the initial poses and refines the first
    ones with spatial and temporal memories of the seed; these layers are our reading of it."""

    def __init__(self, cfg: EmotionGestureConfig):
        super().__init__()
        D, S = cfg.hidden, cfg.seed_frames
        self.K, self.M = cfg.gate_frames, min(cfg.memory_frames, S)
        self.embed = nn.Linear(cfg.pose_dim, D)
        self.trend = nn.Sequential(nn.Linear(S * D, D), nn.GELU(), nn.Linear(D, D))
        self.step = nn.Embedding(cfg.max_window, D)
        self.temporal = nn.MultiheadAttention(D, cfg.heads, batch_first=True)
        self.temporal_norm = nn.LayerNorm(D)
        self.gate = nn.Linear(2 * D, D)
        self.pose_head = nn.Linear(D, cfg.pose_dim)

    def forward(self, seed: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        if T > self.step.num_embeddings:
            raise ValueError(f"window of {T} frames is longer than this model's {self.step.num_embeddings}")
        h = self.embed(seed)
        trend = self.trend(h.flatten(1))
        coarse = trend[:, None] + self.step.weight[:T][None]
        memory, _ = self.temporal(self.temporal_norm(coarse), h, h, need_weights=False)
        coarse = coarse + memory
        m = h[:, -self.M:].mean(dim=1, keepdim=True)
        K = min(self.K, T)
        first = coarse[:, :K]
        g = torch.sigmoid(self.gate(torch.cat([first, m.expand(-1, K, -1)], dim=-1)))
        queries = torch.cat([g * first + (1 - g) * m, coarse[:, K:]], dim=1)
        return queries, self.pose_head(queries)


class Fusion(nn.Module):
    """Emotion and beat features -> one feature per frame for the transformer, (B, W, D).

        fused = beat(b) * (1 + gain(ê)) + emotion(ê)

    The emotion features set how strongly the beats drive the motion (a multiplicative gain, ours) and
    add their own part; a plain concatenation let the decoder read the beats and ignore the emotion."""

    def __init__(self, cfg: EmotionGestureConfig):
        super().__init__()
        self.beat = nn.Linear(cfg.beat_dim, cfg.hidden)
        self.gain = nn.Linear(cfg.emotion_dim, cfg.hidden)
        self.emotion = nn.Linear(cfg.emotion_dim, cfg.hidden)

    def forward(self, emotion: torch.Tensor, beat: torch.Tensor) -> torch.Tensor:
        return self.beat(beat) * (1 + self.gain(emotion)) + self.emotion(emotion)


class EmotionGestureOutput(NamedTuple):
    poses: torch.Tensor  # (B, T, P) the generated frames (normalised)
    forecast: torch.Tensor  # (B, T, P) the prompter's own forecast
    emotion: torch.Tensor  # (B, W, De) the audio's emotion features
    beat: torch.Tensor  # (B, W, Db) the audio's beat features
    emotion_hat: torch.Tensor  # (B, W, De) the VAE's emotion features (what the motion was made from)
    logits: torch.Tensor  # (B, 8) the emotion classifier on the audio's emotion features
    logits_hat: torch.Tensor  # (B, 8) the emotion classifier on the VAE's
    mu: torch.Tensor  # (B, Z) the posterior (zeros when z was given)
    logvar: torch.Tensor  # (B, Z)


class EmotionGestureModel(nn.Module):
    """The whole network (see the module docstring); `forward` runs one window."""

    def __init__(self, cfg: EmotionGestureConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.hidden
        self.audio = AudioEncoder(cfg)
        self.classifier = EmotionClassifier(cfg)
        self.beat_proj = nn.Linear(cfg.beat_dim, cfg.contrast_dim)
        self.text = TextEncoder(cfg)
        self.vae = EmotionVAE(cfg)
        self.fuse = Fusion(cfg)
        layer = dict(d_model=D, nhead=cfg.heads, dim_feedforward=cfg.ff, dropout=cfg.dropout, batch_first=True,
                     norm_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**layer), cfg.encoder_layers,
                                             norm=nn.LayerNorm(D), enable_nested_tensor=False)
        self.prompter = SpatialTemporalPrompter(cfg)
        self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**layer), cfg.decoder_layers, norm=nn.LayerNorm(D))
        self.emotion_to_query = nn.Linear(cfg.emotion_dim, D)
        self.to_pose = nn.Linear(D, cfg.pose_dim)

    def forward(self, mel: torch.Tensor, seed: torch.Tensor, label: torch.Tensor, z: torch.Tensor | None = None,
                motion: torch.Tensor | None = None) -> EmotionGestureOutput:
        """One window.

        mel: (B, S + T, n_mels) normalised log-mel of the seed frames and the frames to generate.
        seed: (B, S, P) normalised poses of the seed frames.
        label: (B,) int64 emotion label rows; ``cfg.null_label`` = no label.
        z: (B, Z) the emotion latent (inference), or None: a sample of the posterior (training), which
        needs ``motion``: (B, S + T, P) the window's real poses, normalised.
        """
        S, W = seed.shape[1], mel.shape[1]
        emotion, beat = self.audio(mel)
        logits = self.classifier(emotion)
        if z is None:
            if motion is None:
                raise ValueError("give the emotion latent z, or the window's real motion to sample its posterior")
            mu, logvar = self.vae.encode(emotion, label, motion)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        else:
            mu = logvar = torch.zeros_like(z)
        emotion_hat = self.vae.decode(z, label, W)
        logits_hat = self.classifier(emotion_hat)
        fused = self.fuse(emotion_hat, beat)
        memory = self.encoder(fused + sinusoids(W, self.cfg.hidden, device=mel.device))
        queries, forecast = self.prompter(seed, W - S)
        queries = queries + self.emotion_to_query(emotion_hat[:, S:])
        h = self.decoder(queries + sinusoids(W - S, self.cfg.hidden, offset=S, device=mel.device), memory)
        poses = temporal_lowpass(torch.cat([seed, self.to_pose(h)], dim=1), self.cfg.smooth_sigma)[:, S:]
        return EmotionGestureOutput(poses, forecast, emotion, beat, emotion_hat, logits, logits_hat, mu, logvar)

    def contrast_features(self, beat: torch.Tensor, words: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Beat features (B, W, Db) and word rows (B, W) -> both in the contrastive space, (B, W, C) each."""
        return self.beat_proj(beat), self.text(words)
