"""Live mode's web routes, added to the app's FastAPI server (`add_live_routes`): a WebSocket for the session,
the body the page poses, and the take's files.

    ws   /live/ws                  the session (protocol below)
    GET  /live/body.glb            the skinned body at rest (the page sets its bones from the motion messages)
    GET  /live/take/{id}/{file}    a finished take's files (take.npz, .json, .bvh, .glb, .wav, metadata.json)

The session, as the page speaks it:

    page -> {"type": "start", "model": "emage", "seed": 0, "temperature": 0, "sample_rate": 48000}  (text, first)
    page <- {"type": "ready", ...} | {"type": "busy" | "error", "message": ...} (then closed)
    page -> float32 mono samples at sample_rate (default 16 kHz), little-endian (binary, a chunk a message,
            at most 2 s each, at about the speech's own pace, 10 minutes at most)
    page <- {"type": "motion", ...} per chunk (see `serve.live`)
    page -> {"type": "stop"}
    page <- the last motion, then {"type": "take", "files": [{"name", "url"}], "seconds", "frames"}; closed

A closed connection ends the session and frees the worker's slot at once (the take is dropped).
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import threading
import time
from pathlib import Path

from starlette.websockets import WebSocket

from ..audio import SAMPLE_RATE
from ..generate.live import MAX_CHUNK_SECONDS
from ..generate.registry import ModelRefError, parse_ref
from ..generate.settings import GenerationSettings
from ..motion.beat2 import sidecar_path
from .jobs import JobSettings
from .outputs import scrub_paths
from .live import MAX_LIVE_SECONDS
from .worker import Busy, JobRequest

logger = logging.getLogger(__name__)

RATES = (8000, 96000)  # the speech rates a page may send (browsers capture at 16-48 kHz)
AHEAD_S = 2.0  # a page may send this much speech ahead of real time (bursts); beyond it is refused
TAKE_FILES = ("take.npz", "take.json", "take.bvh", "take.glb", "take.wav", "metadata.json")
_SESSION_ID = re.compile(r"[0-9a-f]{32}")


class LiveWeb:
    """The routes' state: the worker, where sessions write (``requests``: an object with ``root``,
    ``new_request_dir()``, ``hold(path)`` and ``release(path)``, the app's `Studio`) and the body file."""

    def __init__(self, worker, requests):
        self.worker, self.requests = worker, requests
        self._body: Path | None = None
        self._body_lock = threading.Lock()

    def body_path(self) -> Path:
        """The rest body as a .glb, written once per server into its requests folder's parent."""
        with self._body_lock:
            if self._body is None or not self._body.exists():
                from ..export.gltf import write_glb
                from ..motion.clip import Motion

                self._body = write_glb(Motion.zeros(1), Path(self.requests.root).parent / "live_body.glb")
            return self._body

    def take_path(self, session: str, name: str) -> Path | None:
        if not _SESSION_ID.fullmatch(session) or name not in TAKE_FILES:
            return None
        path = Path(self.requests.root) / session / name
        return path if path.is_file() else None

    async def session(self, ws: WebSocket) -> None:
        await ws.accept()
        if not _same_origin(ws):
            await _close(ws, {"type": "error", "message": "live sessions are open to this app's own page only"})
            return
        try:
            start = json.loads(await asyncio.wait_for(ws.receive_text(), timeout=10))
            settings, rate = _settings(start)
        except (ValueError, TypeError, KeyError, ModelRefError, asyncio.TimeoutError) as e:
            await _close(ws, {"type": "error", "message": f"could not start: {scrub_paths(str(e)) or 'no start message'}"})
            return
        except Exception:  # noqa: BLE001 - the page went away before starting
            return
        out_dir = self.requests.new_request_dir()
        self.requests.hold(out_dir)
        handle, finished = None, False
        try:
            handle = self.worker.start_live(JobRequest(job_id=out_dir.name, speech="", out_dir=str(out_dir),
                                                       settings=settings, sample_rate=rate))
            finished = await self._relay(ws, handle, out_dir, rate)
        except Busy as e:
            await _close(ws, {"type": "busy", "message": f"Live mode is busy: {e}."})
        finally:
            if handle is not None:
                handle.close()  # cancels the session unless it ended (a closed page frees the slot now)
            self.requests.release(out_dir)
            if not finished:
                shutil.rmtree(out_dir, ignore_errors=True)

    async def _relay(self, ws, handle, out_dir: Path, rate: int) -> bool:
        """Speech from the page to the worker and motion back, until the take is written (True) or the
        session fails or the page goes away (False). Speech must come at about its own pace (at most
        `AHEAD_S` ahead) and at most `MAX_LIVE_SECONDS`: nothing piles up in the server's memory."""
        stopped = asyncio.Event()
        most_bytes = int(MAX_CHUNK_SECONDS * rate) * 4

        async def refuse(message: str) -> None:
            handle.cancel()
            await _close(ws, {"type": "error", "message": message})

        async def receive() -> None:
            first, samples = None, 0
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    handle.cancel()
                    return
                data = message.get("bytes")
                if data is not None:
                    if not data or len(data) > most_bytes or len(data) % 4:
                        return await refuse(f"a speech chunk must be float32 samples, at most "
                                            f"{MAX_CHUNK_SECONDS:g} s")
                    first = first if first is not None else time.monotonic()
                    samples += len(data) // 4
                    if samples / rate > MAX_LIVE_SECONDS + AHEAD_S:
                        return await refuse(f"a live session takes at most {MAX_LIVE_SECONDS / 60:g} min of speech")
                    if samples / rate > time.monotonic() - first + AHEAD_S + MAX_CHUNK_SECONDS:
                        return await refuse("speech arrived faster than it can be spoken; live mode takes a "
                                            "microphone's pace")
                    if not stopped.is_set():
                        handle.send_audio(data, time.time())
                elif _is_stop(message.get("text")) and not stopped.is_set():
                    stopped.set()
                    handle.send_audio(None)

        reader = asyncio.create_task(receive())
        try:
            while True:
                event = await asyncio.to_thread(handle.poll, 0.25)
                if event is None:
                    if reader.done():
                        return False
                    continue
                if event.kind == "live":
                    await ws.send_text(json.dumps(event.result))
                elif event.kind == "done":
                    session = out_dir.name
                    names = [Path(p).name for p in event.result["files"].values()]
                    names.append(sidecar_path(Path(event.result["files"]["npz"])).name)  # take.json
                    files = [{"name": name, "url": f"live/take/{session}/{name}"} for name in names]
                    await _close(ws, {"type": "take", "files": files, "seconds": event.result["seconds"],
                                      "frames": event.result["frames"]})
                    return True
                elif event.kind in ("error", "cancelled"):
                    await _close(ws, {"type": "error", "message": scrub_paths(event.message)})
                    return False
        except Exception:  # noqa: BLE001 - the page closed while we sent (or a bug): end the session
            logger.debug("live session %s ended early", out_dir.name, exc_info=True)
            return False
        finally:
            reader.cancel()


def _settings(start) -> tuple[JobSettings, int]:
    """The page's start message -> (checked settings, the speech's sample rate). A model reference, never a path."""
    if not isinstance(start, dict) or start.get("type") != "start":
        raise ValueError("the first message must be {'type': 'start', ...}")
    model = parse_ref(str(start.get("model") or "emage"), allow_paths=False)
    seed = start.get("seed")
    seed = None if seed is None or (isinstance(seed, (int, float)) and seed < 0) else seed
    rate = start.get("sample_rate", SAMPLE_RATE)
    if not isinstance(rate, int) or not RATES[0] <= rate <= RATES[1]:
        raise ValueError(f"sample_rate must be a whole number of Hz, {RATES[0]}-{RATES[1]}")
    generation = GenerationSettings(seed=seed, temperature=float(start.get("temperature") or 0.0))
    settings = JobSettings(model=model.label, generation=generation)
    settings.validate()
    return settings, rate


def _same_origin(ws) -> bool:
    """A browser's connection must come from this app's own page (its Origin's host is the Host it asked);
    clients that send no Origin (scripts, the benchmark) are not browsers acting for another site."""
    from urllib.parse import urlsplit

    origin, host = ws.headers.get("origin"), ws.headers.get("host")
    return origin is None or urlsplit(origin).netloc == host


def _is_stop(text: str | None) -> bool:
    try:
        return json.loads(text or "").get("type") == "stop"
    except (ValueError, AttributeError):
        return False


async def _close(ws, message: dict) -> None:
    try:
        await ws.send_text(json.dumps(message))
        await ws.close()
    except Exception:  # noqa: BLE001 - already closed
        pass


def add_live_routes(app, worker, requests) -> LiveWeb:
    """Add live mode's routes to a FastAPI ``app`` (Gradio's server); returns their state."""
    from fastapi.responses import FileResponse, PlainTextResponse

    live = LiveWeb(worker, requests)

    async def body():
        return FileResponse(await asyncio.to_thread(live.body_path), media_type="model/gltf-binary")

    async def take(session: str, name: str):
        path = live.take_path(session, name)
        if path is None:
            return PlainTextResponse("no such take file (takes are kept for the retention time)", status_code=404)
        return FileResponse(path, filename=name)

    app.add_api_websocket_route("/live/ws", live.session)
    app.add_api_route("/live/body.glb", body, methods=["GET"])
    app.add_api_route("/live/take/{session}/{name}", take, methods=["GET"])
    return live
