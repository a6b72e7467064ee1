"""EMAGE over speech that arrives in chunks: motion from the audio received so far, continuing what was shown.

    stream = EmageStream(models, lookahead=6)
    for samples in chunks:                   # (n,) float32 16 kHz, any n
        new = stream.push(samples)           # the frames that became ready (possibly none)
    last = stream.finish()                   # the rest: the motion covers floor(N * 30 / 16000) frames

How: every push runs one 64-frame window (more if a push brings over 60 frames) that **ends at the last
received audio frame**. Its frames already emitted are given to the model as known motion (mask 0, EMAGE's
masked modelling, as locked frames are in `run`), so it completes only the new ones and continues from the
motion it emitted (explicit edits such as `generate.live`'s idle layer come after); its first ``S`` frames are always given, as the model was trained. Of the new frames, all
but the last ``lookahead`` are emitted: those are generated again by the next window, which then sees
``lookahead`` frames of the speech after them (without look-ahead the newest frames see only silence beyond
the last sample). The speech that reaches any emitted frame is therefore at most ``lookahead`` frames later.

Emitted frames are decoded with the emitted frames before them as left context and the window's look-ahead
frames as right context; the root translation integrates the global model's velocities from the last emitted
position. Consecutive windows disagree a little about frames both generated, so three steps keep the motion
continuous: the previous window's prediction for the frames it did not emit is crossfaded into this window's
(smoothstep over the look-ahead frames); a Gaussian low-pass (``smooth`` frames; body rotations and root
velocity, not the jaw or expressions) that reaches only frames already known, the look-ahead included, so it
adds no delay; and a one-pole filter on the body's rotations (``follow``), which adds about one frame of lag
at 0.5. On the bundled model (30 s of unseen speech, 200 ms chunks) these bring jerk from 24x the offline
motion's to about the same (75 vs 72 m/s^3) at the same jaw-envelope correlation.
The state kept between pushes is bounded: the last window of audio, motion and latents, so memory does not
grow over a long session.

Differences from offline generation (`run`): each window's audio is encoded on its own (``audio_context="window"``)
and windows overlap by all but the newest frames, so the motion is not the offline motion of the same speech.
"""
from __future__ import annotations

import numpy as np
import torch

from ...motion import rotation
from ...motion.skeleton import BODY_JOINTS, JAW, N_JOINTS
from .inference import _choose, _bf16_audio, decode_latents, default_motion
from .model import GLOBAL_VELOCITY_SLICE, VQ_PARTS, EmageModels

__all__ = ["EmageStream"]

_FOLLOWED = list(BODY_JOINTS)
DEFAULT_LOOKAHEAD = 6  # frames (0.2 s): jaw-envelope r and smoothness on the bundled model (README, Live mode)


class EmageStream:
    """Causal, chunked EMAGE generation with bounded state. See the module docstring.

    Args:
        models: loaded EMAGE models (eval mode is set here).
        temperature: 0 = the most likely codes; above 0 the upper, hands and lower codes are sampled.
        generator: the random source for sampling (seeded by the caller).
        speaker / emotion: the model's label indices (emotion None = unconditioned).
        lookahead: frames (30 fps) of speech the newest emitted frame may hear after itself (0 .. half a window).
        snap_face: decode the face from the nearest code, as the reference does.
        precision: "float32" or "bfloat16" (the audio model).
        smooth: the Gaussian low-pass's sigma in frames (0 = off); follow: the one-pole filter (1 = off).
    """

    def __init__(self, models: EmageModels, *, temperature: float = 0.0, generator: torch.Generator | None = None,
                 speaker: int = 0, emotion: int | None = None, lookahead: int = DEFAULT_LOOKAHEAD, snap_face: bool = False,
                 precision: str = "float32", smooth: float = 1.5, follow: float = 0.5):
        cfg = models.audio.config
        self.models = models.eval()
        self.W, self.S = cfg.pose_length, cfg.seed_frames
        self.fps, self.sr = cfg.pose_fps, cfg.audio_sr
        if not 0 <= lookahead <= self.W // 2:
            raise ValueError(f"lookahead must be 0..{self.W // 2} frames, got {lookahead}")
        if precision not in ("float32", "bfloat16"):
            raise ValueError(f"precision must be 'float32' or 'bfloat16', got {precision!r}")
        self.lookahead, self.temperature, self.generator = lookahead, temperature, generator
        self.snap_face, self.precision, self.smooth, self.follow = snap_face, precision, smooth, follow
        if not 0 < follow <= 1:
            raise ValueError(f"follow must be in (0, 1], got {follow}")
        self.device = models.device
        self.net = _bf16_audio(models.audio) if precision == "bfloat16" else models.audio
        self.speaker = torch.full((1, 1), speaker, dtype=torch.long, device=self.device)
        self.emotion = None if emotion is None else torch.tensor([[emotion]], device=self.device)
        self.halo = max(getattr(models, p).decoder.receptive_radius for p in VQ_PARTS)
        self.global_halo = models.global_.receptive_radius

        self.n_samples = 0  # speech received
        self.done = 0  # frames emitted
        self._audio = np.zeros(0, np.float32)  # received samples from `_audio_from` on
        self._audio_from = 0
        self._motion = default_motion(0, self.device)  # (1, <= W, 337): the last emitted frames' features
        self._latent = {p: None for p in VQ_PARTS}  # (1, <= halo, K) the last emitted frames' latents
        self._lower = None  # (1, <= global_halo, 61) the last emitted frames' lower-body decoder outputs
        self._root = torch.zeros(3, device=self.device)  # the last emitted root position
        self._velocity = torch.zeros(3, device=self.device)  # and its velocity (vx, vy, vz)
        self._pending: dict[str, torch.Tensor] = {}  # the last window's outputs for frames it did not emit
        self._followed: torch.Tensor | None = None  # the last emitted body rotations (the one-pole filter's state)
        self._shown: dict[str, torch.Tensor] = {}  # the last emitted frames before smoothing: the low-pass's left context

    # -- speech in -------------------------------------------------------------------------------
    @property
    def frames_heard(self) -> int:
        """Frames the received speech covers: floor(N * 30 / 16000)."""
        return self.n_samples * self.fps // self.sr

    def push(self, samples: np.ndarray) -> dict[str, np.ndarray]:
        """Add (n,) float32 16 kHz samples; returns the frames that became ready: poses (n, 55, 3), expressions
        (n, 100), trans (n, 3), possibly n = 0."""
        samples = np.asarray(samples, np.float32).reshape(-1)
        if not np.isfinite(samples).all():
            raise ValueError("audio chunk contains NaN or infinite samples")
        self._audio = np.concatenate([self._audio, samples])
        self.n_samples += samples.shape[0]
        return self._generate_until(self.frames_heard - self.lookahead, self.frames_heard)

    def finish(self) -> dict[str, np.ndarray]:
        """The speech ended: emit every frame it covers (the look-ahead frames too)."""
        return self._generate_until(self.frames_heard, self.frames_heard)

    # -- generation ------------------------------------------------------------------------------
    def _generate_until(self, emit_to: int, heard: int) -> dict[str, np.ndarray]:
        pieces = []
        first = self.S + 5  # the shortest window the model takes; until then the body waits at rest
        while emit_to > self.done and heard >= first:
            # at most W - S new frames per window: the first S of each are given
            end = min(heard, self.done + self.W - self.S) if self.done else min(heard, self.W)
            # a window that stops short of the speech keeps its look-ahead too (W - S > lookahead: it advances)
            stop = end if end == heard else end - self.lookahead
            pieces.append(self._window(max(0, end - self.W), end, min(emit_to, stop)))
        self._trim_audio()
        if not pieces:
            return _empty()
        return {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}

    def _window_audio(self, start: int, length: int) -> torch.Tensor:
        a0 = round(start * self.sr / self.fps) - self._audio_from
        n = length * (self.sr // self.fps)
        wav = self._audio[max(0, a0): a0 + n]
        wav = np.pad(wav, (max(0, -a0), n - wav.shape[0] - max(0, -a0)))  # silence after the last sample
        return torch.from_numpy(wav).to(self.device)[None]

    def _window(self, start: int, end: int, emit_to: int) -> dict[str, np.ndarray]:
        """Run the window [start, end) with frames before `done` given; emit frames [done, emit_to)."""
        length, known = end - start, self.done - start  # emitted frames inside the window (0 in the first one)
        given = max(known, self.S)
        motion = default_motion(length, self.device)
        mask = torch.ones_like(motion)
        if known:
            motion[:, :known] = self._motion[:, -known:]
        mask[:, :given] = 0
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                    enabled=self.precision == "bfloat16"):
            net = self.net(self._window_audio(start, length), self.speaker, motion, mask, emotion=self.emotion)
        net = {k: v.float() for k, v in net.items()}
        with torch.inference_mode():
            latents = {}
            for p in VQ_PARTS:
                vq = getattr(self.models, p)
                if p == "face":
                    latents[p] = vq.index_to_latent(vq.latent_to_index(net["rec_face"])) if self.snap_face else net["rec_face"]
                else:
                    latents[p] = vq.index_to_latent(_choose(net[f"cls_{p}"], self.temperature, self.generator))
            at, n_new = self.done - start, emit_to - self.done  # the first new frame inside the window; frames emitted
            # decode every new frame, with the emitted frames before as left context
            ctx = {p: latents[p][:, at:] if self._latent[p] is None else torch.cat([self._latent[p], latents[p][:, at:]], 1)
                   for p in VQ_PARTS}
            left = 0 if self._latent["face"] is None else self._latent["face"].shape[1]
            dec = {k: v[:, left:] for k, v in decode_latents(self.models, ctx).items()}
            lower = dec["lower"]
            glob_in = lower if self._lower is None else torch.cat([self._lower, lower], dim=1)
            frames = {"rot6d": dec["all_motion4inference"][0, :, : N_JOINTS * 6].reshape(-1, N_JOINTS, 6),
                      "expressions": dec["expression"][0],
                      "velocity": self.models.global_(glob_in)["rec_pose"][0, -lower.shape[1]:, GLOBAL_VELOCITY_SLICE]}
            self._crossfade(frames)
            self._pending = {k: v[n_new:] for k, v in frames.items()}  # what this window predicts after them
            out = self._smooth(frames, n_new)
            rot6d = self._follow(out["rot6d"])
            poses = rotation.rot6d_to_axis_angle(rot6d)
            trans = self._integrate(out["velocity"])
            emitted = torch.cat([rotation.matrix_to_rot6d(rotation.rot6d_to_matrix(rot6d)).reshape(1, n_new, -1),
                                 dec["all_motion4inference"][:, :n_new, N_JOINTS * 6:]], dim=2)
            self._motion = torch.cat([self._motion, emitted], dim=1)[:, -self.W:]
            for p in VQ_PARTS:
                kept = latents[p][:, at:at + n_new]
                self._latent[p] = kept if self._latent[p] is None else torch.cat([self._latent[p], kept], 1)
                self._latent[p] = self._latent[p][:, -self.halo:]
            self._lower = glob_in[:, : glob_in.shape[1] - lower.shape[1] + n_new][:, -self.global_halo:]
        self.done = emit_to
        return {"poses": poses.cpu().numpy(), "expressions": out["expressions"].cpu().numpy(),
                "trans": trans.cpu().numpy()}

    def _crossfade(self, frames: dict[str, torch.Tensor]) -> None:
        """Blend what the previous window predicted for the frames it did not emit into this window's
        output for them (smoothly: 6D rotations, expressions, root velocity), so the motion continues
        from the last emitted frame, which the previous window decoded together with its predictions,
        and turns into this window's, which heard more speech, instead of jumping at every chunk."""
        n = min(self._pending["rot6d"].shape[0], frames["rot6d"].shape[0]) if self._pending else 0
        if n <= 0:
            return
        r = torch.arange(1, n + 1, device=self.device, dtype=torch.float32) / (n + 1)
        r = r * r * (3 - 2 * r)  # smoothstep: both ends of the blend meet their neighbours with zero slope
        for k, v in frames.items():
            w = r.view(-1, *[1] * (v.dim() - 1))
            v[:n] = (1 - w) * self._pending[k][:n] + w * v[:n]

    def _smooth(self, frames: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
        """The first ``n`` of ``frames`` low-passed (Gaussian, ``smooth`` frames): body rotations and root
        velocity; the jaw and expressions stay as decoded (lip sync). The kernel reaches only the emitted
        frames before (kept as decoded, so it sees one sequence) and the look-ahead frames after, so it adds
        no delay."""
        if not self.smooth:
            return {k: v[:n] for k, v in frames.items()}
        r = min(self.lookahead, int(3 * self.smooth))
        w = torch.exp(-0.5 * (torch.arange(-r, r + 1, device=self.device, dtype=torch.float32) / self.smooth) ** 2)
        out = {}
        for k in ("rot6d", "velocity"):
            seq = torch.cat([self._shown[k], frames[k]]) if k in self._shown else frames[k]
            left = seq.shape[0] - frames[k].shape[0]
            flat = seq.reshape(seq.shape[0], -1)
            rows = []
            for i in range(left, left + n):
                lo, hi = max(0, i - r), min(flat.shape[0], i + r + 1)
                ww = w[lo - i + r: hi - i + r]
                rows.append((ww[:, None] * flat[lo:hi]).sum(0) / ww.sum())
            out[k] = torch.stack(rows).reshape(n, *seq.shape[1:])
            self._shown[k] = seq[: left + n][-r:] if r else seq[:0]  # as decoded: the kernel sees one sequence
        out["rot6d"][:, JAW] = frames["rot6d"][:n, JAW]
        out["expressions"] = frames["expressions"][:n]
        return out

    def _follow(self, rot6d: torch.Tensor) -> torch.Tensor:
        """(n, 55, 6) -> the body's rotations followed by a one-pole filter (``follow`` per frame; 1 = off):
        consecutive windows still disagree a little about the arms, and this removes the resulting jitter
        at the cost of about (1 - follow) / follow frames of lag (1 frame at 0.5). Jaw and eyes untouched."""
        if self.follow >= 1:
            return rot6d
        out = rot6d.clone()
        prev = self._followed
        for i in range(rot6d.shape[0]):
            if prev is not None:
                out[i, _FOLLOWED] = prev + self.follow * (rot6d[i, _FOLLOWED] - prev)
            prev = out[i, _FOLLOWED]
        self._followed = prev
        return out

    def _integrate(self, velocity: torch.Tensor) -> torch.Tensor:
        """(n, 3) global-model outputs -> (n, 3) root translation: x, z integrated as in
        `global_translation` (pos[t] = pos[t-1] + v[t-1] / fps, from 0), y as it is."""
        steps = torch.cat([self._velocity[None], velocity[:-1]]) / self.fps
        if self.done == 0:
            steps[0] = 0  # frame 0 starts at the origin
        xz = self._root[[0, 2]] + steps[:, [0, 2]].cumsum(0)
        trans = torch.stack([xz[:, 0], velocity[:, 1], xz[:, 1]], dim=1)
        self._root, self._velocity = trans[-1], velocity[-1]
        return trans

    def _trim_audio(self) -> None:
        """Keep only the samples a later window can read (from W frames before the next new frame)."""
        keep_from = max(0, round((self.done - self.W) * self.sr / self.fps) - self.sr // self.fps)
        if keep_from > self._audio_from:
            self._audio = self._audio[keep_from - self._audio_from:]
            self._audio_from = keep_from


def _empty() -> dict[str, np.ndarray]:
    return {"poses": np.zeros((0, N_JOINTS, 3), np.float32), "expressions": np.zeros((0, 100), np.float32),
            "trans": np.zeros((0, 3), np.float32)}
