"""`EmotionGestureGenerator`: the EmotionGesture family (Qi et al., 2023) behind the generator interface.

    gen = EmotionGestureGenerator.from_pretrained()            # the bundled default; or a folder / Hub repo id
    clips = gen.generate("speech.wav", GenerationSettings(seed=3, variants=2, temperature=1.0, emotion="happiness"))

EmotionGesture generates the upper body and the hands (43 SMPL-X joints) from speech alone. The face,
the legs, the global orientation and the translation are not modelled: they stay at rest, or EMAGE
completes them when asked (`emage_core.generate.complete`); every clip's ``meta["parts"]`` says which.

- Emotion: a label the checkpoint learned (its config's ``emotion_labels``) conditions the emotion VAE
  (``guidance`` > 1 strengthens it, classifier-free); any other emotion becomes its explicit preset, an
  edit of the generated motion (`interface.plan_expression`). ``meta["expression"]`` says which.
- Variants: variant k draws the emotion latent of each window, z = temperature x N(0, I), from seed
  seed + k (temperature 0: z = 0, the prior's mean, the same motion for every seed).
- Any length: windows seeded by the previous window's last frames, the first 16 frames of each crossfaded
  with the previous window's (`models.emotiongesture.inference`).
- Locks of the upper body or hands are given to the model as seed frames (the motion continues out of
  them) and copied exactly; locks of other parts are copied (`edit.locks.apply_locks`).
"""
from __future__ import annotations

import random

import numpy as np
import torch

from ..audio import SAMPLE_RATE
from ..edit.locks import apply_locks, part_frame_masks, validate_locks
from ..edit.style import apply_style
from ..models import hub
from ..models.emotiongesture.audio import log_mel
from ..models.emotiongesture.channels import denormalize, from_smplx, normalize, part_channels, to_smplx
from ..models.emotiongesture.checkpoint import FILES, EmotionGestureCheckpoint, load_pretrained
from ..models.emotiongesture.inference import DEFAULT_OVERLAP, rollout
from ..motion.clip import DEFAULT_FPS as FPS
from ..motion.clip import Motion
from .interface import Capabilities, Generator, Progress, load_checkpoint, load_speech, parts_meta, plan_expression
from .interface import versions
from .settings import GenerationSettings, SettingsError

PARTS_GENERATED = ("upper", "hands")
BUNDLED = hub.CHECKPOINTS / "emotiongesture_studio_default"
MAX_WINDOW_NOTE = "window must be {lo}-{hi} frames for this model, got {value!r}"


class EmotionGestureGenerator(Generator):
    """An EmotionGesture checkpoint ready to generate. Build it with `from_pretrained`."""

    family = "emotiongesture"
    display_name = "EmotionGesture"
    parts_generated = PARTS_GENERATED
    bundled_note = ("A small EmotionGesture (Qi et al., 2023, rebuilt from the paper) trained by EMAGE Studio on a "
                    "63 s BEAT2 sample (speaker 2, neutral only, CC BY-NC 4.0). Works offline; generates the upper "
                    "body and hands.")

    def __init__(self, ckpt: EmotionGestureCheckpoint, provenance: dict, model_id: str):
        self.ckpt = ckpt
        self.provenance = provenance
        self.model_id = model_id

    @classmethod
    def default_source(cls):
        return BUNDLED

    @classmethod
    def from_pretrained(cls, source=None, revision: str | None = None, device=None) -> "EmotionGestureGenerator":
        """Load a checkpoint folder in our layout, or a Hub repo holding one (``None``: the bundled default)."""
        return cls(*load_checkpoint(BUNDLED if source is None else source, revision, FILES, load_pretrained, device))

    @property
    def device(self) -> torch.device:
        return next(self.ckpt.model.parameters()).device

    @property
    def capabilities(self) -> Capabilities:
        parts = frozenset(PARTS_GENERATED)
        return Capabilities(parts=parts, lock_parts=parts, emotions=self.ckpt.emotion_labels, speakers=(),
                            streaming=False)

    def window(self, settings: GenerationSettings, value: int | None = None) -> int:
        """Frames per window: ``value``, else the settings' (``settings.emotiongesture.window``), else the
        checkpoint's."""
        if value is None:
            value = settings.emotiongesture.window
        cfg = self.ckpt.config
        if value is None:
            return cfg.window
        lo, hi = max(8, cfg.seed_frames), cfg.max_window
        if not (isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi):
            raise SettingsError(MAX_WINDOW_NOTE.format(lo=lo, hi=hi, value=value))
        return value

    def generate(self, audio, settings: GenerationSettings | None = None, progress: Progress | None = None,
                 **by_name) -> list[Motion]:
        """Speech -> ``settings.variants`` motions of exactly ``floor(N * 30 / 16000)`` frames each.

        audio: a path, bytes, or a (N,) float array of 16 kHz mono speech (at least 0.3 s).
        settings: see `GenerationSettings`, or its fields by name; ``window=`` (frames per window) is
        EmotionGesture's own (also ``settings.emotiongesture.window``). Variant k draws its windows'
        emotion latents from seed ``seed + k`` (a random seed when None), scaled by ``temperature``. See
        the module docstring for emotions, locks and windows.
        """
        window = by_name.pop("window", None)
        settings = (settings.replace() if settings is not None else GenerationSettings()).replace(**by_name)
        settings.validate()
        window = self.window(settings, window)
        overlap = settings.emotiongesture.overlap
        overlap = min(DEFAULT_OVERLAP, window // 2) if overlap is None else overlap
        if overlap >= window:
            raise SettingsError(f"overlap must be less than the window ({window} frames), got {overlap}")
        labels = self.ckpt.emotion_labels
        learned, style = plan_expression(labels, settings.emotion, settings.intensity, settings.style)
        if settings.guidance != 1 and not learned:
            raise SettingsError(f"guidance applies to learned emotions only, and this model learned no "
                                f"{settings.emotion!r} (it knows: {', '.join(labels) or 'none'}): leave guidance at 1")
        if settings.speaker is not None:
            raise SettingsError(f"this model has no learned speaker {settings.speaker!r} (it knows: none)")
        wav, audio_sha256 = load_speech(audio)
        n_frames = wav.shape[0] * FPS // SAMPLE_RATE
        locks, reference = list(settings.locks), settings.reference
        validate_locks(locks, n_frames, reference if locks else None, FPS)
        cfg, stats = self.ckpt.config, self.ckpt.stats
        mel = ((log_mel(wav) - stats.mel_mean) / stats.mel_std).astype(np.float32)
        silence = ((-1.0 - stats.mel_mean) / stats.mel_std).astype(np.float32)
        known = mask = None
        if locks:
            known, mask = self._known(reference, locks, n_frames)
        label = labels.index(learned) if learned is not None else cfg.null_label
        seed = settings.seed if settings.seed is not None else random.SystemRandom().randrange(2**31)
        clips = []
        for k in range(settings.variants):
            def report(frac: float, msg: str, k=k) -> None:
                if progress is not None:
                    progress((k + frac) / settings.variants, f"variant {k + 1}/{settings.variants}: {msg}")

            x = rollout(self.ckpt.model, mel, label=label, window=window, silence=silence,
                        temperature=settings.temperature, generator=torch.Generator(device="cpu").manual_seed(seed + k),
                        known=known, known_mask=mask, guidance=settings.guidance, overlap=overlap,
                        progress=report)
            poses = to_smplx(denormalize(x, stats.pose_mean, stats.pose_std))
            clip = Motion(poses=poses, expressions=np.zeros((n_frames, 100), np.float32),
                          trans=np.zeros((n_frames, 3), np.float32), fps=FPS)
            if locks:
                clip = apply_locks(clip, reference, locks, settings.crossfade)
            if style is not None and not style.is_neutral:
                clip = apply_style(clip, style, locks=locks)
            clip.meta = clip.meta | self._meta(seed + k, k, settings, (window, overlap), locks, audio_sha256, wav, learned, clip)
            clips.append(clip)
        return clips

    def _known(self, reference: Motion, locks, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
        """Locked upper-body / hand frames -> normalised given values and where they apply, (T, 258) each."""
        stats = self.ckpt.stats
        ref = reference.slice(0, n_frames)
        values = normalize(from_smplx(ref.poses), stats.pose_mean, stats.pose_std)
        mask = np.zeros_like(values, dtype=bool)
        for part, frames in part_frame_masks(list(locks), n_frames, FPS).items():
            if part in PARTS_GENERATED:
                mask[np.ix_(np.flatnonzero(frames), part_channels(part))] = True
        return values, mask

    def _meta(self, seed, variant, settings, windows, locks, audio_sha256, wav, learned, clip) -> dict:
        cfg = self.ckpt.config
        return {
            "model": "EmotionGesture (Qi et al. 2023, rebuilt from the paper; SMPL-X upper body + hands)",
            "family": self.family,
            "model_id": self.model_id,
            "weights": self.provenance,
            "device": str(self.device),
            "versions": versions(),
            "parts": parts_meta(PARTS_GENERATED),
            "seed": seed,
            "variant": variant,
            "temperature": settings.temperature,
            "emotion": learned,
            "guidance": settings.guidance,
            "windows": {"window": windows[0], "overlap": windows[1], "seed_frames": cfg.seed_frames},
            "locks": [str(lock) for lock in locks],
            "crossfade": settings.crossfade,
            "audio_sha256": audio_sha256,
            "audio_seconds": wav.shape[0] / SAMPLE_RATE,
            "expression": {"learned": learned, "explicit": clip.meta.get("style")},
            "settings": {**settings.to_dict(), "seed": seed - variant},
        }
