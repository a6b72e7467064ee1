"""What the page's controls do: validate input, queue the job on the worker, present the results.

Kept apart from the layout (`ui/blocks.py`) so the handlers can be tested without a browser. The
handlers take the page's inputs by name and return named results (``status``, ``grid``, ``cells``,
``files``, ``meta``, ``previous``, and ``viewer``: the speech and the .glb files for the 3D viewer,
yielded as soon as the motion exists, before the videos); `ui.blocks` maps names to components, so
nothing here depends on the order of the page's controls.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np

from emage_core.audio import SAMPLE_RATE, AudioError, load_audio
from emage_core.edit.locks import LockError, locks_from_rows, validate_locks
from emage_core.edit.style import CONTROL_RANGES, preset
from emage_core.generate import registry
from emage_core.generate.registry import ModelRefError, parse_ref
from emage_core.generate.settings import DiffshegOptions
from emage_core.models import hub
from emage_core.motion.beat2 import MotionFileError, read_beat2
from emage_core.motion.clip import DEFAULT_FPS
from emage_core.serve.jobs import MAX_VIDEOS, JobSettings, estimated_seconds
from emage_core.serve.outputs import Sweeper, scrub_paths
from emage_core.serve.worker import GenerationWorker, JobRequest, QueueFull

from .timeline import draw_timeline

logger = logging.getLogger(__name__)

#: The page's inputs and their initial values. The handlers take the same defaults, so an API call
#: with the speech alone generates what the page would.
DEFAULTS = dict(model=None, emotion="neutral", intensity=1.0, lock_rows=None, reference=None, use_previous=False,
                variants=1, seed=1, temperature=0.0, view="full", size=384, show_labels=True, renderer="mesh",
                body=None, guidance=1.0, complete_missing=False, compare_with=None, previous=None,
                sampler_guidance=None, sampler_repeats=None,
                **{name: None for name in CONTROL_RANGES})
CONTROLS = tuple(CONTROL_RANGES)  # the explicit controls' slider names, in order
MAX_MODELS = MAX_VIDEOS  # models in one comparison


# -- the model selector ----------------------------------------------------------------------------
def model_choices() -> list[tuple[str, str]]:
    """(label, model reference) for the model selector: every family's sources, never server paths."""
    return registry.choices()


def default_choice() -> str:
    """The selector's initial value: the Hub weights where an operator named a repo (the Space does),
    else the default family's bundled checkpoint, which works offline."""
    if os.environ.get(hub.REPO_ID_ENV):
        return f"{registry.DEFAULT_FAMILY}:{hub.default_repo_id()}"
    return registry.DEFAULT_FAMILY


def _ref(choice):
    try:
        return parse_ref(choice or default_choice(), allow_paths=False)
    except ModelRefError:
        return None


def model_emotions(choice: str) -> tuple[str, ...]:
    """Emotion labels a checkpoint learned, read from its config.json (the released weights have none)."""
    ref = _ref(choice)
    if ref is None or ref.kind == "hub":
        return ()  # a Hub model's labels are known once it is loaded; explicit edits work meanwhile
    source = ref.load_source()
    if source is None:
        source = getattr(registry.family_class(ref.family), "default_source", lambda: None)()
    config = Path(source) / "config.json" if source is not None and Path(source).is_dir() else None
    try:
        return tuple(json.loads(config.read_text()).get("emotion_labels") or ()) if config else ()
    except (OSError, ValueError):
        return ()


def emotion_note(choice: str, emotion: str) -> str:
    """Honest label of what the emotion selector does with the selected model."""
    if not emotion or emotion == "neutral":
        return "Neutral: no emotion conditioning, no edit (the sliders below still apply if you move them)."
    if emotion in model_emotions(choice):
        return f"**{emotion}**: learned conditioning (this model was trained with emotion labels)."
    return (f"**{emotion}**: explicit edit of the generated motion (preset from research on bodily expression "
            "of emotion; this model learned no emotions). Fine-tune it in the sliders below.")


def guidance_update(choice: str, emotion: str) -> dict:
    """The guidance slider works only for an emotion the selected model learned; elsewhere it rests at 1."""
    learned = bool(emotion) and emotion != "neutral" and emotion in model_emotions(choice)
    return gr.update(interactive=True) if learned else gr.update(interactive=False, value=1.0)


def model_info(choice: str) -> str:
    """Markdown telling which weights a choice loads, honestly, and which parts the family generates."""
    ref = _ref(choice)
    if ref is None:
        return f"Unknown model `{choice}`."
    cls = registry.family_class(ref.family)
    name = getattr(cls, "display_name", ref.family)
    if ref.kind == "default":
        text = f"**{name}, bundled default.** {getattr(cls, 'bundled_note', '')}"
    elif ref.kind == "hub":
        text = f"**{name}** weights `{ref.source}` from the Hugging Face Hub (downloaded on first use, then cached)."
    else:
        text = f"**{name}**, local checkpoint `{ref.source}`."
    parts = getattr(cls, "parts_generated", None)
    if parts is not None:
        text += (f" It generates {', '.join(parts)} only; the other parts stay at rest unless 'complete the "
                 "other parts with EMAGE' is ticked.")
    return text


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclass
class Studio:
    """Per-process app state: the worker, request folders and their retention, who holds which job.

    Limits (environment variables, read at start): ``EMAGE_STUDIO_RETENTION_S`` how long outputs are
    kept (3600), ``EMAGE_STUDIO_MAX_SPEECH_S`` (600), ``EMAGE_STUDIO_MAX_JOB_COST_S`` the estimated
    worker time one request may take (1200), ``EMAGE_STUDIO_JOBS_PER_CLIENT`` queued or running
    requests per client address (1).
    """

    worker: GenerationWorker
    root: Path = field(default_factory=lambda: Path(os.environ.get(
        "EMAGE_STUDIO_OUTPUTS", Path(tempfile.gettempdir()) / "emage_studio")))
    retention_s: float = field(default_factory=lambda: _env_float("EMAGE_STUDIO_RETENTION_S", 3600))
    max_speech_s: float = field(default_factory=lambda: _env_float("EMAGE_STUDIO_MAX_SPEECH_S", 600))
    max_job_cost_s: float = field(default_factory=lambda: _env_float("EMAGE_STUDIO_MAX_JOB_COST_S", 1200))
    jobs_per_client: int = field(default_factory=lambda: int(_env_float("EMAGE_STUDIO_JOBS_PER_CLIENT", 1)))
    cache_dir: Path | None = None  # a file cache this studio owns (the app's Gradio cache): swept too

    def __post_init__(self):
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._active: Counter = Counter()  # client -> queued or running requests
        self._results: dict[str, str] = {}  # served copy of a result motion -> the session it belongs to
        self._in_use: set[Path] = set()  # request folders of requests still waiting or running
        folders = [self.root] + ([Path(self.cache_dir)] if self.cache_dir else [])
        self.sweeper = Sweeper(folders, self.retention_s, keep=self._is_in_use).start()

    def _is_in_use(self, path: Path) -> bool:
        with self._lock:
            return path in self._in_use

    def limits_note(self) -> str:
        """The limits, stated up front on the page."""
        return (f"Limits: speech up to {self.max_speech_s / 60:g} min; {self.jobs_per_client} request(s) at a time "
                f"per user; a request may use about {self.max_job_cost_s / 60:g} min of the generation worker "
                f"(long speech x many videos x large mesh videos would take longer: use fewer, smaller or the stick "
                f"renderer). Results are kept {self.retention_s / 60:g} min.")

    # -- request folders ------------------------------------------------------------------
    def new_request_dir(self) -> Path:
        """A fresh private folder for one request."""
        d = self.root / uuid.uuid4().hex
        d.mkdir()
        return d

    def hold(self, path: Path) -> None:
        """Keep the sweeper away from a request folder while its request (or live session) runs."""
        with self._lock:
            self._in_use.add(path)

    def release(self, path: Path) -> None:
        with self._lock:
            self._in_use.discard(path)
        if path.exists():
            os.utime(path)  # the retention clock starts when the result is ready

    def clean_old(self) -> int:
        """Remove what is older than the retention time now (the sweeper also does it on a timer)."""
        return self.sweeper.sweep()

    def close(self) -> None:
        self.sweeper.stop()
        self.worker.close()

    # -- small handlers --------------------------------------------------------------------
    def timeline(self, speech: str | None, rows) -> tuple[np.ndarray, str]:
        """Redraw the timeline picture; a message when a row is malformed."""
        wav, duration, note = None, 10.0, ""
        if speech:
            try:
                wav = load_audio(speech, max_seconds=self.max_speech_s)
                duration = wav.shape[0] / SAMPLE_RATE
            except AudioError as e:
                note = f"Speech: {scrub_paths(str(e))}"
        try:
            locks = locks_from_rows(_rows(rows))
        except LockError as e:
            locks, note = [], str(e)
        over = [str(l) for l in locks if l.end > duration + 1e-9]
        if over and wav is not None:
            note = f"Beyond the end of the speech ({duration:.2f} s): {', '.join(over)}"
        return np.asarray(draw_timeline(locks, duration, wav)), note

    @staticmethod
    def preset_controls(emotion: str, intensity: float) -> list[float]:
        """The advanced sliders' values for an emotion preset at an intensity."""
        try:
            return list(preset(emotion or "neutral", float(intensity)).values().values())
        except ValueError as e:
            raise gr.Error(str(e)) from None

    # -- Generate, Emotion vs neutral, Compare models ------------------------------------------
    def generate(self, speech=None, *, request: gr.Request | None = None, progress=gr.Progress(), **inputs):
        """The page's inputs by name (see `DEFAULTS`) -> named results, yielded as the job progresses.

        The explicit controls (amplitude ... jaw_open) are the advanced panel's sliders, which start at
        the selected emotion's preset; values that differ from it are applied as explicit edits.
        """
        yield from self._request(speech, inputs, request, progress)

    def compare_neutral(self, speech=None, *, request: gr.Request | None = None, progress=gr.Progress(), **inputs):
        """The same request twice, with the selected emotion/style and without, side by side."""
        yield from self._request(speech, inputs, request, progress, compare_neutral=True)

    def compare_models(self, speech=None, *, request: gr.Request | None = None, progress=gr.Progress(), **inputs):
        """The selected model and those in ``compare_with`` on the same speech and seed, side by side."""
        if not inputs.get("compare_with"):
            raise gr.Error("Pick at least one model to compare with.")
        yield from self._request(speech, inputs, request, progress, compare_models=True)

    def _request(self, speech, inputs: dict, request, progress, compare_neutral=False, compare_models=False):
        unknown = set(inputs) - set(DEFAULTS)
        if unknown:
            raise gr.Error(f"unknown input(s): {', '.join(sorted(unknown))}")
        x = {**DEFAULTS, **{k: v for k, v in inputs.items() if v is not None or k in ("seed", "reference")}}
        if not speech:
            raise gr.Error("Please upload or record speech first.")
        session, client = _who(request)
        try:
            wav = load_audio(speech, max_seconds=self.max_speech_s)
            settings, ref_path = self._settings(x, wav, session, compare_neutral, compare_models)
        except (AudioError, MotionFileError, LockError, ModelRefError, ValueError) as e:
            raise gr.Error(scrub_paths(str(e))) from None
        cost = estimated_seconds(wav.shape[0] / SAMPLE_RATE, settings)
        if cost > self.max_job_cost_s:
            videos = settings.generation.variants * settings.conditions()
            raise gr.Error(
                f"This request would hold the generation worker for about {cost / 60:.0f} min "
                f"({wav.shape[0] / SAMPLE_RATE / 60:.1f} min of speech x {videos} video(s), {settings.size} px "
                f"{settings.renderer}); the limit is {self.max_job_cost_s / 60:g} min. Use fewer variants, a smaller "
                "video, the stick renderer or shorter speech.")
        with self._lock:
            if self._active[client] >= self.jobs_per_client:
                raise gr.Error(f"You already have {self._active[client]} request(s) queued or running (the limit is "
                               f"{self.jobs_per_client}): wait for it to finish, or cancel it.")
            self._active[client] += 1
        out_dir = self.new_request_dir()
        self.hold(out_dir)  # the sweeper leaves it alone until the request ends
        try:
            # The inputs move into the request's own folder: uploads in Gradio's cache age out on their
            # own clock, and a request may wait in the queue for longer than that.
            inputs = out_dir / "inputs"
            inputs.mkdir()
            speech_copy = shutil.copy2(speech, inputs / f"speech{Path(speech).suffix}")
            ref_copy = shutil.copy2(ref_path, inputs / "reference.npz") if ref_path else None
            yield from self._run(JobRequest(job_id=out_dir.name, speech=str(speech_copy), out_dir=str(out_dir),
                                            settings=settings, reference=ref_copy and str(ref_copy)), session, progress)
        except BaseException:
            shutil.rmtree(out_dir, ignore_errors=True)  # failed, cancelled or abandoned: leave nothing
            raise
        finally:
            self.release(out_dir)
            with self._lock:
                self._active[client] -= 1
                if not self._active[client]:
                    del self._active[client]

    def _settings(self, x: dict, wav, session: str, compare_neutral: bool, compare_models: bool):
        """Every input checked (the message names the setting and its range) before any work starts."""
        locks = locks_from_rows(_rows(x["lock_rows"]))
        ref_path = self._reference_path(x["reference"], bool(x["use_previous"]), x["previous"], session)
        if locks and not ref_path:
            raise LockError("locked parts need a reference motion: upload a BEAT2 .npz or tick "
                            "'use the previous result'")
        if ref_path:
            name = "the previous result" if x["use_previous"] else Path(x["reference"]).name
            ref = read_beat2(ref_path, name=name)
            validate_locks(locks, wav.shape[0] * DEFAULT_FPS // SAMPLE_RATE, ref.resample() if locks else None)
        else:
            validate_locks(locks, wav.shape[0] * DEFAULT_FPS // SAMPLE_RATE, None)
        emotion = x["emotion"] or "neutral"
        intensity = _number("intensity", x["intensity"])
        base = preset(emotion, intensity).values()  # an unknown emotion or intensity out of range: ValueError
        style = {k: _number(k, x[k]) for k in CONTROLS
                 if x[k] is not None and abs(_number(k, x[k]) - base[k]) > 1e-9}
        seed = x["seed"]
        seed = None if seed is None or _number("seed", seed) < 0 else _whole("seed", seed)
        others = [m for m in (x["compare_with"] or []) if m] if compare_models else []
        if len(others) >= MAX_MODELS:
            raise ValueError(f"compare at most {MAX_MODELS} models at once")
        settings = JobSettings.of(
            model=x["model"] or default_choice(), seed=seed, variants=_whole("variants", x["variants"]),
            temperature=_number("temperature", x["temperature"]), locks=locks, emotion=emotion, intensity=intensity,
            style=style, guidance=_number("guidance", x["guidance"]), view=x["view"], size=_whole("video size", x["size"]),
            show_labels=bool(x["show_labels"]), renderer=x["renderer"], body=x["body"], compare_neutral=compare_neutral,
            diffsheg=DiffshegOptions(
                guidance_scale=None if x["sampler_guidance"] is None else _number("sampler guidance", x["sampler_guidance"]),
                repeats=None if x["sampler_repeats"] is None else _whole("sampler repeats", x["sampler_repeats"])),
            compare_models=others, complete_with="emage" if x["complete_missing"] else None)
        return settings.validate(), ref_path

    def _reference_path(self, reference, use_previous: bool, previous, session: str) -> str | None:
        """The reference motion's path, refusing what is not this session's own upload or result."""
        if use_previous:
            ok = previous and Path(previous).is_file() and Path(previous).resolve().is_relative_to(self.root.resolve())
            if not ok:
                raise LockError("there is no previous result to lock to, or it has expired (results are kept "
                                f"{self.retention_s / 60:g} min): generate again, or upload a reference motion")
            return str(previous)
        if not reference:
            return None
        with self._lock:
            owner = self._results.get(str(Path(reference).resolve()))
        if owner is not None and owner != session:
            raise LockError(f"{Path(reference).name}: the reference must be a motion you uploaded or generated "
                            "in this session")
        return str(reference)

    def _run(self, req: JobRequest, session: str, progress):
        try:
            handle = self.worker.submit(req)
        except QueueFull as e:
            raise gr.Error(f"The studio is busy: {e}.") from None
        progress(0.0, desc="waiting for the generation worker")
        try:
            while True:  # a generator, so that Gradio's cancel closes it, which cancels the job
                event = handle.poll(1.0)
                if event is None:
                    ahead = handle.ahead()
                    yield {"status": f"Waiting: {ahead} request(s) ahead of yours" if ahead else "Working"}
                elif event.kind == "progress":
                    progress(event.fraction, desc=event.message)
                    yield {"status": f"Working: {event.message}"}
                elif event.kind == "motion":  # the 3D viewer plays it while the videos render
                    yield {"status": "Motion ready: playing in the 3D viewer; rendering the video(s)",
                           "viewer": [req.speech, *event.result]}
                elif event.kind == "error":
                    logger.warning("request %s failed: %s", req.job_id, event.message)
                    hint = (" The Hub may be unreachable: choose a bundled default to generate offline."
                            if any(m.kind == "hub" for m in req.settings.models()) else "")
                    raise gr.Error(f"Generation failed: {scrub_paths(event.message)}.{hint}")
                elif event.kind == "cancelled":
                    raise gr.Error("Cancelled.")
                else:
                    yield self._present(event.result, session)
                    return
        finally:
            handle.close()  # cancels the job unless it ended

    def _present(self, result, session: str) -> dict:
        videos = [str(p) for p in result.videos]
        files = [str(p) for p in (*result.motions, *result.bvhs, *result.glbs, *result.fbxs, result.metadata,
                                    result.archive)]
        self._remember(result.motions, session)
        meta = json.loads(result.metadata.read_text())
        models = sorted({m["model_id"] for m in meta["models"]})
        status = (f"Done: {len(videos)} video(s), {meta['frames']} frames, model(s) "
                  f"{', '.join(f'`{m}`' for m in models)}, seeds {meta['seeds']}.")
        # one video: the side-by-side player already shows it
        return {"status": status, "grid": str(result.grid), "cells": videos if len(videos) > 1 else [],
                "files": files, "meta": meta, "previous": str(result.motions[0])}

    def _remember(self, motions, session: str) -> None:
        """Where Gradio will serve copies of this session's motions, so no other session locks to them."""
        try:
            from gradio.processing_utils import hash_file
            from gradio.utils import get_upload_folder
        except ImportError:  # another Gradio: the request folders are still checked
            return
        cache = Path(get_upload_folder()).resolve()
        with self._lock:
            for m in motions:
                self._results[str(cache / hash_file(m) / Path(m).name)] = session
                self._results[str(Path(m).resolve())] = session


def _number(name: str, value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def _whole(name: str, value) -> int:
    number = _number(name, value)
    if not number.is_integer():
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(number)


def _who(request: gr.Request | None) -> tuple[str, str]:
    """(session, client address) of a request; a proxy's X-Forwarded-For names the client where present."""
    if request is None:
        return "local", "local"
    forwarded = (request.headers or {}).get("x-forwarded-for", "") if hasattr(request, "headers") else ""
    client = forwarded.split(",")[0].strip() or (request.client.host if getattr(request, "client", None) else "")
    return request.session_hash or "anonymous", client or "unknown"


def _rows(table) -> list:
    """A Gradio table value (pandas DataFrame, dict or list of lists) -> list of rows."""
    if table is None:
        return []
    if hasattr(table, "values") and hasattr(table, "columns"):  # pandas
        return table.values.tolist()
    if isinstance(table, dict) and "data" in table:
        return table["data"]
    return list(table)
