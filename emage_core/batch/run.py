"""Running a study: submit what is not finished, write each result atomically with a record, then the
key CSV and the study manifest JSON.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .. import __version__
from .backends import LocalBackend, RayBackend
from .tasks import DEFAULT_THREADS
from ..files import atomic_write
from .manifest import Study, load_study
from .plan import (
    COUNTERBALANCING_RULE,
    WORK,
    Inputs,
    MotionItem,
    Plan,
    Stimulus,
    hash_inputs,
    motion_spec,
    plan_study,
    sha256_file,
    sha256_json,
    side_counts,
    stimulus_spec,
    style_dict,
)

STIMULUS_RE = re.compile(r"stim_\d+\.mp4")
KEY_FILE = "key.csv"
MANIFEST_FILE = "study_manifest.json"
KEY_COLUMNS = ("file", "kind", "stimulus", "layout", "side", "clip", "condition", "seed", "compared_with",
               "motion", "speech", "sha256")


# ================================================================================================
# Files: atomic writes and per-item records
# ================================================================================================
def _write_if_changed(path: Path, data: bytes) -> None:
    if not (path.is_file() and path.read_bytes() == data):
        atomic_write(path, data)


class Records:
    """One JSON record per finished item under ``.work/records/<item key>.json``: spec hash and outputs.

    An item counts as finished when its record has the current spec hash and every output it lists
    still has the recorded size and modification time (or, if only the time changed, the same sha256).
    """

    def __init__(self, out: Path):
        self.out = out
        self.root = out / WORK / "records"

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def load(self, key: str) -> dict | None:
        try:
            return json.loads(self._path(key).read_text())
        except (OSError, ValueError):
            return None

    def finished(self, key: str, spec_hash: str) -> dict | None:
        """The record if the item is finished with this spec and intact outputs, else None."""
        rec = self.load(key)
        if rec is None or rec.get("spec_hash") != spec_hash:
            return None
        refreshed = False
        for rel, info in rec["outputs"].items():
            try:
                st = (self.out / rel).stat()
            except OSError:
                return None
            if st.st_size != info["size"]:
                return None
            if st.st_mtime_ns != info["mtime_ns"]:  # e.g. the folder was copied: check the content
                if sha256_file(self.out / rel) != info["sha256"]:
                    return None
                info["mtime_ns"], refreshed = st.st_mtime_ns, True
        if refreshed:
            atomic_write(self._path(key), json.dumps(rec, indent=1, sort_keys=True).encode())
        return rec

    def save(self, key: str, spec: dict, spec_hash: str, outputs: dict[str, bytes]) -> dict:
        """Write ``outputs`` ({relative path: bytes}) atomically, then the record that vouches for them."""
        files = {}
        for rel, data in outputs.items():
            atomic_write(self.out / rel, data)
            st = (self.out / rel).stat()
            files[rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        rec = {"key": key, "spec_hash": spec_hash, "spec": spec, "outputs": files}
        atomic_write(self._path(key), json.dumps(rec, indent=1, sort_keys=True).encode())
        return rec

    def forget(self, key: str) -> None:
        """Remove an item's record and the outputs it lists (before redoing it, or when it left the study)."""
        rec = self.load(key)
        self._path(key).unlink(missing_ok=True)
        for rel in (rec or {}).get("outputs", {}):
            target = (self.out / rel).resolve()
            if target.is_relative_to(self.out.resolve()):
                target.unlink(missing_ok=True)

    def keys(self) -> list[str]:
        return sorted(str(p.relative_to(self.root).with_suffix("").as_posix()) for p in self.root.rglob("*.json")) \
            if self.root.is_dir() else []


# ================================================================================================
# Running a study
# ================================================================================================
@dataclass
class StudyResult:
    out_dir: Path
    ran: list[str] = field(default_factory=list)  # item keys executed in this run
    reused: list[str] = field(default_factory=list)  # item keys finished earlier with the same spec
    failed: dict[str, str] = field(default_factory=dict)  # item key -> reason
    would_run: dict[str, str] = field(default_factory=dict)  # --dry-run: item key -> why it would run
    seconds: float = 0.0
    n_motions: int = 0
    n_stimuli: int = 0
    sides: dict[str, dict[str, int]] = field(default_factory=dict)  # condition -> {"left": n, "right": n}

    @property
    def ok(self) -> bool:
        return not self.failed


def run_study(manifest: str | os.PathLike, out_dir: str | os.PathLike, *, backend: str = "local",
              address: str | None = None, device: str | None = None, threads: int | None = None,
              num_cpus: int | None = None, dry_run: bool = False, progress: bool = True) -> StudyResult:
    """Run (or resume) the study in ``manifest`` into ``out_dir``; see the package docstring, `emage_core.batch`.

    backend: ``"local"`` (this process) or ``"ray"`` (``address`` / ``$RAY_ADDRESS``, else a local
    instance with ``num_cpus``). device: for generation (default: cuda when available). threads:
    torch CPU threads of each generation task, on either backend (default `DEFAULT_THREADS`; the same
    count gives the same motion files). dry_run: check everything and report what would run.
    Raises `StudyError` before anything is generated if the manifest or an input is bad.
    """
    t0 = time.monotonic()
    study = load_study(manifest)
    inputs = hash_inputs(study)
    plan = plan_study(study)
    out = Path(out_dir).expanduser().resolve()
    if dry_run:
        return _dry_run(study, inputs, plan, out)
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out):
        threads = threads or DEFAULT_THREADS
        if backend == "local":
            runner = LocalBackend(device=device)
        elif backend == "ray":
            runner = RayBackend(address=address, device=device, num_cpus=num_cpus, threads=threads)
        else:
            raise ValueError(f"backend must be local or ray, got {backend!r}")
        with runner:
            result = _Run(study, inputs, plan, out, runner, progress, threads).run()
    result.seconds = time.monotonic() - t0
    return result


class _exclusive:
    """Hold ``.work/lock`` so two runs never write the same output folder at once."""

    def __init__(self, out: Path):
        self.path = out / WORK / "lock"

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "a")  # "a": never touches the file, so its mtime stays
        try:
            import fcntl

            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not POSIX: no locking
            pass
        except OSError:
            self.fh.close()
            raise RuntimeError(f"another batch run is writing {self.path.parents[1]}") from None
        return self

    def __exit__(self, *exc):
        self.fh.close()


def _dry_run(study: Study, inputs: Inputs, plan: Plan, out: Path) -> StudyResult:
    """What a run would do: motions whose spec changed, and stimuli that show them or whose own spec changed."""
    records = Records(out)
    result = StudyResult(out, n_motions=len(plan.motions), n_stimuli=len(plan.stimuli), sides=side_counts(plan))
    motion_sha = {}
    for m in plan.motions.values():
        spec = motion_spec(study, inputs, m)
        rec = records.finished(m.key, sha256_json(spec))
        if rec:
            result.reused.append(m.key)
            motion_sha[m.key] = rec["outputs"][m.path]["sha256"]
        else:
            result.would_run[m.key] = "new" if records.load(m.key) is None else "changed or incomplete"
    for s in plan.stimuli:
        changed = [m.key for _, m in s.shown if m.key not in motion_sha]
        if changed:
            result.would_run[s.key] = f"shows a motion that will be generated ({changed[0]})"
        elif records.finished(s.key, sha256_json(stimulus_spec(study, inputs, s, motion_sha))):
            result.reused.append(s.key)
        else:
            result.would_run[s.key] = "new" if records.load(s.key) is None else "changed or incomplete"
    return result


class _Run:
    """One run of a study: submit what is not finished, write results as they come, then key and manifest."""

    def __init__(self, study: Study, inputs: Inputs, plan: Plan, out: Path, backend, progress: bool, threads: int):
        self.study, self.inputs, self.plan, self.out, self.backend = study, inputs, plan, out, backend
        self.threads = threads
        self.records = Records(out)
        self.result = StudyResult(out, n_motions=len(plan.motions), n_stimuli=len(plan.stimuli),
                                  sides=side_counts(plan))
        self.finished: dict[str, dict] = {}  # item key -> its record (outputs with sha256), once finished
        self.motion_sha: dict[str, str] = {}  # motion key -> sha256 of its .npz, once finished
        self.waiting = list(plan.stimuli)  # stimuli whose motions are not all finished yet
        self.tickets: dict[int, tuple[str, Any, dict, str]] = {}  # ticket -> (kind, item, spec, spec hash)
        self.next_ticket = 0
        self._speech: dict[str, Any] = {}  # clip id -> its bytes as the backend shares them with tasks
        self.progress = progress

    def run(self) -> StudyResult:
        from tqdm import tqdm

        total = len(self.plan.motions) + len(self.plan.stimuli)
        with tqdm(total=total, desc=self.study.name, unit="item", file=sys.stderr, disable=not self.progress,
                  dynamic_ncols=True) as self.bar:
            for m in self.plan.motions.values():
                self._reuse_or_submit("motion", m, motion_spec(self.study, self.inputs, m))
            self._release_stimuli()
            while self.backend.pending():
                ticket, value, error = self.backend.next_done()
                kind, item, spec, spec_hash = self.tickets.pop(ticket)
                if error is not None:
                    self._fail(item.key, f"{type(error).__name__}: {error}")
                elif kind == "motion":
                    self._finish(item, self.records.save(item.key, spec, spec_hash,
                                                         dict(zip(item.files, (value["npz"], value["json"])))))
                else:
                    self._finish(item, self.records.save(item.key, spec, spec_hash, {item.render_path: value}))
                self._release_stimuli()
        self._publish_stimuli()
        self._remove_stale()
        self._write_key_and_manifest()
        return self.result

    # -- scheduling ------------------------------------------------------------------------------
    def _reuse_or_submit(self, kind: str, item, spec: dict) -> None:
        """Keep a finished item whose spec (settings + input hashes) is unchanged; else run it."""
        spec_hash = sha256_json(spec)
        rec = self.records.finished(item.key, spec_hash)
        if rec:
            self._finish(item, rec, reused=True)
        else:
            self._submit(kind, item, spec, spec_hash)

    def _submit(self, kind: str, item, spec: dict, spec_hash: str) -> None:
        self.records.forget(item.key)  # its old outputs no longer match: never leave them looking finished
        ticket, self.next_ticket = self.next_ticket, self.next_ticket + 1
        self.tickets[ticket] = (kind, item, spec, spec_hash)
        # The task functions as `emage_core.batch` exports them, looked up now rather than imported, so
        # substituting one there (as a test does to interrupt a run) reaches the local backend.
        tasks = sys.modules[__package__]
        if kind == "motion":
            self.backend.submit(ticket, kind, tasks.generate_motion, *self._motion_task(item))
        else:
            self.backend.submit(ticket, kind, tasks.render_stimulus, *self._stimulus_task(item, spec))

    def _motion_task(self, m: MotionItem) -> tuple:
        cond = self.study.conditions[m.condition]
        model = self.inputs.models[cond.name]
        ref = cond.references.get(m.clip)
        task = {"model": model.ref, "revision": model.revision, "device": self.backend.motion_device,
                "weights": model.provenance["files"], "seed": m.seed, "temperature": cond.temperature,
                "locks": cond.locks, "crossfade": cond.crossfade, "overlap": cond.overlap,
                "guidance_scale": cond.guidance_scale, "style": style_dict(cond.style),
                "study": {"clip": m.clip, "condition": m.condition}, "threads": self.threads}
        return task, self.speech(m.clip), (ref.read_bytes() if ref else None)

    def _stimulus_task(self, s: Stimulus, spec: dict) -> tuple:
        r = self.study.render
        task = {"labels": spec["labels"], "view": r.view, "size": r.size, "renderer": r.renderer, "body": r.body}
        motions = [(self.out / m.path).read_bytes() for _, m in s.shown]
        return task, motions, (self.speech(s.clip) if r.audio else None)

    def speech(self, clip_id: str):
        """A clip's file bytes, read once and shared by all the tasks that use it."""
        if clip_id not in self._speech:
            path = next(c.path for c in self.study.clips if c.id == clip_id)
            self._speech[clip_id] = self.backend.share(path.read_bytes())
        return self._speech[clip_id]

    def _release_stimuli(self) -> None:
        """Stimuli whose motions are all finished: reuse or submit. Those showing a failed motion fail."""
        still = []
        for s in self.waiting:
            failed = [m.key for _, m in s.shown if m.key in self.result.failed]
            if failed:
                self.records.forget(s.key)
                self._fail(s.key, f"not rendered: {failed[0]} failed")
            elif all(m.key in self.motion_sha for _, m in s.shown):
                self._reuse_or_submit("stimulus", s, stimulus_spec(self.study, self.inputs, s, self.motion_sha))
            else:
                still.append(s)
        self.waiting = still

    def _finish(self, item, record: dict, reused: bool = False) -> None:
        self.finished[item.key] = record
        if isinstance(item, MotionItem):
            self.motion_sha[item.key] = record["outputs"][item.path]["sha256"]
        (self.result.reused if reused else self.result.ran).append(item.key)
        self.bar.update()
        self.bar.set_postfix(ran=len(self.result.ran), reused=len(self.result.reused),
                             failed=len(self.result.failed), refresh=False)

    def _fail(self, key: str, reason: str) -> None:
        self.result.failed[key] = reason
        self.bar.write(f"failed: {key}: {reason}", file=sys.stderr)
        self.bar.update()

    # -- finishing ---------------------------------------------------------------------------------
    def _publish_stimuli(self) -> None:
        """Make ``stimuli/<name>.mp4`` the finished render (a hard link; a copy where links are impossible)."""
        for s in self.plan.stimuli:
            if s.key not in self.finished:
                continue
            src, dst = self.out / s.render_path, self.out / s.file
            sha = self.finished[s.key]["outputs"][s.render_path]["sha256"]
            if dst.exists() and (os.path.samefile(src, dst) or sha256_file(dst) == sha):
                continue  # already in place: leave it (and its modification time) alone
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.tmp")
            tmp.unlink(missing_ok=True)
            try:
                os.link(src, tmp)
            except OSError:
                import shutil

                shutil.copy2(src, tmp)
            os.replace(tmp, dst)

    def _remove_stale(self) -> None:
        """Remove what no longer belongs to the study: items that left it, stimuli that are not current."""
        current = set(self.plan.motions) | {s.key for s in self.plan.stimuli}
        for key in self.records.keys():
            if key not in current:
                self.records.forget(key)
        names = {f"{s.name}.mp4" for s in self.plan.stimuli if s.key in self.finished}
        stim_dir = self.out / "stimuli"
        if stim_dir.is_dir():
            for f in stim_dir.iterdir():
                if STIMULUS_RE.fullmatch(f.name) and f.name not in names:
                    f.unlink()
        for top in ("motions", WORK, "stimuli"):
            for p in sorted((self.out / top).rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if p.is_file() and p.name.startswith(".") and p.name.endswith(".tmp"):
                    p.unlink()  # a temporary file of a write that was killed (never renamed into place)
                elif p.is_dir() and not any(p.iterdir()):
                    p.rmdir()  # emptied by removed items

    def _write_key_and_manifest(self) -> None:
        rows, outputs = key_rows(self.inputs, self.plan, self.finished)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=KEY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        key_bytes = buf.getvalue().encode()
        _write_if_changed(self.out / KEY_FILE, key_bytes)
        outputs[KEY_FILE] = hashlib.sha256(key_bytes).hexdigest()
        manifest = study_manifest(self.study, self.inputs, self.plan, outputs, self.result.failed)
        _write_if_changed(self.out / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode())


# ================================================================================================
# The key CSV and the study manifest JSON
# ================================================================================================
def key_rows(inputs: Inputs, plan: Plan, finished: dict[str, dict]) -> tuple[list[dict], dict[str, str]]:
    """The key's rows (one per file; a side-by-side stimulus has one row per side) and ``{file: sha256}``.

    ``finished``: item key -> record, for the items that are finished (failed ones have no files).
    """
    rows, outputs = [], {}
    for s in plan.stimuli:  # in name order
        if s.key not in finished:
            continue
        sha = outputs[s.file] = finished[s.key]["outputs"][s.render_path]["sha256"]
        for side, m in s.shown:
            other = [o.condition for sd, o in s.shown if sd != side]
            rows.append({"file": s.file, "kind": "stimulus", "stimulus": s.name, "layout": s.layout, "side": side,
                         "clip": s.clip, "condition": m.condition, "seed": m.seed,
                         "compared_with": other[0] if other else "", "motion": m.path,
                         "speech": inputs.speech[s.clip]["file"], "sha256": sha})
    for m in plan.motions.values():
        if m.key not in finished:
            continue
        for path, kind in zip(m.files, ("motion", "provenance")):
            sha = outputs[path] = finished[m.key]["outputs"][path]["sha256"]
            rows.append({"file": path, "kind": kind, "stimulus": "", "layout": "", "side": "", "clip": m.clip,
                         "condition": m.condition, "seed": m.seed, "compared_with": "", "motion": m.path,
                         "speech": inputs.speech[m.clip]["file"], "sha256": sha})
    return rows, outputs


def software_versions() -> dict[str, str]:
    import torch

    return {"emage_studio": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "pyyaml": yaml.__version__, "platform": platform.platform()}


def study_manifest(study: Study, inputs: Inputs, plan: Plan, outputs: dict[str, str], failed: dict[str, str]) -> dict:
    """The study's record: inputs and outputs with sha256, software, models, conditions, sides, failures.

    No timestamps, so a rerun that changes nothing leaves the file byte-identical.
    """
    names = {s.key: s.name for s in plan.stimuli}
    counts = side_counts(plan)
    conditions = {}
    for c in study.conditions.values():
        from_style = None
        if c.style is not None:
            from ..edit.style import describe

            from_style = describe(c.style)
        conditions[c.name] = {
            "model": inputs.models[c.name].provenance["source"], "seeds": c.seeds, "temperature": c.temperature,
            "locks": c.locks, "crossfade": c.crossfade, "overlap": c.overlap,
            "reference": {clip: str(p) for clip, p in c.references.items()} or None, "style": from_style}
    return {
        "format": "emage-studio study manifest 1",
        "study": study.name,
        "seed": study.seed,
        "manifest": {"path": str(study.path), "sha256": inputs.manifest_sha256},
        "software": software_versions(),
        "inputs": {
            "speech": inputs.speech,
            "references": inputs.references,
            "models": {m.provenance["source"]: m.provenance for m in inputs.models.values()},  # by source
        },
        "conditions": conditions,
        "render": dataclasses.asdict(study.render),
        "layouts": {"singles": study.singles, "pairs": [list(p) for p in study.pairs]},
        "counterbalancing": {"rule": COUNTERBALANCING_RULE, "sides": counts,
                             "balanced": all(c["left"] == c["right"] for c in counts.values())},
        "counts": {"motions": len(plan.motions), "stimuli": len(plan.stimuli),
                   "finished_stimuli": sum(1 for f in outputs if f.startswith("stimuli/"))},
        "outputs": dict(sorted(outputs.items())),
        "failures": [{"item": key, "stimulus": names.get(key), "error": reason}
                     for key, reason in sorted(failed.items())],
    }


# ================================================================================================
# The summary printed at the end of a run
# ================================================================================================
def summary(result: StudyResult, dry_run: bool = False) -> str:
    """A few lines for people: what ran, what was reused, what failed and why, where things are."""
    lines = [f"{result.n_motions} motions, {result.n_stimuli} stimuli in {result.out_dir}"]
    if dry_run:
        lines.append(f"dry run: {len(result.would_run)} item(s) would run, {len(result.reused)} are finished")
        lines += [f"  would run {key}: {why}" for key, why in result.would_run.items()]
        return "\n".join(lines)
    lines.append(f"ran {len(result.ran)}, reused {len(result.reused)}, failed {len(result.failed)} "
                 f"in {result.seconds:.1f} s")
    if any(v["left"] != v["right"] for v in result.sides.values()):
        lines.append("warning: sides are not balanced (a pair has an odd number of trials): "
                     + ", ".join(f"{c} {v['left']}L/{v['right']}R" for c, v in result.sides.items()))
    lines.append(f"key: {result.out_dir / KEY_FILE}; manifest: {result.out_dir / MANIFEST_FILE}")
    if result.failed:
        lines.append(f"FAILED ({len(result.failed)}):")
        lines += [f"  {key}: {why}" for key, why in result.failed.items()]
    return "\n".join(lines)
