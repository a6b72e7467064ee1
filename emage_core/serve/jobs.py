"""One generation job: speech + settings in, a folder of finished outputs out.

The app's worker and scripts run jobs through `run_job`, so every result folder looks the same:

    variant_1.npz  variant_1.json  variant_1.bvh  variant_1.glb  variant_1.mp4  (per video)
    variant_1.fbx                                                  (per video, where Blender is installed)
    grid.mp4                                                       (all videos side by side)
    metadata.json                                                  (model, weights sha256, seeds, settings, speech sha256)
    emage_outputs.zip                                              (everything above)

A job compares conditions side by side when asked: the selected emotion/style against neutral
(``neutral_1.npz``...), or several models on the same speech and seed (``model1_1.npz``...).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..audio import SAMPLE_RATE, load_audio
from ..body import check_body, default_body
from ..files import sha256_file
from ..generate.complete import complete_parts
from ..generate.interface import Progress
from ..generate.registry import ModelRef, parse_ref
from ..generate.settings import GenerationSettings
from ..motion.beat2 import read_beat2, write_beat2
from ..motion import smplx_skeleton
from ..motion.clip import DEFAULT_FPS
from ..render import RENDERERS, VIEWS

logger = logging.getLogger(__name__)

MAX_VIDEOS = 4  # cells of one side-by-side video
MIN_SIZE, MAX_SIZE = 64, 1024

# -- how long a request holds the worker ----------------------------------------------------------
# Seconds of worker time per second of speech and video, measured on the 2-core development CPU
# (bench/bench_render.py, bench/bench_generate.py) and rounded up; a GPU is faster.
GENERATE_S_PER_S = 0.15
MESH_S_PER_FRAME_AT_512 = 0.018
FRAME_OVERHEAD_S = 0.004  # posing, encoding, composing
STICK_S_PER_FRAME = 0.004


@dataclass
class JobSettings:
    """Everything that decides a job's outputs: the model, how to generate, what to compare, how to show it.

    JSON-serialisable through `to_dict`; recorded in metadata.json. Models are named by reference
    (``emage``, ``emage:owner/name``, ``emage:local:NAME``; never a server path).
    """

    model: str | None = None  # a model reference; None = the default family's default
    generation: GenerationSettings = field(default_factory=GenerationSettings)  # its reference comes as a file
    complete_with: str | None = None  # an EMAGE reference that fills the parts the model does not generate
    compare_neutral: bool = False  # also the same seed without emotion/style, side by side
    compare_models: list[str] = field(default_factory=list)  # more models on the same speech and seed
    view: str = "full"
    size: int = 512
    show_labels: bool = True
    renderer: str = "mesh"
    body: str | None = None  # anny | mannequin | smplx (the official mesh, where the operator supplies it); None: default

    @classmethod
    def of(cls, **values) -> "JobSettings":
        """Build from flat names: job fields as they are, generation fields (seed, variants, ...) into
        ``generation`` (EMAGE's overlap/snap_face/exact_audio_timing into ``generation.emage``)."""
        own = {k: values.pop(k) for k in list(values) if k in cls.__dataclass_fields__}
        emage = {k: values.pop(k) for k in ("overlap", "snap_face", "exact_audio_timing") if k in values}
        generation = own.pop("generation", GenerationSettings()).replace(**values)
        if emage:
            generation.emage = dataclasses.replace(generation.emage, **emage)
        return cls(generation=generation, **own)

    def models(self) -> list[ModelRef]:
        """The models this job runs, first the selected one (references from users: no paths)."""
        return [parse_ref(m, allow_paths=False) for m in [self.model, *self.compare_models]]

    def conditions(self) -> int:
        return 1 + bool(self.compare_neutral) + len(self.compare_models)

    def validate(self) -> "JobSettings":
        """Raise ValueError naming the first bad setting and its allowed range; returns self.

        An odd video size is rounded down to even (video frames need even sides); the settings
        then hold the size used.
        """
        self.models()
        if self.complete_with is not None and parse_ref(self.complete_with, allow_paths=False).family != "emage":
            raise ValueError(f"complete_with must name an EMAGE model, got {self.complete_with!r}")
        if self.compare_neutral and self.compare_models:
            raise ValueError("compare with neutral or with other models, not both at once")
        if self.compare_models and len(set(self.compare_models) | {self.model}) != 1 + len(self.compare_models):
            raise ValueError("the models to compare must differ")
        most = MAX_VIDEOS // self.conditions()
        variants = self.generation.variants
        if not (isinstance(variants, int) and 1 <= variants <= most):
            raise ValueError(f"variants must be 1-{most} (one request shows at most {MAX_VIDEOS} videos"
                             f"{', and compares ' + str(self.conditions()) + ' conditions' if most < MAX_VIDEOS else ''}),"
                             f" got {variants!r}")
        locks, self.generation.locks = self.generation.locks, []  # the reference arrives with the job
        try:
            self.generation.validate()
        finally:
            self.generation.locks = locks
        if self.view not in VIEWS:
            raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {self.view!r}")
        if self.renderer not in RENDERERS:
            raise ValueError(f"renderer must be one of {', '.join(RENDERERS)}, got {self.renderer!r}")
        self.body = check_body(default_body() if self.body is None else self.body)
        if not isinstance(self.size, int) or not MIN_SIZE <= self.size <= MAX_SIZE:
            raise ValueError(f"video size must be {MIN_SIZE}-{MAX_SIZE} pixels, got {self.size}")
        self.size -= self.size % 2
        return self

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["model"] = parse_ref(self.model, allow_paths=False).label
        out["generation"] = self.generation.to_dict()
        return out


def estimated_seconds(speech_seconds: float, settings: JobSettings) -> float:
    """Worker seconds a request is expected to take: speech length x videos x per-frame cost."""
    videos = settings.generation.variants * settings.conditions()
    if settings.renderer == "stick":
        per_frame = STICK_S_PER_FRAME
    else:
        per_frame = FRAME_OVERHEAD_S + MESH_S_PER_FRAME_AT_512 * (settings.size / 512) ** 2
    return speech_seconds * videos * (GENERATE_S_PER_S + DEFAULT_FPS * per_frame)


@dataclass
class JobResult:
    folder: Path
    motions: list[Path]  # BEAT2 .npz per video
    bvhs: list[Path]
    videos: list[Path]  # one mp4 per video cell
    grid: Path  # side-by-side video (the single video when there is one)
    metadata: Path
    archive: Path
    glbs: list[Path] = field(default_factory=list)  # animated glTF (skinned Anny body) per video
    fbxs: list[Path] = field(default_factory=list)  # the same as FBX, where Blender is installed

    def files(self) -> list[Path]:
        return [*self.motions, *self.bvhs, *self.glbs, *self.fbxs, *self.videos, self.grid, self.metadata,
                self.archive]


def run_job(
    speech: str | os.PathLike,
    settings: JobSettings,
    out_dir: str | os.PathLike,
    *,
    generator_for: Callable[[ModelRef], "object"],
    reference: str | os.PathLike | None = None,
    progress: Progress | None = None,
    on_motion: Callable[[list[Path]], None] | None = None,
) -> JobResult:
    """Generate, export and render one request into ``out_dir`` (created; must be private to the job).

    generator_for(ref) returns a loaded generator for a `ModelRef` (callers cache them). ``reference``
    is a BEAT2 .npz the locked parts come from. Progress: generation 0-0.4, rendering 0.4-0.98, .fbx, done.
    ``on_motion(glbs)`` is called with the animated .glb files (one per video, in the videos' order) as
    soon as they are written, before the videos and the .fbx conversion: the app's 3D viewer shows them.
    """
    from ..export.gltf import write_glb
    from ..motion.bvh import write_bvh
    from ..render.grid import render_grid

    report = progress or (lambda f, m: None)
    settings.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    wav = load_audio(speech)
    generation = settings.generation.replace()
    if reference is not None:
        generation.reference = read_beat2(reference, name="the reference motion").resample()  # at 30 fps
    generation.validate()
    refs = settings.models()
    # (file stem, label, model, settings) per condition; every condition uses the same seed
    neutral = generation.replace(emotion=None, style={}, guidance=1.0)
    conditions = [("variant", generation.emotion or "", refs[0], generation)]
    if settings.compare_neutral:
        conditions.append(("neutral", "neutral", refs[0], neutral))
    if settings.compare_models:
        conditions = [(f"model{i + 1}", ref.label, ref, generation) for i, ref in enumerate(refs)]
    completer = None
    clips, stems, labels, generators = [], [], [], []
    for c, (stem, label, ref, run) in enumerate(conditions):
        report(0.4 * c / len(conditions), f"loading {ref.label}")
        gen = generator_for(ref)
        gen.model_id = ref.label  # outputs name the model by its reference, never by a folder

        def gen_progress(f, m, c=c):
            report(0.4 * (c + f) / len(conditions), f"generating: {m}")

        batch = gen.generate(wav, run, progress=gen_progress)
        produced = gen.capabilities.parts
        if settings.complete_with and gen.capabilities.missing_parts():
            completer = completer or generator_for(parse_ref(settings.complete_with, allow_paths=False))
            completer.model_id = parse_ref(settings.complete_with, allow_paths=False).label
            batch = complete_parts(batch, wav, produced, completer, run, progress=gen_progress)
        generation.seed = neutral.seed = batch[0].meta["seed"]  # later conditions reuse the (random) seed
        for k, clip in enumerate(batch, 1):
            clips.append(clip)
            generators.append(gen)
            stems.append(f"{stem}_{k}")
            labels.append(" ".join(x for x in (label, f"seed {clip.meta['seed']}") if x))
    speech_sha = sha256_file(speech)
    motions, bvhs, glbs = [], [], []
    for stem, clip in zip(stems, clips):
        clip.meta["audio_sha256"] = speech_sha  # the uploaded file's hash, not the decoded samples'
        clip.meta["weights"] = {**clip.meta["weights"], "source": clip.meta["model_id"]}
        motions.append(write_beat2(clip, out / f"{stem}.npz"))
        bvhs.append(write_bvh(clip, out / f"{stem}.bvh"))
        glbs.append(write_glb(clip, out / f"{stem}.glb"))
    if on_motion is not None:
        on_motion(list(glbs))

    grid = render_grid(clips, out / "grid.mp4", audio=wav, labels=labels, show_labels=settings.show_labels,
                       view=settings.view, size=settings.size, renderer=settings.renderer, body=settings.body,
                       cell_paths=[out / f"{s}.mp4" for s in stems],
                       progress=lambda f, m: report(0.4 + 0.58 * f, f"rendering: {m}"))  # then .fbx, then done

    first = clips[0].meta
    meta = {
        "model": first["model"],
        "model_id": first["model_id"],
        "family": first.get("family"),
        "weights": first["weights"],
        "models": [{"file": f"{s}.npz", "model_id": c.meta["model_id"], "family": c.meta.get("family"),
                    "weights": c.meta["weights"], "parts": c.meta.get("parts")} for s, c in zip(stems, clips)],
        "parts": first.get("parts"),
        "seeds": [clip.meta["seed"] for clip in clips],
        "settings": settings.to_dict(),
        "emotion": {"name": generation.emotion or "neutral", "intensity": generation.intensity,
                    "learned": first.get("emotion"),  # a label the model was trained with, used as conditioning
                    "explicit": first.get("style")},  # an explicit edit of the generated motion
        "speech": {"sha256": speech_sha, "seconds": round(wav.shape[0] / SAMPLE_RATE, 3)},
        "reference_sha256": sha256_file(reference) if reference is not None else None,
        "frames": clips[0].n_frames,
        "fps": DEFAULT_FPS,
        # what the videos, the .bvh and .glb files show the motion on (the body: settings.body; .glb: anny)
        "skeleton": smplx_skeleton.DESCRIPTION,
        "versions": first["versions"],
    }
    fbxs = _fbx_copies(glbs, clips[0].fps, report)  # after the videos: an extra must not delay them
    metadata = out / "metadata.json"
    metadata.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    result = JobResult(out, motions, bvhs, list(grid.cell_paths), grid.grid_path, metadata, out / "emage_outputs.zip",
                       glbs=glbs, fbxs=fbxs)
    members = [p for p in dict.fromkeys(result.files()) if p != result.archive]  # one video may be the grid too
    members += [p.with_suffix(".json") for p in result.motions]  # provenance side-cars
    with zipfile.ZipFile(result.archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in members:
            zf.write(path, path.name)
    report(1.0, "done")
    return result


def _fbx_copies(glbs: list[Path], fps: float, report: Progress) -> list[Path]:
    """The .glb files converted to .fbx beside them where Blender is installed; [] without Blender.

    An .fbx is an extra: when Blender fails, the job goes on without it (logged) rather than failing.
    """
    from ..export.blender import BlenderError, glb_to_fbx, have_blender

    if not glbs or not have_blender():
        return []
    report(0.99, "converting to FBX (Blender)")
    try:
        return glb_to_fbx([(g, g.with_suffix(".fbx")) for g in glbs], fps=fps)
    except BlenderError as e:
        logger.warning("no .fbx for this job: %s", e)
        for g in glbs:
            g.with_suffix(".fbx").unlink(missing_ok=True)
        return []
