"""Live mode's latency, end to end through the app: a client plays speech into ``/live/ws`` in real time.

    python bench/bench_live.py [--seconds 120] [--chunk-ms 200] [--url ws://127.0.0.1:7860] [--speech FILE]

Without ``--url`` it starts the app (``app.py``, the bundled model, this machine) on a free port. The client
stands in for the browser: it sends one chunk every ``--chunk-ms`` of speech, at the speech's pace, and
measures for each chunk the time from its arrival at the server (stamped there, same machine clock) to the
motion it produced reaching the client; and for each frame, from the arrival of the chunk that completed its
speech to its motion arriving (which includes the look-ahead: a frame waits for the speech after it).
It prints the median and 95th percentile of both, and the worker's memory (RSS) at the start and the end.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _speech(path: str | None, seconds: float) -> np.ndarray:
    from emage_core.assets import example_speech
    from emage_core.audio import load_audio

    shared = ROOT.parent / "shared" / "fixtures" / "beat2" / "2_scott_0_2_2.wav"
    source = path or (shared if shared.exists() else example_speech()[0])
    wav = load_audio(source)
    reps = int(np.ceil(seconds * 16000 / wav.shape[0]))
    return np.tile(wav, reps)[: int(seconds * 16000)].astype(np.float32), Path(source).name


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _worker_pid(app_pid: int) -> int | None:
    """The generation worker: the app's child process that holds the most memory."""
    kids = subprocess.run(["pgrep", "-P", str(app_pid)], capture_output=True, text=True).stdout.split()
    kids = [int(k) for k in kids]
    return max(kids, key=_rss_mb) if kids else None


async def session(url: str, wav: np.ndarray, chunk_ms: int, worker_pid: int | None) -> dict:
    import websockets

    n = chunk_ms * 16
    chunk_lat, frame_lat, completed_at = [], [], {}
    mem = {}
    async with websockets.connect(f"{url}/live/ws", max_size=2**24) as ws:
        await ws.send(json.dumps({"type": "start", "model": "emage", "seed": 0}))
        ready = json.loads(await ws.recv())
        if ready["type"] != "ready":
            raise SystemExit(f"no session: {ready}")
        lookahead = ready["lookahead_frames"]
        if worker_pid:
            mem["start_mb"] = _rss_mb(worker_pid)

        async def send():
            t0 = time.time()
            every = max(1, wav.shape[0] // n // 6)  # the worker's memory six times along the session
            for k, i in enumerate(range(0, wav.shape[0], n)):
                await asyncio.sleep(max(0.0, t0 + (i + n) / 16000 - time.time()))
                await ws.send(wav[i:i + n].astype("<f4").tobytes())
                if worker_pid and k % every == 0:
                    mem.setdefault("along_mb", []).append((round(i / 16000), round(_rss_mb(worker_pid))))
            await ws.send(json.dumps({"type": "stop"}))

        sender = asyncio.create_task(send())
        take = None
        async for raw in ws:
            now = time.time()
            msg = json.loads(raw)
            if msg["type"] == "motion":
                heard_frames = int(round(msg["heard"] * 16000)) * 30 // 16000
                completed_at.setdefault(heard_frames, msg["received"])
                if msg["n"] and not sender.done():
                    chunk_lat.append(now - msg["received"])
                    for f in range(msg["start"], msg["start"] + msg["n"]):
                        # the chunk that completed frame f's own speech arrived at or before `received`
                        first = min((h for h in completed_at if h > f), default=None)
                        if first is not None:
                            frame_lat.append(now - completed_at[first])
            elif msg["type"] == "take":
                take = msg
            else:
                raise SystemExit(f"session ended: {msg}")
        await sender
        if worker_pid:
            mem["end_mb"] = _rss_mb(worker_pid)
    return {"chunk": np.array(chunk_lat) * 1000, "frame": np.array(frame_lat) * 1000, "mem": mem, "take": take,
            "lookahead": lookahead}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--chunk-ms", type=int, default=200)
    parser.add_argument("--url", default=None, help="a running app (ws://host:port); default: start one")
    parser.add_argument("--speech", default=None, help="speech to play (looped); default: a BEAT2 clip or the example")
    args = parser.parse_args()

    wav, name = _speech(args.speech, args.seconds)
    app = None
    url = args.url
    if url is None:
        port = _free_port()
        env = {**os.environ, "EMAGE_STUDIO_OUTPUTS": str(Path("/tmp") / f"bench_live_{port}")}
        app = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port)], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"ws://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        time.sleep(2)
    try:
        worker = _worker_pid(app.pid) if app else None
        r = asyncio.run(session(url, wav, args.chunk_ms, worker))
    finally:
        if app:
            app.terminate()
            app.wait(30)
    c, f = r["chunk"], r["frame"]
    print(f"live session: {args.seconds:.0f} s of speech ({name}, looped) in {args.chunk_ms} ms chunks, bundled EMAGE, "
          f"look-ahead {r['lookahead']} frames, {os.cpu_count()} CPU cores")
    print(f"chunk arrival at the server -> its motion at the client: median {np.median(c):.1f} ms, "
          f"95th percentile {np.percentile(c, 95):.1f} ms, max {c.max():.1f} ms ({len(c)} chunks)")
    print(f"a frame's speech complete at the server -> its motion at the client (incl. look-ahead): "
          f"median {np.median(f):.1f} ms, 95th percentile {np.percentile(f, 95):.1f} ms ({len(f)} frames)")
    if r["mem"]:
        print(f"worker memory (RSS): {r['mem']['start_mb']:.0f} MB at the start, {r['mem']['end_mb']:.0f} MB at the end; "
              "along the session (s: MB): " + ", ".join(f"{s}: {mb}" for s, mb in r["mem"].get("along_mb", [])))
    if r["take"]:
        print(f"take: {r['take']['frames']} frames for {r['take']['seconds']:.2f} s of speech")


if __name__ == "__main__":
    main()
