"""`EmageGenerator`: load a checkpoint once, then turn speech into `Motion` clips.

    gen = EmageGenerator.from_pretrained()          # default weights; or a folder / Hub repo id
    clips = gen.generate("speech.mp3", seed=7, variants=2, temperature=0.8,
                         locks=[Lock("upper", 1.0, 2.5)], reference=ref_motion)

Every returned clip carries ``meta``: model id, weights provenance (revision, sha256 per file),
seed and settings, so an output file can always say what produced it.
"""
from __future__ import annotations

import hashlib
import os
import platform
import random
from typing import Callable, Sequence

from dataclasses import replace

import numpy as np
import torch

from .. import __version__
from ..models import hub
from ..audio import DEFAULT_MAX_SECONDS, SAMPLE_RATE, load_audio
from ..models.emage.inference import DEFAULT_OVERLAP, default_motion, max_overlap, run
from ..edit.locks import DEFAULT_CROSSFADE, Lock, apply_locks, part_frame_masks, validate_locks
from ..models.emage.model import MOTION_DIM, TRANS_SLICE, EmageModels
from ..motion.clip import Motion
from ..motion.skeleton import N_JOINTS, PARTS
from ..edit.style import NEUTRAL, StyleControls, apply_style, preset

Progress = Callable[[float, str], None]
FPS = 30


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def motion_features(motion: Motion) -> np.ndarray:
    """(T, 337) EMAGE's motion input: 55 joints in 6D, translation, foot contact (zeros: unknown)."""
    T = motion.n_frames
    return np.concatenate(
        [motion.rot6d().reshape(T, N_JOINTS * 6), motion.trans, np.zeros((T, 4), np.float32)], axis=1
    ).astype(np.float32)


def part_channels(part: str) -> list[int]:
    """Channels of the 337-d motion input that a locked ``part`` provides (the face gives its jaw:
    expressions are not part of the model's motion input, they are restored after generation)."""
    if part == "global":
        return list(range(TRANS_SLICE.start, TRANS_SLICE.stop))
    return [j * 6 + k for j in PARTS[part] for k in range(6)]


def masked_motion(reference: Motion, locks: Sequence[Lock], n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Locks -> EMAGE's given motion and mask, both (T, 337); mask 0 = given (locked), 1 = generate.

    Unlocked channels hold the model's default (identity rotation, zero translation), as when
    generating from speech alone, so a reference only influences what is locked.
    """
    given = default_motion(n_frames)[0].numpy()
    mask = np.ones((n_frames, MOTION_DIM), np.float32)
    ref = motion_features(reference.slice(0, n_frames))
    for part, frames in part_frame_masks(list(locks), n_frames, FPS).items():
        rows, cols = np.flatnonzero(frames)[:, None], part_channels(part)
        given[rows, cols] = ref[rows, cols]
        mask[rows, cols] = 0
    return given, mask


class EmageGenerator:
    """An EMAGE checkpoint ready to generate. Build it with `from_pretrained`."""

    def __init__(self, models: EmageModels, provenance: dict, model_id: str):
        self.models = models.eval()
        self.provenance = provenance
        self.model_id = model_id

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike | None = None, revision: str | None = None,
                        device: str | torch.device | None = None) -> "EmageGenerator":
        """Load the six sub-models from a local folder in the Hub layout or a Hub repo id.

        ``source=None`` takes the default (see `emage_core.models.hub.default_source`). Weights load with
        ``strict=True``: a checkpoint of another architecture fails here, not at generation time.
        """
        ckpt = hub.load_checkpoint(source, revision)
        models = EmageModels.from_configs(ckpt.audio.config, {p: c.config for p, c in ckpt.parts.items()})
        named = {"audio": ckpt.audio, **{("global_" if p == "global" else p): c for p, c in ckpt.parts.items()}}
        for name, module in models.as_dict().items():
            try:
                module.load_state_dict(named[name].state_dict, strict=True)
            except RuntimeError as e:
                where = "root" if name == "audio" else hub.SUBMODEL_FOLDERS[name.rstrip("_")]
                raise hub.WeightsError(f"{ckpt.resolved.folder} ({where}): weights do not fit the "
                                       f"EMAGE architecture: {str(e).splitlines()[0]}") from None
        models.to(torch.device(device) if device is not None else default_device())
        return cls(models, ckpt.provenance(), model_id=str(ckpt.resolved.source))

    @property
    def device(self) -> torch.device:
        return self.models.device

    @property
    def emotions(self) -> tuple[str, ...]:
        """Emotion labels the model learned (its config declares them); the released weights have none."""
        return tuple(getattr(self.models.audio.config, "emotion_labels", None) or ())

    @property
    def speakers(self) -> tuple[str, ...]:
        """Speaker labels the model learned (its config declares them); the released weights have none."""
        return tuple(getattr(self.models.audio.config, "speaker_labels", None) or ())

    def plan_expression(self, emotion: str | None, intensity: float = 1.0,
                        overrides: dict | None = None) -> tuple[str | None, StyleControls | None]:
        """Decide how an emotion is expressed: ``(learned label or None, explicit controls or None)``.

        A label the model learned conditions generation (learned); any other emotion becomes its
        explicit preset at ``intensity``. ``overrides`` (control name -> value) edit the explicit
        controls on top, e.g. ``{"amplitude": 1.3}``.
        """
        learned = emotion if emotion and emotion in self.emotions else None
        controls = None
        if emotion and not learned and emotion != "neutral":
            controls = preset(emotion, intensity)
        if overrides:
            controls = replace(controls or NEUTRAL, **overrides)
        if controls is not None and controls.is_neutral:
            controls = None
        return learned, controls

    def generate(
        self,
        audio,
        *,
        seed: int | None = None,
        variants: int = 1,
        temperature: float = 0.0,
        locks: Sequence[Lock] | None = None,
        reference: Motion | None = None,
        crossfade: float = DEFAULT_CROSSFADE,
        emotion: str | None = None,
        style: StyleControls | None = None,
        progress: Progress | None = None,
        guidance: float = 1.0,
        speaker: str | None = None,
        overlap: int = DEFAULT_OVERLAP,
        snap_face: bool = False,
        exact_audio_timing: bool = True,
    ) -> list[Motion]:
        """Speech -> ``variants`` motions of exactly ``floor(N * 30 / 16000)`` frames each.

        audio: a path, bytes, or a (N,) float array of 16 kHz mono speech (at least 0.3 s).
        temperature 0 takes the most likely codes (deterministic); above 0 the upper, hands and
        lower codes are sampled, variant k with seed ``seed + k`` (a random seed when None).
        locks keep parts of ``reference`` (aligned at time 0) exactly over their spans, with a
        ``crossfade`` (seconds) of blending just outside them.
        emotion: a label the model learned (see `emotions`), used as conditioning; None runs a
        model with learned emotions unconditionally ("no label").
        guidance: classifier-free guidance of the learned emotion (needs ``emotion``): 1 = the
        conditional model as trained, 0 = unconditional, > 1 stronger than trained (e.g. 1.5-3).
        speaker: a speaker the model learned (see `speakers`); None = "no speaker" for such a model,
        the single speaker row of the released weights otherwise.
        overlap: frames each 64-frame window shares with the previous one, crossfaded in code-latent
        space so the motion does not jump at window seams (every ~2 s); 0 = the reference's windows;
        at most window / 2 - seed frames (28). Default 8: about 15% more time.
        snap_face: decode the face from the code nearest to the model's face latent, as the reference
        does; the default decodes that latent as it is (smoother, the jaw follows speech better).
        exact_audio_timing: start each window's audio at its frame's true time. The reference starts
        window f's audio at f * 533 samples, 1/3 sample per frame early: 40 ms after a minute, 0.375 s
        after ten, so late lips and beats follow earlier speech. False does as the reference.
        ``overlap=0, snap_face=True, exact_audio_timing=False`` reproduces the released implementation.
        style: explicit expressive controls applied to the generated motion (locked spans untouched);
        see `plan_expression` for turning an emotion name + intensity into both.
        """
        if emotion is not None and emotion not in self.emotions:
            raise ValueError(f"this model has no learned emotion {emotion!r} (it knows: "
                             f"{', '.join(self.emotions) or 'none'}); use an explicit preset instead")
        if not (np.isfinite(guidance) and guidance >= 0):
            raise ValueError(f"guidance must be a number >= 0, got {guidance}")
        if guidance != 1 and emotion is None:
            raise ValueError("guidance needs a learned emotion (it strengthens the model's own label conditioning)")
        if speaker is not None and speaker not in self.speakers:
            raise ValueError(f"this model has no learned speaker {speaker!r} (it knows: "
                             f"{', '.join(self.speakers) or 'none'})")
        cfg = self.models.audio.config
        most = max_overlap(cfg.pose_length, cfg.seed_frames)
        if isinstance(overlap, bool) or not (isinstance(overlap, (int, np.integer)) and 0 <= overlap <= most):
            raise ValueError(f"overlap must be a whole number of frames 0..{most}, got {overlap!r}")
        emotion_index = self.emotions.index(emotion) if emotion is not None else None
        speaker_index = self.speakers.index(speaker) if speaker is not None else (cfg.null_speaker or 0)
        if variants < 1:
            raise ValueError(f"variants must be at least 1, got {variants}")
        if not (temperature >= 0 and np.isfinite(temperature)):
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if crossfade < 0:
            raise ValueError(f"crossfade must be >= 0 seconds, got {crossfade}")
        wav, audio_sha256 = self._speech(audio)
        n_frames = wav.shape[0] * FPS // SAMPLE_RATE
        locks = list(locks or [])
        validate_locks(locks, n_frames, reference if locks else None, FPS)
        if seed is None:
            seed = random.SystemRandom().randrange(2**31)
        given = mask = None
        if locks:
            given, mask = (torch.from_numpy(a)[None] for a in masked_motion(reference, locks, n_frames))

        clips = []
        for k in range(variants):
            def report(frac: float, msg: str, k=k) -> None:
                if progress is not None:
                    progress((k + frac) / variants, f"variant {k + 1}/{variants}: {msg}")

            generator = torch.Generator(device="cpu").manual_seed(seed + k)
            out = run(self.models, torch.from_numpy(wav)[None], motion=given, mask=mask,
                      temperature=temperature, generator=generator, progress=report,
                      emotion=emotion_index, guidance=guidance, speaker=speaker_index, overlap=int(overlap),
                      snap_face=bool(snap_face), exact_audio_timing=bool(exact_audio_timing))
            clip = Motion(poses=out["motion_axis_angle"][0].reshape(n_frames, N_JOINTS, 3).cpu().numpy(),
                          expressions=out["expression"][0].cpu().numpy(),
                          trans=out["trans"][0].cpu().numpy(), fps=FPS)
            if locks:
                clip = apply_locks(clip, reference, locks, crossfade)
            if style is not None and not style.is_neutral:
                clip = apply_style(clip, style, locks=locks)
            clip.meta = clip.meta | self._meta(seed=seed + k, variant=k, temperature=temperature, locks=locks,
                                   crossfade=crossfade, audio_sha256=audio_sha256, emotion=emotion,
                                   guidance=guidance, window_overlap=int(overlap), snap_face=bool(snap_face),
                                   exact_audio_timing=bool(exact_audio_timing),
                                   **({"speaker": speaker} if self.speakers else {}),
                                   expression={"learned": emotion, "explicit": clip.meta.get("style")},
                                   audio_seconds=wav.shape[0] / SAMPLE_RATE)
            clips.append(clip)
        return clips

    @staticmethod
    def _speech(audio) -> tuple[np.ndarray, str]:
        """(N,) float32 16 kHz speech and the sha256 of what was given (file bytes or samples)."""
        if isinstance(audio, (bytes, bytearray)):
            return load_audio(audio), hashlib.sha256(audio).hexdigest()
        if isinstance(audio, (str, os.PathLike)):
            wav = load_audio(audio)  # validates the file first: never hash a huge non-audio upload
            with open(audio, "rb") as fh:
                return wav, hashlib.file_digest(fh, "sha256").hexdigest()
        wav = np.ascontiguousarray(audio, dtype=np.float32)
        if wav.ndim != 1:
            raise ValueError(f"audio array must be (N,) mono 16 kHz, got shape {wav.shape}")
        if wav.shape[0] < 0.3 * SAMPLE_RATE:
            raise ValueError(f"speech too short: {wav.shape[0] / SAMPLE_RATE:.2f} s, need at least 0.3 s")
        if wav.shape[0] > DEFAULT_MAX_SECONDS * SAMPLE_RATE:
            raise ValueError(f"speech too long: {wav.shape[0] / SAMPLE_RATE:.0f} s, the limit is {DEFAULT_MAX_SECONDS:.0f} s")
        if not np.isfinite(wav).all():
            raise ValueError("audio contains NaN or infinite samples")
        return wav, hashlib.sha256(wav.tobytes()).hexdigest()

    def _meta(self, **settings) -> dict:
        return {
            "model": "EMAGE (audio-only, PantoMatrix architecture)",
            "model_id": self.model_id,
            "weights": self.provenance,
            "device": str(self.device),
            "versions": {"emage_studio": __version__, "torch": torch.__version__, "numpy": np.__version__,
                         "python": platform.python_version()},
            **settings,
            "locks": [str(lock) for lock in settings.get("locks", [])],
        }
