"""One generation job: speech + settings in, a folder of finished outputs out.

The app's worker, the batch runner and scripts all run jobs through `run_job`, so every
result folder looks the same:

    variant_1.npz  variant_1.json  variant_1.bvh  variant_1.mp4   (per variant)
    grid.mp4                                                       (all variants side by side)
    metadata.json                                                  (model, weights sha256, seeds, settings, speech sha256)
    emage_outputs.zip                                              (everything above)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import __version__
from .audio import load_audio
from .beat2 import read_beat2, write_beat2
from .locks import DEFAULT_CROSSFADE, Lock

Progress = Callable[[float, str], None]

VIEWS = ("full", "upper", "face")
RENDERERS = ("mesh", "stick")
MAX_VARIANTS = 4
MAX_GUIDANCE = 5.0


@dataclass
class JobSettings:
    """Everything that decides a job's outputs. JSON-serialisable; recorded in metadata.json."""

    model: str | None = None  # checkpoint source; None = the default
    seed: int | None = None
    variants: int = 1
    temperature: float = 0.0
    locks: list[str] = field(default_factory=list)  # "part:start-end"
    crossfade: float = DEFAULT_CROSSFADE
    view: str = "full"
    size: int = 512
    show_labels: bool = True
    renderer: str = "mesh"
    emotion: str = "neutral"  # learned when the model knows the label, else its explicit preset
    intensity: float = 1.0
    style: dict = field(default_factory=dict)  # explicit control overrides, e.g. {"amplitude": 1.3}
    compare_neutral: bool = False  # also generate the same seed without emotion/style, side by side
    guidance: float = 1.0  # classifier-free guidance of a learned emotion (1 = as trained); see EmageGenerator.generate

    def validate(self) -> list[Lock]:
        """Raise ValueError naming the first bad setting; return the parsed locks."""
        if not 1 <= self.variants <= MAX_VARIANTS:
            raise ValueError(f"variants must be 1-{MAX_VARIANTS}, got {self.variants}")
        if self.view not in VIEWS:
            raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {self.view!r}")
        if self.renderer not in RENDERERS:
            raise ValueError(f"renderer must be one of {', '.join(RENDERERS)}, got {self.renderer!r}")
        if not 64 <= self.size <= 1024:
            raise ValueError(f"video size must be 64-1024 pixels, got {self.size}")
        if self.compare_neutral and self.variants > MAX_VARIANTS // 2:
            raise ValueError(f"a comparison with neutral shows at most {MAX_VARIANTS // 2} variants per side")
        from .style import EMOTIONS, StyleControls, preset

        if self.emotion not in EMOTIONS:
            raise ValueError(f"emotion must be one of {', '.join(EMOTIONS)}, got {self.emotion!r}")
        preset(self.emotion, self.intensity)  # range-checks the intensity
        if not 0 <= self.guidance <= MAX_GUIDANCE:
            raise ValueError(f"guidance must be 0-{MAX_GUIDANCE:g}, got {self.guidance}")
        StyleControls(**self.style)  # unknown or out-of-range controls fail here, before any work
        return [Lock.parse(text) if isinstance(text, str) else Lock(*text) for text in self.locks]


@dataclass
class JobResult:
    folder: Path
    motions: list[Path]  # BEAT2 .npz per variant
    bvhs: list[Path]
    videos: list[Path]  # one mp4 per variant
    grid: Path  # side-by-side video (the single video when there is one variant)
    metadata: Path
    archive: Path

    def files(self) -> list[Path]:
        return [*self.motions, *self.bvhs, *self.videos, self.grid, self.metadata, self.archive]


def _sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def run_job(
    speech: str | os.PathLike,
    settings: JobSettings,
    out_dir: str | os.PathLike,
    *,
    generator_for: Callable[[str | None], "object"],
    reference: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> JobResult:
    """Generate, export and render one request into ``out_dir`` (created; must be private to the job).

    generator_for(source) returns a loaded `EmageGenerator` (callers cache them). ``reference`` is a
    BEAT2 .npz the locked parts come from. Progress: generation 0-0.4, rendering 0.4-1.
    """
    from .bvh import write_bvh
    from .render import render_grid

    report = progress or (lambda f, m: None)
    locks = settings.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    wav = load_audio(speech)
    ref_motion = None
    if reference is not None:
        ref_motion = read_beat2(reference)
        if ref_motion.fps != 30:
            ref_motion = ref_motion.resample(30)
    report(0.0, "loading model")
    gen = generator_for(settings.model)
    learned, style = gen.plan_expression(settings.emotion, settings.intensity, settings.style)
    if settings.guidance != 1 and not learned:
        raise ValueError(f"guidance applies to learned emotions only, and this model learned no {settings.emotion!r} "
                         f"(it knows: {', '.join(gen.emotions) or 'none'}): leave guidance at 1")
    # (file stem, label, learned emotion, explicit controls) per condition
    conditions = [("variant", settings.emotion if learned or style else "", learned, style)]
    if settings.compare_neutral:
        conditions.append(("neutral", "neutral", None, None))
    seed = settings.seed
    clips, stems, labels = [], [], []
    for c, (stem, label, emotion, controls) in enumerate(conditions):
        guidance = settings.guidance if emotion else 1.0  # the neutral side is unconditioned
        def gen_progress(f, m, c=c):
            report(0.4 * (c + f) / len(conditions), f"generating: {m}")

        batch = gen.generate(wav, seed=seed, variants=settings.variants, temperature=settings.temperature,
                             locks=locks, reference=ref_motion, crossfade=settings.crossfade,
                             emotion=emotion, style=controls, progress=gen_progress, guidance=guidance)
        seed = batch[0].meta["seed"]  # the neutral comparison reuses the (possibly random) seed
        for k, clip in enumerate(batch, 1):
            clips.append(clip)
            stems.append(f"{stem}_{k}")
            labels.append(" ".join(x for x in (label, f"seed {clip.meta['seed']}") if x))
    speech_sha = _sha256(speech)
    motions, bvhs = [], []
    for stem, clip in zip(stems, clips):
        clip.meta["audio_sha256"] = speech_sha  # the uploaded file's hash, not the decoded samples'
        motions.append(write_beat2(clip, out / f"{stem}.npz"))
        bvhs.append(write_bvh(clip, out / f"{stem}.bvh"))

    grid = render_grid(clips[:MAX_VARIANTS], out / "grid.mp4", audio=wav, labels=labels[:MAX_VARIANTS],
                       show_labels=settings.show_labels, view=settings.view, size=settings.size,
                       renderer=settings.renderer, cell_paths=[out / f"{s}.mp4" for s in stems[:MAX_VARIANTS]],
                       progress=lambda f, m: report(0.4 + 0.6 * f, f"rendering: {m}"))

    meta = {
        "model": clips[0].meta["model"],
        "model_id": clips[0].meta["model_id"],
        "weights": clips[0].meta["weights"],
        "seeds": [clip.meta["seed"] for clip in clips],
        "settings": dataclasses.asdict(settings),
        "emotion": {"name": settings.emotion, "intensity": settings.intensity,
                    "learned": learned,  # a label the model was trained with, used as conditioning
                    "explicit": clips[0].meta.get("style")},  # an explicit edit of the generated motion
        "speech": {"sha256": speech_sha, "seconds": round(wav.shape[0] / 16000, 3)},
        "reference_sha256": _sha256(reference) if reference is not None else None,
        "frames": clips[0].n_frames,
        "fps": 30,
        "versions": {**clips[0].meta["versions"], "platform": platform.platform()},
    }
    metadata = out / "metadata.json"
    metadata.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    result = JobResult(out, motions, bvhs, list(grid.cell_paths), grid.grid_path, metadata, out / "emage_outputs.zip")
    members = [p for p in dict.fromkeys(result.files()) if p != result.archive]  # one video may be the grid too
    members += [p.with_suffix(".json") for p in result.motions]  # provenance side-cars
    with zipfile.ZipFile(result.archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in members:
            zf.write(path, path.name)
    report(1.0, "done")
    return result
