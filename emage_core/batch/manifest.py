"""The study manifest: YAML read with line numbers, every value checked, the `Study` it describes.

`load_study` reads a manifest and returns a `Study`, or raises `StudyError` listing every problem with
its line (the schema is in the package docstring, `emage_core.batch`).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..generate.settings import MAX_VARIANTS
from ..models.emage.windows import DEFAULT_OVERLAP, max_overlap
from ..body import BODIES, SMPLX_ENV, available_bodies
from ..render import RENDERERS
from ..render import VIEWS as RENDER_VIEWS

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
TOP_KEYS = ("study", "seed", "speech", "defaults", "conditions", "render", "layouts")
CONDITION_KEYS = ("name", "model", "revision", "seeds", "variants", "temperature", "crossfade", "guidance_scale", "locks",
                  "reference", "style", "overlap")
RENDER_KEYS = ("view", "size", "renderer", "body", "show_labels", "audio")
LAYOUT_KEYS = ("singles", "pairs")


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
    style: Any = None  # emage_core.edit.style.StyleControls or None
    overlap: int = DEFAULT_OVERLAP  # frames crossfaded between generation windows (0 = the reference's)
    guidance_scale: float | None = None  # DiffSHEG's sampler guidance (None: the checkpoint's default)


@dataclass(frozen=True)
class RenderSettings:
    view: str = "full"
    size: int = 256
    renderer: str = "mesh"
    body: str = "anny"  # anny | mannequin | smplx (the official mesh: needs $EMAGE_SMPLX_MODEL)
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
    from ..audio import DEFAULT_MAX_SECONDS, DEFAULT_MIN_SECONDS, AudioError, probe_audio

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
    overlap = check.integer(value("overlap"), f"{where}.overlap", 0, max_overlap()) \
        if value("overlap") is not None else DEFAULT_OVERLAP
    guidance_scale = check.number(value("guidance_scale"), f"{where}.guidance_scale") \
        if value("guidance_scale") is not None else None
    if guidance_scale is not None and not 0 <= guidance_scale <= 10:
        check.fail(value("guidance_scale").line, f"{where}.guidance_scale", f"must be 0-10, got {guidance_scale}")

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
                     references=references if locks else {}, style=style, overlap=overlap,
                     guidance_scale=guidance_scale)


def _read_model(node: Node | None, where: str, base: Path, check: _Checker) -> tuple[str | None, int]:
    """A model reference ``FAMILY[:SOURCE]`` (a relative folder is relative to the manifest), or the app's
    spellings (``default``, ``bundled``, ``hub:owner/name``) or a bare folder / Hub repo id (EMAGE's)."""
    from ..generate.registry import DEFAULT_FAMILY, ModelRefError, families, parse_ref

    if node is None or node.value is None:
        return None, node.line if node else 0
    text = check.text(node, where)
    if text is None or text == "default":
        return None, node.line
    family, sep, source = text.partition(":")
    if text in families() or text == "bundled" or family in ("hub", "local"):
        spelled = text  # a family's default, or the app's spellings
    else:
        if not (sep and family in families()):
            family, source = DEFAULT_FAMILY, text  # a bare folder or Hub repo id: EMAGE's
        folder = (base / Path(source).expanduser()).resolve()
        if folder.is_dir():
            if not (folder / "config.json").is_file():
                check.fail(node.line, where, f"{folder} is not a checkpoint folder (no config.json)")
                return None, node.line
            source = str(folder)
        elif source.startswith(".") or "/" not in source:
            check.fail(node.line, where, f"{source!r} is neither a checkpoint folder (looked for {folder}) nor a Hub "
                                         "repo id (owner/name); use 'default' for the default model")
            return None, node.line
        spelled = f"{family}:{source}"
    try:
        ref = parse_ref(spelled)
    except ModelRefError as e:
        check.fail(node.line, where, str(e))
        return None, node.line
    return ref.label, node.line


def _read_locks(node: Node, where: str, check: _Checker) -> list[str]:
    from ..edit.locks import Lock, LockError
    from ..motion.skeleton import PARTS

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
    from ..motion.beat2 import MotionFileError, read_beat2

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
        from ..edit import style as style_mod
    except ImportError as e:
        check.fail(node.line, where, f"style edits need emage_core.edit.style, which cannot be imported here ({e})")
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
    if node.get("body"):
        values["body"] = check.choice(node.get("body"), "render.body", BODIES)
        if values["body"] is not None and values["body"] not in available_bodies():
            check.fail(node.get("body").line, "render.body",
                       f"smplx needs the official SMPL-X model files: set ${SMPLX_ENV} to their folder")
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
