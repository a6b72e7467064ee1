"""`GenerationSettings`: everything that decides a generated motion, checked in one place.

The CLI, the app's jobs, batch manifests and the Python API all build one of these; it is recorded in
every output as provenance (`to_dict`). Validation names the setting and its allowed range.

    settings = GenerationSettings(seed=7, variants=2, temperature=0.8, locks=[Lock("upper", 1, 2.5)],
                                  reference=ref_motion)
    settings.validate()                                  # SettingsError naming the first bad setting
    GenerationSettings.reference_preset("emage")         # what the released implementation does

Family-specific decoding choices live in their own small option objects (``emage`` here; DiffSHEG's
sampler settings beside it), so a family reads only its own.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ..edit.locks import DEFAULT_CROSSFADE, Lock, LockError
from ..models.emage.windows import DEFAULT_OVERLAP, max_overlap
from ..motion.clip import Motion

MAX_SEED = 2**32 - 1
MAX_VARIANTS = 16
MAX_TEMPERATURE = 2.0
MAX_INTENSITY = 2.0
MAX_GUIDANCE = 5.0
MAX_CROSSFADE = 5.0


class SettingsError(ValueError):
    """A setting outside its allowed range; the message names it and the range."""


def _number(name: str, value, lo: float, hi: float, *, whole: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and whole:
        ok = float(value).is_integer()
    if not ok or not lo <= value <= hi:
        span = f"{int(lo):,}-{int(hi):,}" if whole else f"{lo:g}-{hi:g}"
        raise SettingsError(f"{name} must be {'a whole number ' if whole else ''}{span}, got {value!r}")


@dataclass
class EmageOptions:
    """EMAGE's decoding choices (see `emage_core.models.emage.inference.run`)."""

    overlap: int = DEFAULT_OVERLAP  # frames neighbouring 64-frame windows share, crossfaded in code-latent space; 0 = the reference
    snap_face: bool = False  # decode the face from the nearest code, as the reference does
    exact_audio_timing: bool = True  # False: the reference's drifting 533-samples-per-frame windows
    # Speed (see `run`): "clip" encodes the audio once per clip, with real context at window edges, instead of
    # each window alone, zero-padded ("window", the reference); precision "bfloat16" runs the audio model in bf16
    # ("auto": where the device has it natively; "float32", the reference). Together 1.7x faster than the
    # reference on a 2-core CPU with native bf16 (bench/bench_generate.py); both change outputs slightly.
    audio_context: str = "clip"
    precision: str = "auto"

    def validate(self, most: int | None = None) -> None:
        _number("overlap", self.overlap, 0, max_overlap() if most is None else most, whole=True)
        self.overlap = int(self.overlap)
        if self.audio_context not in ("window", "clip"):
            raise SettingsError(f"audio_context must be 'window' or 'clip', got {self.audio_context!r}")
        if self.precision not in ("auto", "float32", "bfloat16"):
            raise SettingsError(f"precision must be 'auto', 'float32' or 'bfloat16', got {self.precision!r}")


@dataclass
class DiffshegOptions:
    """DiffSHEG's sampler (see `emage_core.models.diffsheg.diffusion`); None = the checkpoint's default.

    The reference's defaults: 25 DDIM steps, guidance 1.15, FOPPAS windows of 88 frames overlapping by
    10, 5 resampling repeats. ``mel_fps=15`` reproduces the reference's custom-audio features (15-fps
    mel for a 30-fps model, a bug kept only as an option).
    """

    steps: int | None = None
    guidance_scale: float | None = None
    window: int | None = None
    overlap: int | None = None
    repeats: int | None = None
    mel_fps: int = 30

    def validate(self) -> None:
        if self.steps is not None:
            _number("steps", self.steps, 2, 1000, whole=True)
        if self.guidance_scale is not None:
            _number("guidance_scale", self.guidance_scale, 0, 10)
        if self.window is not None:
            _number("window", self.window, 16, 1200, whole=True)
        if self.overlap is not None:
            _number("overlap", self.overlap, 0, (self.window or 88) // 2, whole=True)
        if self.repeats is not None:
            _number("repeats", self.repeats, 1, 20, whole=True)
        if self.mel_fps not in (15, 30):
            raise SettingsError(f"mel_fps must be 30 (the motion's rate) or 15 (the reference's bug), got {self.mel_fps!r}")


@dataclass
class GenerationSettings:
    """One request to a generator. JSON-serialisable through `to_dict` (the reference motion as its sha256)."""

    seed: int | None = None  # variant k uses seed + k; None = a random seed, recorded
    variants: int = 1
    temperature: float = 0.0  # 0 = the most likely motion; > 0 samples (EMAGE: body codes)
    locks: list[Lock] = field(default_factory=list)
    reference: Motion | None = field(default=None, repr=False)  # where locked parts come from (30 fps)
    crossfade: float = DEFAULT_CROSSFADE  # seconds of blending just outside each locked span
    emotion: str | None = None  # learned when the model knows the label, else its explicit preset
    intensity: float = 1.0
    style: dict[str, float] = field(default_factory=dict)  # explicit control overrides, e.g. {"amplitude": 1.3}
    guidance: float = 1.0  # classifier-free guidance of a learned emotion (1 = as trained)
    speaker: str | None = None  # a speaker the model learned
    emage: EmageOptions = field(default_factory=EmageOptions)
    diffsheg: DiffshegOptions = field(default_factory=DiffshegOptions)
    emotiongesture: "EmotionGestureOptions" = field(default_factory=lambda: EmotionGestureOptions())

    @classmethod
    def reference_preset(cls, family: str = "emage", **overrides) -> "GenerationSettings":
        """Settings under which a family does what its released implementation does."""
        presets = {"emage": {"temperature": 0.0,
                             "emage": EmageOptions(overlap=0, snap_face=True, exact_audio_timing=False,
                                                  audio_context="window", precision="float32")},
                   "diffsheg": {"diffsheg": DiffshegOptions(steps=25, guidance_scale=1.15, window=88, overlap=10,
                                                            repeats=5)}}
        if family not in presets:
            raise SettingsError(f"no reference preset for {family!r}; known: {', '.join(presets)}")
        return cls(**{**presets[family], **overrides})

    def validate(self) -> "GenerationSettings":
        """Check every setting (SettingsError names the first bad one); returns self."""
        from ..edit.style import EMOTIONS, StyleControls, StyleError, preset

        if self.seed is not None:
            _number("seed", self.seed, 0, MAX_SEED - MAX_VARIANTS, whole=True)
            self.seed = int(self.seed)
        _number("variants", self.variants, 1, MAX_VARIANTS, whole=True)
        self.variants = int(self.variants)
        _number("temperature", self.temperature, 0, MAX_TEMPERATURE)
        _number("crossfade", self.crossfade, 0, MAX_CROSSFADE)
        _number("intensity", self.intensity, 0, MAX_INTENSITY)
        _number("guidance", self.guidance, 0, MAX_GUIDANCE)
        if self.emotion is not None and self.emotion not in EMOTIONS:
            raise SettingsError(f"emotion must be one of {', '.join(EMOTIONS)}, got {self.emotion!r}")
        try:
            if self.emotion:
                preset(self.emotion, self.intensity)
            StyleControls(**self.style)  # unknown or out-of-range controls fail here, before any work
        except (StyleError, TypeError) as e:
            raise SettingsError(str(e)) from None
        for lock in self.locks:
            if not isinstance(lock, Lock):
                raise SettingsError(f"locks must be Lock objects (Lock.parse('upper:1-2.5')), got {lock!r}")
        if self.locks and self.reference is None:
            raise LockError("locked parts need a reference motion")
        self.emage.validate()
        self.diffsheg.validate()
        self.emotiongesture.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        """The settings as recorded in outputs (the reference motion by its frame count, not its data)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "reference"}
        out["locks"] = [str(lock) for lock in self.locks]
        out["emage"] = dataclasses.asdict(self.emage)
        out["diffsheg"] = dataclasses.asdict(self.diffsheg)
        out["emotiongesture"] = dataclasses.asdict(self.emotiongesture)
        out["reference_frames"] = self.reference.n_frames if self.reference is not None else None
        return out

    def replace(self, **changes) -> "GenerationSettings":
        return dataclasses.replace(self, **changes)


@dataclass
class EmotionGestureOptions:
    """EmotionGesture's windows (see `emage_core.models.emotiongesture.inference`); None = the default.

    window: frames generated per window, each window seeded by the previous one's last frames (the
    checkpoint's; the bundled default: 64; at most the checkpoint's ``max_window``, 256).
    overlap: frames each window shares with the one before, crossfaded (default 16, at most half the
    window; 0 = windows meet
    end to start).
    """

    window: int | None = None
    overlap: int | None = None

    def validate(self) -> None:
        if self.window is not None:
            _number("window", self.window, 8, 256, whole=True)
            self.window = int(self.window)
        if self.overlap is not None:
            _number("overlap", self.overlap, 0, (self.window or 64) - 1, whole=True)
            self.overlap = int(self.overlap)
