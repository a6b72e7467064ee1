"""What the page's controls do: validate input, queue the job on the worker, present the results.

Kept apart from the layout (`ui/blocks.py`) so the handlers can be tested without a browser.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np

from emage_core import hub
from emage_core.audio import AudioError, load_audio
from emage_core.beat2 import MotionFileError, read_beat2
from emage_core.jobs import MAX_VARIANTS, JobSettings
from emage_core.locks import LockError, locks_from_rows, validate_locks
from emage_core.style import preset
from emage_core.worker import GenerationWorker, JobRequest

from .timeline import draw_timeline

BUNDLED = "bundled"
HUB_PREFIX = "hub:"
LOCAL_PREFIX = "local:"
# status, grid video, one video per variant, downloads, metadata, previous-result state
N_OUTPUTS = 1 + 1 + MAX_VARIANTS + 1 + 1 + 1


def _checkpoint_roots() -> list[Path]:
    """Folders an operator allows local checkpoints from (EMAGE_CHECKPOINT_DIRS, ':'-separated)."""
    return [Path(p).resolve() for p in os.environ.get("EMAGE_CHECKPOINT_DIRS", "").split(os.pathsep) if p]


def model_choices() -> list[tuple[str, str]]:
    """(label, value) for the model selector. Users pick from this list; they never type a path."""
    choices = [("Bundled default (offline, small)", BUNDLED),
               (f"Official EMAGE weights (Hugging Face Hub: {hub.default_repo_id()})", HUB_PREFIX + hub.default_repo_id())]
    for root in _checkpoint_roots():
        if root.is_dir():
            for d in sorted(root.iterdir()):
                if (d / "config.json").is_file() and (d / "emage_vq").is_dir():
                    choices.append((f"Local checkpoint: {d.name}", f"{LOCAL_PREFIX}{root}{os.sep}{d.name}"))
    return choices


def default_choice() -> str:
    """The selector's initial value: the Hub weights where an operator named a repo (the Space does),
    else the bundled checkpoint, which works offline."""
    return HUB_PREFIX + hub.default_repo_id() if os.environ.get(hub.REPO_ID_ENV) else BUNDLED


def model_source(choice: str) -> str | None:
    """Selector value -> `from_pretrained` source, refusing anything not offered by `model_choices`."""
    if choice in (None, "", BUNDLED):
        return str(hub.BUNDLED_CHECKPOINT)
    if choice.startswith(HUB_PREFIX):
        return choice[len(HUB_PREFIX):]
    if choice.startswith(LOCAL_PREFIX) and choice in {v for _, v in model_choices()}:
        return choice[len(LOCAL_PREFIX):]
    raise gr.Error(f"unknown model choice {choice!r}")


def model_emotions(choice: str) -> tuple[str, ...]:
    """Emotion labels a checkpoint learned, read from its config.json (the released weights have none)."""
    source = model_source(choice)
    config = Path(source) / "config.json" if source and Path(source).is_dir() else None
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


@dataclass
class Studio:
    """Per-process app state: the worker and where request folders live."""

    worker: GenerationWorker
    root: Path = field(default_factory=lambda: Path(os.environ.get(
        "EMAGE_STUDIO_OUTPUTS", Path(tempfile.gettempdir()) / "emage_studio")))
    retention_s: float = float(os.environ.get("EMAGE_STUDIO_RETENTION_S", 3600))
    max_speech_s: float = float(os.environ.get("EMAGE_STUDIO_MAX_SPEECH_S", 600))

    def __post_init__(self):
        self.root.mkdir(parents=True, exist_ok=True)

    # -- request folders ------------------------------------------------------------------
    def new_request_dir(self) -> Path:
        """A fresh private folder for one request; folders older than the retention time go."""
        self.clean_old()
        d = self.root / uuid.uuid4().hex
        d.mkdir()
        return d

    def clean_old(self) -> int:
        removed, now = 0, time.time()
        for d in self.root.iterdir():
            if d.is_dir() and now - d.stat().st_mtime > self.retention_s:
                shutil.rmtree(d, ignore_errors=True)
                removed += 1
        return removed

    # -- handlers -------------------------------------------------------------------------
    def timeline(self, speech: str | None, rows) -> tuple[np.ndarray, str]:
        """Redraw the timeline picture; a message when a row is malformed."""
        wav, duration, note = None, 10.0, ""
        if speech:
            try:
                wav = load_audio(speech, max_seconds=self.max_speech_s)
                duration = wav.shape[0] / 16000
            except AudioError as e:
                note = f"Speech: {e}"
        try:
            locks = locks_from_rows(_rows(rows))
        except LockError as e:
            locks, note = [], str(e)
        over = [str(l) for l in locks if l.end > duration + 1e-9]
        if over and wav is not None:
            note = f"Beyond the end of the speech ({duration:.2f} s): {', '.join(over)}"
        return np.asarray(draw_timeline(locks, duration, wav)), note

    def generate(self, speech=None, model=None, emotion="neutral", intensity=1.0, lock_rows=None, reference=None,
                 use_previous=False, variants=1, seed=1, temperature=0.0, view="full", size=384, show_labels=True,
                 renderer="mesh", previous=None,
                 amplitude=1.0, tempo=1.0, spine_flexion=0.0, head_pitch=0.0, head_turn=0.0, shoulder_raise=0.0,
                 fluidity=0.0, head_activity=1.0, face_intensity=1.0, jaw_open=0.0, guidance=1.0,
                 compare_neutral=False, progress=gr.Progress()):
        """Validate, run on the worker with progress, and return every output (a generator for Gradio).

        The explicit controls (amplitude ... jaw_open) are the advanced panel's sliders, which start at
        the selected emotion's preset; they are applied as an explicit edit of the generated motion.
        ``guidance`` strengthens a learned emotion (classifier-free guidance; 1 = as trained).
        """
        if not speech:
            raise gr.Error("Please upload or record speech first.")
        try:
            wav = load_audio(speech, max_seconds=self.max_speech_s)
            locks = locks_from_rows(_rows(lock_rows))
            if use_previous and not (previous and Path(previous).is_file()):
                raise LockError("there is no previous result to lock to (or it has expired); generate once first")
            ref_path = previous if use_previous else reference
            if locks and not ref_path:
                raise LockError("locked parts need a reference motion: upload a BEAT2 .npz or tick "
                                "'use the previous result'")
            ref = read_beat2(ref_path) if ref_path else None
            if ref is not None and ref.fps != 30:
                ref = ref.resample(30)
            validate_locks(locks, wav.shape[0] * 30 // 16000, ref if locks else None)
            controls = dict(amplitude=amplitude, tempo=tempo, spine_flexion=spine_flexion, head_pitch=head_pitch,
                            head_turn=head_turn, shoulder_raise=shoulder_raise, fluidity=fluidity,
                            head_activity=head_activity, face_intensity=face_intensity, jaw_open=jaw_open)
            emotion = emotion or "neutral"
            # only what differs from the preset is an override; the preset itself stays named in the metadata
            base = preset(emotion, float(intensity)).values()
            overrides = {k: float(v) for k, v in controls.items() if v is not None and abs(float(v) - base[k]) > 1e-9}
            settings = JobSettings(model=model_source(model or default_choice()), seed=None if seed is None or seed < 0 else int(seed),
                                   variants=int(variants), temperature=float(temperature),
                                   locks=[str(l) for l in locks], view=view, size=int(size),
                                   show_labels=bool(show_labels), renderer=renderer, emotion=emotion,
                                   intensity=float(intensity), style=overrides, compare_neutral=bool(compare_neutral),
                                   guidance=1.0 if guidance is None else float(guidance))
            settings.validate()
        except (AudioError, MotionFileError, LockError, ValueError) as e:
            raise gr.Error(str(e)) from None

        out_dir = self.new_request_dir()
        req = JobRequest(job_id=out_dir.name, speech=str(speech), out_dir=str(out_dir), settings=settings,
                         reference=str(ref_path) if ref_path else None)
        progress(0.0, desc="waiting for the generation worker")
        # A generator, so that Gradio's cancel closes it, which cancels the job on the worker.
        last = 0.0
        for event in self.worker.submit(req):
            if event.kind == "progress":
                progress(event.fraction, desc=event.message)
                if time.monotonic() - last > 1.0:
                    last = time.monotonic()
                    yield (f"Working: {event.message}", *[gr.skip()] * (N_OUTPUTS - 1))
            elif event.kind == "error":
                hint = (" The Hub may be unreachable: choose 'Bundled default' to generate offline."
                        if settings.model and not Path(settings.model).exists() else "")
                raise gr.Error(f"Generation failed: {event.message}.{hint}")
            elif event.kind == "cancelled":
                raise gr.Error("Cancelled.")
            else:
                yield self._present(event.result)
                return
        raise gr.Error("Generation ended without a result.")

    def compare(self, *args, progress=gr.Progress()):
        """The same request twice, with the selected emotion/style and without, side by side."""
        yield from self.generate(*args, compare_neutral=True, progress=progress)

    @staticmethod
    def preset_controls(emotion: str, intensity: float) -> list[float]:
        """The advanced sliders' values for an emotion preset at an intensity."""
        try:
            return list(preset(emotion or "neutral", float(intensity)).values().values())
        except ValueError as e:
            raise gr.Error(str(e)) from None

    @staticmethod
    def _present(result):
        videos = [str(p) for p in result.videos]
        # one video: the side-by-side player already shows it
        shown = videos if len(videos) > 1 else []
        cells = [gr.update(value=shown[k], visible=True) if k < len(shown) else gr.update(value=None, visible=False)
                 for k in range(MAX_VARIANTS)]
        files = [str(p) for p in (*result.motions, *result.bvhs, result.metadata, result.archive)]
        meta = json.loads(result.metadata.read_text())
        status = (f"Done: {len(videos)} variant(s), {meta['frames']} frames, model `{meta['model_id']}`, "
                  f"seeds {meta['seeds']}.")
        return (status, str(result.grid), *cells, files, meta, str(result.motions[0]))


def _rows(table) -> list:
    """A Gradio table value (pandas DataFrame, dict or list of lists) -> list of rows."""
    if table is None:
        return []
    if hasattr(table, "values") and hasattr(table, "columns"):  # pandas
        return table.values.tolist()
    if isinstance(table, dict) and "data" in table:
        return table["data"]
    return list(table)
