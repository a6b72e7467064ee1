"""The generation worker: one process that loads models once, owns the GPU, and runs jobs one at a time.

The app talks to it through `GenerationWorker.submit`, which yields progress events and the result.
Why a separate process: a CUDA out-of-memory error, a segfault in a native library or a runaway job
must fail only that request; the web server keeps serving and the worker is restarted.

    worker = GenerationWorker()
    for event in worker.submit(JobRequest(...)):
        if event.kind == "progress": print(event.fraction, event.message)
    # the last event is "done" (event.result: JobResult), "error" (event.message) or "cancelled"
"""
from __future__ import annotations

import multiprocessing as mp
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterator

from .jobs import JobSettings

# How long a quiet worker may take before the parent checks that it is still alive.
_POLL_S = 0.5
# Models kept loaded at once (the default plus one other is the common case).
_MAX_LOADED_MODELS = 2


@dataclass
class JobRequest:
    job_id: str
    speech: str
    out_dir: str
    settings: JobSettings = field(default_factory=JobSettings)
    reference: str | None = None


@dataclass
class Event:
    kind: str  # "progress" | "done" | "error" | "cancelled"
    job_id: str
    fraction: float = 0.0
    message: str = ""
    result: Any = None


class Cancelled(Exception):
    pass


def _worker_main(inbox: mp.Queue, events: mp.Queue, cancel: mp.Event, device: str | None) -> None:
    """The child process: load models on demand, run jobs, report events."""
    import torch

    from .jobs import run_job
    from .pipeline import EmageGenerator

    loaded: dict[str | None, EmageGenerator] = {}

    def generator_for(source: str | None) -> EmageGenerator:
        if source not in loaded:
            while len(loaded) >= _MAX_LOADED_MODELS:
                loaded.pop(next(iter(loaded)))  # drop the oldest
            loaded[source] = EmageGenerator.from_pretrained(source, device=device)
        return loaded[source]

    parent = mp.parent_process()
    while True:
        try:
            req: JobRequest | None = inbox.get(timeout=2.0)
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                return  # the app was killed without closing us: don't linger as an orphan
            continue
        if req is None:
            return

        def progress(fraction: float, message: str, job_id=req.job_id) -> None:
            if cancel.is_set():
                raise Cancelled()
            events.put(Event("progress", job_id, fraction, message))

        try:
            result = run_job(req.speech, req.settings, req.out_dir, generator_for=generator_for,
                             reference=req.reference, progress=progress)
            events.put(Event("done", req.job_id, 1.0, "done", result))
        except Cancelled:
            events.put(Event("cancelled", req.job_id, message="cancelled"))
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            events.put(Event("error", req.job_id, message="the GPU ran out of memory for this request; "
                                                           "try shorter speech, fewer variants or a smaller video"))
        except (ValueError, RuntimeError, OSError) as e:  # our user-facing errors carry clear messages
            events.put(Event("error", req.job_id, message=str(e)))
        except Exception as e:  # a bug: report it, keep serving
            traceback.print_exc()
            events.put(Event("error", req.job_id, message=f"internal error ({type(e).__name__}: {e})"))


class GenerationWorker:
    """Parent-side handle of the worker process. Thread-safe: jobs run one at a time in submit order."""

    def __init__(self, device: str | None = None, start_method: str = "spawn"):
        self._ctx = mp.get_context(start_method)  # spawn: CUDA cannot be used in a forked child
        self._device = device
        self._lock = threading.Lock()
        self._proc = None
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        self._inbox = self._ctx.Queue()
        self._events = self._ctx.Queue()
        self._cancel = self._ctx.Event()
        self._proc = self._ctx.Process(target=_worker_main, args=(self._inbox, self._events, self._cancel, self._device),
                                       daemon=True, name="emage-worker")
        self._proc.start()

    def _restart(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
        if self._proc is not None:
            self._proc.join(5)
        self.restarts += 1
        self._start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def submit(self, request: JobRequest, timeout: float | None = None) -> Iterator[Event]:
        """Run a job; yield its progress events, then one final done / error / cancelled event.

        Closing the iterator early (the client went away, or Gradio cancelled the request)
        cancels the job. A worker that dies mid-job yields an error and is restarted.
        """
        with self._lock:
            self._cancel.clear()
            self._inbox.put(request)
            started = time.monotonic()
            finished = False
            try:
                while True:
                    try:
                        event: Event = self._events.get(timeout=_POLL_S)
                    except queue.Empty:
                        if not self._proc.is_alive():
                            code = self._proc.exitcode
                            self._restart()
                            finished = True
                            yield Event("error", request.job_id, message=(
                                f"the generation worker stopped unexpectedly (exit code {code}); "
                                "it has been restarted, please try again"))
                            return
                        if timeout is not None and time.monotonic() - started > timeout:
                            self._restart()
                            finished = True
                            yield Event("error", request.job_id, message=f"the job took longer than {timeout:.0f} s")
                            return
                        continue
                    if event.job_id != request.job_id:
                        continue  # a late event of an earlier, abandoned job
                    if event.kind != "progress":
                        finished = True
                    yield event
                    if finished:
                        return
            finally:
                if not finished:  # abandoned: stop the job and wait for the worker to be free again
                    self._cancel.set()
                    self._drain(request.job_id)

    def _drain(self, job_id: str, wait: float = 30.0) -> None:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                event = self._events.get(timeout=_POLL_S)
            except queue.Empty:
                if not self._proc.is_alive():
                    self._restart()
                    return
                continue
            if event.job_id == job_id and event.kind != "progress":
                return
        self._restart()  # it did not stop in time

    def close(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._inbox.put(None)
            self._proc.join(5)
            if self._proc.is_alive():
                self._proc.kill()
