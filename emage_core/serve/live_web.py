"""Live mode's web routes, added to the app's FastAPI server (`add_live_routes`): a WebSocket for the session,
the body the page poses, and the take's files.

    ws   /live/ws                  the session (protocol below)
    GET  /live/body.glb            the skinned body at rest (the page sets its bones from the motion messages)
    GET  /live/take/{id}/{file}    a finished take's files (take.npz, .json, .bvh, .glb, .wav, metadata.json)

The session, as the page speaks it:

    page -> {"type": "start", "model": "emage", "seed": 0, "temperature": 0}      (text, first)
    page <- {"type": "ready", ...} | {"type": "busy" | "error", "message": ...} (then closed)
    page -> float32 16 kHz mono samples, little-endian                     (binary, one message per chunk)
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

from ..generate.registry import ModelRefError, parse_ref
from ..generate.settings import GenerationSettings
from .jobs import JobSettings
from .outputs import scrub_paths
from .worker import Busy, JobRequest

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16000 * 4 * 2  # 2 s of float32 speech in one message
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
                import numpy as np

                from ..export.gltf import write_glb
                from ..motion.clip import Motion

                path = Path(self.requests.root).parent / "live_body.glb"
                rest = Motion(poses=np.zeros((1, 55, 3), np.float32), expressions=np.zeros((1, 100), np.float32),
                              trans=np.zeros((1, 3), np.float32), fps=30.0)
                self._body = write_glb(rest, path)
            return self._body

    def take_path(self, session: str, name: str) -> Path | None:
        if not _SESSION_ID.fullmatch(session) or name not in TAKE_FILES:
            return None
        path = Path(self.requests.root) / session / name
        return path if path.is_file() else None

    async def session(self, ws: WebSocket) -> None:
        await ws.accept()
        try:
            start = json.loads(await asyncio.wait_for(ws.receive_text(), timeout=10))
            settings = _settings(start)
        except (ValueError, TypeError, KeyError, ModelRefError, asyncio.TimeoutError) as e:
            await _close(ws, {"type": "error", "message": f"could not start: {scrub_paths(str(e)) or 'no start message'}"})
            return
        except Exception:  # noqa: BLE001 - the page went away before starting
            return
        out_dir = self.requests.new_request_dir()
        self.requests.hold(out_dir)
        handle = None
        try:
            handle = self.worker.start_live(JobRequest(job_id=out_dir.name, speech="", out_dir=str(out_dir),
                                                       settings=settings))
        except Busy as e:
            await _close(ws, {"type": "busy", "message": f"Live mode is busy: {e}."})
        if handle is None:
            self.requests.release(out_dir)
            shutil.rmtree(out_dir, ignore_errors=True)
            return
        finished = False
        try:
            finished = await self._relay(ws, handle, out_dir)
        finally:
            handle.close()  # cancels the session unless it ended (a closed page frees the slot now)
            self.requests.release(out_dir)
            if not finished:
                shutil.rmtree(out_dir, ignore_errors=True)

    async def _relay(self, ws, handle, out_dir: Path) -> bool:
        """Speech from the page to the worker and motion back, until the take is written (True) or the
        session fails or the page goes away (False)."""
        stopped = asyncio.Event()

        async def receive() -> None:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    handle.cancel()
                    return
                data = message.get("bytes")
                if data is not None:
                    if len(data) > MAX_MESSAGE_BYTES or len(data) % 4:
                        await _close(ws, {"type": "error", "message": "a speech chunk must be float32 samples, "
                                                                      "at most 2 s"})
                        handle.cancel()
                        return
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
                    files = [{"name": Path(p).name, "url": f"live/take/{session}/{Path(p).name}"}
                             for p in event.result["files"].values()]
                    files.append({"name": "take.json", "url": f"live/take/{session}/take.json"})
                    await _close(ws, {"type": "take", "files": files, "seconds": event.result["seconds"],
                                      "frames": event.result["frames"]})
                    return True
                elif event.kind in ("error", "cancelled"):
                    await _close(ws, {"type": "error", "message": scrub_paths(event.message)})
                    return False
        except Exception:  # noqa: BLE001 - the page closed while we sent: end the session
            return False
        finally:
            reader.cancel()


def _settings(start: dict) -> JobSettings:
    """The page's start message -> checked settings (a model reference, never a path)."""
    if start.get("type") != "start":
        raise ValueError("the first message must be {'type': 'start', ...}")
    model = parse_ref(str(start.get("model") or "emage"), allow_paths=False)
    seed = start.get("seed")
    seed = None if seed is None or (isinstance(seed, (int, float)) and seed < 0) else seed
    generation = GenerationSettings(seed=seed, temperature=float(start.get("temperature") or 0.0))
    settings = JobSettings(model=model.label, generation=generation)
    settings.validate()
    return settings


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
