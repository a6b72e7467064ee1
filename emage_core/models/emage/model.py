"""The EMAGE audio-to-gesture networks, state-dict compatible with the PantoMatrix release.

Six sub-models make up a checkpoint (Hub repo ``H-Liu1997/emage_audio``):

- ``EmageAudioModel``: audio (+ optional given motion) -> per-part latents and code logits;
- ``VQVAEConv`` x4 (face, upper, hands, lower): 1-D conv VQ-VAEs, one code per frame at 30 fps;
- ``VAEConv`` (global): a plain conv autoencoder that turns the decoded lower body into
  root velocity.

Parameter and buffer names mirror the reference implementation exactly, so the released
state dicts load with ``strict=True``. Tensors are batch-first ``(B, T, C)`` everywhere.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...motion.skeleton import HANDS_JOINTS, LOWER_JOINTS, N_EXPRESSIONS, N_JOINTS, UPPER_JOINTS

# -----------------------------------------------------------------------------
# Motion layout: 337 channels per frame = 55 joints x 6D rotation, translation 3, foot contact 4.

ROT6D = 6
MOTION_DIM = N_JOINTS * ROT6D + 3 + 4  # 337
TRANS_SLICE = slice(N_JOINTS * ROT6D, N_JOINTS * ROT6D + 3)  # 330:333
CONTACT_SLICE = slice(N_JOINTS * ROT6D + 3, MOTION_DIM)  # 333:337

# Feature sizes of the part VQ-VAEs.
FACE_DIM = ROT6D + N_EXPRESSIONS  # 106 = jaw 6D + expressions
UPPER_DIM = len(UPPER_JOINTS) * ROT6D  # 78
HANDS_DIM = len(HANDS_JOINTS) * ROT6D  # 180
LOWER_DIM = len(LOWER_JOINTS) * ROT6D + 3 + 4  # 61 = joints + translation + contact
# The global autoencoder's 61 channels (the lower body's layout): joints, then the root's (vx, y, vz), then contact.
GLOBAL_JOINTS_SLICE = slice(0, len(LOWER_JOINTS) * ROT6D)  # 0:54
GLOBAL_VELOCITY_SLICE = slice(len(LOWER_JOINTS) * ROT6D, len(LOWER_JOINTS) * ROT6D + 3)  # 54:57

VQ_PARTS = ("face", "upper", "hands", "lower")  # the parts coded by a VQ-VAE


def _from_dict(cls, d: Mapping[str, Any]):
    """Build a config dataclass from a Hub ``config.json`` dict, ignoring unknown keys."""
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in d.items() if k in names}
    return cls(**kwargs)


@dataclass
class EmageAudioConfig:
    """Config of `EmageAudioModel`; defaults are the released sizes."""

    pose_dims: int = 330  # 55 joints x 6D; the model adds translation 3 + contact 4
    audio_f: int = 256  # audio feature channels
    motion_f: int = 256  # motion-hint channels
    hidden_size: int = 768
    speaker_dims: int = 1
    pose_length: int = 64  # window length in frames (also the positional-encoding period)
    seed_frames: int = 4
    vae_codebook_size: int = 256  # NB: the reference uses this as the latent width AND the class count
    pose_fps: int = 30
    audio_sr: int = 16000
    # loss weights (training); lf > 0 and cf == 0 means the face is decoded from its latent
    lu: float = 3
    ll: float = 3
    lh: float = 3
    lf: float = 3
    cu: float = 1
    cl: float = 1
    ch: float = 1
    cf: float = 0
    # Learned conditioning (EMAGE Studio; absent from the released configs, which then build exactly
    # the released parameters). emotion_labels: names the model was trained with; they add an
    # ``emotion_embedding`` of len + 1 rows, the last one "no label" (classifier-free guidance).
    # speaker_labels: names of the speaker embedding's rows; needs speaker_dims = len + 1 (last: none).
    emotion_labels: tuple[str, ...] | None = None
    speaker_labels: tuple[str, ...] | None = None
    # Frame-aligned audio (EMAGE Studio; False = the released forward, and what configs without the
    # key get). As released, the face query is speaker + position only and neither audio memory
    # carries a position, so inside a window an output frame cannot find its own audio frame and the
    # lips cannot follow the speech. True: the face query adds its own frame's audio+hint memory,
    # and both audio memories get the periodic position encoding. No new parameters.
    aligned_audio: bool = False

    def __post_init__(self):
        for name in ("emotion_labels", "speaker_labels"):
            labels = getattr(self, name)
            labels = tuple(str(x) for x in labels) if labels else None  # [] and None both mean: none
            if labels and len(set(labels)) != len(labels):
                raise ValueError(f"{name} must be distinct, got {list(labels)}")
            setattr(self, name, labels)
        if self.speaker_labels and self.speaker_dims != len(self.speaker_labels) + 1:
            raise ValueError(f"speaker_labels has {len(self.speaker_labels)} names, so speaker_dims must be "
                             f"{len(self.speaker_labels) + 1} (the last row = no speaker), got {self.speaker_dims}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EmageAudioConfig":
        return _from_dict(cls, d)

    @property
    def null_emotion(self) -> int | None:
        """Index of the "no emotion label" row of ``emotion_embedding`` (None: no emotions)."""
        return len(self.emotion_labels) if self.emotion_labels else None

    @property
    def null_speaker(self) -> int | None:
        """Index of the "no speaker label" row (None when the config names no speakers)."""
        return len(self.speaker_labels) if self.speaker_labels else None

    @property
    def motion_dim(self) -> int:
        return self.pose_dims + 3 + 4


@dataclass
class VQConfig:
    """Config of `VQVAEConv` / `VAEConv`; defaults are the released lower-body model."""

    vae_test_dim: int = 61  # feature channels of the part
    vae_length: int = 256  # latent width (= codebook vector size)
    vae_codebook_size: int = 256  # number of codes
    vae_layer: int = 4
    vae_quantizer_lambda: float = 1.0  # commitment weight
    pose_fps: int = 30
    pose_length: int = 64

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "VQConfig":
        return _from_dict(cls, d)


# -----------------------------------------------------------------------------
# Building blocks


class MLP(nn.Module):
    """Linear -> LeakyReLU(0.1) -> Linear on the last dim."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.leaky_relu(self.fc1(x), 0.1))


class PeriodicPositionalEncoding(nn.Module):
    """Sinusoidal encoding that restarts every ``period`` frames; adds to (B, T, D), T <= len(pe)."""

    def __init__(self, d_model: int, period: int, max_seq_len: int, dropout: float = 0.1):
        super().__init__()
        position = torch.arange(period, dtype=torch.float32)[:, None]
        div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(period, d_model)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        repeats = max_seq_len // period + 1
        self.register_buffer("pe", pe[None].repeat(1, repeats, 1))  # (1, period * repeats, D)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x + self.pe[:, : x.shape[1]])


class AudioBlock(nn.Module):
    """Residual 1-D conv block (timm BasicBlock layout) with BatchNorm and LeakyReLU(0.01).

    conv1 may stride; ``downsample`` (conv + BN) matches the shortcut to the new shape.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, downsample: bool):
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=padding)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, padding=kernel // 2)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.downsample = (
            nn.Sequential(nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=padding), nn.BatchNorm1d(c_out))
            if downsample
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, S) -> (B, C_out, S')."""
        shortcut = x if self.downsample is None else self.downsample(x)
        y = F.leaky_relu(self.bn1(self.conv1(x)), 0.01)
        y = self.bn2(self.conv2(y))
        return F.leaky_relu(y + shortcut, 0.01)


class AudioEncoder(nn.Module):
    """Raw 16 kHz waveform -> 30 fps features: six residual conv blocks, strides 5, 6, 1, 6, 1, 3.

    The first conv pads 1600 samples each side, so L x 533 samples give L frames for
    L >= 26 (L + 1 frames for shorter inputs).
    """

    def __init__(self, out_dim: int):
        super().__init__()
        q, h = out_dim // 4, out_dim // 2
        self.feat_extractor = nn.Sequential(
            AudioBlock(1, q, 15, 5, 1600, downsample=True),
            AudioBlock(q, q, 15, 6, 0, downsample=True),
            AudioBlock(q, q, 15, 1, 7, downsample=False),
            AudioBlock(q, h, 15, 6, 0, downsample=True),
            AudioBlock(h, h, 15, 1, 7, downsample=False),
            AudioBlock(h, out_dim, 15, 3, 0, downsample=True),
        )

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, S) samples -> (B, T', out_dim)."""
        return self.feat_extractor(wav[:, None, :]).transpose(1, 2)


class ResBlock(nn.Module):
    """x + conv(leaky(conv(x))), kernel 3, same length."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(
            nn.Conv1d(channels, channels, 3, 1, 1),
            nn.LeakyReLU(0.2),
            nn.Conv1d(channels, channels, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) + x


def _xavier(m: nn.Module) -> None:
    if isinstance(m, nn.Conv1d):
        nn.init.xavier_normal_(m.weight)
        nn.init.zeros_(m.bias)


def _receptive_radius(net: nn.Module) -> int:
    """Context frames per side of a stack of stride-1 'same' convs (every kernel adds (k - 1) / 2)."""
    return sum((m.kernel_size[0] - 1) // 2 for m in net.modules() if isinstance(m, nn.Conv1d))


class _ConvStack(nn.Module):
    """A stride-1 'same' conv stack over time, ``self.main``, applied to batch-first (B, T, C) tensors."""

    main: nn.Sequential

    @property
    def receptive_radius(self) -> int:
        """Frames of context on each side that influence one output frame."""
        return _receptive_radius(self.main)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x.transpose(1, 2)).transpose(1, 2)


class ConvEncoder(_ConvStack):
    """(B, T, in_dim) -> (B, T, width): ``layers`` x [conv k3, LeakyReLU 0.2, ResBlock]. No downsampling."""

    def __init__(self, in_dim: int, width: int, layers: int):
        super().__init__()
        mods: list[nn.Module] = []
        for i in range(layers):
            mods += [nn.Conv1d(in_dim if i == 0 else width, width, 3, 1, 1), nn.LeakyReLU(0.2), ResBlock(width)]
        self.main = nn.Sequential(*mods)
        self.main.apply(_xavier)


class ConvDecoder(_ConvStack):
    """(B, T, width) -> (B, T, out_dim): 2 ResBlocks, ``layers`` x [conv k3, LeakyReLU 0.2], final conv."""

    def __init__(self, width: int, out_dim: int, layers: int):
        super().__init__()
        chans = [width] * layers + [out_dim]
        mods: list[nn.Module] = [ResBlock(width), ResBlock(width)]
        for i in range(layers):
            mods += [nn.Conv1d(chans[i], chans[i + 1], 3, 1, 1), nn.LeakyReLU(0.2)]
        mods.append(nn.Conv1d(out_dim, out_dim, 3, 1, 1))
        self.main = nn.Sequential(*mods)
        self.main.apply(_xavier)


# -----------------------------------------------------------------------------
# Transformer layers: PyTorch's post-norm defaults (ReLU, dropout 0.1, FFN 2 x hidden), batch-first,
# with nn.MultiheadAttention's parameter names so the released weights load as they are.


class MultiheadAttention(nn.Module):
    """Multi-head attention with a packed q/k/v projection (``in_proj_*``), as nn.MultiheadAttention."""

    def __init__(self, dim: int, n_heads: int, dropout: float = 0.1):
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))  # packed q, k, v
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        return x.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2)  # (B, h, T, d)

    def project(self, x: torch.Tensor, rows: str) -> torch.Tensor:
        """x @ the ``rows`` ("qkv", "q" or "kv") of the packed projection (inference may swap this in)."""
        if rows == "qkv":
            return F.linear(x, self.in_proj_weight, self.in_proj_bias)
        D = self.in_proj_weight.shape[1]
        rows = slice(0, D) if rows == "q" else slice(D, 3 * D)
        return F.linear(x, self.in_proj_weight[rows], self.in_proj_bias[rows])

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        """Self-attention over x (B, T, D), or cross-attention to memory (B, S, D)."""
        if memory is None:
            q, k, v = self.project(x, "qkv").chunk(3, dim=-1)
        else:
            q = self.project(x, "q")
            k, v = self.project(memory, "kv").chunk(2, dim=-1)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v), dropout_p=p)
        y = y.transpose(1, 2).reshape(x.shape)
        return self.out_proj(y)


class _PostNormLayer(nn.Module):
    """Shared helpers of the two layer types; subclasses register the parameters in nn.Transformer order."""

    p: float

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p, self.training)

    def _ff(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self._drop(F.relu(self.linear1(x))))


class EncoderLayer(_PostNormLayer):
    """Post-norm transformer encoder layer (nn.TransformerEncoderLayer semantics): (B, T, D) -> (B, T, D)."""

    def __init__(self, dim: int, n_heads: int = 4, ff: int | None = None, dropout: float = 0.1):
        super().__init__()
        ff = ff or 2 * dim
        self.p = dropout
        self.self_attn = MultiheadAttention(dim, n_heads, dropout)
        self.linear1 = nn.Linear(dim, ff)
        self.linear2 = nn.Linear(ff, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self._drop(self.self_attn(x)))
        return self.norm2(x + self._drop(self._ff(x)))


class DecoderLayer(_PostNormLayer):
    """Post-norm transformer decoder layer (nn.TransformerDecoderLayer semantics, no masks)."""

    def __init__(self, dim: int, n_heads: int = 4, ff: int | None = None, dropout: float = 0.1):
        super().__init__()
        ff = ff or 2 * dim
        self.p = dropout
        self.self_attn = MultiheadAttention(dim, n_heads, dropout)
        self.multihead_attn = MultiheadAttention(dim, n_heads, dropout)
        self.linear1 = nn.Linear(dim, ff)
        self.linear2 = nn.Linear(ff, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) attends to itself, then to memory (B, S, D)."""
        x = self.norm1(x + self._drop(self.self_attn(x)))
        x = self.norm2(x + self._drop(self.multihead_attn(x, memory)))
        return self.norm3(x + self._drop(self._ff(x)))


class TransformerEncoder(nn.Module):
    """A stack of encoder layers, (B, T, D) -> (B, T, D); no final norm (as in the reference)."""

    def __init__(self, dim: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(dim) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class TransformerDecoder(nn.Module):
    """A stack of decoder layers: query (B, T, D), memory (B, S, D) -> (B, T, D); no final norm."""

    def __init__(self, dim: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(dim) for _ in range(num_layers))

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, memory)
        return x


# -----------------------------------------------------------------------------
# The audio model


class EmageAudioModel(nn.Module):
    """Audio + partially given motion -> per-part latents (``rec_*``) and code logits (``cls_*``).

    Face: a 4-layer decoder whose query is speaker + position only and whose memory mixes
    face audio features with body hints. Body: masked-motion hints -> self-attention ->
    8-layer cross-attention to body audio -> upper / hands / lower streams, each refined by
    a 1-layer decoder that attends to the sum of the other two.

    ``config.aligned_audio`` (ours, off in the released configs) lets each output frame read its
    own audio frame: see `EmageAudioConfig`.

    Optional emotion conditioning (``config.emotion_labels``): ``emotion_embedding`` (labels + 1
    rows, the last = no label) is added to the speaker embedding wherever that goes into the body
    and face queries. Without labels the module is exactly the released architecture.
    """

    def __init__(self, config: EmageAudioConfig):
        super().__init__()
        self.config = c = config
        H = c.hidden_size
        # Registration order follows the reference so state_dict() lists keys the same way.
        self.audio_encoder_face = AudioEncoder(c.audio_f)
        self.audio_encoder_body = AudioEncoder(c.audio_f)
        self.speaker_embedding_body = nn.Embedding(c.speaker_dims, H)
        self.speaker_embedding_face = nn.Embedding(c.speaker_dims, H)
        # replaces every masked (to be generated) channel of the input motion
        self.mask_embedding = nn.Parameter(torch.randn(1, 1, c.motion_dim) * H**-0.5)
        self.motion_encoder = ConvEncoder(c.motion_dim, c.motion_f, layers=3)
        self.bodyhints_face = MLP(c.motion_f, H, c.motion_f)
        self.bodyhints_body = MLP(c.motion_f, H, c.motion_f)
        self.audio_body_motion_proj = nn.Linear(c.audio_f, H)
        self.moton_proj = nn.Linear(c.motion_f, H)  # (sic) reference spelling
        self.position_embeddings = PeriodicPositionalEncoding(H, period=c.pose_length, max_seq_len=c.pose_length)
        # Template layers: deep-copied by nn.TransformerEncoder/Decoder in the reference, so they sit
        # in the checkpoint, but they never run.
        self.transformer_en_layer = EncoderLayer(H)
        self.motion_self_encoder = TransformerEncoder(H, 1)
        self.audio_motion_cross_attn_layer = DecoderLayer(H)
        self.audio_motion_cross_attn = TransformerDecoder(H, 8)
        self.motion2latent_upper = MLP(H, H, H)
        self.motion2latent_hands = MLP(H, H, H)
        self.motion2latent_lower = MLP(H, H, H)
        self.body_motion_decoder_upper = TransformerDecoder(H, 1)
        self.body_motion_decoder_hands = TransformerDecoder(H, 1)
        self.body_motion_decoder_lower = TransformerDecoder(H, 1)
        K = c.vae_codebook_size
        self.motion_out_proj_upper = nn.Linear(H, K)
        self.motion_out_proj_hands = nn.Linear(H, K)
        self.motion_out_proj_lower = nn.Linear(H, K)
        self.motion_cls_upper = MLP(K, H, K)
        self.motion_cls_hands = MLP(K, H, K)
        self.motion_cls_lower = MLP(K, H, K)
        self.audio_face_motion_proj = nn.Linear(c.audio_f + c.motion_f, H)
        self.face_motion_decoder = TransformerDecoder(H, 4)
        self.face_out_proj = nn.Linear(H, K)
        self.face_cls = MLP(K, H, K)
        if c.emotion_labels:  # registered last: the released keys keep their order
            self.emotion_embedding = nn.Embedding(len(c.emotion_labels) + 1, H)  # N(0, 1), as the speaker's

    def encode_audio(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S) waveform -> face and body features, each (B, T', audio_f)."""
        return self.audio_encoder_face(audio), self.audio_encoder_body(audio)

    def forward(
        self,
        audio: torch.Tensor | None,
        speaker_id: torch.Tensor,
        masked_motion: torch.Tensor,
        mask: torch.Tensor,
        use_audio: bool = True,
        audio_features: tuple[torch.Tensor, torch.Tensor] | None = None,
        emotion: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One window.

        audio (B, S) with S = T x 533 samples (or ``audio_features`` from `encode_audio`);
        speaker_id (B, 1) long; masked_motion, mask (B, T, 337) with mask 1 = generate.
        ``use_audio=False`` zeroes the body's audio cross-attention (masked-gesture training pass).
        emotion (B, 1) long, indices into ``config.emotion_labels``; None = the "no label" row.
        Only for models with emotion labels (others reject it).
        Returns rec_{face,upper,hands,lower} (B, T, K) latents and cls_* (B, T, K) code logits.
        """
        motion = torch.where(mask == 1, self.mask_embedding.expand_as(masked_motion), masked_motion)
        hint = self.motion_encoder(motion)  # (B, T, motion_f)
        hint_body = self.bodyhints_body(hint)
        hint_face = self.bodyhints_face(hint)
        T = hint.shape[1]

        face_feat, body_feat = audio_features if audio_features is not None else self.encode_audio(audio)
        # Reference quirk kept for parity: it trims the face features twice and the body features
        # never, so short windows (<= 25 frames) attend to T + 1 body audio frames.
        face_feat = face_feat[:, :T]

        spk_body = self.speaker_embedding_body(speaker_id)  # (B, 1, H)
        spk_face = self.speaker_embedding_face(speaker_id)
        if self.config.emotion_labels:  # the emotion goes wherever the speaker goes
            if emotion is None:
                emotion = torch.full_like(speaker_id, self.config.null_emotion)
            emo = self.emotion_embedding(emotion.view(-1, 1))  # (B, 1, H)
            spk_body, spk_face = spk_body + emo, spk_face + emo
        elif emotion is not None:
            raise ValueError("this model has no emotion embedding (its config declares no emotion_labels)")

        # face: a fixed query reads audio + body hints
        face_mem = self.audio_face_motion_proj(torch.cat([face_feat, hint_face], dim=2))
        if self.config.aligned_audio:  # each frame's query starts from its own audio (see the config)
            face_query = self.position_embeddings(face_mem + spk_face)
            face_mem = self.position_embeddings(face_mem)
        else:
            face_query = self.position_embeddings(spk_face.expand(-1, T, -1))  # speaker + position, no data
        face = self.face_motion_decoder(face_query, face_mem)
        rec_face = self.face_out_proj(face)
        cls_face = self.face_cls(rec_face)

        # body: temporal self-attention over the motion hints
        x = self.position_embeddings(self.moton_proj(hint_body)) + spk_body
        x = self.motion_self_encoder(x)
        x = self.position_embeddings(x + spk_body)
        # ... then cross-attention to the audio, added back as a residual
        body_mem = self.audio_body_motion_proj(body_feat)
        if self.config.aligned_audio:  # audio frames carry their position, so attention can align
            body_mem = self.position_embeddings(body_mem[:, :T])
        cross = self.audio_motion_cross_attn(x, body_mem)
        if not use_audio:
            cross = cross * 0.0
        x = x + cross

        up = self.motion2latent_upper(x)
        hands = self.motion2latent_hands(x)
        low = self.motion2latent_lower(x)
        # each part refines itself by looking at the other two
        up_ref = self.body_motion_decoder_upper(up + spk_body, hands + low)
        hands_ref = self.body_motion_decoder_hands(hands + spk_body, up + low)
        low_ref = self.body_motion_decoder_lower(low + spk_body, up + hands)
        rec_upper = self.motion_out_proj_upper(up + up_ref)
        rec_hands = self.motion_out_proj_hands(hands + hands_ref)
        rec_lower = self.motion_out_proj_lower(low + low_ref)

        return {
            "rec_face": rec_face,
            "rec_upper": rec_upper,
            "rec_hands": rec_hands,
            "rec_lower": rec_lower,
            "cls_face": cls_face,
            "cls_upper": self.motion_cls_upper(rec_upper),
            "cls_hands": self.motion_cls_hands(rec_hands),
            "cls_lower": self.motion_cls_lower(rec_lower),
        }


# -----------------------------------------------------------------------------
# Motion VQ-VAEs


class Quantizer(nn.Module):
    """Codebook of n_e vectors of size e_dim; nearest neighbour by squared L2."""

    def __init__(self, n_e: int, e_dim: int, beta: float):
        super().__init__()
        self.n_e, self.e_dim, self.beta = n_e, e_dim, beta
        self.embedding = nn.Embedding(n_e, e_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_e, 1.0 / n_e)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """(B, T, e_dim) -> (B, T) indices of the nearest codes."""
        flat = z.reshape(-1, self.e_dim)
        e = self.embedding.weight
        # |z|^2 + |e|^2 - 2 z.e, the reference's formula (same rounding, same ties)
        d = flat.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * flat @ e.t()
        return d.argmin(dim=1).view(z.shape[:-1])

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, T, e_dim)."""
        return self.embedding(indices)

    def forward(self, z: torch.Tensor):
        """Training: (loss, straight-through z_q, indices, perplexity)."""
        idx = self.nearest(z)
        z_q = self.lookup(idx)
        loss = F.mse_loss(z_q, z.detach()) + self.beta * F.mse_loss(z_q.detach(), z)
        z_q = z + (z_q - z).detach()
        usage = F.one_hot(idx.flatten(), self.n_e).to(z.dtype).mean(0)
        perplexity = torch.exp(-(usage * torch.log(usage + 1e-10)).sum())
        return loss, z_q, idx, perplexity


class VQVAEConv(nn.Module):
    """Conv VQ-VAE of one body part, one code per frame: (B, T, dim) <-> (B, T) code indices."""

    def __init__(self, config: VQConfig):
        super().__init__()
        self.config = c = config
        self.encoder = ConvEncoder(c.vae_test_dim, c.vae_length, c.vae_layer)
        self.quantizer = Quantizer(c.vae_codebook_size, c.vae_length, c.vae_quantizer_lambda)
        self.decoder = ConvDecoder(c.vae_length, c.vae_test_dim, c.vae_layer)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training reconstruction of x (B, T, dim)."""
        loss, z_q, _, perplexity = self.quantizer(self.encoder(x))
        return {"poses_feat": z_q, "embedding_loss": loss, "perplexity": perplexity, "rec_pose": self.decoder(z_q)}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, dim) -> (B, T) nearest code indices."""
        return self.quantizer.nearest(self.encoder(x))

    def map2latent(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, dim) -> (B, T, vae_length) quantized latents (training targets)."""
        return self.quantizer.lookup(self.encode(x))

    def latent_to_index(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, T, vae_length) continuous latent -> (B, T) nearest code."""
        return self.quantizer.nearest(latent)

    def index_to_latent(self, indices: torch.Tensor) -> torch.Tensor:
        return self.quantizer.lookup(indices)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, T) code indices -> (B, T, dim)."""
        return self.decoder(self.quantizer.lookup(indices))

    def decode_from_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """Snap a continuous latent to the codebook, then decode."""
        return self.decode(self.latent_to_index(latent))


class VAEConv(nn.Module):
    """Plain conv autoencoder (the 'global' model): lower body 61 -> 61, of which 54:57 = (vx, y, vz)."""

    def __init__(self, config: VQConfig):
        super().__init__()
        self.config = c = config
        self.encoder = ConvEncoder(c.vae_test_dim, c.vae_length, c.vae_layer)
        self.decoder = ConvDecoder(c.vae_length, c.vae_test_dim, c.vae_layer)

    @property
    def receptive_radius(self) -> int:
        return self.encoder.receptive_radius + self.decoder.receptive_radius

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, T, dim) -> {"rec_pose": (B, T, dim)}."""
        return {"rec_pose": self.decoder(self.encoder(x))}


# -----------------------------------------------------------------------------


@dataclass
class EmageModels:
    """The six networks of one checkpoint. ``global_`` because ``global`` is a keyword."""

    audio: EmageAudioModel
    face: VQVAEConv
    upper: VQVAEConv
    hands: VQVAEConv
    lower: VQVAEConv
    global_: VAEConv

    @classmethod
    def from_configs(cls, audio: Mapping[str, Any] | EmageAudioConfig,
                     parts: Mapping[str, Mapping[str, Any] | VQConfig]) -> "EmageModels":
        """Construct (randomly initialised) from config dicts; ``parts`` keyed face/upper/hands/lower/global."""
        def cfg(kind, d):
            return d if isinstance(d, kind) else kind.from_dict(d)
        return cls(
            audio=EmageAudioModel(cfg(EmageAudioConfig, audio)),
            face=VQVAEConv(cfg(VQConfig, parts["face"])),
            upper=VQVAEConv(cfg(VQConfig, parts["upper"])),
            hands=VQVAEConv(cfg(VQConfig, parts["hands"])),
            lower=VQVAEConv(cfg(VQConfig, parts["lower"])),
            global_=VAEConv(cfg(VQConfig, parts["global"] if "global" in parts else parts["global_"])),
        )

    def as_dict(self) -> dict[str, nn.Module]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to(self, *args, **kwargs) -> "EmageModels":
        for m in self.as_dict().values():
            m.to(*args, **kwargs)
        return self

    def eval(self) -> "EmageModels":
        for m in self.as_dict().values():
            m.eval()
        return self

    @property
    def device(self) -> torch.device:
        return self.audio.mask_embedding.device
