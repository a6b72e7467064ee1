"""The BEAT2 evaluation of EMAGE's Table 4, end to end: ``python -m emage_core evaluate``.

    table = run_evaluation("BEAT2/beat_english_v2.0.0", models=["emage"])      # speaker 2's test split
    print(format_table(table)); write_outputs(table, "results/evaluation")   # .csv + .json

What happens:

1. The test files are BEAT2's own split (``train_test_split.csv``: ``id,type``), rows of type ``test``
   whose speaker id (the number before the first ``_``) is among ``speakers`` (default 2, as Table 4).
   Each is ``smplxflame_30/<id>.npz`` (the real motion) and ``wave16k/<id>.wav`` (its speech).
2. Every model generates one motion per test file from its speech, with a fixed seed
   (`GenerationSettings(seed=...)`); or ``motions`` folders give already generated ``<id>.npz`` files.
3. Per model, as the official ``evaluation_fn``: generated and real motion cut to the shorter length;
   FGD between all generated and all real evaluator features (`official.paired_fgd_features`); BC of
   the generated joints against the file's speech (`beat.beat_consistency`, the released BEAT2
   normaliser); L1div (the paper's Diversity) of the generated joints; face MSE and LVD between
   generated and real SMPL-X face vertices (jaw + expressions) when an SMPL-X model file is given.
4. Anchors on the same data and evaluator: the real test motion's first halves against its second
   halves (FGD between two samples of real motion: the floor), real motion against Gaussian noise
   poses (FGD far from real), and the real motion's own BC and L1div.

Joints: with an SMPL-X model file (``smplx_model``), the official kinematics (`smplx_fk`); without
one, the project's (`emage_core.motion.kinematics.joint_positions`), and the table marks BC and L1div
"not comparable with published numbers". Face MSE / LVD need the model file.
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .. import __version__
from ..files import atomic_write, sha256_file
from .beat import BCConfig, SkippedClip, clip_beat_consistency, load_speech
from .evaluator import EVALUATOR_REVISION, Evaluator, load_evaluator
from .official import DISPLAY_SCALE, FrechetTerms, body_fk_poses, fgd_features, frechet_terms, l1div

__all__ = [
    "SPLIT_FILE", "DEFAULT_SPEAKERS", "NOT_COMPARABLE", "EvaluationError", "Take", "Kinematics", "Row",
    "EvaluationTable", "parse_speakers", "find_split_file", "split_takes", "project_kinematics",
    "smplx_kinematics", "NOISE_STD", "noise_poses", "run_evaluation", "format_table", "table_records",
    "write_outputs", "FaceErrorSums",
]

SPLIT_FILE = "train_test_split.csv"
DEFAULT_SPEAKERS = (2,)
NOT_COMPARABLE = "not comparable with published numbers"
_FPS = 30


class EvaluationError(ValueError):
    """The data, a motion or a setting is unusable; the message names the file or setting."""


# --------------------------------------------------------------------------------------- the data


@dataclass(frozen=True)
class Take:
    """One test take: its BEAT2 id, real motion (.npz) and speech (.wav)."""

    id: str
    motion: Path
    speech: Path


def parse_speakers(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``"2"``, ``"2,4"``, ``[2, 4]`` -> speaker ids; ``"all"`` / None -> None (every speaker)."""
    if text is None or (isinstance(text, str) and text.strip().lower() == "all"):
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        ids = tuple(int(str(s).strip()) for s in items if str(s).strip())
    except ValueError:
        raise EvaluationError(f"speakers must be BEAT2 speaker ids like 2 or 2,4 (or 'all'), got {text!r}") from None
    if not ids:
        raise EvaluationError("speakers: give at least one id (or 'all')")
    return ids


def find_split_file(data: str | os.PathLike) -> Path:
    """BEAT2's ``train_test_split.csv`` in ``data`` or one folder below (``beat_english_v2.0.0/``)."""
    data = Path(data)
    if not data.is_dir():
        raise EvaluationError(f"--data {data}: no such folder")
    for cand in [data / SPLIT_FILE, *sorted(data.glob(f"*/{SPLIT_FILE}"))]:
        if cand.is_file():
            return cand
    raise EvaluationError(f"{data / SPLIT_FILE}: missing (BEAT2 as released has its train/test split there; "
                          f"--data is the folder holding it, smplxflame_30/ and wave16k/)")


def split_takes(data: str | os.PathLike, speakers: Sequence[int] | None = DEFAULT_SPEAKERS,
               split: str = "test") -> tuple[Path, list[Take]]:
    """The split file and the takes of ``split`` for ``speakers`` (None = all), each checked to exist."""
    split_file = find_split_file(data)
    root = split_file.parent
    with open(split_file, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or [c.strip() for c in rows[0][:2]] != ["id", "type"]:
        raise EvaluationError(f"{split_file}: expected the header 'id,type', got {rows[0] if rows else 'nothing'}")
    out = []
    for row in rows[1:]:
        if len(row) < 2 or row[1].strip() != split:
            continue
        take = row[0].strip()
        try:
            speaker = int(take.split("_")[0])
        except ValueError:
            raise EvaluationError(f"{split_file}: id {take!r} does not start with a speaker number") from None
        if speakers is not None and speaker not in speakers:
            continue
        item = Take(take, root / "smplxflame_30" / f"{take}.npz", root / "wave16k" / f"{take}.wav")
        for path in (item.motion, item.speech):
            if not path.is_file():
                raise EvaluationError(f"{path}: missing (listed as {split} in {split_file})")
        out.append(item)
    if not out:
        who = "any speaker" if speakers is None else "speaker " + ",".join(map(str, speakers))
        raise EvaluationError(f"{split_file}: no {split!r} takes of {who}")
    return split_file, out


def _read_motion(path: Path):
    from ..motion.beat2 import read_beat2

    m = read_beat2(path)
    return m if m.fps == _FPS else m.resample(_FPS)


# ---------------------------------------------------------------------------------- kinematics


@dataclass
class Kinematics:
    """Where joint positions (and face vertices) come from.

    body_joints(poses (T, 55, 3), betas (300,)) -> (T, 55, 3) float32: the BC / L1div positions
    (`body_fk_poses` applied). face_chunks(jaw (T, 3), expressions (T, 100), betas) -> iterator of
    (t, 3V) float32, or None when face vertices cannot be made. ``official``: the SMPL-X model's own
    kinematics (numbers comparable with published ones), else the project's.
    """

    name: str
    official: bool
    body_joints: Callable[[np.ndarray, np.ndarray], np.ndarray]
    face_chunks: Callable[..., Iterable[np.ndarray]] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


def project_kinematics() -> Kinematics:
    """The project's forward kinematics (`emage_core.motion.kinematics.joint_positions`) with the
    official pose mask: no SMPL-X model file needed, BC and L1div not comparable with published numbers."""
    from ..motion.clip import Motion
    from ..motion.kinematics import joint_positions

    def body_joints(poses: np.ndarray, betas: np.ndarray) -> np.ndarray:
        p = body_fk_poses(np.asarray(poses, np.float32).reshape(len(poses), -1)).reshape(-1, 55, 3)
        t = p.shape[0]
        m = Motion(poses=p, expressions=np.zeros((t, 100), np.float32), trans=np.zeros((t, 3), np.float32),
                   betas=np.asarray(betas, np.float32).reshape(-1)[:300])
        return np.asarray(joint_positions(m), np.float32)

    return Kinematics("project (emage_core.motion.kinematics)", False, body_joints, None,
                      {"kind": "project", "module": "emage_core.motion.kinematics.joint_positions"})


def smplx_kinematics(model_file: str | os.PathLike, device: str = "cpu") -> Kinematics:
    """The official kinematics from a user's SMPL-X model file (``SMPLX_NEUTRAL_2020.npz``)."""
    from .smplx_fk import SMPLXModel

    model = SMPLXModel.load(model_file, device=device)
    official = model.shapedirs.shape[-1] == 300 and model.exprdirs.shape[-1] == 100
    return Kinematics(f"SMPL-X ({Path(model_file).name})", official, model.body_joints, model.face_vertex_chunks,
                      {"kind": "smplx", "file": Path(model_file).name, "sha256": model.sha256,
                       "shape_components": model.shapedirs.shape[-1], "expression_components": model.exprdirs.shape[-1]})


# ---------------------------------------------------------------------------------- face errors


@dataclass
class FaceErrorSums:
    """Face MSE / LVD accumulated over clips streamed in chunks (as `official.face_mse` / `official.lvd`).

    mse = sq / elements; lvd evaltools = vel / elements (Σ|Δpred - Δgt| over Σ T·3V); lvd paper =
    Σ_clip mean|pred[1:] - gt[1:]| · T / Σ T.
    """

    sq: float = 0.0
    vel: float = 0.0
    elements: int = 0
    paper: float = 0.0
    frames: int = 0

    def add_clip(self, pred_chunks: Iterable[np.ndarray], target_chunks: Iterable[np.ndarray]) -> None:
        prev_p = prev_g = None
        pos_sum, t, width = 0.0, 0, 0
        for p, g in zip(pred_chunks, target_chunks, strict=True):
            p, g = np.asarray(p, np.float64), np.asarray(g, np.float64)
            self.sq += float(np.square(p - g).sum())
            self.elements += p.size
            width = p.shape[1]
            cp = p if prev_p is None else np.concatenate([prev_p, p])
            cg = g if prev_g is None else np.concatenate([prev_g, g])
            self.vel += float(np.abs(np.diff(cp, axis=0) - np.diff(cg, axis=0)).sum())
            d = np.abs(p - g)
            pos_sum += float(d.sum() - (d[0].sum() if t == 0 else 0.0))  # frames 1..T-1
            t += p.shape[0]
            prev_p, prev_g = p[-1:], g[-1:]
        if t > 1:
            self.paper += pos_sum / ((t - 1) * width) * t
        self.frames += t

    def mse(self) -> float:
        return self.sq / self.elements if self.elements else float("nan")

    def lvd(self, variant: str = "evaltools") -> float:
        if variant == "paper":
            return self.paper / self.frames if self.frames else float("nan")
        return self.vel / self.elements if self.elements else float("nan")


# --------------------------------------------------------------------------------------- results


@dataclass
class Row:
    """One line of the table: a model, a folder of motions, or an anchor. Values are raw."""

    name: str
    kind: str  # "model", "motions" or "anchor"
    fgd: FrechetTerms | None = None
    bc: float | None = None
    bc_clips: int = 0
    bc_skipped: list[str] = field(default_factory=list)
    l1div: float | None = None
    mse_face: float | None = None
    lvd_face: float | None = None
    files: int = 0
    frames: int = 0
    note: str = ""

    def values(self) -> dict[str, float | None]:
        return {"fgd": None if self.fgd is None else self.fgd.value, "bc": self.bc, "l1div": self.l1div,
                "mse_face": self.mse_face, "lvd_face": self.lvd_face}


@dataclass
class EvaluationTable:
    rows: list[Row]
    comparable: dict[str, bool]  # per metric: comparable with published numbers
    notes: list[str]
    provenance: dict[str, Any]
    settings: dict[str, Any]


# ----------------------------------------------------------------------------------------- noise


NOISE_STD = 1.0


def noise_poses(real: Sequence[np.ndarray], seed: int = 0, std: float = NOISE_STD) -> list[np.ndarray]:
    """The noise baseline: per real clip (T_i, ...), i.i.d. Gaussian values N(0, std^2) of the same
    shape (axis-angle in radians, FLAME expression coefficients), float32, seeded. Pure noise: no
    temporal structure and no resemblance to a pose, the "far from real" end of the FGD scale.

    (Noise with the real data's per-channel mean and std is not used: a random evaluator, as in the
    tests, cannot tell it from real motion, and its FGD says little about a trained one either.)
    """
    rng = np.random.default_rng(seed)
    return [(std * rng.standard_normal(np.shape(r))).astype(np.float32) for r in real]


# ---------------------------------------------------------------------------------------- driver


def _progress(items, desc: str, show: bool):
    if not show:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file", file=sys.stderr, leave=False)


class _Context:
    """Everything read once and shared by the rows: the real motions, speech, features, positions."""

    def __init__(self, files: list[Take], evaluator: Evaluator, kin: Kinematics, bc_cfg: BCConfig,
                 progress: bool):
        self.files, self.evaluator, self.kin, self.bc_cfg, self.show = files, evaluator, kin, bc_cfg, progress
        self.real = {f.id: _read_motion(f.motion) for f in _progress(files, "reading test motion", progress)}
        self._speech: dict[str, np.ndarray] = {}
        self._features: dict[tuple[str, int], np.ndarray] = {}

    def speech(self, f: Take) -> np.ndarray:
        if f.id not in self._speech:
            self._speech[f.id] = load_speech(f.speech, self.bc_cfg)
        return self._speech[f.id]

    def real_features(self, f: Take, t: int) -> np.ndarray:
        key = (f.id, t)
        if key not in self._features:
            self._features[key] = fgd_features(self.evaluator.model, self.real[f.id].poses[:t].reshape(t, -1))
        return self._features[key]


def _score(ctx: _Context, name: str, kind: str, clips: Iterable[tuple[Take, Any]], fd_variant: str,
           face: bool = True) -> Row:
    """A row for generated motions (Motion or (poses, expressions) per test file) against the real ones."""
    gen_feats, real_feats, positions = [], [], []
    bc_num = bc_den = 0.0
    row = Row(name, kind)
    face_sums = FaceErrorSums() if (face and ctx.kin.face_chunks is not None) else None
    for f, gen in _progress(list(clips), name, ctx.show):
        real = ctx.real[f.id]
        poses, expr = (gen.poses, gen.expressions) if hasattr(gen, "poses") else gen
        t = min(len(poses), real.n_frames)
        poses = np.asarray(poses, np.float32).reshape(len(poses), 55, 3)[:t]
        gen_feats.append(fgd_features(ctx.evaluator.model, poses.reshape(t, -1)))
        real_feats.append(ctx.real_features(f, t))
        pos = ctx.kin.body_joints(poses, real.betas)
        positions.append(pos)
        try:
            clip = clip_beat_consistency(pos, ctx.speech(f), ctx.evaluator.mean_vel, ctx.bc_cfg)
            bc_num += clip.bc * clip.weight
            bc_den += clip.weight
            row.bc_clips += 1
        except SkippedClip as err:
            row.bc_skipped.append(f"{f.id}: {err}")
        if face_sums is not None:
            betas = real.betas
            face_sums.add_clip(ctx.kin.face_chunks(poses[:, 22], np.asarray(expr)[:t], betas),
                               ctx.kin.face_chunks(real.poses[:t, 22], real.expressions[:t], betas))
        row.files += 1
        row.frames += t
    if row.files:
        row.fgd = _fd(np.concatenate(gen_feats), np.concatenate(real_feats), fd_variant)
        row.l1div = l1div(positions)
        row.bc = bc_num / bc_den if bc_den > 0 else float("nan")
    if face_sums is not None and face_sums.elements:
        row.mse_face = face_sums.mse()
        row.lvd_face = face_sums.lvd(ctx.bc_cfg.variant)
    return row


def _fd(gen: np.ndarray, real: np.ndarray, variant: str) -> FrechetTerms | None:
    """FGD of two feature sets; None when a side has fewer than 2 rows (takes shorter than 64 frames)."""
    if len(gen) < 2 or len(real) < 2:
        return None
    return frechet_terms(gen, real, variant=variant)


def _anchors(ctx: _Context, fd_variant: str, seed: int) -> list[Row]:
    """Real vs real (halves), real vs noise, and the real motion's own BC and L1div."""
    first, second = [], []
    for f in ctx.files:
        p = ctx.real[f.id].poses
        h = len(p) // 2
        first.append(fgd_features(ctx.evaluator.model, p[:h].reshape(h, -1)))
        second.append(fgd_features(ctx.evaluator.model, p[h:2 * h].reshape(h, -1)))
    halves = Row("real: 1st vs 2nd halves", "anchor", files=len(ctx.files),
                 frames=sum(2 * (ctx.real[f.id].n_frames // 2) for f in ctx.files),
                 note="FGD between the first and second half of every real test take (the floor)")
    halves.fgd = _fd(np.concatenate(first), np.concatenate(second), fd_variant)

    real_row = Row("real test motion", "anchor", note="the real motion's own BC and L1div (FGD: see the halves)")
    positions = []
    num = den = 0.0
    for f in _progress(ctx.files, "real motion", ctx.show):
        m = ctx.real[f.id]
        pos = ctx.kin.body_joints(m.poses, m.betas)
        positions.append(pos)
        try:
            clip = clip_beat_consistency(pos, ctx.speech(f), ctx.evaluator.mean_vel, ctx.bc_cfg)
            num, den = num + clip.bc * clip.weight, den + clip.weight
            real_row.bc_clips += 1
        except SkippedClip as err:
            real_row.bc_skipped.append(f"{f.id}: {err}")
        real_row.files += 1
        real_row.frames += m.n_frames
    real_row.l1div = l1div(positions)
    real_row.bc = num / den if den > 0 else float("nan")

    reals = [ctx.real[f.id] for f in ctx.files]
    noise_p = noise_poses([m.poses.reshape(m.n_frames, -1) for m in reals], seed)
    noise_e = noise_poses([m.expressions for m in reals], seed + 1)
    noise = _score(ctx, "noise (Gaussian poses)", "anchor", zip(ctx.files, zip(noise_p, noise_e)), fd_variant)
    noise.note = (f"i.i.d. Gaussian poses and expressions N(0, {NOISE_STD:g}), as long as each real take; "
                  "FGD against the real motion (far from real)")
    return [halves, real_row, noise]


def _versions() -> dict[str, str]:
    out = {"emage_studio": __version__, "python": platform.python_version()}
    for mod in ("torch", "numpy", "scipy", "librosa", "huggingface_hub"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # absent: say so
            out[mod] = "absent"
    return out


def _generate(ref: str, files: list[Take], seed: int, temperature: float, revision: str | None,
              device: str | None, save_dir: Path | None, progress: bool) -> tuple[str, list, dict]:
    from ..generate.registry import load
    from ..generate.settings import GenerationSettings

    gen = load(ref, revision=revision, device=device)
    label = getattr(gen, "model_id", "") or ref
    settings = GenerationSettings(seed=seed, temperature=temperature)
    motions, seeds = [], {}
    for f in _progress(files, f"generating ({label})", progress):
        m = gen.generate(str(f.speech), settings)[0]
        if m.fps != _FPS:
            m = m.resample(_FPS)
        motions.append(m)
        seeds[f.id] = seed
        if save_dir is not None:
            from ..motion.beat2 import write_beat2

            write_beat2(m, save_dir / _safe_name(label) / f"{f.id}.npz")
    meta = dict(motions[0].meta) if motions and motions[0].meta else {}
    prov = {"ref": ref, "label": label, "seeds": seeds, "temperature": temperature,
            "weights": getattr(gen, "provenance", {}) or meta.get("weights", {}),
            "settings": settings.to_dict(), "first_clip_meta": meta}
    return label, motions, prov


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_") or "model"


def run_evaluation(data: str | os.PathLike, *, models: Sequence[str] = (), motions: Sequence[str | os.PathLike] = (),
                   speakers: Sequence[int] | None = DEFAULT_SPEAKERS, split: str = "test", seed: int = 0,
                   temperature: float = 0.0, revision: str | None = None, device: str | None = None,
                   evaluator: str | os.PathLike | None = None, evaluator_revision: str | None = EVALUATOR_REVISION,
                   evaluator_sha256: str | None = None, smplx_model: str | os.PathLike | None = None,
                   variant: str = "evaltools", save_motions: str | os.PathLike | None = None,
                   progress: bool = False) -> EvaluationTable:
    """Evaluate generators (``models``: references, each generating every test file with ``seed``) and
    folders of generated motions (``motions``: ``<id>.npz`` per test file) on BEAT2's ``split``.

    ``variant``: ``evaltools`` (the released evaluator's code, default) or ``paper`` (the CVPR 2024
    code: Fréchet distance without the constant ε, paper-era BC, LVD as a position error).
    Returns the table: the anchors first, then one row per model / folder, raw values.
    """
    if variant not in ("evaltools", "paper"):
        raise EvaluationError(f"variant must be 'evaltools' or 'paper', got {variant!r}")
    split_file, files = split_takes(data, speakers, split)
    # every motions folder is checked before anything slow starts: a missing file names itself
    motion_dirs = []
    for d in motions:
        d = Path(d)
        if not d.is_dir():
            raise EvaluationError(f"--motions {d}: no such folder")
        for f in files:
            if not (d / f"{f.id}.npz").is_file():
                raise EvaluationError(f"{d / (f.id + '.npz')}: missing (a generated motion for test take {f.id})")
        motion_dirs.append(d)

    ev = load_evaluator(evaluator, evaluator_revision, device=device or "cpu", expected_sha256=evaluator_sha256)
    kin = smplx_kinematics(smplx_model, device or "cpu") if smplx_model else project_kinematics()
    bc_cfg = BCConfig.paper() if variant == "paper" else BCConfig()
    ctx = _Context(files, ev, kin, bc_cfg, progress)

    rows = _anchors(ctx, variant, seed)
    prov_models, prov_motions = {}, {}
    for ref in models:
        label, gen_motions, prov = _generate(ref, files, seed, temperature, revision, device,
                                             Path(save_motions) if save_motions else None, progress)
        rows.append(_score(ctx, label, "model", zip(files, gen_motions), variant))
        prov_models[label] = prov
    for d in motion_dirs:
        paths = [d / f"{f.id}.npz" for f in files]
        rows.append(_score(ctx, d.name or str(d), "motions", zip(files, (_read_motion(p) for p in paths)), variant))
        prov_motions[d.name or str(d)] = {"folder": str(d), "files": {p.name: sha256_file(p) for p in paths}}

    comparable = {
        "fgd": ev.released_architecture,
        "bc": kin.official,
        "l1div": kin.official,
        "mse_face": kin.official and kin.face_chunks is not None,
        "lvd_face": kin.official and kin.face_chunks is not None,
    }
    notes = []
    if not ev.released_architecture:
        notes.append(f"FGD: the evaluator from {ev.provenance['source']!r} is not the released AESKConv_240_100 "
                     f"architecture (it has a config.json): {NOT_COMPARABLE}.")
    if not kin.official:
        notes.append(f"BC, L1div: joints from {kin.name}, no SMPL-X model file given (--smplx): {NOT_COMPARABLE}.")
    if kin.face_chunks is None:
        notes.append("face MSE, LVD: need SMPL-X face vertices; give the SMPL-X model file (--smplx "
                     "SMPLX_NEUTRAL_2020.npz) to compute them.")
    deficient = [r.name for r in rows if r.fgd is not None and r.fgd.rank_deficient]
    if deficient:
        d = rows[0].fgd.dim
        notes.append(f"FGD marked '*': {D_ROWS_NOTE.format(dim=d, frames=16 * (d + 1))} ({', '.join(deficient)}).")
    for r in rows:
        if r.bc_skipped:
            notes.append(f"BC of {r.name}: {len(r.bc_skipped)} of {r.files} takes skipped (no speech onset between "
                         f"the 2 s trims, or too short): {'; '.join(r.bc_skipped[:3])}"
                         + (" ..." if len(r.bc_skipped) > 3 else ""))
    notes.append("Display scale as EMAGE's Table 4: FGD x10, BC x10, L1div x1, face MSE x1e7, LVD x1e5 "
                 "(FGD and BC confirmed by the authors, PantoMatrix #110; MSE and LVD read off the table).")
    if variant == "paper":
        notes.append("Variant 'paper': the CVPR 2024 code's FD (no constant eps), BC (threshold 0.3, 22.05 kHz "
                     "speech, positions overwritten by L1div) and LVD (a position error).")

    data_files = {"split_file": {"path": split_file.name, "sha256": sha256_file(split_file)},
                  "files": {f.id: {"motion_sha256": sha256_file(f.motion), "speech_sha256": sha256_file(f.speech)}
                            for f in files}}
    settings = {"data": str(data), "split": split, "speakers": "all" if speakers is None else list(speakers),
                "variant": variant, "seed": seed, "temperature": temperature, "noise_seed": seed,
                "kinematics": kin.name, "device": device or "cpu"}
    provenance = {"evaluator": ev.provenance, "data": data_files, "kinematics": kin.provenance,
                  "models": prov_models, "motions": prov_motions, "versions": _versions(),
                  "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    return EvaluationTable(rows, comparable, notes, provenance, settings)


D_ROWS_NOTE = ("a side has no more feature rows than the evaluator's {dim} dimensions, so its covariance is "
               "rank-deficient and FGD is defined but noisy (needs more than {frames} frames per side)")


# -------------------------------------------------------------------------------------- printing

_COLUMNS = (("fgd", "FGD"), ("bc", "BC"), ("l1div", "L1div"), ("mse_face", "face MSE"), ("lvd_face", "LVD"))


def _factor(key: str) -> str:
    f = DISPLAY_SCALE[key]
    return "x1" if f == 1 else (f"x{f:g}" if f < 1000 else f"x1e{int(round(np.log10(f)))}")


def _cell(row: Row, key: str) -> str:
    v = row.values()[key]
    if v is None:
        return "-"
    if not np.isfinite(v):
        return "n/a"
    star = "*" if key == "fgd" and row.fgd is not None and row.fgd.rank_deficient else ""
    return f"{v * DISPLAY_SCALE[key]:.3f}{star} ({v:.4g})"


def format_table(table: EvaluationTable) -> str:
    """The table as text: every metric in the paper's display scale with the raw value in brackets."""
    heads = []
    for key, label in _COLUMNS:
        mark = "" if table.comparable[key] else " (!)"
        heads.append(f"{label} {_factor(key)} (raw){mark}")
    names = [r.name for r in table.rows]
    cells = [[_cell(r, k) for k, _ in _COLUMNS] for r in table.rows]
    w0 = max(len(n) for n in names + ["model"])
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    s = table.settings
    lines = [f"BEAT2 {s['split']} split, speakers {','.join(map(str, s['speakers'])) if s['speakers'] != 'all' else 'all'}: "
             f"{table.rows[0].files} takes; evaluator {table.provenance['evaluator'].get('source')}"
             f"@{(table.provenance['evaluator'].get('revision') or 'local')[:12]}; variant {s['variant']}; "
             f"kinematics {s['kinematics']}",
             "",
             f"{'model':<{w0}}  " + "  ".join(f"{h:>{w}}" for h, w in zip(heads, widths))]
    for i, r in enumerate(table.rows):
        if i and r.kind != "anchor" and table.rows[i - 1].kind == "anchor":
            lines.append("-" * len(lines[2]))
        lines.append(f"{names[i]:<{w0}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cells[i], widths)))
    lines.append("")
    if not all(table.comparable.values()):
        lines.append(f"(!) {NOT_COMPARABLE} (see the notes)")
    lines += [f"- {n}" for n in table.notes]
    return "\n".join(lines)


def table_records(table: EvaluationTable) -> list[dict[str, Any]]:
    """One flat dict per row: raw and display values, FGD terms and row counts, BC clip counts."""
    out = []
    for r in table.rows:
        rec: dict[str, Any] = {"name": r.name, "kind": r.kind, "files": r.files, "frames": r.frames}
        for key, _ in _COLUMNS:
            v = r.values()[key]
            v = None if v is None or not np.isfinite(v) else float(v)
            rec[f"{key}_raw"] = v
            rec[f"{key}_display"] = None if v is None else v * DISPLAY_SCALE[key]
            rec[f"{key}_comparable"] = table.comparable[key]
        if r.fgd is not None:
            rec.update({"fgd_mean": r.fgd.mean, "fgd_trace_gen": r.fgd.trace_gen, "fgd_trace_real": r.fgd.trace_real,
                        "fgd_trace_sqrt": r.fgd.trace_sqrt, "fgd_rows_gen": r.fgd.n_gen, "fgd_rows_real": r.fgd.n_real,
                        "fgd_rank_deficient": r.fgd.rank_deficient})
        rec.update({"bc_clips": r.bc_clips, "bc_skipped": len(r.bc_skipped), "note": r.note})
        out.append(rec)
    return out


def write_outputs(table: EvaluationTable, prefix: str | os.PathLike) -> tuple[Path, Path]:
    """``PREFIX.csv`` (the table, raw and display) and ``PREFIX.json`` (the table, notes, settings and
    provenance: evaluator sha256 and revision, data files' sha256, seeds, versions)."""
    prefix = Path(prefix)
    if prefix.suffix in (".csv", ".json"):
        prefix = prefix.with_suffix("")
    records = table_records(table)
    fields = list(dict.fromkeys(k for rec in records for k in rec))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for rec in records:
        writer.writerow({k: ("" if v is None else v) for k, v in rec.items()})
    csv_path = atomic_write(prefix.with_name(prefix.name + ".csv"), buf.getvalue().encode())
    doc = {"format": "emage-studio evaluation 1", "display_scale": DISPLAY_SCALE, "comparable": table.comparable,
           "rows": records, "notes": table.notes, "settings": table.settings, "provenance": table.provenance,
           "bc_skipped": {r.name: r.bc_skipped for r in table.rows if r.bc_skipped}}
    json_path = atomic_write(prefix.with_name(prefix.name + ".json"),
                             (json.dumps(doc, indent=2, default=_json_default) + "\n").encode())
    return csv_path, json_path


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)
