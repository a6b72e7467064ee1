"""Windowed EMAGE generation over speech of any length.

The audio model sees 64-frame windows (30 fps) that advance by 60 frames. The first 4
frames of each window are *seeds*: known motion (mask 0) taken from the previous window's
decoded output, or from the caller's motion wherever its mask is 0, which is how locked
parts work. Once every window has produced its part codes, the whole code sequence is
decoded by the VQ-VAEs and the global-motion autoencoder like the reference does it (in
one pass there; here in chunks that carry the convolutions' receptive field as context,
which is the same computation with bounded memory).

Differences from the reference (``EmageAudioModel.inference`` + ``EmageVQModel.decode``):

- it returns exactly ``T = N * 30 // 16000`` frames. The reference crashes for T <= 8 and
  drops the last 4 + r frames when ``(T - 4) % 60 = r <= 4``. Here audio shorter than 9
  frames is padded with silence up to 9 frames and the result cut back to T; in the other
  case one more 64-frame window ends exactly at T, with every frame of it that was already
  generated given as known motion, so the missing 4 + r frames continue the motion. Where
  the reference returns all T frames, the windows and outputs are the same as its own;
- ``temperature > 0`` samples the upper, hands and lower codes (the reference always takes
  the argmax, which is what ``temperature == 0`` does);
- ``snap_face=False`` (the pipeline's default; `run` defaults to the reference) decodes the face
  from its predicted latent as it is. The reference snaps it to the nearest code first, but the
  face is trained by latent regression alone (``cf = 0``), so snapping only adds quantisation
  error: on the bundled model the jaw follows the speech better without it;
- the seeds are decoded from only the frames that can reach them through the decoders'
  receptive field, not from the whole window (same numbers, less work);
- ``exact_audio_timing=True`` (off in `run`, on in the pipeline) fixes the reference's audio drift, see `run`;
- ``overlap`` > 0 (off in `run`, 8 frames in the pipeline) makes windows share frames and
  crossfades their code latents there, so the motion does not jump at window seams: the
  reference's windows meet with no blending, and where their codes disagree the decoded motion
  jumps every 2 s (on the bundled model most of the jerk of its output came from those seams);
- models trained with emotion labels take ``emotion`` (a label index) and ``guidance``
  (classifier-free guidance against the "no label" row), see `run`;
- two faster paths, off by default (they change outputs slightly): ``audio_context="clip"`` runs the
  audio encoders' first blocks once over the clip (`_ClipAudio`) instead of once per window on
  zero-padded audio, and ``precision="bfloat16"`` runs the audio model in bf16 (`_bf16_audio`).
  About 87% of the time is the audio model; at the released size on a 2-core bf16 CPU the two
  together make the pipeline's windows about 2x faster, 1.7x faster than the reference's (see
  ``bench/bench_generate.py``).

Axis-angle comes out of the decoders through `_rot6d_to_axis_angle`, a copy of the
reference's numerics: `rotation.rot6d_to_axis_angle` is more accurate but differs by up to
2e-4 rad, above the parity tolerance.
"""
from __future__ import annotations

import copy
import functools
import weakref
from typing import Callable

import torch
import torch.nn.functional as F

from ...motion.clip import DEFAULT_FPS
from ...motion import rotation
from .model import GLOBAL_VELOCITY_SLICE, MOTION_DIM, TRANS_SLICE, VQ_PARTS, EmageModels, MultiheadAttention
from .windows import plan_windows
from ...motion.skeleton import HANDS_JOINTS, JAW, LOWER_JOINTS, N_JOINTS, UPPER_JOINTS

__all__ = ["EmageModels", "default_motion", "decode_parts", "decode_latents", "global_translation",
           "native_bf16", "run"]

BODY_PARTS = ("upper", "hands", "lower")  # parts chosen from class logits (the face uses its latent)
DECODE_CHUNK = 2048  # frames per pass of the final decode: bounded memory, cache-friendly convs


def default_motion(n_frames: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(1, n_frames, 337): identity rotations (6D [1,0,0,0,1,0]), zero translation and contact."""
    m = torch.zeros(1, n_frames, MOTION_DIM, device=device, dtype=dtype)
    rot = m[:, :, : N_JOINTS * 6].view(1, n_frames, N_JOINTS, 6)
    rot[..., 0] = 1.0
    rot[..., 4] = 1.0
    return m


def _rot6d_to_axis_angle(d6: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3) with the reference's numerics, which golden parity needs.

    `rotation.matrix_to_axis_angle` picks the best-conditioned quaternion formula; EMAGE takes
    every component from the matrix diagonal (sqrt of 1 +- m00 +- m11 +- m22) and signs it from
    the off-diagonals. Small components then differ by up to ~2e-4 rad between the two, which is
    above the parity tolerance, so the decoder output goes through this variant.
    """
    m = rotation.rot6d_to_matrix(d6)
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]

    def half_sqrt(v: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.sqrt(torch.clamp(v, min=0.0))  # sqrt of the positive part, 0 otherwise

    def signed(mag: torch.Tensor, sign_of: torch.Tensor) -> torch.Tensor:
        return torch.where(sign_of < 0, -mag, mag)

    w = half_sqrt(1 + m00 + m11 + m22)
    x = signed(half_sqrt(1 + m00 - m11 - m22), m[..., 2, 1] - m[..., 1, 2])
    y = signed(half_sqrt(1 - m00 + m11 - m22), m[..., 0, 2] - m[..., 2, 0])
    z = signed(half_sqrt(1 - m00 - m11 + m22), m[..., 1, 0] - m[..., 0, 1])
    xyz = torch.stack([x, y, z], dim=-1)
    half = torch.atan2(torch.linalg.norm(xyz, dim=-1, keepdim=True), w[..., None])
    angle = 2 * half
    small = angle.abs() < 1e-6
    # sin(angle / 2) / angle, with its Taylor expansion near zero
    ratio = torch.where(small, 0.5 - angle * angle / 48, torch.sin(half) / torch.where(small, torch.ones_like(angle), angle))
    return xyz / ratio


def decode_parts(models: EmageModels, face_index, upper_index, hands_index, lower_index) -> dict[str, torch.Tensor]:
    """Part codes (B, T) -> motion, as the reference's ``EmageVQModel.decode``; see `decode_latents`."""
    indices = dict(zip(VQ_PARTS, (face_index, upper_index, hands_index, lower_index)))
    return decode_latents(models, {p: getattr(models, p).index_to_latent(i) for p, i in indices.items()})


def decode_latents(models: EmageModels, latents: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Part latents {face, upper, hands, lower} (B, T, K) -> motion (codebook rows give `decode_parts`).

    Returns motion_axis_angle (B, T, 165): joint 0 from the lower part, jaw from the face, eyes 0;
    expression (B, T, 100); all_motion4inference (B, T, 337) = 6D of those rotations + the lower
    part's translation and contact; lower (B, T, 61), the global model's input.
    """
    face = models.face.decoder(latents["face"])  # (B, T, 106)
    upper = models.upper.decoder(latents["upper"])  # (B, T, 78)
    hands = models.hands.decoder(latents["hands"])  # (B, T, 180)
    lower = models.lower.decoder(latents["lower"])  # (B, T, 61)
    B, T = face.shape[:2]
    aa = face.new_zeros(B, T, N_JOINTS, 3)
    aa[:, :, list(UPPER_JOINTS)] = _rot6d_to_axis_angle(upper.reshape(B, T, -1, 6))
    aa[:, :, list(HANDS_JOINTS)] = _rot6d_to_axis_angle(hands.reshape(B, T, -1, 6))
    aa[:, :, list(LOWER_JOINTS)] = _rot6d_to_axis_angle(lower[..., : len(LOWER_JOINTS) * 6].reshape(B, T, -1, 6))
    aa[:, :, JAW] = _rot6d_to_axis_angle(face[..., :6])
    # The reference re-encodes all joints from axis-angle (not the raw decoder 6D): keep that.
    rot6d = rotation.axis_angle_to_rot6d(aa).reshape(B, T, N_JOINTS * 6)
    return {
        "motion_axis_angle": aa.reshape(B, T, N_JOINTS * 3),
        "expression": face[..., 6:],
        "all_motion4inference": torch.cat([rot6d, lower[..., len(LOWER_JOINTS) * 6 :]], dim=2),
        "lower": lower,
    }


def _decode_range(models: EmageModels, latents: dict[str, torch.Tensor], lo: int, hi: int, halo: int) -> dict[str, torch.Tensor]:
    """`decode_latents` of frames [lo, hi) of the latent sequences, reading only the ``halo``
    frames of context on each side that can reach them through the conv decoders."""
    T = latents["face"].shape[1]
    a, b = max(0, lo - halo), min(T, hi + halo)
    dec = decode_latents(models, {p: latents[p][:, a:b] for p in VQ_PARTS})
    return {k: v[:, lo - a : hi - a] for k, v in dec.items()}


def global_translation(
    models: EmageModels, lower: torch.Tensor, ref_trans: torch.Tensor, fps: float = DEFAULT_FPS, chunk: int | None = None
) -> torch.Tensor:
    """Root translation (B, T, 3) from the decoded lower body (B, T, 61).

    The global model gives (vx, y, vz) per frame in channels 54:57; x and z are integrated from
    ref_trans (B, 3): pos[0] = ref, pos[t] = pos[t-1] + v[t-1] / fps; y is used as it is.
    The model runs ``chunk`` frames at a time with its receptive field as context (same result).
    """
    T, halo = lower.shape[1], models.global_.receptive_radius
    chunk = chunk or DECODE_CHUNK
    pieces = []
    for lo in range(0, T, chunk):
        hi = min(lo + chunk, T)
        a, b = max(0, lo - halo), min(T, hi + halo)
        pieces.append(models.global_(lower[:, a:b])["rec_pose"][:, lo - a : hi - a, GLOBAL_VELOCITY_SLICE])
    v = torch.cat(pieces, dim=1)

    def integrate(vel: torch.Tensor, start: torch.Tensor) -> torch.Tensor:  # (B, T), (B,)
        steps = torch.cat([start[:, None], vel[:, :-1] * (1 / fps)], dim=1)
        return steps.cumsum(dim=1)

    x = integrate(v[..., 0], ref_trans[:, 0])
    z = integrate(v[..., 2], ref_trans[:, 2])
    return torch.stack([x, v[..., 1], z], dim=-1)


def _choose(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """(B, T, K) logits -> (B, T) codes: argmax, or a sample of softmax(logits / temperature)."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = F.softmax(logits.float() / temperature, dim=-1).reshape(-1, logits.shape[-1])
    if generator is not None and generator.device != probs.device:
        probs = probs.to(generator.device)  # a CPU generator keeps CUDA runs reproducible too
    idx = torch.multinomial(probs, 1, generator=generator)
    return idx.view(logits.shape[:-1]).to(logits.device)


def _guide(net: dict[str, torch.Tensor], guidance: float) -> dict[str, torch.Tensor]:
    """Classifier-free guidance: outputs of a (cond, uncond) batch of 2 -> uncond + g (cond - uncond).

    Applied to every latent and logit, before codes are chosen: g = 1 gives the conditional pass,
    g = 0 the unconditional one, g > 1 exaggerates what the label changes.
    """
    return {k: v[1:] + guidance * (v[:1] - v[1:]) for k, v in net.items()}


AUDIO_CONTEXTS = ("window", "clip")
PRECISIONS = ("float32", "bfloat16")
SHARED_BLOCKS = 3  # audio-encoder blocks computed once per clip with audio_context="clip" (strides 5, 6, 1)
SHARED_STRIDE = 30  # samples per position after them: window starts snap to this grid
CLIP_GROUP = 16  # windows whose audio is encoded together (bounded memory, batched convs)
_CLIP_HALO = 32  # positions (of SHARED_STRIDE samples) of context each side: > the shared blocks' reach (24)


def _shared_blocks(encoder, padded: torch.Tensor, q0: int, q1: int) -> torch.Tensor:
    """The first `SHARED_BLOCKS` blocks of an `AudioEncoder` at positions [q0, q1) of the clip.

    ``padded`` (1, S): the clip with the encoder's 1600 samples of zeros in front (and enough after);
    position q covers padded samples from q * 30 on, as in a window whose audio starts there. The
    blocks run on a span ``_CLIP_HALO`` positions wider each side (zeros beyond the clip), so the
    kept positions see real audio where a lone window would see its zero padding.
    """
    blocks = encoder.feat_extractor
    first = blocks[0]
    a, b = q0 - _CLIP_HALO, q1 + _CLIP_HALO
    lo, hi = a * SHARED_STRIDE, b * SHARED_STRIDE + 15 * 6 * 5  # + one kernel of the stride-30 level
    x = padded[:, max(0, lo) : min(padded.shape[1], hi)]
    x = F.pad(x, (max(0, -lo), max(0, hi - padded.shape[1])))[:, None]
    # block 0 without its own 1600-sample padding: `padded` carries the clip's
    c1, ds = first.conv1, first.downsample[0]
    shortcut = first.downsample[1](F.conv1d(x, ds.weight, ds.bias, stride=ds.stride))
    y = F.leaky_relu(first.bn1(F.conv1d(x, c1.weight, c1.bias, stride=c1.stride)), 0.01)
    x = F.leaky_relu(first.bn2(first.conv2(y)) + shortcut, 0.01)
    for block in blocks[1:SHARED_BLOCKS]:
        x = block(x)
    return x[:, :, _CLIP_HALO : _CLIP_HALO + (q1 - q0)]


def _window_positions(length: int, spf: int) -> int:
    """Positions after the shared blocks that a lone window of ``length`` frames (length * spf samples) has."""
    n = (length * spf + 2 * 1600 - 15) // 5 + 1
    return (n - 15) // 6 + 1


class _ClipAudio:
    """Audio features of every window, the audio encoded once per clip (``audio_context="clip"``).

    The encoders' first blocks (stride 30 samples, ~70% of their work) run once over the clip, in
    groups of `CLIP_GROUP` windows, and the last three run per window on its slice of them, batched
    over the group: each window keeps the within-window timing it was trained with, and its edges
    see the neighbouring speech instead of zeros. Window f's audio starts at the multiple of 30
    samples nearest to ``starts[f]``.
    """

    def __init__(self, net: torch.nn.Module, audio: torch.Tensor, plan, starts: list[int], spf: int):
        self.enc = (net.audio_encoder_face, net.audio_encoder_body)
        self.plan, self.spf = plan, spf
        self.q = [round(a / SHARED_STRIDE) for a in starts]  # window start, in positions
        self.n = [_window_positions(w.length, spf) for w in plan]
        end = max(q * SHARED_STRIDE + w.length * spf for q, w in zip(self.q, plan))
        self.padded = F.pad(audio, (1600, max(0, end - audio.shape[1]) + 1600))
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _encode_group(self, g: int) -> None:
        idx = list(range(g * CLIP_GROUP, min(len(self.plan), (g + 1) * CLIP_GROUP)))
        q0 = min(self.q[i] for i in idx)
        q1 = max(self.q[i] + self.n[i] for i in idx)
        feats = []
        for enc in self.enc:
            shared = _shared_blocks(enc, self.padded, q0, q1)
            per = {}
            for n in sorted({self.n[i] for i in idx}):  # windows of one length run as one batch
                same = [i for i in idx if self.n[i] == n]
                x = torch.cat([shared[:, :, self.q[i] - q0 : self.q[i] - q0 + n] for i in same])
                for block in enc.feat_extractor[SHARED_BLOCKS:]:
                    x = block(x)
                per.update(zip(same, x.transpose(1, 2).unbind(0)))
            feats.append(per)
        self.cache = {i: (feats[0][i][None], feats[1][i][None]) for i in idx}

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if i not in self.cache:
            self._encode_group(i // CLIP_GROUP)
        return self.cache[i]


def native_bf16(device) -> bool:
    """Whether ``device`` computes bfloat16 matmuls and convolutions natively (faster than float32):
    CUDA GPUs that support it, CPUs with AVX-512 BF16 or AMX (through oneDNN)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":  # elsewhere oneDNN emulates bf16, slower than float32
        return torch.backends.mkldnn.is_available() and bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})
    return False


@functools.cache
def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


_BF16_COPIES: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()  # model -> (key, copy)


def _bf16_audio(audio: torch.nn.Module) -> torch.nn.Module:
    """The audio model with bfloat16 weights in its linear and conv layers, for ``precision="bfloat16"``.

    Made once per weights (kept beside the module, rebuilt when a parameter changes in place or moves),
    so autocast finds the weights already cast instead of copying all of them in every window (that
    copying cost 18% of the time). On CPU the linear layers' weights are reordered once for oneDNN
    (`_packed`). Norms, embeddings and buffers share the float32 tensors, which autocast keeps as they
    are (a copy cast entirely to bf16 measured no faster and loses precision). About half the model's
    size more memory.
    """
    params = dict(audio.named_parameters())
    key = (next(iter(params.values())).device, tuple(p._version for p in params.values()),
           tuple(p.data_ptr() for p in params.values()))
    cached = _BF16_COPIES.get(audio)
    if cached is not None and cached[0] == key:
        return cached[1]
    _BF16_COPIES.pop(audio, None)
    modules = dict(audio.named_modules())
    pack = key[0].type == "cpu" and _packed_linear_works()
    packed = [n for n, m in modules.items() if pack and isinstance(m, (torch.nn.Linear, MultiheadAttention))
              and not n.startswith(_TEMPLATE_LAYERS)]
    later = {id(modules[n].weight if isinstance(modules[n], torch.nn.Linear) else modules[n].in_proj_weight) for n in packed}
    layers = [m for m in modules.values() if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d))]
    cast = {id(t) for m in layers for t in (m.weight, m.bias) if t is not None}
    cast |= {id(t) for m in modules.values() for n in ("in_proj_weight", "in_proj_bias") if (t := getattr(m, n, None)) is not None}

    def copied(p: torch.Tensor) -> torch.nn.Parameter:
        if id(p) in later:  # packed below, one layer at a time
            t = p.new_empty(0, dtype=torch.bfloat16)
        else:
            t = p.detach().to(torch.bfloat16) if id(p) in cast else p.detach()
        return torch.nn.Parameter(t, requires_grad=False)

    shadow = copy.deepcopy(audio, {id(p): copied(p) for p in params.values()}).eval()
    for name in packed:
        m, orig = shadow.get_submodule(name), modules[name]
        if isinstance(m, torch.nn.Linear):
            m.forward = _packed(orig.weight.detach().to(torch.bfloat16), m.bias)
            continue
        W, b, D = orig.in_proj_weight.detach().to(torch.bfloat16), m.in_proj_bias, orig.in_proj_weight.shape[1]
        if name.endswith("multihead_attn"):  # decoder cross-attention: queries, then keys and values of the memory
            rows = {"q": _packed(W[:D].contiguous(), b[:D].contiguous()),
                    "kv": _packed(W[D:].contiguous(), b[D:].contiguous())}
        else:  # self-attention
            rows = {"qkv": _packed(W, b)}
        m.project = lambda x, which, rows=rows: rows[which](x)
    _BF16_COPIES[audio] = (key, shadow)
    return shadow


_TEMPLATE_LAYERS = ("transformer_en_layer", "audio_motion_cross_attn_layer")  # in the checkpoint, never run


def _packed(weight: torch.Tensor, bias: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``F.linear(x, weight, bias)`` with the weight reordered once into oneDNN's blocked layout
    (bfloat16 on CPU; the same numbers, ~10% faster than reordering it in every call)."""
    w, dtype = torch.ops.mkldnn._reorder_linear_weight(weight, 64), weight.dtype  # (keeps no reference to weight)

    def linear(x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.mkldnn._linear_pointwise(x.to(dtype).reshape(-1, x.shape[-1]), w, bias, "none", [], "")
        return y.view(*x.shape[:-1], y.shape[-1])

    return linear


@functools.cache
def _packed_linear_works() -> bool:
    """Whether this torch build has oneDNN's packed linear (private ops) and it gives `F.linear`'s numbers."""
    try:
        g = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(*shape, generator=g).to(torch.bfloat16) for shape in ((3, 5, 32), (48, 32), (48,)))
        return torch.equal(_packed(w, b)(x), F.linear(x, w, b))
    except Exception:  # noqa: BLE001 - absent or changed private ops: use F.linear
        return False


def _as_batch(x, n_frames: int, what: str, device) -> torch.Tensor:
    x = torch.as_tensor(x).to(device=device, dtype=torch.float32)
    if x.dim() == 2:
        x = x[None]
    if x.dim() != 3 or x.shape[0] != 1 or x.shape[2] != MOTION_DIM:
        raise ValueError(f"{what} must be (1, T, {MOTION_DIM}), got {tuple(x.shape)}")
    return x[:, :n_frames]


def run(
    models: EmageModels,
    audio,
    *,
    motion=None,
    mask=None,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    progress: Callable[[float, str], None] | None = None,
    speaker: int = 0,
    exact_audio_timing: bool = False,
    emotion: int | None = None,
    guidance: float = 1.0,
    overlap: int = 0,
    snap_face: bool = True,
    audio_context: str = "window",
    precision: str = "float32",
) -> dict[str, torch.Tensor]:
    """Generate motion for 16 kHz mono speech ``audio`` (1, N) (or (N,)); T = N * 30 // 16000 >= 1.

    motion (1, T, 337): given motion (55 joints 6D, translation 3, contact 4); default identity
    rotations and zeros. mask (1, T, 337): 1 = generate, 0 = keep the given value; default all 1.
    (Like the reference, the first 4 frames always seed the first window from ``motion``.)
    Shorter motion/mask cover the first frames only. Runs on the models' device.

    ``exact_audio_timing``: the reference starts window f's audio at sample f * 533, which runs
    ahead of the frame clock by 1/3 sample per frame (0.375 s after 10 minutes, so late gestures
    follow speech that came earlier). True starts it at round(f * 16000 / 30) instead; not
    reference-exact beyond the first window.

    ``emotion``: index into ``config.emotion_labels`` for a model trained with emotion labels;
    None runs such a model unconditionally (its "no label" row). ``guidance`` != 1 (needs an
    emotion) also runs the unconditional pass, batched with the conditional one, and uses
    ``uncond + guidance * (cond - uncond)`` of the latents and logits in every window (before
    codes are chosen, so the seeds of the next window follow the guided motion).

    ``overlap`` (0 = the reference): after its seeds each window also generates the last
    ``overlap`` frames of the previous one, and the two windows' code latents are crossfaded
    linearly over those frames before decoding, so one window's motion turns into the next
    one's instead of jumping where their codes disagree (see `plan_windows`). Costs about
    overlap / (60 - overlap) more windows. Reported codes there are the nearer window's.

    ``snap_face`` (the reference): decode the face from the code nearest to its predicted latent;
    False decodes the predicted latent itself (``face_index`` still names the nearest codes).

    ``audio_context``: "window" (the reference) encodes each window's audio alone, zero-padded;
    "clip" runs the audio encoders' first blocks once over the clip, so overlapping windows share
    that work and window edges see the neighbouring speech (see `_ClipAudio`; window audio starts
    snap to a 30-sample grid, under 1 ms). ``precision``: "float32" (the reference) or "bfloat16",
    the audio model under autocast (about twice as fast on CPUs with native bf16, and on GPUs;
    slower on CPUs without it); the VQ decoders and the global model stay float32.

    Returns tensors on that device, batch 1:
      motion_axis_angle (1, T, 165), expression (1, T, 100), trans (1, T, 3),
      all_motion4inference (1, T, 337), {face,upper,hands,lower}_index (1, T) int64
      (face_index_from_latent = face_index), latent_rec_{part} (1, T, K) latents and
      latent_cls_{part} (1, T, K) code logits.
    """
    cfg = models.audio.config
    device = models.device
    fps, sr = cfg.pose_fps, cfg.audio_sr
    spf = sr // fps  # samples per frame as the reference slices them (533)
    W, S = cfg.pose_length, cfg.seed_frames

    audio = torch.as_tensor(audio).to(device=device, dtype=torch.float32)
    if audio.dim() == 1:
        audio = audio[None]
    if audio.dim() != 2 or audio.shape[0] != 1:
        raise ValueError(f"audio must be (1, N) or (N,), got {tuple(audio.shape)}")
    T = audio.shape[1] * fps // sr
    if T < 1:
        raise ValueError(f"audio too short: {audio.shape[1]} samples is less than one frame at {fps} fps")
    Tp = max(T, S + 5)  # the shortest sequence the windows handle (9 frames); shorter audio gets silence
    if audio.shape[1] < Tp * spf:
        audio = F.pad(audio, (0, Tp * spf - audio.shape[1]))

    null = cfg.null_emotion
    if emotion is not None and (null is None or not 0 <= emotion < null):
        known = f"0..{null - 1}" if null else "none: the model has no emotion labels"
        raise ValueError(f"emotion index {emotion} out of range ({known})")
    if guidance != 1 and emotion is None:
        raise ValueError("guidance needs an emotion (it compares the labelled and the unlabelled model)")
    guided = guidance != 1
    emotion_id = None
    if emotion is not None:  # (2, 1): conditional, then unconditional, when guided
        emotion_id = torch.tensor([[emotion], [null]] if guided else [[emotion]], device=device)

    def audio_start(frame: int) -> int:
        return round(frame * sr / fps) if exact_audio_timing else frame * spf

    base = default_motion(Tp, device)
    ref_trans = torch.zeros(1, 3, device=device)
    if motion is not None:
        motion = _as_batch(motion, Tp, "motion", device)
        base[:, : motion.shape[1]] = motion
        ref_trans = motion[:, 0, TRANS_SLICE]  # the reference integrates from the given frame-0 translation
    full_mask = torch.ones_like(base)
    if mask is not None:
        mask = _as_batch(mask, Tp, "mask", device)
        full_mask[:, : mask.shape[1]] = mask

    if audio_context not in AUDIO_CONTEXTS:
        raise ValueError(f"audio_context must be one of {AUDIO_CONTEXTS}, got {audio_context!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    plan = plan_windows(Tp, W, S, overlap)
    K = cfg.vae_codebook_size
    out = {f"latent_{kind}_{p}": base.new_empty(1, Tp, K) for kind in ("rec", "cls") for p in VQ_PARTS}
    index = {p: torch.empty(1, Tp, dtype=torch.long, device=device) for p in VQ_PARTS}
    latent = {p: base.new_empty(1, Tp, getattr(models, p).quantizer.e_dim) for p in VQ_PARTS}  # what is decoded
    speaker_id = torch.full((1, 1), speaker, dtype=torch.long, device=device)
    halo = max(getattr(models, p).decoder.receptive_radius for p in VQ_PARTS)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")

    was_training = {name: m.training for name, m in models.as_dict().items()}
    models.eval()
    try:
        with torch.inference_mode():
            seed = base[:, :S]  # the first window is seeded from the given (or default) motion
            net_audio = _bf16_audio(models.audio) if precision == "bfloat16" else models.audio
            clip_audio = (_ClipAudio(net_audio, audio, plan, [audio_start(w.start) for w in plan], spf)
                          if audio_context == "clip" else None)
            for i, w in enumerate(plan):
                win_motion = base[:, w.start : w.end].clone()
                win_mask = full_mask[:, w.start : w.end].clone()
                given = win_mask[:, : w.n_seed] == 0
                win_motion[:, : w.n_seed] = torch.where(given, win_motion[:, : w.n_seed], seed)
                win_mask[:, : w.n_seed] = 0
                feats = wav = None
                if clip_audio is not None:
                    with autocast:
                        feats = clip_audio[i]
                else:
                    a0 = audio_start(w.start)  # length * 533 samples give `length` frames (or one more)
                    wav = audio[:, a0 : a0 + w.length * spf]
                    if wav.shape[1] < w.length * spf:  # cannot happen with the reference timing
                        wav = F.pad(wav, (0, w.length * spf - wav.shape[1]))
                with autocast:
                    if guided:  # one batch of 2: the same window with the label and without
                        net = net_audio(None if wav is None else wav.expand(2, -1), speaker_id.expand(2, -1),
                                        win_motion.expand(2, -1, -1), win_mask.expand(2, -1, -1), emotion=emotion_id,
                                        audio_features=None if feats is None else tuple(f.expand(2, -1, -1) for f in feats))
                    else:
                        net = net_audio(wav, speaker_id, win_motion, win_mask, emotion=emotion_id, audio_features=feats)
                if precision != "float32":
                    net = {k: v.float() for k, v in net.items()}
                if guided:
                    net = _guide(net, guidance)

                codes = {"face": models.face.latent_to_index(net["rec_face"])}
                for p in BODY_PARTS:
                    codes[p] = _choose(net[f"cls_{p}"], temperature, generator)
                win_latent = {p: getattr(models, p).index_to_latent(codes[p]) for p in VQ_PARTS}
                if not snap_face:
                    win_latent["face"] = net["rec_face"]

                # This window's frames overwrite from `own` on (the reference: from start + keep;
                # the next window overwrites its share). With overlap, its given frames stay the
                # previous window's, and the `fade` frames both generated are crossfaded.
                own = w.keep if i == 0 or not overlap else max(w.keep, w.n_seed)
                fade = max(0, plan[i - 1].end - w.start - own) if i and overlap else 0
                if fade:
                    r = torch.arange(1, fade + 1, device=device, dtype=base.dtype)[None, :, None] / (fade + 1)
                    dst = slice(w.start + own, w.start + own + fade)
                    for p in VQ_PARTS:
                        latent[p][:, dst] = (1 - r) * latent[p][:, dst] + r * win_latent[p][:, own : own + fade]
                    nearer = own + (fade + 1) // 2  # from here on the new window weighs more
                else:
                    nearer = own
                dst, src = slice(w.start + nearer, w.end), slice(nearer, w.length)
                for p in VQ_PARTS:
                    out[f"latent_rec_{p}"][:, dst] = net[f"rec_{p}"][:, src]
                    out[f"latent_cls_{p}"][:, dst] = net[f"cls_{p}"][:, src]
                    index[p][:, dst] = codes[p][:, src]
                    latent[p][:, w.start + own + fade : w.end] = win_latent[p][:, own + fade :]

                if i + 1 < len(plan):  # decode the next window's seed frames from this window's codes
                    lo = plan[i + 1].start - w.start
                    seed = _decode_range(models, win_latent, lo, lo + plan[i + 1].n_seed, halo)["all_motion4inference"]
                del net
                if progress is not None:
                    progress((i + 1) / len(plan), f"window {i + 1}/{len(plan)}")

            # The reference decodes the concatenated codes in one pass, not window by window; in
            # chunks with enough context on each side that is the same computation.
            index = {p: v[:, :T] for p, v in index.items()}
            latent = {p: v[:, :T] for p, v in latent.items()}
            pieces = [_decode_range(models, latent, s, min(s + DECODE_CHUNK, T), halo) for s in range(0, T, DECODE_CHUNK)]
            result = {k: torch.cat([piece[k] for piece in pieces], dim=1) for k in pieces[0]}
            del pieces
            trans = global_translation(models, result.pop("lower"), ref_trans, fps)
    finally:
        for name, m in models.as_dict().items():
            m.train(was_training[name])

    result["trans"] = trans
    for p in VQ_PARTS:
        result[f"{p}_index"] = index[p]
    result["face_index_from_latent"] = index["face"]
    result.update({k: v[:, :T] for k, v in out.items()})
    return result
