"""Model families and model references: ``FAMILY[:SOURCE]`` names a model everywhere.

    emage                           the family's default (its bundled checkpoint, or $EMAGE_REPO_ID)
    emage:H-Liu1997/emage_audio     a Hugging Face Hub repo
    emage:path/to/folder            a local folder in the family's layout (command line and Python only)
    emage:local:NAME                a checkpoint an operator lists under $EMAGE_CHECKPOINT_DIRS (the app)

The app's older values keep working: ``bundled`` = ``emage``, ``hub:X`` = ``emage:X``, ``local:NAME`` =
``emage:local:NAME``. Where references come from users (the app), ``allow_paths=False``: a source is
then a Hub repo id or a listed local name, never a path on the server.

Families register themselves (`register`); plugins are named in ``$EMAGE_STUDIO_GENERATORS``
(``module:Class``, comma-separated) or in the ``emage_studio.generators`` entry-point group, so a new
family needs no change to the app, the command line or batch code.
"""
from __future__ import annotations

import importlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from ..models import hub

DEFAULT_FAMILY = "emage"
CHECKPOINT_DIRS_ENV = "EMAGE_CHECKPOINT_DIRS"
PLUGINS_ENV = "EMAGE_STUDIO_GENERATORS"
ENTRY_POINT_GROUP = "emage_studio.generators"
LOCAL = "local:"
# Built-in families, imported only when used (torch and the networks are heavy).
_BUILTIN = {"emage": "emage_core.generate.emage:EmageGenerator",
            "diffsheg": "emage_core.generate.diffsheg:DiffshegGenerator",
            "emotiongesture": "emage_core.generate.emotiongesture:EmotionGestureGenerator"}
_FAMILIES: dict[str, object] = {}  # name -> class, or "module:Class" not yet imported


class ModelRefError(ValueError):
    """A model reference that names no model: says what is accepted."""


def register(cls, name: str | None = None) -> None:
    """Make a generator class available as family ``name`` (default: ``cls.family``)."""
    _FAMILIES[name or cls.family] = cls


def _discover() -> None:
    if _FAMILIES:
        return
    _FAMILIES.update(_BUILTIN)
    for spec in filter(None, (s.strip() for s in os.environ.get(PLUGINS_ENV, "").split(","))):
        module, _, attr = spec.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        _FAMILIES[cls.family] = cls
    try:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            _FAMILIES.setdefault(ep.name, ep.value)
    except Exception:  # a broken third-party entry point must not stop the studio
        pass


def families() -> list[str]:
    """Registered family names, the default first."""
    _discover()
    return sorted(_FAMILIES, key=lambda f: (f != DEFAULT_FAMILY, f))


def family_class(name: str):
    _discover()
    if name not in _FAMILIES:
        raise ModelRefError(f"unknown model family {name!r}; known: {', '.join(families())}")
    cls = _FAMILIES[name]
    if isinstance(cls, str):
        module, _, attr = cls.partition(":")
        cls = _FAMILIES[name] = getattr(importlib.import_module(module), attr)
    return cls


# -- local checkpoints an operator lists ---------------------------------------------------------
def checkpoint_roots() -> list[Path]:
    """Folders an operator allows local checkpoints from (``$EMAGE_CHECKPOINT_DIRS``, ':'-separated)."""
    return [Path(p).resolve() for p in os.environ.get(CHECKPOINT_DIRS_ENV, "").split(os.pathsep) if p]


def checkpoint_family(folder: Path) -> str:
    """The family a checkpoint folder belongs to: its config's ``family``, else EMAGE (the released layout)."""
    try:
        return json.loads((folder / "config.json").read_text()).get("family") or DEFAULT_FAMILY
    except (OSError, ValueError, AttributeError):
        return DEFAULT_FAMILY


def local_checkpoints() -> dict[str, Path]:
    """Checkpoint folders under the allowed roots, by folder name (the first root wins a name)."""
    found: dict[str, Path] = {}
    for root in checkpoint_roots():
        if root.is_dir():
            for d in sorted(root.iterdir()):
                if (d / "config.json").is_file():
                    found.setdefault(d.name, d)
    return found


# -- references ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference. ``kind``: default | hub | local (listed name) | path (a folder)."""

    family: str
    kind: str
    source: str = ""

    @property
    def label(self) -> str:
        """The canonical spelling, as outputs record it."""
        if self.kind == "default":
            return self.family
        if self.kind == "local":
            return f"{self.family}:{LOCAL}{self.source}"
        return f"{self.family}:{self.source}"

    def load_source(self):
        """What the family's ``from_pretrained`` takes: None, a Hub repo id, or a folder."""
        if self.kind == "default":
            return None
        if self.kind == "hub":
            return hub.HubRepo(self.source)
        if self.kind == "local":
            return local_checkpoints()[self.source]
        return self.source

    def __str__(self) -> str:
        return self.label


def parse_ref(text: str | None, *, allow_paths: bool = True) -> ModelRef:
    """``FAMILY[:SOURCE]`` (or the app's older values) -> `ModelRef`; ModelRefError if it names nothing."""
    if text is None or str(text).strip() in ("", "default"):
        return ModelRef(DEFAULT_FAMILY, "default")
    text = str(text).strip()
    if text == "bundled":
        return ModelRef(DEFAULT_FAMILY, "default")
    if text.startswith("hub:"):
        text = f"{DEFAULT_FAMILY}:{text[4:]}"
    elif text.startswith(LOCAL):
        text = f"{DEFAULT_FAMILY}:{text}"
    family, sep, source = text.partition(":")
    if family not in families():
        if allow_paths and not sep:  # a bare folder or repo id means the default family's (--weights style)
            family, source = DEFAULT_FAMILY, text
        else:
            raise ModelRefError(f"unknown model {text!r}: use FAMILY[:SOURCE] with a family of "
                                f"{', '.join(families())} (e.g. 'emage', 'emage:owner/name')")
    family_class(family)
    if not source:
        return ModelRef(family, "default")
    if source.startswith(LOCAL):
        name = source[len(LOCAL):]
        if name not in local_checkpoints():
            raise ModelRefError(f"unknown local checkpoint {name!r}; listed: {', '.join(local_checkpoints()) or 'none'}")
        return ModelRef(family, "local", name)
    if allow_paths and Path(source).expanduser().exists():
        return ModelRef(family, "path", source)
    try:
        hub.validate_repo_id(source)
    except hub.HFValidationError:
        hint = "" if allow_paths else " (paths on the server are not accepted here)"
        raise ModelRefError(f"model {text!r}: {source!r} is neither a Hugging Face repo id ('owner/name') "
                            f"nor a folder{hint}") from None
    if "/" not in source:
        raise ModelRefError(f"model {text!r}: a Hub repo id has the form 'owner/name'")
    return ModelRef(family, "hub", source)


def load(ref: str | ModelRef | None, *, revision: str | None = None, device: str | None = None,
         allow_paths: bool = True):
    """Load the generator a reference names; its ``model_id`` becomes the reference's label."""
    ref = ref if isinstance(ref, ModelRef) else parse_ref(ref, allow_paths=allow_paths)
    gen = family_class(ref.family).from_pretrained(ref.load_source(), revision=revision, device=device)
    gen.model_id = ref.label
    return gen


_LOADED: "OrderedDict[tuple, object]" = OrderedDict()  # per process: (label, revision, device) -> generator


def load_cached(ref: str | ModelRef | None, *, revision: str | None = None, device: str | None = None,
                max_loaded: int = 4):
    """`load`, keeping the ``max_loaded`` most recently used generators of this process in memory
    (the app's worker and batch tasks load each model once)."""
    ref = ref if isinstance(ref, ModelRef) else parse_ref(ref)
    key = (ref.label, revision, device)
    if key not in _LOADED:
        while len(_LOADED) >= max_loaded:
            _LOADED.popitem(last=False)  # the least recently used
        _LOADED[key] = load(ref, revision=revision, device=device)
    _LOADED.move_to_end(key)
    return _LOADED[key]


def _has_default(cls) -> bool:
    """Whether ``FAMILY`` alone loads something: no files needed, a Hub id, or a bundled folder that is there."""
    source = cls.default_source()
    return not isinstance(source, Path) or source.is_dir()


def choices() -> list[tuple[str, str]]:
    """(label, reference) for a model selector: each family's default, official Hub weights, listed folders."""
    out = []
    for name in families():
        cls = family_class(name)
        if _has_default(cls):
            out.append((f"{getattr(cls, 'display_name', name)}: bundled default", name))
        for repo in getattr(cls, "hub_repos", lambda: ())():
            out.append((f"{getattr(cls, 'display_name', name)}: {repo} (Hugging Face Hub)", f"{name}:{repo}"))
    for local_name, folder in local_checkpoints().items():
        family = checkpoint_family(folder)
        out.append((f"{family}: local checkpoint {local_name}", f"{family}:{LOCAL}{local_name}"))
    return out
