"""What the page's controls do: validate input, queue the job on the worker, present the results.

Kept apart from the layout (`ui/blocks.py`) so the handlers can be tested without a browser.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np

from emage_core.models import hub
from emage_core.audio import AudioError, load_audio
from emage_core.motion.beat2 import MotionFileError, read_beat2
from emage_core.serve.jobs import (
    BUNDLED,
    HUB_PREFIX,
    LOCAL_PREFIX,
    MAX_VARIANTS,
    JobSettings,
    check_model,
    estimated_seconds,
    local_checkpoints,
    resolve_model,
)
from emage_core.edit.locks import LockError, locks_from_rows, validate_locks
from emage_core.serve.outputs import Sweeper, remove_older_than, scrub_paths
from emage_core.edit.style import preset
from emage_core.serve.worker import GenerationWorker, JobRequest, QueueFull

from .timeline import draw_timeline

logger = logging.getLogger(__name__)

# status, grid video, one video per variant, downloads, metadata, previous-result state
N_OUTPUTS = 1 + 1 + MAX_VARIANTS + 1 + 1 + 1


def model_choices() -> list[tuple[str, str]]:
    """(label, value) for the model selector: model references, never server paths."""
    choices = [("Bundled default (offline, small)", BUNDLED),
               (f"Official EMAGE weights (Hugging Face Hub: {hub.default_repo_id()})", HUB_PREFIX + hub.default_repo_id())]
    choices += [(f"Local checkpoint: {name}", LOCAL_PREFIX + name) for name in local_checkpoints()]
    return choices


def default_choice() -> str:
    """The selector's initial value: the Hub weights where an operator named a repo (the Space does),
    else the bundled checkpoint, which works offline."""
    return HUB_PREFIX + hub.default_repo_id() if os.environ.get(hub.REPO_ID_ENV) else BUNDLED


def model_emotions(choice: str) -> tuple[str, ...]:
    """Emotion labels a checkpoint learned, read from its config.json (the released weights have none)."""
    try:
        source = resolve_model(choice or None)
    except ValueError:
        return ()
    config = Path(source) / "config.json" if Path(source).is_dir() else None
    if config is None or not config.is_file():
        return ()
    try:
        return tuple(json.loads(config.read_text()).get("emotion_labels") or ())
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
    """Markdown telling which weights a choice loads, honestly."""
    if choice in (None, "", BUNDLED):
        return ("**Bundled default**: a small EMAGE model trained by EMAGE Studio on a 63 s BEAT2 sample "
                "(speaker 2, CC BY-NC 4.0). Works offline; quality is far below the official weights.")
    if choice.startswith(HUB_PREFIX):
        return (f"**Official EMAGE** (`{choice[len(HUB_PREFIX):]}`, Liu et al. CVPR 2024), loaded from the "
                "Hugging Face Hub (about 600 MB on first use, then cached).")
    return f"**Local checkpoint** `{Path(choice[len(LOCAL_PREFIX):]).name}`"


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
        folders = [self.root] + ([Path(self.cache_dir)] if self.cache_dir else [])
        self.sweeper = Sweeper(folders, self.retention_s).start()

    def limits_note(self) -> str:
        """The limits, stated up front on the page."""
        return (f"Limits: speech up to {self.max_speech_s / 60:g} min; {self.jobs_per_client} request(s) at a time "
                f"per user; a request may use about {self.max_job_cost_s / 60:g} min of the generation worker "
                f"(long speech x many variants x large mesh videos would take longer: use fewer, smaller or the stick "
                f"renderer). Results are kept {self.retention_s / 60:g} min.")

    # -- request folders ------------------------------------------------------------------
    def new_request_dir(self) -> Path:
        """A fresh private folder for one request."""
        d = self.root / uuid.uuid4().hex
        d.mkdir()
        return d

    def clean_old(self) -> int:
        """Remove what is older than the retention time now (the sweeper also does it on a timer)."""
        return sum(remove_older_than(f, self.retention_s) for f in self.sweeper.folders)

    def close(self) -> None:
        self.sweeper.stop()
        self.worker.close()

    # -- handlers -------------------------------------------------------------------------
    def timeline(self, speech: str | None, rows) -> tuple[np.ndarray, str]:
        """Redraw the timeline picture; a message when a row is malformed."""
        wav, duration, note = None, 10.0, ""
        if speech:
            try:
                wav = load_audio(speech, max_seconds=self.max_speech_s)
                duration = wav.shape[0] / 16000
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
        path = str(Path(reference).resolve())
        with self._lock:
            owner = self._results.get(path)
        if owner is not None and owner != session:
            raise LockError(f"{Path(reference).name}: the reference must be a motion you uploaded or generated "
                            "in this session")
        return str(reference)

    def _settings(self, model, emotion, intensity, locks, variants, seed, temperature, view, size, show_labels,
                  renderer, controls, guidance, compare_neutral) -> JobSettings:
        """Every setting checked, with its name and range in the message, before any work starts."""
        def number(name, value, kind=float):
            try:
                return kind(value)
            except (TypeError, ValueError, OverflowError):
                raise ValueError(f"{name} must be a number, got {value!r}") from None

        emotion = emotion or "neutral"
        intensity = number("intensity", intensity)
        # only what differs from the preset is an override; the preset itself stays named in the metadata
        base = preset(emotion, intensity).values()  # unknown emotion or intensity out of range: ValueError
        overrides = {k: number(k, v) for k, v in controls.items() if v is not None and abs(number(k, v) - base[k]) > 1e-9}
        seed = None if seed is None or number("seed", seed) < 0 else number("seed", seed, int)
        variants_f = number("variants", variants)
        size_f = number("video size", size)
        if variants_f != int(variants_f) or size_f != int(size_f):
            raise ValueError("variants and video size must be whole numbers")
        settings = JobSettings(model=model or default_choice(), seed=seed, variants=int(variants_f),
                               temperature=number("temperature", temperature), locks=[str(l) for l in locks],
                               view=view, size=int(size_f), show_labels=bool(show_labels), renderer=renderer,
                               emotion=emotion, intensity=intensity, style=overrides,
                               compare_neutral=bool(compare_neutral),
                               guidance=1.0 if guidance is None else number("guidance", guidance))
        settings.validate()
        return settings

    def generate(self, speech=None, model=None, emotion="neutral", intensity=1.0, lock_rows=None, reference=None,
                 use_previous=False, variants=1, seed=1, temperature=0.0, view="full", size=384, show_labels=True,
                 renderer="mesh", previous=None,
                 amplitude=1.0, tempo=1.0, spine_flexion=0.0, head_pitch=0.0, head_turn=0.0, shoulder_raise=0.0,
                 fluidity=0.0, head_activity=1.0, face_intensity=1.0, jaw_open=0.0, guidance=1.0,
                 compare_neutral=False, request: gr.Request | None = None, progress=gr.Progress()):
        """Validate, run on the worker with progress, and return every output (a generator for Gradio).

        The explicit controls (amplitude ... jaw_open) are the advanced panel's sliders, which start at
        the selected emotion's preset; they are applied as an explicit edit of the generated motion.
        ``guidance`` strengthens a learned emotion (classifier-free guidance; 1 = as trained).
        """
        if not speech:
            raise gr.Error("Please upload or record speech first.")
        session, client = _who(request)
        try:
            wav = load_audio(speech, max_seconds=self.max_speech_s)
            locks = locks_from_rows(_rows(lock_rows))
            ref_path = self._reference_path(reference, use_previous, previous, session)
            if locks and not ref_path:
                raise LockError("locked parts need a reference motion: upload a BEAT2 .npz or tick "
                                "'use the previous result'")
            ref = read_beat2(ref_path, name=Path(reference).name if reference and not use_previous
                             else "the previous result") if ref_path else None
            if ref is not None and ref.fps != 30:
                ref = ref.resample(30)
            validate_locks(locks, wav.shape[0] * 30 // 16000, ref if locks else None)
            controls = dict(amplitude=amplitude, tempo=tempo, spine_flexion=spine_flexion, head_pitch=head_pitch,
                            head_turn=head_turn, shoulder_raise=shoulder_raise, fluidity=fluidity,
                            head_activity=head_activity, face_intensity=face_intensity, jaw_open=jaw_open)
            settings = self._settings(model, emotion, intensity, locks, variants, seed, temperature, view, size,
                                      show_labels, renderer, controls, guidance, compare_neutral)
        except (AudioError, MotionFileError, LockError, ValueError) as e:
            raise gr.Error(scrub_paths(str(e))) from None
        cost = estimated_seconds(wav.shape[0] / 16000, settings)
        if cost > self.max_job_cost_s:
            videos = settings.variants * (2 if settings.compare_neutral else 1)
            raise gr.Error(
                f"This request would hold the generation worker for about {cost / 60:.0f} min "
                f"({wav.shape[0] / 16000 / 60:.1f} min of speech x {videos} video(s), {settings.size} px "
                f"{settings.renderer}); the limit is {self.max_job_cost_s / 60:g} min. Use fewer variants, a smaller "
                "video, the stick renderer or shorter speech.")
        with self._lock:
            if self._active[client] >= self.jobs_per_client:
                raise gr.Error(f"You already have {self._active[client]} request(s) queued or running (the limit is "
                               f"{self.jobs_per_client}): wait for it to finish, or cancel it.")
            self._active[client] += 1
        out_dir = self.new_request_dir()
        try:
            yield from self._run(JobRequest(job_id=out_dir.name, speech=str(speech), out_dir=str(out_dir),
                                            settings=settings, reference=ref_path), session, progress)
        except BaseException:
            shutil.rmtree(out_dir, ignore_errors=True)  # failed, cancelled or abandoned: leave nothing
            raise
        finally:
            with self._lock:
                self._active[client] -= 1
                if not self._active[client]:
                    del self._active[client]

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
                    message = f"Waiting: {ahead} request(s) ahead of yours" if ahead else "Working"
                    yield (message, *[gr.skip()] * (N_OUTPUTS - 1))
                elif event.kind == "progress":
                    progress(event.fraction, desc=event.message)
                    yield (f"Working: {event.message}", *[gr.skip()] * (N_OUTPUTS - 1))
                elif event.kind == "error":
                    logger.warning("request %s failed: %s", req.job_id, event.message)
                    hint = (" The Hub may be unreachable: choose 'Bundled default' to generate offline."
                            if (req.settings.model or "").startswith(HUB_PREFIX) else "")
                    raise gr.Error(f"Generation failed: {scrub_paths(event.message)}.{hint}")
                elif event.kind == "cancelled":
                    raise gr.Error("Cancelled.")
                else:
                    yield self._present(event.result, session)
                    return
        finally:
            handle.close()  # cancels the job unless it ended

    def compare(self, *args, request: gr.Request | None = None, progress=gr.Progress()):
        """The same request twice, with the selected emotion/style and without, side by side."""
        yield from self.generate(*args, compare_neutral=True, request=request, progress=progress)

    @staticmethod
    def preset_controls(emotion: str, intensity: float) -> list[float]:
        """The advanced sliders' values for an emotion preset at an intensity."""
        try:
            return list(preset(emotion or "neutral", float(intensity)).values().values())
        except ValueError as e:
            raise gr.Error(str(e)) from None

    def _present(self, result, session: str):
        videos = [str(p) for p in result.videos]
        # one video: the side-by-side player already shows it
        shown = videos if len(videos) > 1 else []
        cells = [gr.update(value=shown[k], visible=True) if k < len(shown) else gr.update(value=None, visible=False)
                 for k in range(MAX_VARIANTS)]
        files = [str(p) for p in (*result.motions, *result.bvhs, result.metadata, result.archive)]
        self._remember(result.motions, session)
        meta = json.loads(result.metadata.read_text())
        status = (f"Done: {len(videos)} variant(s), {meta['frames']} frames, model `{meta['model_id']}`, "
                  f"seeds {meta['seeds']}.")
        return (status, str(result.grid), *cells, files, meta, str(result.motions[0]))

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
