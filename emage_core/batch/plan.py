"""The plan of a study: motions to generate, stimuli to render, sides and anonymous names; and the
hashes and specs that say whether an item is finished.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import PurePosixPath

from .. import __version__
from ..files import sha256_file
from .manifest import Study, StudyError

SPEC_FORMAT = 1  # bump when the meaning of a spec changes, so every item is redone
WORK = ".work"
COUNTERBALANCING_RULE = (
    "Pair p (0-based, manifest order) has trials j = clip_index * n_seeds + seed_index; its first-listed "
    "condition is on the left when (j + p + study_seed) % 2 == 0, else on the right.")


# ================================================================================================
# The plan: motions to generate, stimuli to render, sides and anonymous names
# ================================================================================================
@dataclass
class MotionItem:
    """One generated motion: a clip spoken by a condition with one seed."""

    key: str  # "motion/<clip>/<condition>/seed_<seed>"
    clip: str
    condition: str
    seed: int
    seed_index: int
    path: str  # output, relative to the output folder

    @property
    def files(self) -> list[str]:
        return [self.path, str(PurePosixPath(self.path).with_suffix(".json"))]


@dataclass
class Stimulus:
    """One video for participants: a single motion, or two side by side."""

    key: str  # "single/<clip>/<condition>/<seed index>" or "pair/<A>/<B>/<clip>/<seed index>"
    layout: str  # "single" | "pair"
    clip: str
    shown: list[tuple[str, MotionItem]]  # (side, motion) in screen order: [("", m)] or [("left", a), ("right", b)]
    name: str = ""  # "stim_0001", set by `plan_study`

    @property
    def render_path(self) -> str:
        return f"{WORK}/renders/{self.key}.mp4"

    @property
    def file(self) -> str:
        return f"stimuli/{self.name}.mp4"


@dataclass
class Plan:
    motions: dict[str, MotionItem]
    stimuli: list[Stimulus]  # in name order


def first_on_left(pair_index: int, trial_index: int, study_seed: int) -> bool:
    """The counterbalancing rule (see `emage_core.batch`): is the pair's first-listed condition on the left?"""
    return (trial_index + pair_index + study_seed) % 2 == 0


def plan_study(study: Study) -> Plan:
    """Every motion and stimulus of ``study``, with pair sides and anonymous, shuffled names."""
    motions: dict[str, MotionItem] = {}
    for clip in study.clips:
        for cond in study.conditions.values():
            for i, seed in enumerate(cond.seeds):
                key = f"motion/{clip.id}/{cond.name}/seed_{seed}"
                path = f"motions/{clip.id}/{cond.name}/seed_{seed}.npz"
                motions[key] = MotionItem(key, clip.id, cond.name, seed, i, path)

    def motion(clip: str, cond: str, index: int) -> MotionItem:
        return motions[f"motion/{clip}/{cond}/seed_{study.conditions[cond].seeds[index]}"]

    stimuli = []
    for cond in study.singles:
        for clip in study.clips:
            for i in range(len(study.conditions[cond].seeds)):
                stimuli.append(Stimulus(f"single/{clip.id}/{cond}/{i}", "single", clip.id,
                                        [("", motion(clip.id, cond, i))]))
    for p, (a, b) in enumerate(study.pairs):
        n_seeds = len(study.conditions[a].seeds)
        for c, clip in enumerate(study.clips):
            for i in range(n_seeds):
                left, right = (a, b) if first_on_left(p, c * n_seeds + i, study.seed) else (b, a)
                stimuli.append(Stimulus(f"pair/{a}/{b}/{clip.id}/{i}", "pair", clip.id,
                                        [("left", motion(clip.id, left, i)), ("right", motion(clip.id, right, i))]))
    # Names follow a random order that depends only on the study seed and each stimulus' identity (not
    # on seeds or settings), so editing a condition never renumbers anything.
    stimuli.sort(key=lambda s: hashlib.sha256(f"{study.seed}:{s.key}".encode()).hexdigest())
    width = max(4, len(str(len(stimuli))))
    for n, s in enumerate(stimuli, 1):
        s.name = f"stim_{n:0{width}d}"
    return Plan(motions, stimuli)


def side_counts(plan: Plan) -> dict[str, dict[str, int]]:
    """``{condition: {"left": n, "right": n}}`` over all side-by-side stimuli."""
    counts: dict[str, dict[str, int]] = {}
    for s in plan.stimuli:
        for side, m in s.shown:
            if side:
                counts.setdefault(m.condition, {"left": 0, "right": 0})[side] += 1
    return counts


# ================================================================================================
# Inputs: hashes of speech, references, weights (checked before generation starts)
# ================================================================================================
def sha256_json(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class ModelInfo:
    """A resolved checkpoint: what tasks load, and what it is (sha256 of every file)."""

    ref: str  # the model reference as tasks pass it to the registry (a folder or a Hub repo id pinned below)
    revision: str | None  # for the Hub: the commit hash of the snapshot, so every task loads the same
    provenance: dict  # source, kind, revision, files {relative path: sha256}


@dataclass
class Inputs:
    manifest_sha256: str
    speech: dict[str, dict]  # clip id -> {"file", "sha256", "seconds"}
    references: dict[str, str]  # absolute path -> sha256
    models: dict[str, ModelInfo]  # condition name -> model


def model_info(ref: str | None, revision: str | None) -> ModelInfo:
    """Resolve a model reference (downloading a Hub repo if needed) and hash its files, without loading it."""
    from ..generate.registry import ModelRef, family_class, parse_ref

    parsed = parse_ref(ref)
    source, pinned, provenance = family_class(parsed.family).checkpoint_provenance(parsed.load_source(), revision)
    if source is None:
        load = parsed.label
    elif pinned is not None:  # a Hub repo: every task loads this commit
        load = ModelRef(parsed.family, "hub", str(source)).label
    else:
        load = ModelRef(parsed.family, "path", str(source)).label
    return ModelInfo(load, pinned, {**provenance, "model": parsed.label})


def hash_inputs(study: Study) -> Inputs:
    """sha256 of every input; resolves every model. Raises `StudyError` (with the model's line) if one fails."""
    from ..audio import probe_audio
    from ..models.hub import WeightsError

    speech = {c.id: {"file": c.given, "sha256": sha256_file(c.path), "seconds": probe_audio(c.path).duration}
              for c in study.clips}
    for info in speech.values():
        info["seconds"] = None if info["seconds"] is None else round(info["seconds"], 3)
    references = {str(p): sha256_file(p) for cond in study.conditions.values() for p in set(cond.references.values())}
    models: dict[str, ModelInfo] = {}
    cache: dict[tuple, ModelInfo] = {}
    problems = []
    for cond in study.conditions.values():
        key = (cond.model, cond.revision)
        if key not in cache:
            try:
                cache[key] = model_info(cond.model, cond.revision)
            except (WeightsError, OSError) as e:
                problems.append((cond.model_line or cond.line, f"condition {cond.name!r}.model: {e}"))
                continue
        models[cond.name] = cache[key]
    if problems:
        raise StudyError(study.path.name, problems)
    return Inputs(hashlib.sha256(study.text).hexdigest(), speech, references, models)


def motion_spec(study: Study, inputs: Inputs, item: MotionItem) -> dict:
    """Everything that decides a motion file's bytes (inputs by their sha256). Its hash names the item's state."""
    cond = study.conditions[item.condition]
    ref = cond.references.get(item.clip)
    return {
        "what": "motion", "format": SPEC_FORMAT, "emage_studio": __version__,
        "speech_sha256": inputs.speech[item.clip]["sha256"],
        "weights": inputs.models[cond.name].provenance["files"],
        "seed": item.seed, "temperature": cond.temperature, "locks": cond.locks, "crossfade": cond.crossfade,
        "overlap": cond.overlap, "reference_sha256": inputs.references[str(ref)] if ref else None,
        **({"guidance_scale": cond.guidance_scale} if cond.guidance_scale is not None else {}),
        "style": style_dict(cond.style),
    }


def stimulus_spec(study: Study, inputs: Inputs, stim: Stimulus, motion_sha: dict[str, str]) -> dict:
    """Everything that decides a stimulus video: the motions shown (by sha256) in screen order, render settings."""
    r = study.render
    return {
        "what": "stimulus", "format": SPEC_FORMAT, "emage_studio": __version__,
        "motions": [motion_sha[m.key] for _, m in stim.shown],
        "speech_sha256": inputs.speech[stim.clip]["sha256"] if r.audio else None,
        "render": dataclasses.asdict(r),
        "labels": [m.condition for _, m in stim.shown] if r.show_labels else None,
    }


def style_dict(controls) -> dict | None:
    return None if controls is None else dataclasses.asdict(controls)
