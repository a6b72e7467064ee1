"""The generator interface every model family implements, and what a family can do.

    class MyGenerator(Generator):
        family = "mine"
        @classmethod
        def from_pretrained(cls, source=None, revision=None, device=None): ...
        @property
        def capabilities(self) -> Capabilities: ...
        def generate(self, speech, settings, progress=None) -> list[Motion]: ...

`generate` returns ``settings.variants`` clips of exactly ``floor(N * 30 / 16000)`` frames; parts the
family does not produce stay at rest (zero rotation, zero translation) and each clip's ``meta`` says
so (`parts_meta`). Register a family with `emage_core.generate.registry.register`.
"""
from __future__ import annotations

import abc
import hashlib
import os
import platform
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .. import __version__
from ..audio import DEFAULT_MAX_SECONDS, SAMPLE_RATE, load_audio
from ..motion.skeleton import PART_NAMES

Progress = Callable[[float, str], None]
"""``progress(fraction in [0, 1], message)``; a callback may raise to cancel."""

@dataclass(frozen=True)
class Capabilities:
    """What a loaded generator can do.

    parts: the parts it generates (of face, upper, hands, lower, global); the rest stay at rest.
    lock_parts: parts whose locks it honours by conditioning on them (EMAGE's masked modelling);
        locks of other parts are copied into its output.
    emotions / speakers: labels it learned (its config declares them); explicit edits work for any.
    streaming: it can generate speech that arrives in chunks (`Generator.stream`).
    live: it can hold a live session (`Generator.live`): each frame shown within a fraction of a second of
        its speech (DiffSHEG streams 2.6 s windows: streaming, not live).
    """

    parts: frozenset[str]
    lock_parts: frozenset[str] = frozenset()
    emotions: tuple[str, ...] = ()
    speakers: tuple[str, ...] = ()
    streaming: bool = False
    live: bool = False

    def missing_parts(self) -> list[str]:
        return [p for p in PART_NAMES if p not in self.parts]


class Generator(abc.ABC):
    """A loaded model of one family, ready to turn speech into `Motion` clips."""

    family: str = ""
    model_id: str = ""  # what it was loaded from (a reference, a repo id or a folder as given)
    provenance: dict[str, Any] = {}  # weights: source, revision, sha256 per file

    @classmethod
    @abc.abstractmethod
    def from_pretrained(cls, source: str | os.PathLike | None = None, revision: str | None = None,
                        device: str | None = None) -> "Generator":
        """Load from a local folder or a Hub repo id (``None``: the family's default)."""

    @property
    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        ...

    @abc.abstractmethod
    def generate(self, speech, settings, progress: Progress | None = None) -> list:
        """Speech (a path, bytes or a (N,) float32 16 kHz array) -> ``settings.variants`` `Motion` clips."""

    @property
    def emotions(self) -> tuple[str, ...]:
        return self.capabilities.emotions

    def live(self, settings=None, **options):
        """A `live.LiveStream` over speech that arrives in chunks (families with ``capabilities.live``)."""
        raise ValueError(f"the {self.family} family cannot generate live; live mode uses EMAGE")

    def stream(self, chunks, settings=None, **options):
        """``stream(chunks) -> motion chunks``: (n,) float32 16 kHz chunks in, `live.MotionChunk` s out, each
        continuing the previous one (here: through `live`; a family may stream differently)."""
        from .live import stream

        return stream(self.live(settings, **options), chunks)

    @classmethod
    def default_source(cls) -> str | os.PathLike | None:
        """What ``from_pretrained(None)`` loads (a folder or a Hub repo id); None if it needs no files."""
        return None

    @classmethod
    def checkpoint_provenance(cls, source, revision: str | None = None) -> tuple[Any, str | None, dict]:
        """Resolve a checkpoint without loading it: ``(what from_pretrained should load, the pinned
        revision, provenance with the sha256 of every config and weights file)``. A Hub repo is
        downloaded (or found in the cache) and pinned to its commit, so every batch task loads the same."""
        from ..models import hub

        source = cls.default_source() if source is None else source
        if source is None:
            return None, None, {"source": None, "kind": "none", "revision": None, "files": {}}
        resolved = hub.resolve_source(source, revision)
        files = {f.relative_to(resolved.folder).as_posix(): hub.sha256_file(f)
                 for f in sorted(resolved.folder.rglob("*")) if f.is_file() and _is_checkpoint_file(f.name)}
        provenance = {"source": resolved.source, "kind": resolved.kind, "revision": resolved.revision, "files": files}
        if resolved.kind == "hub":
            return hub.HubRepo(resolved.source), resolved.revision, provenance
        return str(resolved.folder), None, provenance


def _is_checkpoint_file(name: str) -> bool:
    return name == "config.json" or name.endswith((".safetensors", ".bin", ".npz", ".pt"))


def plan_expression(learned_labels, emotion: str | None, intensity: float = 1.0, overrides: dict | None = None):
    """How an emotion is expressed by a model that learned ``learned_labels``:
    ``(learned label or None, explicit `StyleControls` or None)``.

    A label the model learned conditions generation (learned); any other emotion becomes its explicit
    preset at ``intensity``. ``overrides`` (control name -> value) edit the explicit controls on top.
    """
    from dataclasses import replace

    from ..edit.style import NEUTRAL, preset

    learned = emotion if emotion and emotion in learned_labels else None
    controls = None
    if emotion and not learned and emotion != "neutral":
        controls = preset(emotion, intensity)
    if overrides:
        controls = replace(controls or NEUTRAL, **overrides)
    if controls is not None and controls.is_neutral:
        controls = None
    return learned, controls


def parts_meta(generated, completed_by: dict[str, str] | None = None) -> dict[str, Any]:
    """How a clip's parts came to be: generated by the model, completed by another, or left at rest."""
    completed_by = dict(completed_by or {})
    generated = [p for p in PART_NAMES if p in set(generated)]
    return {"generated": generated, "completed_by": completed_by,
            "at_rest": [p for p in PART_NAMES if p not in generated and p not in completed_by]}


def versions() -> dict[str, str]:
    """Software versions recorded in every output (no host details)."""
    import torch

    return {"emage_studio": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def default_device() -> str:
    """Where generation runs unless told otherwise: the GPU when there is one."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_checkpoint(source, revision: str | None, files, load: Callable, device=None) -> tuple[Any, dict, str]:
    """Find a checkpoint (a folder, or a Hub repo holding ``files``), read it with ``load(folder, device)``
    and record where it came from.

    Returns (the checkpoint, provenance: source, kind, pinned revision and the sha256 of each of ``files``,
    the model id). A folder that is not this family's checkpoint raises `hub.WeightsError`."""
    import torch

    from ..models import hub

    resolved = hub.resolve_source(source, revision, hub_files=list(files))
    try:
        ckpt = load(resolved.folder, torch.device(device or default_device()))
    except (FileNotFoundError, ValueError) as e:
        raise hub.WeightsError(str(e)) from None
    provenance = {"source": resolved.source, "kind": resolved.kind, "revision": resolved.revision,
                  "files": {name: hub.sha256_file(resolved.folder / name) for name in files}}
    return ckpt, provenance, str(resolved.source)


def load_speech(audio) -> tuple[np.ndarray, str]:
    """(N,) float32 16 kHz speech and the sha256 of what was given (file bytes or samples).

    audio: a path, the file's bytes, or a (N,) array already at 16 kHz (0.3 s to the length limit).
    """
    if isinstance(audio, (bytes, bytearray)):
        return load_audio(audio), hashlib.sha256(audio).hexdigest()
    if isinstance(audio, (str, os.PathLike)):
        wav = load_audio(audio)  # validates the file first: never hash a huge non-audio upload
        with open(audio, "rb") as fh:
            return wav, hashlib.file_digest(fh, "sha256").hexdigest()
    wav = np.ascontiguousarray(audio, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"audio array must be (N,) mono 16 kHz, got shape {wav.shape}")
    if wav.shape[0] < 0.3 * SAMPLE_RATE:
        raise ValueError(f"speech too short: {wav.shape[0] / SAMPLE_RATE:.2f} s, need at least 0.3 s")
    if wav.shape[0] > DEFAULT_MAX_SECONDS * SAMPLE_RATE:
        raise ValueError(f"speech too long: {wav.shape[0] / SAMPLE_RATE:.0f} s, the limit is {DEFAULT_MAX_SECONDS:.0f} s")
    if not np.isfinite(wav).all():
        raise ValueError("audio contains NaN or infinite samples")
    return wav, hashlib.sha256(wav.tobytes()).hexdigest()
