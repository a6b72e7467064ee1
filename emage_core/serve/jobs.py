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
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .. import __version__
from ..audio import load_audio
from ..motion.beat2 import read_beat2, write_beat2
from ..edit.locks import DEFAULT_CROSSFADE, Lock

Progress = Callable[[float, str], None]

VIEWS = ("full", "upper", "face")
RENDERERS = ("mesh", "stick")
MAX_VARIANTS = 4
MAX_GUIDANCE = 5.0
MAX_SEED = 2**32 - 1
MIN_SIZE, MAX_SIZE = 64, 1024
MAX_TEMPERATURE = 2.0
MAX_INTENSITY = 2.0

# -- model references: what a request names instead of a path --------------------------------------
BUNDLED = "bundled"
HUB_PREFIX = "hub:"
LOCAL_PREFIX = "local:"
CHECKPOINT_DIRS_ENV = "EMAGE_CHECKPOINT_DIRS"


def checkpoint_roots() -> list[Path]:
    """Folders an operator allows local checkpoints from (``$EMAGE_CHECKPOINT_DIRS``, ':'-separated)."""
    return [Path(p).resolve() for p in os.environ.get(CHECKPOINT_DIRS_ENV, "").split(os.pathsep) if p]


def local_checkpoints() -> dict[str, Path]:
    """Checkpoint folders under the allowed roots, by folder name (the first root wins a name)."""
    found: dict[str, Path] = {}
    for root in checkpoint_roots():
        if root.is_dir():
            for d in sorted(root.iterdir()):
                if (d / "config.json").is_file() and (d / "emage_vq").is_dir():
                    found.setdefault(d.name, d)
    return found


def check_model(ref: str | None) -> None:
    """Raise ValueError unless ``ref`` is a model reference a request may name (never a path)."""
    if ref in (None, BUNDLED):
        return
    if ref.startswith(HUB_PREFIX):
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        repo = ref[len(HUB_PREFIX):]
        try:
            validate_repo_id(repo)
        except HFValidationError:
            raise ValueError(f"model {ref!r}: {repo!r} is not a Hugging Face repo id ('owner/name')") from None
        if "/" not in repo:
            raise ValueError(f"model {ref!r}: a Hub repo id has the form 'owner/name'")
        return
    if ref.startswith(LOCAL_PREFIX) and ref[len(LOCAL_PREFIX):] in local_checkpoints():
        return
    raise ValueError(f"unknown model {ref!r}: use 'bundled', 'hub:owner/name' or a listed local checkpoint")


def resolve_model(ref: str | None) -> str:
    """A checked model reference -> the `EmageGenerator.from_pretrained` source it names."""
    from ..models import hub

    check_model(ref)
    if ref is None:
        return str(hub.default_source())
    if ref == BUNDLED:
        return str(hub.BUNDLED_CHECKPOINT)
    if ref.startswith(HUB_PREFIX):
        return ref[len(HUB_PREFIX):]
    return str(local_checkpoints()[ref[len(LOCAL_PREFIX):]])


def model_label(ref: str | None) -> str:
    """How outputs name a model reference (``None`` is the default)."""
    from ..models import hub

    if ref is None:
        default = hub.default_source()
        return BUNDLED if Path(default) == hub.BUNDLED_CHECKPOINT else HUB_PREFIX + str(default)
    return ref


# -- how long a request holds the worker ----------------------------------------------------------
# Seconds of worker time per second of speech and video, measured on the 2-core development CPU
# (bench/bench_render.py, bench/bench_generate.py) and rounded up; a GPU is faster.
GENERATE_S_PER_S = 0.15
MESH_S_PER_FRAME_AT_512 = 0.018
FRAME_OVERHEAD_S = 0.004  # posing, encoding, composing
STICK_S_PER_FRAME = 0.004


def estimated_seconds(speech_seconds: float, settings: "JobSettings") -> float:
    """Worker seconds a request is expected to take: speech length x videos x per-frame cost."""
    videos = settings.variants * (2 if settings.compare_neutral else 1)
    if settings.renderer == "stick":
        per_frame = STICK_S_PER_FRAME
    else:
        per_frame = FRAME_OVERHEAD_S + MESH_S_PER_FRAME_AT_512 * (settings.size / 512) ** 2
    return speech_seconds * videos * (GENERATE_S_PER_S + 30 * per_frame)


@dataclass
class JobSettings:
    """Everything that decides a job's outputs. JSON-serialisable; recorded in metadata.json."""

    model: str | None = None  # a model reference (see `check_model`); None = the default
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
        """Raise ValueError naming the first bad setting and its allowed range; return the parsed locks.

        An odd video size is rounded down to even (video frames need even sides); the settings
        then hold the size used.
        """
        check_model(self.model)
        if not isinstance(self.variants, int) or not 1 <= self.variants <= MAX_VARIANTS:
            raise ValueError(f"variants must be 1-{MAX_VARIANTS}, got {self.variants}")
        if self.seed is not None and not (isinstance(self.seed, int) and 0 <= self.seed <= MAX_SEED - MAX_VARIANTS):
            raise ValueError(f"seed must be 0-{MAX_SEED - MAX_VARIANTS:,} (or empty for a random one), got {self.seed}")
        if not 0 <= self.temperature <= MAX_TEMPERATURE:
            raise ValueError(f"temperature must be 0-{MAX_TEMPERATURE:g}, got {self.temperature}")
        if self.view not in VIEWS:
            raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {self.view!r}")
        if self.renderer not in RENDERERS:
            raise ValueError(f"renderer must be one of {', '.join(RENDERERS)}, got {self.renderer!r}")
        if not isinstance(self.size, int) or not MIN_SIZE <= self.size <= MAX_SIZE:
            raise ValueError(f"video size must be {MIN_SIZE}-{MAX_SIZE} pixels, got {self.size}")
        self.size -= self.size % 2
        if self.compare_neutral and self.variants > MAX_VARIANTS // 2:
            raise ValueError(f"a comparison with neutral shows at most {MAX_VARIANTS // 2} variants per side")
        from ..edit.style import EMOTIONS, StyleControls, preset

        if self.emotion not in EMOTIONS:
            raise ValueError(f"emotion must be one of {', '.join(EMOTIONS)}, got {self.emotion!r}")
        if not 0 <= self.intensity <= MAX_INTENSITY:
            raise ValueError(f"intensity must be 0-{MAX_INTENSITY:g}, got {self.intensity}")
        preset(self.emotion, self.intensity)  # and the controls it gives must be in range
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
    from ..motion.bvh import write_bvh
    from ..render.mesh import render_grid

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
    model_ref = model_label(settings.model)
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
        # outputs name the model by its reference, never by the folder it was loaded from
        clip.meta["model_id"] = model_ref
        clip.meta["weights"] = {**clip.meta["weights"], "source": model_ref}
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
        "versions": clips[0].meta["versions"],
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
