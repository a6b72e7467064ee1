"""`EmageGenerator`: the EMAGE family behind the generator interface.

    gen = EmageGenerator.from_pretrained()          # default weights; or a folder / Hub repo id
    clips = gen.generate("speech.mp3", GenerationSettings(seed=7, variants=2, temperature=0.8,
                         locks=[Lock("upper", 1.0, 2.5)], reference=ref_motion))
    clips = gen.generate("speech.mp3", seed=7)      # the same, settings given by name

Every returned clip carries ``meta``: model id, weights provenance (revision, sha256 per file),
seed and settings, so an output file can always say what produced it.
"""
from __future__ import annotations

import os
import random
from dataclasses import replace
from typing import Sequence

import numpy as np
import torch

from ..edit.locks import Lock, apply_locks, part_frame_masks, validate_locks
from ..edit.style import StyleControls, apply_style
from ..models import hub
from ..models.emage.inference import default_motion, native_bf16, run
from ..models.emage.streaming import DEFAULT_LOOKAHEAD, EmageStream
from ..models.emage.windows import max_overlap
from ..models.emage.model import MOTION_DIM, TRANS_SLICE, EmageModels
from ..audio import SAMPLE_RATE
from ..motion.clip import DEFAULT_FPS as FPS
from ..motion.clip import Motion
from ..motion.skeleton import N_JOINTS, PART_NAMES, PARTS
from .interface import (Capabilities, Generator, Progress, default_device, load_speech, parts_meta, plan_expression,
                        versions)
from .live import LiveStream
from .settings import GenerationSettings, SettingsError

LIVE_LOOKAHEAD = DEFAULT_LOOKAHEAD  # frames (0.2 s) of speech a live frame may hear after itself

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


class EmageGenerator(Generator):
    """An EMAGE checkpoint ready to generate. Build it with `from_pretrained`."""

    family = "emage"
    display_name = "EMAGE"

    def __init__(self, models: EmageModels, provenance: dict, model_id: str):
        self.models = models.eval()
        self.provenance = provenance
        self.model_id = model_id

    bundled_note = ("A small EMAGE model trained by EMAGE Studio on a 63 s BEAT2 sample (speaker 2, CC BY-NC 4.0). "
                    "Works offline; quality is far below the official weights.")

    @classmethod
    def default_source(cls):
        return hub.default_source()

    @staticmethod
    def hub_repos() -> tuple[str, ...]:
        """The official weights on the Hugging Face Hub (``$EMAGE_REPO_ID`` overrides the repo)."""
        return (hub.default_repo_id(),)

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
        models.to(torch.device(device or default_device()))
        return cls(models, ckpt.provenance(), model_id=str(ckpt.resolved.source))

    @property
    def device(self) -> torch.device:
        return self.models.device

    @property
    def capabilities(self) -> Capabilities:
        everything = frozenset(PART_NAMES)
        return Capabilities(parts=everything, lock_parts=everything, emotions=self.emotions,
                            speakers=self.speakers, streaming=True, live=True)

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
        """``(learned label or None, explicit controls or None)``: see `interface.plan_expression`."""
        return plan_expression(self.emotions, emotion, intensity, overrides)

    def generate(self, audio, settings: GenerationSettings | None = None, progress: Progress | None = None,
                 **by_name) -> list[Motion]:
        """Speech -> ``settings.variants`` motions of exactly ``floor(N * 30 / 16000)`` frames each.

        audio: a path, bytes, or a (N,) float array of 16 kHz mono speech (at least 0.3 s).
        settings: see `GenerationSettings`; or give its fields by name (``seed=7, overlap=0``; EMAGE's
        ``overlap``, ``snap_face``, ``exact_audio_timing``, ``audio_context`` and ``precision`` go to
        ``settings.emage``).

        temperature 0 takes the most likely codes (deterministic); above 0 the upper, hands and
        lower codes are sampled, variant k with seed ``seed + k`` (a random seed when None).
        Locks keep parts of ``reference`` (aligned at time 0) exactly over their spans, given to the
        model as known motion, with a ``crossfade`` (seconds) of blending just outside them.
        An emotion the model learned conditions it (``guidance``: classifier-free guidance, 1 = as
        trained, 0 = unconditional, > 1 stronger); any other emotion, and ``style``, are explicit
        edits of the generated motion (locked spans untouched), see `plan_expression`.
        EMAGE's options: ``overlap`` frames each 64-frame window shares with the previous one,
        crossfaded in code-latent space (0 = the reference's windows; at most 28); ``snap_face``
        decodes the face from the nearest code as the reference does; ``exact_audio_timing=False``
        starts window f's audio at f * 533 samples as the reference does (1/3 sample per frame early).
        Speed: ``audio_context="clip"`` encodes the speech once per clip (window edges then see the
        neighbouring speech instead of zeros) and ``precision="bfloat16"`` (or ``"auto"``: where the device
        has native bf16) runs the audio model in bf16; together about 2x faster on a bf16 CPU, with
        slightly different motion. The defaults ("window", "float32") compute what the reference does.
        ``meta`` records the device and the precision that ran.
        `GenerationSettings.reference_preset` reproduces the released implementation.
        """
        settings = _settings(settings, by_name)
        cfg = self.models.audio.config
        most = max_overlap(cfg.pose_length, cfg.seed_frames)
        settings.validate()
        settings.emage.validate(most)
        learned, style = self.plan_expression(settings.emotion, settings.intensity, settings.style)
        if settings.guidance != 1 and settings.emotion in (None, "neutral"):
            raise SettingsError("guidance needs a learned emotion (it strengthens the model's own label conditioning)")
        if settings.guidance != 1 and not learned:
            raise SettingsError(f"guidance applies to learned emotions only, and this model learned no "
                                f"{settings.emotion!r} (it knows: {', '.join(self.emotions) or 'none'}): "
                                "leave guidance at 1")
        emotion_index = self.emotions.index(learned) if learned is not None else None
        speaker_index = self._speaker_index(settings.speaker)
        wav, audio_sha256 = load_speech(audio)
        n_frames = wav.shape[0] * FPS // SAMPLE_RATE
        locks, reference = list(settings.locks), settings.reference
        validate_locks(locks, n_frames, reference if locks else None, FPS)
        seed = settings.seed if settings.seed is not None else random.SystemRandom().randrange(2**31)
        given = mask = None
        if locks:
            given, mask = (torch.from_numpy(a)[None] for a in masked_motion(reference, locks, n_frames))
        opts = settings.emage
        precision = self._precision(opts.precision)

        clips = []
        for k in range(settings.variants):
            def report(frac: float, msg: str, k=k) -> None:
                if progress is not None:
                    progress((k + frac) / settings.variants, f"variant {k + 1}/{settings.variants}: {msg}")

            generator = torch.Generator(device="cpu").manual_seed(seed + k)
            out = run(self.models, torch.from_numpy(wav)[None], motion=given, mask=mask,
                      temperature=settings.temperature, generator=generator, progress=report,
                      emotion=emotion_index, guidance=settings.guidance, speaker=speaker_index,
                      overlap=opts.overlap, snap_face=opts.snap_face, exact_audio_timing=opts.exact_audio_timing,
                      audio_context=opts.audio_context, precision=precision)
            clip = Motion(poses=out["motion_axis_angle"][0].reshape(n_frames, N_JOINTS, 3).cpu().numpy(),
                          expressions=out["expression"][0].cpu().numpy(),
                          trans=out["trans"][0].cpu().numpy(), fps=FPS)
            if locks:
                clip = apply_locks(clip, reference, locks, settings.crossfade)
            if style is not None and not style.is_neutral:
                clip = apply_style(clip, style, locks=locks)
            clip.meta = clip.meta | self._meta(
                seed=seed + k, variant=k, temperature=settings.temperature, locks=locks,
                crossfade=settings.crossfade, audio_sha256=audio_sha256, emotion=learned,
                guidance=settings.guidance, window_overlap=opts.overlap, snap_face=opts.snap_face,
                exact_audio_timing=opts.exact_audio_timing, audio_context=opts.audio_context, precision=precision,
                **({"speaker": settings.speaker} if self.speakers else {}),
                expression={"learned": learned, "explicit": clip.meta.get("style")},
                audio_seconds=wav.shape[0] / SAMPLE_RATE, settings={**settings.to_dict(), "seed": seed})
            clips.append(clip)
        return clips

    def live(self, settings: GenerationSettings | None = None, *, lookahead: int = LIVE_LOOKAHEAD, idle: bool = True,
             record_dir=None, max_seconds: float | None = None, **by_name) -> LiveStream:
        """A live session (see `emage_core.generate.live`): push speech chunks, get motion chunks.

        Motion comes from the speech received so far (`EmageStream`): each frame hears at most ``lookahead``
        frames (default 6 = 0.2 s) of speech after it. Settings: seed, temperature, a learned emotion or
        speaker, EMAGE's ``snap_face`` and ``precision``; locks, variants and explicit style edits are for
        whole clips and are refused here. ``idle``: calm the body and breathe in silence (explicit, labelled).
        """
        from ..audio import DEFAULT_MAX_SECONDS

        settings = _settings(settings, by_name)
        settings.validate()
        if settings.locks or settings.variants != 1 or settings.style or settings.guidance != 1:
            raise SettingsError("live generation takes one variant without locks, explicit style or guidance")
        learned, style = self.plan_expression(settings.emotion, settings.intensity)
        if style is not None:
            raise SettingsError(f"live generation takes only emotions the model learned (it knows: "
                                f"{', '.join(self.emotions) or 'none'}), not the explicit {settings.emotion!r} edit")
        speaker_index = self._speaker_index(settings.speaker)
        seed = settings.seed if settings.seed is not None else random.SystemRandom().randrange(2**31)
        precision = self._precision(settings.emage.precision)
        backend = EmageStream(self.models, temperature=settings.temperature,
                              generator=torch.Generator(device="cpu").manual_seed(seed), speaker=speaker_index,
                              emotion=self.emotions.index(learned) if learned is not None else None,
                              lookahead=lookahead, snap_face=settings.emage.snap_face, precision=precision)
        meta = self._meta(seed=seed, variant=0, temperature=settings.temperature, emotion=learned,
                          snap_face=settings.emage.snap_face, precision=precision, audio_context="window",
                          live_smoothing={"gaussian_sigma_frames": backend.smooth, "follow": backend.follow,
                                          "what": "explicit low-pass of the body against jitter between windows "
                                                  "(see models/emage/streaming.py); jaw and expressions as decoded"},
                          expression={"learned": learned, "explicit": None},
                          **({"speaker": settings.speaker} if self.speakers else {}),
                          settings={**settings.to_dict(), "seed": seed,  # EMAGE's options as live mode runs them
                                    "emage": {"snap_face": settings.emage.snap_face, "precision": precision,
                                              "audio_context": "window", "lookahead": lookahead}})
        return LiveStream(backend, meta, seed=seed, idle=idle, record_dir=record_dir,
                          max_seconds=DEFAULT_MAX_SECONDS if max_seconds is None else max_seconds)

    def _speaker_index(self, speaker: str | None) -> int:
        """A learned speaker label -> its index; None -> the model's "no speaker" row (or 0)."""
        if speaker is None:
            return self.models.audio.config.null_speaker or 0
        if speaker not in self.speakers:
            raise SettingsError(f"this model has no learned speaker {speaker!r} (it knows: "
                                f"{', '.join(self.speakers) or 'none'})")
        return self.speakers.index(speaker)

    def _precision(self, choice: str) -> str:
        """The audio model's precision that runs: "auto" is bfloat16 where this device has it natively."""
        if choice != "auto":
            return choice
        return "bfloat16" if native_bf16(self.device) else "float32"

    def _meta(self, **settings) -> dict:
        return {
            "model": "EMAGE (audio-only, PantoMatrix architecture)",
            "family": self.family,
            "model_id": self.model_id,
            "weights": self.provenance,
            "device": str(self.device),
            "versions": versions(),
            "parts": parts_meta(PART_NAMES),
            **settings,
            "locks": [str(lock) for lock in settings.get("locks", [])],
        }


def _settings(settings: GenerationSettings | None, by_name: dict) -> GenerationSettings:
    """One `GenerationSettings` from an object and/or fields given by name."""
    settings = settings.replace() if settings is not None else GenerationSettings()
    emage = {k: by_name.pop(k) for k in ("overlap", "snap_face", "exact_audio_timing", "audio_context", "precision")
             if k in by_name}
    if emage:
        settings.emage = replace(settings.emage, **emage)
    unknown = set(by_name) - set(GenerationSettings.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown generation setting(s): {', '.join(sorted(unknown))}")
    return settings.replace(**by_name) if by_name else settings
