"""The generation worker: one process that loads models once, owns the GPU, and runs jobs one at a time.

The app talks to it through `GenerationWorker.submit`, which queues a job and returns its `JobHandle`;
iterating the handle yields progress events and then one final event.
Why a separate process: a CUDA out-of-memory error, a segfault in a native library or a runaway job
must fail only that request; the web server keeps serving and the worker is restarted.

    worker = GenerationWorker()
    for event in worker.submit(JobRequest(...)):
        if event.kind == "progress": print(event.fraction, event.message)
    # the last event is "done" (event.result: JobResult), "error" (event.message) or "cancelled";
    # before it, once the motion exists, one "motion" event (event.result: the .glb paths, before the videos)

Guarantees, all enforced by a dispatcher thread in the parent:
- the process is checked (and restarted) before each job is handed to it, so a crash while idle
  costs no request;
- a job whose process sends nothing (no progress, no heartbeat) for ``watchdog_s`` fails, and the
  process is replaced (a frozen or stopped process);
- a job running longer than ``max_job_s`` fails, and the process is replaced;
- cancelling (``handle.cancel()``, or closing the handle's iteration) takes effect within
  ``cancel_grace_s``: a job that does not stop by then is ended by replacing the process.
"""
from __future__ import annotations

import collections
import logging
import multiprocessing as mp
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from .jobs import JobSettings

logger = logging.getLogger(__name__)

_POLL_S = 0.2
_HEARTBEAT_S = 1.0  # the child says it is alive this often while a job runs
_PASSING = ("progress", "motion", "live")  # events that come before a job's last one
# Models kept loaded at once (the default plus one other is the common case).
_MAX_LOADED_MODELS = 4  # a comparison of up to four models keeps them all


@dataclass
class JobRequest:
    job_id: str
    speech: str
    out_dir: str
    settings: JobSettings = field(default_factory=JobSettings)
    reference: str | None = None
    live: bool = False  # a live session: speech comes in chunks through `JobHandle.send_audio` (see serve.live)
    sample_rate: int = 16000  # a live session's speech, as the page sends it (resampled to 16 kHz in the worker)


@dataclass
class Event:
    kind: str  # "progress" | "motion" | "done" | "error" | "cancelled" (and "heartbeat", "ready": never passed on)
    job_id: str
    fraction: float = 0.0
    message: str = ""
    result: Any = None


class Cancelled(Exception):
    pass


class QueueFull(RuntimeError):
    """The worker already has as many jobs waiting as it accepts."""


class Busy(RuntimeError):
    """A live session needs the worker's slot now, and it is taken (a session or a generation runs or waits)."""


def _worker_main(inbox: mp.Queue, events: mp.Queue, cancel: mp.Event, device: str | None,
                 live_audio: mp.Queue | None = None) -> None:
    """The child process: load models on demand, run jobs, report events (and heartbeats while busy)."""
    import torch

    from ..generate.registry import load_cached
    from .jobs import run_job

    def generator_for(ref):
        return load_cached(ref, device=device, max_loaded=_MAX_LOADED_MODELS)

    busy: list[str] = []  # the running job's id, for the heartbeat thread

    def heartbeat() -> None:
        while True:
            time.sleep(_HEARTBEAT_S)
            if busy:
                events.put(Event("heartbeat", busy[0]))

    threading.Thread(target=heartbeat, daemon=True, name="emage-heartbeat").start()
    events.put(Event("ready", ""))  # imports done: the parent starts its watchdog clock with the first job
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

        def on_motion(glbs, job_id=req.job_id) -> None:
            events.put(Event("motion", job_id, 0.4, "motion ready", [str(g) for g in glbs]))

        busy[:] = [req.job_id]
        try:
            if req.live:
                from .live import run_live

                result = run_live(req, live_audio, generator_for=generator_for, cancelled=cancel.is_set,
                                  emit=lambda payload, job_id=req.job_id: events.put(Event("live", job_id, result=payload)))
            else:
                result = run_job(req.speech, req.settings, req.out_dir, generator_for=generator_for,
                                 reference=req.reference, progress=progress, on_motion=on_motion)
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
            events.put(Event("error", req.job_id, message=f"internal error ({type(e).__name__})"))
        finally:
            busy[:] = []


class JobHandle:
    """One queued job. Iterate it for events (the last is done / error / cancelled); close or cancel to stop."""

    def __init__(self, worker: "GenerationWorker", request: JobRequest):
        self.request = request
        self._worker = worker
        self._events: "queue.Queue[Event]" = queue.Queue()
        self._cancel = threading.Event()
        self.finished = False

    @property
    def job_id(self) -> str:
        return self.request.job_id

    def ahead(self) -> int:
        """Jobs that run before this one (0 = this one is running or next)."""
        return self._worker._position(self)

    def cancel(self) -> None:
        self._cancel.set()

    def send_audio(self, samples: bytes | None, received: float | None = None) -> None:
        """A live session's next chunk of speech (float32 little-endian mono at ``request.sample_rate``), or
        None: it ended.
        ``received``: when it reached the server (``time.time()``), carried into the motion it makes."""
        self._worker._live_audio.put((self.job_id, time.time() if received is None else received, samples))

    def poll(self, timeout: float) -> Event | None:
        """The next event, or None if none came within ``timeout`` seconds."""
        if self.finished:
            raise StopIteration
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            return None
        self.finished = event.kind not in _PASSING
        return event

    def __iter__(self) -> "JobHandle":
        return self

    def __next__(self) -> Event:
        while True:
            event = self.poll(3600)
            if event is not None:
                return event

    def close(self) -> None:
        """The caller stops listening: cancel the job unless it already ended."""
        if not self.finished:
            self.cancel()

    def _put(self, event: Event) -> None:
        self._events.put(event)


class GenerationWorker:
    """Parent-side handle of the worker process. Thread-safe: jobs run one at a time in submit order."""

    def __init__(self, device: str | None = None, start_method: str = "spawn", *, watchdog_s: float = 60.0,
                 max_job_s: float | None = None, cancel_grace_s: float = 2.0, max_queued: int = 16,
                 startup_s: float = 300.0):
        self._ctx = mp.get_context(start_method)  # spawn: CUDA cannot be used in a forked child
        self._device = device
        self.watchdog_s = watchdog_s
        self.max_job_s = max_job_s
        self.cancel_grace_s = cancel_grace_s
        self.max_queued = max_queued
        self.startup_s = startup_s  # a (re)started process may take this long to import torch and get ready
        self._jobs: "collections.deque[JobHandle]" = collections.deque()
        self._running: JobHandle | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._proc = None
        self.restarts = 0
        self._start()
        self._dispatcher = threading.Thread(target=self._dispatch, name="emage-dispatcher", daemon=True)
        self._dispatcher.start()

    # -- the process ---------------------------------------------------------------------------
    def _start(self) -> None:
        self._ready = False
        self._inbox = self._ctx.Queue()
        self._events = self._ctx.Queue()
        self._cancel_flag = self._ctx.Event()
        self._live_audio = self._ctx.Queue()
        self._live_audio.cancel_join_thread()  # speech left unread must not hold up the server's exit
        self._proc = self._ctx.Process(target=_worker_main,
                                       args=(self._inbox, self._events, self._cancel_flag, self._device,
                                             self._live_audio),
                                       daemon=True, name="emage-worker")
        self._proc.start()

    def _restart(self, why: str) -> None:
        logger.warning("restarting the generation worker: %s", why)
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
        if self._proc is not None:
            self._proc.join(5)
        self._live_audio.close()
        self.restarts += 1
        self._start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    # -- the queue -----------------------------------------------------------------------------
    def submit(self, request: JobRequest) -> JobHandle:
        """Queue a job; returns at once. Raises `QueueFull` when ``max_queued`` jobs already wait."""
        def refuse() -> Exception | None:
            if len(self._jobs) >= self.max_queued:
                return QueueFull(f"{len(self._jobs)} requests are already waiting; please try again later")
            return None

        return self._enqueue(request, refuse)

    def start_live(self, request: JobRequest) -> JobHandle:
        """Start a live session at once, holding the worker's one slot; raises `Busy` when anything runs
        or waits (a live session must not queue behind a generation: it would lag)."""
        def refuse() -> Exception | None:
            running = self._running is not None and not self._running.finished  # (a finished one is leaving)
            if self._jobs or running:
                return Busy("the live slot is taken: another live session or a generation is running; "
                            "try again in a moment")
            return None

        request.live = True
        return self._enqueue(request, refuse)

    def _enqueue(self, request: JobRequest, refuse) -> JobHandle:
        """Queue ``request`` unless the worker is closed or ``refuse()`` (called under the lock) gives an error."""
        handle = JobHandle(self, request)
        with self._cond:
            if self._closed:
                raise RuntimeError("the generation worker is closed")
            error = refuse()
            if error is not None:
                raise error
            self._jobs.append(handle)
            self._cond.notify_all()
        return handle

    def waiting(self) -> int:
        with self._cond:
            return len(self._jobs)

    def _position(self, handle: JobHandle) -> int:
        with self._cond:
            try:
                return self._jobs.index(handle) + (self._running is not None)
            except ValueError:
                return 0

    def _dispatch(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                handle = self._running = self._jobs.popleft()
            try:
                if handle._cancel.is_set():
                    handle._put(Event("cancelled", handle.job_id, message="cancelled before it started"))
                else:
                    self._run(handle)
            except Exception:  # never let the dispatcher die: that would hang every later request
                logger.exception("dispatching %s failed", handle.job_id)
                handle._put(Event("error", handle.job_id, message="internal error in the job dispatcher"))
            finally:
                with self._cond:
                    self._running = None

    def _wait_ready(self, handle: JobHandle) -> bool:
        """Wait until the process has started (imports take seconds on a busy machine, and must not count
        against the watchdog); False if it died or never got ready (then it is replaced once)."""
        deadline = time.monotonic() + self.startup_s
        for attempt in range(2):
            while not self._ready:
                if handle._cancel.is_set():
                    return False
                try:
                    event = self._events.get(timeout=_POLL_S)
                    self._ready = event.kind == "ready" or self._ready
                except queue.Empty:
                    if not self._proc.is_alive() or time.monotonic() > deadline:
                        break
            if self._ready:
                return True
            self._restart("it did not start" if self._proc.is_alive() else
                          f"it stopped while starting (exit code {self._proc.exitcode})")
            deadline = time.monotonic() + self.startup_s
        return False

    def _run(self, handle: JobHandle) -> None:
        if not self._proc.is_alive():  # died while idle: this request must not pay for it
            self._restart(f"found stopped before a job (exit code {self._proc.exitcode})")
        if not self._wait_ready(handle):
            handle._put(Event("cancelled", handle.job_id, message="cancelled") if handle._cancel.is_set() else
                        Event("error", handle.job_id, message="the generation worker could not start; "
                                                             "please try again"))
            return
        self._drain_stale()
        self._cancel_flag.clear()
        self._inbox.put(handle.request)
        started = last_heard = time.monotonic()
        cancel_sent = None
        while True:
            try:
                event: Event = self._events.get(timeout=_POLL_S)
            except queue.Empty:
                event = None
            now = time.monotonic()
            if event is not None and event.job_id == handle.job_id:
                last_heard = now
                if event.kind == "heartbeat":
                    pass
                elif event.kind in _PASSING:
                    if cancel_sent is None:
                        handle._put(event)
                else:
                    handle._put(event)
                    return
            if handle._cancel.is_set() and cancel_sent is None:
                self._cancel_flag.set()
                cancel_sent = now
            if cancel_sent is not None and now - cancel_sent > self.cancel_grace_s:
                self._restart(f"job {handle.job_id} did not stop within {self.cancel_grace_s:g} s of cancelling")
                handle._put(Event("cancelled", handle.job_id, message="cancelled"))
                return
            if not self._proc.is_alive():
                code = self._proc.exitcode
                self._restart(f"stopped during job {handle.job_id} (exit code {code})")
                handle._put(Event("error", handle.job_id, message=(
                    f"the generation worker stopped unexpectedly (exit code {code}); "
                    "it has been restarted, please try again")))
                return
            if now - last_heard > self.watchdog_s:
                self._restart(f"no sign of life for {self.watchdog_s:g} s during job {handle.job_id}")
                handle._put(Event("error", handle.job_id, message=(
                    f"the generation worker stopped responding (nothing for {self.watchdog_s:g} s); "
                    "it has been restarted, please try again")))
                return
            if self.max_job_s is not None and now - started > self.max_job_s:
                self._restart(f"job {handle.job_id} ran past {self.max_job_s:g} s")
                handle._put(Event("error", handle.job_id, message=(
                    f"the request took longer than the limit of {self.max_job_s / 60:.0f} min and was stopped")))
                return

    def _drain_stale(self) -> None:
        """Drop events of earlier jobs still in the pipe (e.g. heartbeats after a job ended)."""
        while True:
            try:
                self._events.get_nowait()
            except queue.Empty:
                return

    def close(self) -> None:
        with self._cond:
            self._closed = True
            pending = list(self._jobs)
            self._jobs.clear()
            self._cond.notify_all()
        for handle in pending:
            handle._put(Event("cancelled", handle.job_id, message="the server is shutting down"))
        if self._running is not None:
            self._running.cancel()
        self._dispatcher.join(self.cancel_grace_s + 5)
        if self._proc is not None and self._proc.is_alive():
            self._inbox.put(None)
            self._proc.join(5)
            if self._proc.is_alive():
                self._proc.kill()
