"""Stimulus generation for perception studies: a study manifest in, anonymized and reproducible stimuli out.

    python -m emage_core batch STUDY.yaml -o OUTDIR [--backend local|ray] [--dry-run]

The manifest (YAML; paths are relative to the manifest's folder)::

    study: gesture-emotion-pilot   # a name (default: the file name)
    seed: 2024                     # decides left/right sides and stimulus numbering (default 0)
    speech:                        # the clips: a list (id = file stem) or a mapping id -> path
      hello: speech/hello.wav
      question: speech/question.wav
    defaults:                      # optional: condition settings shared by every condition
      seeds: [1, 2]
      temperature: 0.8
    conditions:
      - name: neutral              # letters, digits, _ . - (it names folders)
        model: default             # default | bundled | a checkpoint folder | a Hub repo id (hub:owner/name)
        revision: null             # Hub branch/tag/commit (Hub models only)
        seeds: [1, 2]              # one motion per seed and clip
        variants: 1                # n: each seed s also gives s+1 .. s+n-1 (as `generate --variants`)
        temperature: 0.8           # 0 = most likely codes (seeds then give identical motions)
      - name: sad
        style: {preset: sadness, intensity: 0.8}     # emotion preset (emage_core.style.PRESETS)
      - name: big
        style: {amplitude: 1.3}                      # explicit controls (emage_core.style.CONTROL_RANGES)
      - name: kept
        locks: ["upper:1-2.5"]                       # PART:START-END seconds, kept from the reference
        reference: refs/ref.npz                      # a BEAT2 .npz, or a mapping clip id -> .npz
        crossfade: 0.2
    render:
      view: full                   # full | upper | face
      size: 256                    # pixels per cell, even, 64-1024
      renderer: mesh               # mesh | stick
      show_labels: false           # true writes condition names into the videos (pilots only: not blind)
      audio: true                  # the speech on the videos' sound track
    layouts:
      singles: true                # every motion as its own stimulus (or a list of conditions, or false)
      pairs:                       # side-by-side comparisons (the i-th seed of A against the i-th of B)
        - [neutral, sad]
        - [neutral, big]

Every mistake in it (unknown keys, missing files, unknown presets, bad locks, pairs naming unknown
conditions, ...) is reported up front, with its line, before anything is generated.

Counterbalancing: the trials of pair number p (0-based, in manifest order) are numbered
j = clip index x seeds + seed index (clips in manifest order). The pair's first-listed condition is on
the left when ``(j + p + seed) % 2 == 0``, else on the right. So sides alternate clip by clip and seed
by seed; every condition is left exactly as often as right within each pair whenever a pair has an
even number of trials (clips x seeds); the start side alternates from pair to pair and flips with the
study seed. The counts per condition and side are in the manifest JSON (and a warning is printed
when they are unequal).

Output folder::

    stimuli/stim_0001.mp4 ...   what participants see: numbered in a random order (sha256 of study seed
                                and the stimulus' identity), so names reveal nothing about conditions
    motions/<clip>/<condition>/seed_<s>.npz + .json   every generated motion (BEAT2) and its provenance
    key.csv                     the unblinding key: one row per file (two per side-by-side stimulus, one
                                per side): clip, condition, side, seed, the motion shown, sha256
    study_manifest.json         sha256 of every input (speech, references, the manifest, weights) and
                                output, software versions, model provenance, counterbalancing, failures
    .work/                      per-item records (resuming) and the rendered videos that stimuli/ links to

Resuming: each item (a motion, a rendered stimulus) stores the sha256 of its full spec (settings +
sha256 of its inputs: speech, weights, reference, the motions it shows). A rerun skips items whose spec
is unchanged and whose outputs are intact, and redoes the rest (changing one condition's seeds redoes
that condition's motions and the stimuli showing them). Files are written to a temporary name and
renamed, so an interrupted run never leaves a half file that counts as finished. One failed item is
reported and does not stop the others.

Reproducibility: the same manifest gives byte-identical motion files (the .npz is written without
timestamps) on CPU, whether run locally or on Ray, with any number of threads. On GPUs the numbers
depend on the CUDA kernels: compare runs made on the same kind of device (each side-car records it).

Scale: ``--backend ray`` runs motions as Ray tasks (one GPU each where the cluster has GPUs, else one
CPU) and renders as CPU tasks; tasks take and return bytes and the driver writes every file, so the
nodes need no shared folder. They do need emage_core importable (a local instance started here gets
this checkout on its PYTHONPATH), local checkpoint folders at the same path (Hub ids work anywhere;
each task checks the sha256 of the weights it loaded) and EGL for the mesh renderer. Ray is imported
only with this backend.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import difflib
import hashlib
import io
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import numpy as np
import yaml

from . import __version__

SPEC_FORMAT = 1  # bump when the meaning of a spec changes, so every item is redone
RENDER_VIEWS = ("full", "upper", "face")
RENDERERS = ("mesh", "stick")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
STIMULUS_RE = re.compile(r"stim_\d+\.mp4")
WORK = ".work"
KEY_FILE = "key.csv"
MANIFEST_FILE = "study_manifest.json"
KEY_COLUMNS = ("file", "kind", "stimulus", "layout", "side", "clip", "condition", "seed", "compared_with",
               "motion", "speech", "sha256")
COUNTERBALANCING_RULE = (
    "Pair p (0-based, manifest order) has trials j = clip_index * n_seeds + seed_index; its first-listed "
    "condition is on the left when (j + p + study_seed) % 2 == 0, else on the right.")

TOP_KEYS = ("study", "seed", "speech", "defaults", "conditions", "render", "layouts")
CONDITION_KEYS = ("name", "model", "revision", "seeds", "variants", "temperature", "crossfade", "locks",
                  "reference", "style")
RENDER_KEYS = ("view", "size", "renderer", "show_labels", "audio")
LAYOUT_KEYS = ("singles", "pairs")
MAX_VARIANTS = 16


# ================================================================================================
# Reading the manifest with line numbers
# ================================================================================================
class StudyError(ValueError):
    """A manifest that cannot be run. ``problems`` lists ``(line, message)``; str() has one per line."""

    def __init__(self, source: str, problems: list[tuple[int | None, str]]):
        self.source = source
        self.problems = sorted(problems, key=lambda p: (p[0] or 0))
        super().__init__("\n".join(f"{source}:{line}: {msg}" if line else f"{source}: {msg}"
                                   for line, msg in self.problems))


@dataclass
class Node:
    """A YAML value with the (1-based) line it starts on. Mappings hold ``{key: Node}`` and the key lines."""

    value: Any
    line: int
    key_lines: dict[str, int] = field(default_factory=dict)

    def get(self, key: str) -> "Node | None":
        return self.value.get(key) if isinstance(self.value, dict) else None


def _to_node(node: yaml.Node, constructor: yaml.constructor.SafeConstructor, problems: list) -> Node:
    """PyYAML's composed node tree (which knows its lines) -> `Node` with plain Python scalars."""
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out, key_lines = {}, {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            key_line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                problems.append((key_line, f"keys must be text, got {key!r}"))
                continue
            if key in out:
                problems.append((key_line, f"{key!r} is given twice (first on line {key_lines[key]})"))
                continue
            out[key], key_lines[key] = _to_node(value_node, constructor, problems), key_line
        return Node(out, line, key_lines)
    if isinstance(node, yaml.SequenceNode):
        return Node([_to_node(item, constructor, problems) for item in node.value], line)
    return Node(constructor.construct_object(node), line)


def compose_manifest(text: str, source: str) -> Node:
    """YAML text -> `Node` tree; raises `StudyError` with the line of a syntax error."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        msg = f"not valid YAML: {e.problem or e}"
        if e.context and e.context_mark and e.context_mark is not mark:  # e.g. where an unclosed [ opened
            msg += f" ({e.context} that starts on line {e.context_mark.line + 1})"
        raise StudyError(source, [(mark.line + 1 if mark else None, msg)]) from None
    except yaml.YAMLError as e:
        raise StudyError(source, [(None, f"not valid YAML: {e}")]) from None
    if root is None:
        raise StudyError(source, [(None, "the manifest is empty")])
    problems: list = []
    try:
        tree = _to_node(root, yaml.constructor.SafeConstructor(), problems)
    except yaml.constructor.ConstructorError as e:
        raise StudyError(source, [(e.problem_mark.line + 1 if e.problem_mark else None, str(e.problem))]) from None
    if problems:
        raise StudyError(source, problems)
    return tree


class _Checker:
    """Typed reads of manifest values. Problems are collected (not raised) so one run reports them all."""

    def __init__(self) -> None:
        self.problems: list[tuple[int | None, str]] = []

    def fail(self, line: int | None, where: str, msg: str) -> None:
        self.problems.append((line, f"{where}: {msg}" if where else msg))

    def mapping(self, node: Node | None, where: str, allowed: tuple[str, ...]) -> bool:
        """True when ``node`` is a mapping; reports each unknown key (with a close match, if any)."""
        if node is None or not isinstance(node.value, dict):
            self.fail(node.line if node else None, where, "expected a mapping of key: value")
            return False
        for key, line in node.key_lines.items():
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(allowed)}"
                self.fail(line, where, f"unknown key {key!r}{hint}")
        return True

    def integer(self, node: Node, where: str, minimum: int | None = None, maximum: int | None = None) -> int | None:
        v = node.value
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(node.line, where, f"expected a whole number, got {v!r}")
            return None
        if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
            bounds = f"{minimum}-{maximum}" if maximum is not None else f">= {minimum}"
            self.fail(node.line, where, f"must be {bounds}, got {v}")
            return None
        return v

    def number(self, node: Node, where: str, minimum: float = 0.0) -> float | None:
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < minimum:
            self.fail(node.line, where, f"expected a number >= {minimum:g}, got {v!r}")
            return None
        return float(v)

    def boolean(self, node: Node, where: str) -> bool | None:
        if not isinstance(node.value, bool):
            self.fail(node.line, where, f"expected true or false, got {node.value!r}")
            return None
        return node.value

    def text(self, node: Node, where: str) -> str | None:
        if not isinstance(node.value, str) or not node.value.strip():
            self.fail(node.line, where, f"expected text, got {node.value!r}")
            return None
        return node.value.strip()

    def choice(self, node: Node, where: str, options: tuple[str, ...]) -> str | None:
        v = self.text(node, where)
        if v is not None and v not in options:
            self.fail(node.line, where, f"must be one of {', '.join(options)}, got {v!r}")
            return None
        return v

    def name(self, node: Node, where: str) -> str | None:
        v = self.text(node, where)
        if v is not None and not NAME_RE.fullmatch(v):
            self.fail(node.line, where, f"{v!r} is not a usable name: letters, digits, _ . - (at most 64, "
                                        "starting with a letter or digit); it names folders")
            return None
        return v

    def items(self, node: Node, where: str) -> list[Node]:
        """A list (a single value counts as a list of one)."""
        return node.value if isinstance(node.value, list) else [node]


# ================================================================================================
# The study: the validated manifest
# ================================================================================================
@dataclass(frozen=True)
class Clip:
    id: str
    path: Path  # absolute
    given: str  # as written in the manifest
    line: int


@dataclass
class Condition:
    name: str
    line: int
    model: str | None  # None = the default model; else an absolute folder or a Hub repo id
    model_line: int
    revision: str | None
    seeds: list[int]  # every motion seed (variants expanded)
    temperature: float
    crossfade: float
    locks: list[str]  # "part:start-end", checked
    references: dict[str, Path]  # clip id -> reference .npz (each clip, when there are locks)
    style: Any = None  # emage_core.style.StyleControls or None


@dataclass(frozen=True)
class RenderSettings:
    view: str = "full"
    size: int = 256
    renderer: str = "mesh"
    show_labels: bool = False
    audio: bool = True


@dataclass
class Study:
    path: Path
    name: str
    seed: int
    clips: list[Clip]
    conditions: dict[str, Condition]  # in manifest order
    render: RenderSettings
    singles: list[str]  # conditions shown one by one
    pairs: list[tuple[str, str]]  # (first-listed, second-listed)
    text: bytes  # the manifest as read (its sha256 goes into the outputs)


def load_study(path: str | os.PathLike) -> Study:
    """Read and check a study manifest. Raises `StudyError` listing every problem with its line."""
    path = Path(path).expanduser().resolve()
    source = path.name
    try:
        text = path.read_bytes()
    except OSError as e:
        raise StudyError(str(path), [(None, f"cannot read the manifest ({e.strerror or e})")]) from None
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        raise StudyError(source, [(None, "the manifest is not UTF-8 text")]) from None
    root = compose_manifest(decoded, source)
    check = _Checker()
    if not check.mapping(root, "", TOP_KEYS):
        raise StudyError(source, check.problems)
    base = path.parent

    name = check.text(root.get("study"), "study") if root.get("study") else path.stem
    seed = check.integer(root.get("seed"), "seed", 0) if root.get("seed") else 0
    clips = _read_speech(root.get("speech"), base, check)
    clip_ids = [c.id for c in clips]

    defaults = root.get("defaults")
    if defaults is not None:
        check.mapping(defaults, "defaults", tuple(k for k in CONDITION_KEYS if k != "name"))
    conditions: dict[str, Condition] = {}
    cond_node = root.get("conditions")
    if cond_node is None or not isinstance(cond_node.value, list) or not cond_node.value:
        check.fail(cond_node.line if cond_node else None, "conditions", "expected a list of at least one condition")
    else:
        for i, node in enumerate(cond_node.value):
            cond = _read_condition(node, defaults, f"conditions[{i}]", base, clip_ids, check)
            if cond is None:
                continue
            if cond.name in conditions:
                check.fail(node.get("name").line, f"conditions[{i}].name",
                           f"{cond.name!r} is used twice (first on line {conditions[cond.name].line})")
                continue
            conditions[cond.name] = cond

    render = _read_render(root.get("render"), check)
    listed = {n.get("name").value for n in (cond_node.value if cond_node and isinstance(cond_node.value, list) else [])
              if isinstance(n.value, dict) and n.get("name") is not None}
    singles, pairs = _read_layouts(root.get("layouts"), conditions, listed, check)
    if check.problems:
        raise StudyError(source, check.problems)
    return Study(path=path, name=name, seed=seed, clips=clips, conditions=conditions, render=render,
                 singles=singles, pairs=pairs, text=text)


def _read_speech(node: Node | None, base: Path, check: _Checker) -> list[Clip]:
    """``speech:`` as a list of paths (id = stem) or a mapping id -> path; every file must be audio."""
    from .audio import DEFAULT_MAX_SECONDS, DEFAULT_MIN_SECONDS, AudioError, probe_audio

    if node is None:
        check.fail(None, "speech", "missing: list the speech clips (paths relative to the manifest)")
        return []
    if isinstance(node.value, dict):
        entries = [(Node(k, node.key_lines[k]), v) for k, v in node.value.items()]
    elif isinstance(node.value, list):
        entries = [(None, v) for v in node.value]
    else:
        check.fail(node.line, "speech", "expected a list of paths or a mapping of id: path")
        return []
    if not entries:
        check.fail(node.line, "speech", "no clips listed")
    clips: dict[str, Clip] = {}
    for i, (id_node, path_node) in enumerate(entries):
        where = f"speech[{id_node.value if id_node else i}]"
        given = check.text(path_node, where)
        if given is None:
            continue
        file = (base / Path(given).expanduser()).resolve()
        clip_id = id_node.value if id_node else file.stem
        id_line = id_node.line if id_node else path_node.line
        if not NAME_RE.fullmatch(clip_id):
            check.fail(id_line, where, f"clip id {clip_id!r} is not a usable name (letters, digits, _ . -); "
                                       "write speech as a mapping, id: path")
            continue
        if clip_id in clips:
            check.fail(id_line, where, f"clip id {clip_id!r} is used twice (first on line {clips[clip_id].line}); "
                                       "write speech as a mapping, id: path")
            continue
        if not file.is_file():
            check.fail(path_node.line, where, f"speech file not found: {file}")
            continue
        try:
            seconds = probe_audio(file).duration
        except (AudioError, OSError) as e:
            check.fail(path_node.line, where, f"not readable audio: {e}")
            continue
        if seconds is not None and not DEFAULT_MIN_SECONDS <= seconds <= DEFAULT_MAX_SECONDS:
            check.fail(path_node.line, where, f"{file.name} lasts {seconds:.2f} s; speech must last "
                                              f"{DEFAULT_MIN_SECONDS:g}-{DEFAULT_MAX_SECONDS:g} s")
            continue
        clips[clip_id] = Clip(clip_id, file, given, id_line)
    return list(clips.values())


def _read_condition(node: Node, defaults: Node | None, where: str, base: Path, clip_ids: list[str],
                    check: _Checker) -> Condition | None:
    """One entry of ``conditions:``; values missing there come from ``defaults:``."""
    if not check.mapping(node, where, CONDITION_KEYS):
        return None
    if node.get("name") is None:
        check.fail(node.line, where, "missing 'name'")
        return None
    name = check.name(node.get("name"), f"{where}.name")
    if name is None:
        return None
    where = f"condition {name!r}"
    n_before = len(check.problems)

    def value(key: str) -> Node | None:  # the condition's own value, else the default
        own = node.get(key)
        return own if own is not None else (defaults.get(key) if defaults is not None else None)

    model, model_line = _read_model(value("model"), f"{where}.model", base, check)
    revision = check.text(value("revision"), f"{where}.revision") if value("revision") else None
    if revision and model is not None and Path(model).is_dir():
        check.fail(value("revision").line, f"{where}.revision", "a revision applies to Hub models only")

    seed_nodes = check.items(value("seeds"), f"{where}.seeds") if value("seeds") else [Node(0, node.line)]
    base_seeds = [check.integer(s, f"{where}.seeds", 0, 2**31 - 1) for s in seed_nodes]
    variants = check.integer(value("variants"), f"{where}.variants", 1, MAX_VARIANTS) if value("variants") else 1
    seeds: list[int] = []
    if None not in base_seeds and variants is not None:
        for s, s_node in zip(base_seeds, seed_nodes):
            for k in range(variants):
                if s + k in seeds:
                    check.fail(s_node.line, f"{where}.seeds", f"seed {s + k} occurs twice once variants are "
                                                            f"counted (variant k of seed s uses seed s + k)")
                seeds.append(s + k)
    if not seeds and not any(s is None for s in base_seeds):
        check.fail(value("seeds").line, f"{where}.seeds", "no seeds listed")
    temperature = check.number(value("temperature"), f"{where}.temperature") if value("temperature") else 0.0
    crossfade = check.number(value("crossfade"), f"{where}.crossfade") if value("crossfade") else 0.2

    locks = _read_locks(value("locks"), f"{where}.locks", check) if value("locks") else []
    references = _read_references(value("reference"), f"{where}.reference", base, clip_ids, check) \
        if value("reference") else {}
    if locks and not value("reference"):
        check.fail(value("locks").line, f"{where}.locks",
                   "locks need a 'reference' motion to take the locked parts from")
    style = _read_style(value("style"), f"{where}.style", check) if value("style") else None
    if len(check.problems) > n_before:
        return None
    return Condition(name=name, line=node.line, model=model, model_line=model_line, revision=revision,
                     seeds=seeds, temperature=temperature, crossfade=crossfade, locks=locks,
                     references=references if locks else {}, style=style)


def _read_model(node: Node | None, where: str, base: Path, check: _Checker) -> tuple[str | None, int]:
    """``default`` / ``bundled`` / ``hub:owner/name`` / ``local:folder`` / a folder / a Hub repo id."""
    from . import hub

    if node is None or node.value is None:
        return None, node.line if node else 0
    text = check.text(node, where)
    if text is None or text == "default":
        return None, node.line
    if text == "bundled":
        if not (hub.BUNDLED_CHECKPOINT / hub.CONFIG_NAME).is_file():
            check.fail(node.line, where, f"the bundled checkpoint is not installed ({hub.BUNDLED_CHECKPOINT})")
        return str(hub.BUNDLED_CHECKPOINT), node.line
    kind, _, rest = text.partition(":")
    if kind in ("hub", "local") and rest:  # the app's model selector spells them this way
        text = rest
    else:
        kind = ""
    folder = (base / Path(text).expanduser()).resolve()
    if kind != "hub" and folder.is_dir():
        if not (folder / hub.CONFIG_NAME).is_file():
            check.fail(node.line, where, f"{folder} is not a checkpoint folder (no {hub.CONFIG_NAME})")
        return str(folder), node.line
    if kind != "local" and not text.startswith(".") and hub._looks_like_repo_id(text):
        return text, node.line  # a Hub repo id: resolved (downloaded if needed) before generation starts
    check.fail(node.line, where, f"{text!r} is neither a checkpoint folder (looked for {folder}) nor a Hub repo "
                                 "id (owner/name); use 'default' for the default model")
    return None, node.line


def _read_locks(node: Node, where: str, check: _Checker) -> list[str]:
    from .locks import Lock, LockError
    from .skeleton import PARTS

    out = []
    for item in check.items(node, where):
        text = check.text(item, where)
        if text is None:
            continue
        try:
            lock = Lock.parse(text)
        except ValueError as e:  # LockError, or a float() of "1..2"
            check.fail(item.line, where, str(e) if isinstance(e, LockError) else f"cannot read lock {text!r}: {e}")
            continue
        if lock.part not in PARTS:
            check.fail(item.line, where, f"lock {text!r}: unknown part {lock.part!r}; parts are {', '.join(PARTS)}")
        elif not lock.start < lock.end:
            check.fail(item.line, where, f"lock {text!r}: start must be before end")
        else:
            out.append(str(lock))
    return out


def _read_references(node: Node, where: str, base: Path, clip_ids: list[str], check: _Checker) -> dict[str, Path]:
    """One .npz for every clip, or a mapping clip id -> .npz (every clip needs one)."""
    from .beat2 import MotionFileError, read_beat2

    if isinstance(node.value, dict):
        entries = {k: v for k, v in node.value.items()}
        for clip_id, line in node.key_lines.items():
            if clip_id not in clip_ids:
                check.fail(line, where, f"unknown clip {clip_id!r}; clips are {', '.join(clip_ids)}")
        missing = [c for c in clip_ids if c not in entries]
        if missing:
            check.fail(node.line, where, f"no reference motion for clip(s) {', '.join(missing)}")
    else:
        entries = {c: node for c in clip_ids}
    out, checked = {}, {}
    for clip_id, value in entries.items():
        given = check.text(value, where)
        if given is None or clip_id not in clip_ids:
            continue
        file = (base / Path(given).expanduser()).resolve()
        if file not in checked:
            if not file.is_file():
                checked[file] = f"reference motion not found: {file}"
            else:
                try:
                    read_beat2(file)
                    checked[file] = None
                except MotionFileError as e:
                    checked[file] = f"not a usable BEAT2 motion: {e}"
            if checked[file]:
                check.fail(value.line, where, checked[file])
        if not checked[file]:
            out[clip_id] = file
    return out


def _read_style(node: Node, where: str, check: _Checker):
    """``style: sadness`` or ``style: {preset: sadness, intensity: 0.8, amplitude: 1.2, ...}`` -> StyleControls."""
    try:
        from . import style as style_mod
    except ImportError as e:
        check.fail(node.line, where, f"style edits need emage_core.style, which cannot be imported here ({e})")
        return None
    if isinstance(node.value, str):
        node = Node({"preset": node}, node.line, {"preset": node.line})
    allowed = ("preset", "intensity", *style_mod.CONTROL_RANGES)
    if not check.mapping(node, where, allowed):
        return None
    n_before = len(check.problems)
    base = style_mod.NEUTRAL
    if node.get("preset") is not None:
        p = node.get("preset")
        name = check.text(p, f"{where}.preset")
        intensity = 1.0
        if node.get("intensity") is not None:
            intensity = check.number(node.get("intensity"), f"{where}.intensity")
        if name is not None and str(name).lower() not in style_mod.PRESETS:
            close = difflib.get_close_matches(name.lower(), list(style_mod.PRESETS), n=1)
            check.fail(p.line, f"{where}.preset", f"unknown preset {name!r}"
                       + (f" (did you mean {close[0]!r}?)" if close else "")
                       + f"; presets are {', '.join(style_mod.PRESETS)}")
        elif name is not None and intensity is not None:
            try:
                base = style_mod.preset(name, intensity)
            except style_mod.StyleError as e:
                check.fail((node.get("intensity") or p).line, f"{where}.intensity", str(e))
    elif node.get("intensity") is not None:
        check.fail(node.get("intensity").line, f"{where}.intensity", "an intensity needs a preset")
    controls = {}
    for key in style_mod.CONTROL_RANGES:
        if node.get(key) is None:
            continue
        value = node.get(key).value
        try:
            style_mod.StyleControls(**{key: value})  # checks the type and the range of this one control
            controls[key] = float(value)
        except style_mod.StyleError as e:
            check.fail(node.get(key).line, f"{where}.{key}", str(e))
    if len(check.problems) > n_before:
        return None
    try:
        return dataclasses.replace(base, **controls)
    except style_mod.StyleError as e:
        check.fail(node.line, where, str(e))
        return None


def _read_render(node: Node | None, check: _Checker) -> RenderSettings:
    if node is None:
        return RenderSettings()
    if not check.mapping(node, "render", RENDER_KEYS):
        return RenderSettings()
    values = {}
    if node.get("view"):
        values["view"] = check.choice(node.get("view"), "render.view", RENDER_VIEWS)
    if node.get("renderer"):
        values["renderer"] = check.choice(node.get("renderer"), "render.renderer", RENDERERS)
    if node.get("size"):
        size = check.integer(node.get("size"), "render.size", 64, 1024)
        if size is not None and size % 2:
            check.fail(node.get("size").line, "render.size", f"must be even (video encoders need it), got {size}")
        values["size"] = size
    for key in ("show_labels", "audio"):
        if node.get(key) is not None:
            values[key] = check.boolean(node.get(key), f"render.{key}")
    return RenderSettings(**{k: v for k, v in values.items() if v is not None})


def _read_layouts(node: Node | None, conditions: dict[str, Condition], listed: set, check: _Checker
                  ) -> tuple[list[str], list[tuple[str, str]]]:
    """``singles: true | false | [names]`` (default true) and ``pairs: [[A, B], ...]`` (default none).

    ``listed``: every condition name written in the manifest, including those with problems of their
    own (already reported), so a layout naming one of them is not also called unknown.
    """
    names = list(conditions)
    if node is None:
        return names, []
    if not check.mapping(node, "layouts", LAYOUT_KEYS):
        return names, []

    def known(item: Node, where: str) -> str | None:
        name = check.text(item, where)
        if name is not None and name not in conditions:
            if name not in listed:
                close = difflib.get_close_matches(name, names, n=1)
                check.fail(item.line, where, f"unknown condition {name!r}"
                           + (f" (did you mean {close[0]!r}?)" if close else "")
                           + f"; conditions are {', '.join(names) or 'none'}")
            return None
        return name

    singles = names
    s = node.get("singles")
    if s is not None:
        if isinstance(s.value, bool):
            singles = names if s.value else []
        elif isinstance(s.value, list):
            singles = [n for n in (known(item, "layouts.singles") for item in s.value) if n]
        else:
            check.fail(s.line, "layouts.singles", "expected true, false or a list of condition names")
    pairs: list[tuple[str, str]] = []
    p = node.get("pairs")
    if p is not None:
        if not isinstance(p.value, list):
            check.fail(p.line, "layouts.pairs", "expected a list of [condition, condition] pairs")
            return singles, pairs
        seen: dict[frozenset, int] = {}
        for i, item in enumerate(p.value):
            where = f"layouts.pairs[{i}]"
            if not isinstance(item.value, list) or len(item.value) != 2:
                check.fail(item.line, where, "expected two condition names, e.g. [neutral, sad]")
                continue
            a, b = (known(x, where) for x in item.value)
            if a is None or b is None:
                continue
            if a == b:
                check.fail(item.line, where, f"compares {a!r} with itself")
            elif frozenset((a, b)) in seen:
                first = seen[frozenset((a, b))]
                check.fail(item.line, where, f"the pair {a}/{b} is listed twice (first on line {first})")
            elif len(conditions[a].seeds) != len(conditions[b].seeds):
                check.fail(item.line, where, f"{a!r} has {len(conditions[a].seeds)} seeds and {b!r} has "
                           f"{len(conditions[b].seeds)}: paired conditions need as many (the i-th seeds are compared)")
            else:
                seen[frozenset((a, b))] = item.line
                pairs.append((a, b))
    return singles, pairs


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
    """The counterbalancing rule (see the module docstring): is the pair's first-listed condition left?"""
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
def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def sha256_json(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class ModelInfo:
    """A resolved checkpoint: what tasks load, and what it is (sha256 of every file)."""

    load_source: str  # folder path or Hub repo id, as tasks pass it to from_pretrained
    revision: str | None  # for the Hub: the commit hash of the snapshot, so every task loads the same
    provenance: dict  # source, kind, revision, files {relative path: sha256}


@dataclass
class Inputs:
    manifest_sha256: str
    speech: dict[str, dict]  # clip id -> {"file", "sha256", "seconds"}
    references: dict[str, str]  # absolute path -> sha256
    models: dict[str, ModelInfo]  # condition name -> model


def model_info(source: str | None, revision: str | None) -> ModelInfo:
    """Resolve a checkpoint (downloading a Hub repo if needed) and hash its files, without loading it."""
    from . import hub

    resolved = hub.resolve_source(source, revision)
    files = {}
    for sub in ("", *hub.SUBMODEL_FOLDERS.values()):
        folder = resolved.folder / sub
        weights = next((n for n in hub.WEIGHTS_NAMES if (folder / n).is_file()), None)
        if weights is None or not (folder / hub.CONFIG_NAME).is_file():
            raise hub.WeightsError(f"{folder}: expected {hub.CONFIG_NAME} and {' or '.join(hub.WEIGHTS_NAMES)}")
        for name in (hub.CONFIG_NAME, weights):
            files[str(PurePosixPath(sub) / name) if sub else name] = sha256_file(folder / name)
    provenance = {"source": resolved.source, "kind": resolved.kind, "revision": resolved.revision,
                  "files": dict(sorted(files.items()))}
    load = resolved.source if resolved.kind == "hub" else str(resolved.folder)
    return ModelInfo(load, resolved.revision if resolved.kind == "hub" else None, provenance)


def hash_inputs(study: Study) -> Inputs:
    """sha256 of every input; resolves every model. Raises `StudyError` (with the model's line) if one fails."""
    from .audio import probe_audio
    from .hub import WeightsError

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
        "reference_sha256": inputs.references[str(ref)] if ref else None,
        "style": _style_dict(cond.style),
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


def _style_dict(controls) -> dict | None:
    return None if controls is None else dataclasses.asdict(controls)


# ================================================================================================
# Tasks: pure functions, bytes in and bytes out, so they run the same in-process or on a Ray worker
# ================================================================================================
_GENERATORS: "OrderedDict[tuple, Any]" = OrderedDict()  # per process: each model is loaded once
_MAX_LOADED = 2


def _generator(source: str, revision: str | None, device: str | None):
    from .pipeline import EmageGenerator

    key = (source, revision, device)
    if key not in _GENERATORS:
        while len(_GENERATORS) >= _MAX_LOADED:
            _GENERATORS.popitem(last=False)
        _GENERATORS[key] = EmageGenerator.from_pretrained(source, revision=revision, device=device)
    _GENERATORS.move_to_end(key)
    return _GENERATORS[key]


def generate_motion(task: dict, speech: bytes, reference: bytes | None) -> dict[str, bytes]:
    """Generate one motion. Returns ``{"npz": BEAT2 .npz bytes, "json": provenance side-car bytes}``."""
    from .beat2 import beat2_arrays, npz_bytes, read_beat2
    from .locks import Lock

    gen = _generator(task["model"], task["revision"], task["device"])
    locks = [Lock.parse(text) for text in task["locks"]]
    ref = None
    if reference is not None:
        ref = read_beat2(reference)
        if ref.fps != 30:
            ref = ref.resample(30)
    clip = gen.generate(speech, seed=task["seed"], variants=1, temperature=task["temperature"], locks=locks,
                        reference=ref, crossfade=task["crossfade"])[0]
    if clip.meta["weights"]["files"] != task["weights"]:
        # e.g. a Ray node whose copy of a checkpoint folder differs from the driver's
        raise RuntimeError(f"the weights loaded from {task['model']} differ from the ones hashed before the run")
    if task["style"] is not None:
        from .style import StyleControls, apply_style

        meta = clip.meta
        clip = apply_style(clip, StyleControls(**task["style"]), locks=locks)
        clip.meta = {**meta, **clip.meta}
    meta = {**clip.meta, "study": task["study"]}
    return {"npz": npz_bytes(beat2_arrays(clip)),
            "json": (json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n").encode()}


def render_stimulus(task: dict, motions: list[bytes], speech: bytes | None) -> bytes:
    """Render one stimulus (one motion, or two side by side) to mp4 bytes."""
    from .audio import load_audio
    from .beat2 import read_beat2
    from .render import render_grid

    clips = [read_beat2(m) for m in motions]
    audio = load_audio(speech, min_seconds=0.0) if speech is not None else None
    with tempfile.TemporaryDirectory(prefix="emage_stim_") as tmp:
        out = Path(tmp) / "stimulus.mp4"
        render_grid(clips, out, audio=audio, labels=task["labels"], show_labels=task["labels"] is not None,
                    view=task["view"], size=task["size"], renderer=task["renderer"], write_cells=False)
        return out.read_bytes()


# ================================================================================================
# Backends: where tasks run. The runner submits tasks and collects them as they finish.
# ================================================================================================
class LocalBackend:
    """Runs tasks in this process, one at a time, in submission order."""

    name = "local"

    def __init__(self, device: str | None = None, threads: int | None = None):
        self.motion_device = device  # None: cuda when available (`EmageGenerator`'s default)
        self._queue: "OrderedDict[int, tuple]" = OrderedDict()
        self._threads = threads
        self._old_threads = None

    def __enter__(self):
        if self._threads:
            import torch

            self._old_threads = torch.get_num_threads()
            torch.set_num_threads(self._threads)
        return self

    def __exit__(self, *exc):
        if self._old_threads:
            import torch

            torch.set_num_threads(self._old_threads)

    def share(self, data: bytes) -> bytes:
        """Data that many tasks take (speech): here simply the bytes themselves."""
        return data

    def submit(self, ticket: int, kind: str, fn: Callable, *args) -> None:
        self._queue[ticket] = (fn, args)

    def pending(self) -> int:
        return len(self._queue)

    def next_done(self) -> tuple[int, Any, BaseException | None]:
        ticket, (fn, args) = self._queue.popitem(last=False)
        try:
            return ticket, fn(*args), None
        except Exception as e:  # one failed item must not stop the others
            return ticket, None, e


class RayBackend:
    """Runs tasks on a Ray cluster: motions on GPUs where the cluster has them, renders on CPUs.

    Connects to ``address`` (or ``$RAY_ADDRESS``), else starts a local instance (stopped at the end).
    If Ray is already initialised in this process, that instance is used as it is.
    """

    name = "ray"

    def __init__(self, address: str | None = None, device: str | None = None, num_cpus: int | None = None):
        try:
            import ray
        except ImportError:
            raise RuntimeError("--backend ray needs Ray: pip install 'ray>=2.9'") from None
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            address = address or os.environ.get("RAY_ADDRESS")
            if address:
                # The nodes need emage_core importable and local checkpoint folders at the same paths.
                ray.init(address=address, log_to_driver=False)
            else:
                # Workers start in their own folder: make this copy of emage_core importable there.
                code = str(Path(__file__).resolve().parents[1])
                path = os.pathsep.join(p for p in (code, os.environ.get("PYTHONPATH")) if p)
                ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                         runtime_env={"env_vars": {"PYTHONPATH": path}})
            self.started = True
        gpus = ray.cluster_resources().get("GPU", 0)
        self.motion_device = device or ("cuda" if gpus >= 1 else "cpu")
        motion_options = {"num_gpus": 1} if gpus >= 1 and self.motion_device != "cpu" else {"num_cpus": 1}
        self._remote = {"motion": ray.remote(generate_motion).options(**motion_options, max_retries=1),
                        "stimulus": ray.remote(render_stimulus).options(num_cpus=1, max_retries=1)}
        self._refs: dict[Any, int] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for ref in self._refs:  # interrupted: don't leave tasks running
            self.ray.cancel(ref, force=True)
        if self.started:
            self.ray.shutdown()

    def share(self, data: bytes):
        """Data that many tasks take (speech): stored once in the object store, passed by reference."""
        return self.ray.put(data)

    def submit(self, ticket: int, kind: str, fn: Callable, *args) -> None:
        self._refs[self._remote[kind].remote(*args)] = ticket

    def pending(self) -> int:
        return len(self._refs)

    def next_done(self) -> tuple[int, Any, BaseException | None]:
        (ref,), _ = self.ray.wait(list(self._refs), num_returns=1)
        ticket = self._refs.pop(ref)
        try:
            return ticket, self.ray.get(ref), None
        except self.ray.exceptions.RayTaskError as e:
            return ticket, None, e.cause if isinstance(e.cause, BaseException) else e
        except self.ray.exceptions.RayError as e:  # a worker died, a task was cancelled
            return ticket, None, e


# ================================================================================================
# Files: atomic writes and per-item records
# ================================================================================================
def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    """Run (or resume) the study in ``manifest`` into ``out_dir``; see the module docstring.

    backend: ``"local"`` (this process) or ``"ray"`` (``address`` / ``$RAY_ADDRESS``, else a local
    instance with ``num_cpus``). device: for generation (default: cuda when available). threads:
    torch CPU threads for local generation. dry_run: check everything and report what would run.
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
        if backend == "local":
            runner = LocalBackend(device=device, threads=threads)
        elif backend == "ray":
            runner = RayBackend(address=address, device=device, num_cpus=num_cpus)
        else:
            raise ValueError(f"backend must be local or ray, got {backend!r}")
        with runner:
            result = _Run(study, inputs, plan, out, runner, progress).run()
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

    def __init__(self, study: Study, inputs: Inputs, plan: Plan, out: Path, backend, progress: bool):
        self.study, self.inputs, self.plan, self.out, self.backend = study, inputs, plan, out, backend
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
                spec = motion_spec(self.study, self.inputs, m)
                spec_hash = sha256_json(spec)
                rec = self.records.finished(m.key, spec_hash)
                if rec:
                    self._finish(m, rec, reused=True)
                else:
                    self._submit("motion", m, spec, spec_hash)
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
    def _submit(self, kind: str, item, spec: dict, spec_hash: str) -> None:
        self.records.forget(item.key)  # its old outputs no longer match: never leave them looking finished
        ticket, self.next_ticket = self.next_ticket, self.next_ticket + 1
        self.tickets[ticket] = (kind, item, spec, spec_hash)
        if kind == "motion":
            self.backend.submit(ticket, kind, generate_motion, *self._motion_task(item))
        else:
            self.backend.submit(ticket, kind, render_stimulus, *self._stimulus_task(item, spec))

    def _motion_task(self, m: MotionItem) -> tuple:
        cond = self.study.conditions[m.condition]
        model = self.inputs.models[cond.name]
        ref = cond.references.get(m.clip)
        task = {"model": model.load_source, "revision": model.revision, "device": self.backend.motion_device,
                "weights": model.provenance["files"], "seed": m.seed, "temperature": cond.temperature,
                "locks": cond.locks, "crossfade": cond.crossfade, "style": _style_dict(cond.style),
                "study": {"clip": m.clip, "condition": m.condition}}
        return task, self.speech(m.clip), (ref.read_bytes() if ref else None)

    def _stimulus_task(self, s: Stimulus, spec: dict) -> tuple:
        r = self.study.render
        task = {"labels": spec["labels"], "view": r.view, "size": r.size, "renderer": r.renderer}
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
                spec = stimulus_spec(self.study, self.inputs, s, self.motion_sha)
                spec_hash = sha256_json(spec)
                rec = self.records.finished(s.key, spec_hash)
                if rec:
                    self._finish(s, rec, reused=True)
                else:
                    self._submit("stimulus", s, spec, spec_hash)
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
            from .style import describe

            from_style = describe(c.style)
        conditions[c.name] = {
            "model": inputs.models[c.name].provenance["source"], "seeds": c.seeds, "temperature": c.temperature,
            "locks": c.locks, "crossfade": c.crossfade,
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
# Command line
# ================================================================================================
def add_batch_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``batch`` on the CLI's subparsers (see `emage_core.cli`)."""
    p = subparsers.add_parser(
        "batch", help="generate study stimuli from a manifest (anonymized, counterbalanced, resumable)",
        description="Generate the stimuli of a perception study from a YAML manifest: motions (BEAT2 .npz), "
                    "single and side-by-side videos with anonymous names, a key CSV and a manifest JSON with "
                    "sha256 of every input and output. Rerunning skips finished items. "
                    "Example: python -m emage_core batch examples/study.yaml -o study_out")
    p.add_argument("manifest", help="the study manifest (YAML); see examples/study.yaml")
    p.add_argument("-o", "--output", required=True, help="output folder (created; rerun into it to resume)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: in this process (default); ray: spread items over a Ray cluster")
    p.add_argument("--address", default=None,
                   help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray instance is started)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--device", default=None,
                   help="generation device: cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for local generation (default: torch's)")
    p.add_argument("--dry-run", action="store_true", help="check the manifest and inputs, print what would run, stop")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_batch)
    return p


def cmd_batch(args: argparse.Namespace) -> int:
    """Exit codes: 0 all items finished; 1 some failed (the others finished); 2 bad manifest or inputs."""
    try:
        result = run_study(args.manifest, args.output, backend=args.backend, address=args.address,
                           device=args.device, threads=args.threads, num_cpus=args.num_cpus,
                           dry_run=args.dry_run, progress=not args.quiet)
    except StudyError as e:
        print(f"error: the study manifest has {len(e.problems)} problem(s); nothing was generated:", file=sys.stderr)
        for line in str(e).splitlines():
            print(f"  {line}", file=sys.stderr)
        return 2
    print(summary(result, dry_run=args.dry_run))
    return 0 if result.ok else 1


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
