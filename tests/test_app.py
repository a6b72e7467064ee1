"""The app: handlers, the worker process, the API through gradio_client, and a real browser."""
from __future__ import annotations

import concurrent.futures as cf
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soundfile as sf

from conftest import REPO
from emage_core.export.blender import have_blender
from emage_core.models import hub
from emage_core.motion.beat2 import write_beat2
from emage_core.serve.jobs import JobSettings
from emage_core.motion.clip import Motion
from emage_core.serve.worker import GenerationWorker, JobRequest
from emage_core.generate.registry import ModelRefError, parse_ref
from ui.studio import Studio, model_choices

BUNDLED = "bundled"  # the API's older spelling of the default EMAGE model: still accepted

FAST = dict(variants=1, seed=3, temperature=0.0, view="full", size=128, show_labels=True, renderer="stick")


def _speech(path: Path, seconds: float = 2.0) -> Path:
    t = np.arange(int(seconds * 16000)) / 16000
    wav = 0.3 * np.clip(np.sin(2 * np.pi * 3 * t), 0, None) * np.sin(2 * np.pi * 150 * t)
    sf.write(path, wav.astype(np.float32), 16000)
    return path


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    s = Studio(GenerationWorker(device="cpu"), root=tmp_path_factory.mktemp("outputs"))
    yield s
    s.close()


def _run(studio, speech, *, lock_rows=None, handler="generate", **kw):
    """A page handler as the page calls it (FAST settings unless given); its final named result."""
    outs = list(getattr(studio, handler)(speech, **{"model": BUNDLED, **FAST, **kw},
                                         lock_rows=lock_rows or [["", None, None]], progress=lambda *a, **k: None))
    return outs[-1]


# -- handlers -------------------------------------------------------------------------------------


def test_generate_handler_returns_every_output(studio, tmp_path):
    out = _run(studio, str(_speech(tmp_path / "s.wav")), variants=2, temperature=0.9)
    assert set(out) == {"status", "grid", "cells", "files", "meta", "previous"}
    status, grid, cells, files, meta, previous = (out[k] for k in ("status", "grid", "cells", "files", "meta",
                                                                   "previous"))
    assert "2 video(s)" in status and Path(grid).is_file()
    assert len(cells) == 2 and all(Path(c).is_file() for c in cells)  # each variant's own video
    names = sorted(Path(f).name for f in files)
    fbx = [f"variant_{k}.fbx" for k in (1, 2)] if have_blender() else []  # FBX where Blender is installed
    assert names == sorted(["emage_outputs.zip", "metadata.json", *fbx, *(f"variant_{k}.{ext}" for k in (1, 2)
                                                                          for ext in ("bvh", "glb", "npz"))])
    with zipfile.ZipFile(next(f for f in files if f.endswith(".zip"))) as zf:
        assert {"variant_1.glb", "variant_2.glb", *fbx} <= set(zf.namelist())
    assert meta["seeds"] == [3, 4] and meta["frames"] == 60 and len(meta["speech"]["sha256"]) == 64
    assert meta["weights"]["files"]  # sha256 of every weight file
    assert Path(previous).name == "variant_1.npz" and Path(previous).parent.parent == studio.root


def test_the_3d_viewer_gets_the_motion_before_the_videos(studio, tmp_path):
    """The handler yields the speech and each video's .glb for the 3D viewer before it renders the videos."""
    outs = list(studio.generate(str(_speech(tmp_path / "s.wav")), **{"model": BUNDLED, **FAST, "variants": 2,
                                                                      "temperature": 0.9},
                                lock_rows=[["", None, None]], progress=lambda *a, **k: None))
    (k, shown), = [(k, o["viewer"]) for k, o in enumerate(outs) if "viewer" in o]
    assert k < len(outs) - 1 and "grid" not in outs[k] and "grid" in outs[-1]
    assert Path(shown[0]).name == "speech.wav" and [Path(g).name for g in shown[1:]] == ["variant_1.glb",
                                                                                          "variant_2.glb"]
    assert all(Path(g).is_file() for g in shown) and set(shown[1:]) <= set(outs[-1]["files"])


def test_emotion_vs_neutral_is_an_honest_explicit_edit(studio, tmp_path):
    out = _run(studio, str(_speech(tmp_path / "s.wav")), emotion="sadness", intensity=0.8, handler="compare_neutral",
               amplitude=0.5)
    meta = out["meta"]
    names = sorted(Path(f).name for f in out["files"])
    assert "neutral_1.npz" in names and "variant_1.npz" in names
    assert meta["emotion"]["learned"] is None  # the bundled model knows no emotions
    explicit = meta["emotion"]["explicit"]
    assert explicit["kind"] == "explicit edit" and explicit["preset"] == "sadness"
    assert explicit["controls"]["amplitude"] == 0.5 and explicit["edited"] is True  # the slider override
    emo, neutral = (np.load(Path(out["previous"]).parent / f"{n}.npz")["poses"] for n in ("variant_1", "neutral_1"))
    assert emo.shape == neutral.shape and not np.allclose(emo, neutral)
    assert meta["seeds"][0] == meta["seeds"][1]  # same seed on both sides


def test_each_request_gets_its_own_folder_and_old_ones_go(studio, tmp_path):
    a, b = studio.new_request_dir(), studio.new_request_dir()
    assert a != b and a.parent == b.parent == studio.root
    old = time.time() - studio.retention_s - 10
    os.utime(a, (old, old))
    assert studio.clean_old() >= 1 and not a.exists() and b.exists()


@pytest.mark.parametrize("case, match", [
    ("text", "not a recognised audio file"),
    ("bad_row", "lock row 1: unknown part"),
    ("bad_time", "lock row 1: start and end must be numbers"),
    ("no_reference", "need a reference motion"),
    ("pickled_reference", "evil.npz: 'poses' holds Python objects"),
    ("short_reference", "reference motion has only"),
    ("no_previous", "no previous result to lock to"),
    ("guidance_unlearned", "guidance applies to learned emotions only"),
])
def test_bad_input_gives_a_clear_message(studio, tmp_path, case, match):
    speech = str(_speech(tmp_path / "s.wav"))
    kwargs = {}
    if case == "text":
        (tmp_path / "fake.wav").write_text("not audio at all")
        speech = str(tmp_path / "fake.wav")
    elif case == "bad_row":
        kwargs["lock_rows"] = [["tail", 0, 1]]
    elif case == "bad_time":
        kwargs["lock_rows"] = [["upper", "soon", 1]]
    elif case == "no_reference":
        kwargs["lock_rows"] = [["upper", 0, 1]]
    elif case == "pickled_reference":
        np.savez(tmp_path / "evil.npz", poses=np.array([{"x": 1}] * 3, dtype=object),
                 trans=np.zeros((3, 3)), expressions=np.zeros((3, 100)))
        kwargs.update(lock_rows=[["upper", 0, 1]], reference=str(tmp_path / "evil.npz"))
    elif case == "short_reference":
        write_beat2(Motion.zeros(10), tmp_path / "short.npz")
        kwargs.update(lock_rows=[["upper", 0, 1]], reference=str(tmp_path / "short.npz"))
    elif case == "no_previous":
        kwargs.update(lock_rows=[["upper", 0, 1]], use_previous=True)
    elif case == "guidance_unlearned":  # the bundled model learned no emotions: only an explicit edit
        kwargs.update(emotion="sadness", guidance=2.0)
    with pytest.raises(gr.Error, match=match):
        _run(studio, speech, **kwargs)


def _noprogress(*a, **k):
    return None


def _folders(studio) -> set:
    return {d.name for d in studio.root.iterdir()}


@pytest.mark.parametrize("setting, value, match", [
    ("seed", 2**70, "seed must be a whole number 0-4,294,967,279"),
    ("variants", 9, "variants must be 1-4"),
    ("size", 4096, "video size must be 64-1024 pixels"),
    ("temperature", 7, "temperature must be 0-2"),
    ("intensity", 9, "intensity"),
    ("view", "side", "view must be one of full, upper, face"),
    ("model", "hub:/etc", "neither a Hugging Face repo id"),
    ("model", "local:/etc", "unknown local checkpoint"),
])
def test_every_setting_is_checked_before_any_work(studio, tmp_path, setting, value, match):
    before = _folders(studio)
    with pytest.raises(gr.Error, match=match):
        _run(studio, str(_speech(tmp_path / "s.wav")), **{setting: value})
    assert _folders(studio) == before  # nothing started, nothing left


def test_odd_video_size_is_rounded_to_even(studio, tmp_path):
    meta = _run(studio, str(_speech(tmp_path / "s.wav", 1.0)), size=129)["meta"]
    assert meta["settings"]["size"] == 128


def test_costly_request_is_refused_up_front_with_the_limit(studio, tmp_path):
    speech = str(_speech(tmp_path / "long.wav", 60.0))
    studio.max_job_cost_s, old = 60.0, studio.max_job_cost_s
    try:
        with pytest.raises(gr.Error, match=r"about \d+ min .*1.0 min of speech x 4 video.*1024 px mesh.*limit is 1 min"):
            _run(studio, speech, variants=4, temperature=1.0, size=1024, renderer="mesh")
    finally:
        studio.max_job_cost_s = old


def test_outputs_and_messages_name_no_server_path(studio, tmp_path):
    out = _run(studio, str(_speech(tmp_path / "s.wav", 1.0)))
    status, meta = out["status"], out["meta"]
    text = status + json.dumps(meta) + Path(out["previous"]).with_suffix(".json").read_text()
    for secret in (str(REPO), str(studio.root), str(tmp_path), "/tmp", os.uname().release):
        assert secret not in text, secret
    assert meta["model_id"] == "emage" and meta["weights"]["source"] == "emage"  # the reference, not a folder
    # a bad upload in a server folder: the message names the file only
    (tmp_path / "upload").mkdir()
    bad = tmp_path / "upload" / "mine.npz"
    bad.write_text("not a zip")
    with pytest.raises(gr.Error) as info:
        _run(studio, str(_speech(tmp_path / "s.wav", 1.0)), lock_rows=[["upper", 0, 0.5]], reference=str(bad))
    assert "mine.npz: not an .npz file" in str(info.value) and str(tmp_path) not in str(info.value)


def test_expired_previous_result_is_a_clear_message(studio, tmp_path):
    gone = studio.root / ("0" * 32) / "variant_1.npz"
    with pytest.raises(gr.Error, match="expired") as info:
        _run(studio, str(_speech(tmp_path / "s.wav")), lock_rows=[["upper", 0, 1]], use_previous=True,
             previous=str(gone))
    assert str(studio.root) not in str(info.value)


def test_another_sessions_result_is_not_a_reference(studio, tmp_path):
    class Req:  # what Gradio hands a handler: a session and a client address
        def __init__(self, session):
            self.session_hash, self.headers, self.client = session, {}, type("C", (), {"host": session})()

    first = list(studio.generate(str(_speech(tmp_path / "s.wav")), **FAST, request=Req("alice"), progress=_noprogress))[-1]
    theirs = first["previous"]
    kw = dict(lock_rows=[["upper", 0, 1]], reference=theirs, progress=_noprogress, **FAST)
    with pytest.raises(gr.Error, match="must be a motion you uploaded or generated in this session"):
        list(studio.generate(str(_speech(tmp_path / "s.wav")), request=Req("mallory"), **kw))
    assert list(studio.generate(str(_speech(tmp_path / "s.wav")), request=Req("alice"), **kw))[-1]["status"].startswith("Done")


def test_one_request_per_client_and_abandoned_requests_are_cancelled(studio, tmp_path):
    speech = str(_speech(tmp_path / "s.wav", 4.0))
    before = _folders(studio)
    first = studio.generate(speech, **{**FAST, "renderer": "mesh"}, progress=_noprogress)
    assert next(first)["status"].startswith(("Working", "Waiting"))
    with pytest.raises(gr.Error, match="already have 1 request"):
        next(studio.generate(speech, **FAST, progress=_noprogress))
    first.close()  # the client went away: the job is cancelled and its folder removed
    assert _folders(studio) == before
    assert _run(studio, speech)["status"].startswith("Done")  # the worker is free again


def test_failed_jobs_leave_nothing_behind(studio, tmp_path):
    before = _folders(studio)
    with pytest.raises(gr.Error, match="guidance applies to learned emotions only"):
        _run(studio, str(_speech(tmp_path / "s.wav")), emotion="sadness", guidance=2.0)
    assert _folders(studio) == before


def test_retention_sweeps_without_new_traffic(tmp_path):
    cache = tmp_path / "cache"
    (cache / "abc").mkdir(parents=True)
    (cache / "abc" / "grid.mp4").write_bytes(b"x")
    s = Studio(GenerationWorker(device="cpu"), root=tmp_path / "requests", retention_s=1.0, cache_dir=cache)
    try:
        d = s.new_request_dir()
        (d / "variant_1.npz").write_bytes(b"x")
        deadline = time.monotonic() + 30  # the sweep runs every second; generous for a busy machine
        while (d.exists() or (cache / "abc").exists()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not d.exists() and not (cache / "abc").exists()
    finally:
        s.close()


def test_lock_to_previous_result(studio, tmp_path):
    speech = str(_speech(tmp_path / "s.wav"))
    first = _run(studio, speech)
    previous = first["previous"]
    second = _run(studio, speech, lock_rows=[["hands", 0.5, 1.5]], use_previous=True, previous=previous)
    meta = second["meta"]
    assert meta["settings"]["generation"]["locks"] == ["hands:0.5-1.5"] and meta["reference_sha256"]
    a, b = (np.load(p)["poses"].reshape(-1, 55, 3) for p in (previous, second["previous"]))
    assert np.allclose(a[15:45, 25:55], b[15:45, 25:55], atol=1e-5)


def test_timeline_picture_and_notes(studio, tmp_path):
    speech = str(_speech(tmp_path / "s.wav"))
    img, note = studio.timeline(speech, [["upper", 0.5, 1.0], ["global", 1, 3]])
    assert img.ndim == 3 and img.shape[2] == 3 and "Beyond the end" in note and "global:1-3" in note
    img2, note2 = studio.timeline(speech, [["upper", 0.5, 1.0]])
    assert note2 == "" and not np.array_equal(img, img2)  # the picture follows the table
    assert "lock row 1" in studio.timeline(speech, [["upper", "x", 1]])[1]


def test_model_selector_offers_only_known_sources(tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpts" / "mine"
    (ckpt / "emage_vq").mkdir(parents=True)
    (ckpt / "config.json").write_text("{}")
    monkeypatch.setenv("EMAGE_CHECKPOINT_DIRS", str(tmp_path / "ckpts"))
    values = [v for _, v in model_choices()]
    assert "emage" in values and "emage:local:mine" in values
    assert not any(str(tmp_path) in v for v in values)  # the page never sees a server path
    app = lambda ref: parse_ref(ref, allow_paths=False)  # references from users: never a path
    assert app(BUNDLED) == app("emage") and app(BUNDLED).load_source() is None  # the bundled default
    assert app("local:mine").load_source() == ckpt and app("local:mine").label == "emage:local:mine"
    assert app("hub:owner/name").label == "emage:owner/name"
    assert isinstance(app("emage:owner/name").load_source(), hub.HubRepo)  # never taken for a folder
    for bad, match in (("local:/etc", "unknown local checkpoint"), ("hub:/etc", "neither a Hugging Face repo id"),
                       ("hub:../../x", "neither a Hugging Face repo id"), ("/etc", "unknown model"),
                       ("hub:name", "owner/name"), ("emage:/etc", "paths on the server are not accepted"),
                       ("nofamily:x/y", "unknown model")):
        with pytest.raises(ModelRefError, match=match):
            app(bad)


def test_guidance_slider_is_live_only_for_learned_emotions(tmp_path, monkeypatch):
    import json

    from ui.studio import guidance_update

    ckpt = tmp_path / "ckpts" / "emo"
    (ckpt / "emage_vq").mkdir(parents=True)
    (ckpt / "config.json").write_text(json.dumps({"emotion_labels": ["neutral", "happiness"]}))
    monkeypatch.setenv("EMAGE_CHECKPOINT_DIRS", str(tmp_path / "ckpts"))
    emo = "local:emo"
    assert guidance_update(emo, "happiness")["interactive"] is True
    for choice, emotion in ((emo, "sadness"), (emo, "neutral"), (BUNDLED, "happiness")):
        update = guidance_update(choice, emotion)
        assert update["interactive"] is False and update["value"] == 1.0


# -- the worker process -----------------------------------------------------------------------


def _req(tmp_path, speech, name, **kw):
    return JobRequest(name, speech, str(tmp_path / name), JobSettings.of(**{**FAST, **kw}))


def test_worker_survives_a_crash_and_cancellation(tmp_path):
    worker = GenerationWorker(device="cpu")
    try:
        speech = str(_speech(tmp_path / "s.wav", 6.0))
        req = lambda name, **kw: _req(tmp_path, speech, name, **kw)
        # cancel: abandon the job after its first progress event; the next job still runs
        events = worker.submit(req("cancelled"))
        assert next(events).kind == "progress"
        events.close()
        assert list(worker.submit(req("after_cancel")))[-1].kind == "done"
        # crash: kill the worker mid-job; that request fails clearly, the next one works
        # (a cancel the busy worker did not acknowledge within 2 s replaced it too: count from here)
        restarts = worker.restarts
        events = worker.submit(req("crashed"))
        next(events)
        pid = worker.pid
        os.kill(pid, 9)
        last = list(events)[-1]
        assert last.kind == "error" and "stopped unexpectedly" in last.message and worker.restarts == restarts + 1
        assert worker.pid != pid
        assert list(worker.submit(req("after_crash")))[-1].kind == "done"
        bad = list(worker.submit(req("bad", size=5)))[-1]
        assert bad.kind == "error" and "video size" in bad.message
    finally:
        worker.close()


def test_worker_dead_while_idle_costs_no_request(tmp_path):
    worker = GenerationWorker(device="cpu")
    try:
        os.kill(worker.pid, 9)
        time.sleep(0.5)
        events = list(worker.submit(_req(tmp_path, str(_speech(tmp_path / "s.wav", 1.0)), "first")))
        assert events[-1].kind == "done" and worker.restarts == 1
    finally:
        worker.close()


def test_frozen_worker_fails_the_job_by_the_watchdog_and_cancel_cannot_hang(tmp_path):
    import signal

    worker = GenerationWorker(device="cpu", watchdog_s=3.0, cancel_grace_s=1.0)
    try:
        speech = str(_speech(tmp_path / "s.wav", 6.0))
        events = worker.submit(_req(tmp_path, speech, "frozen"))
        assert next(events).kind == "progress"
        os.kill(worker.pid, signal.SIGSTOP)  # frozen: no progress, no heartbeat
        last = list(events)[-1]
        assert last.kind == "error" and "stopped responding" in last.message and worker.restarts == 1
        # a frozen worker cannot hold a cancel either: it is replaced after the grace time
        events = worker.submit(_req(tmp_path, speech, "frozen_then_cancelled"))
        assert next(events).kind == "progress"
        os.kill(worker.pid, signal.SIGSTOP)
        events.cancel()
        assert list(events)[-1].kind == "cancelled" and worker.restarts == 2
        assert list(worker.submit(_req(tmp_path, speech, "after")))[-1].kind == "done"
    finally:
        worker.close()


def test_worker_wall_time_limit_and_queue_bound(tmp_path):
    from emage_core.serve.worker import QueueFull

    worker = GenerationWorker(device="cpu", max_job_s=0.5, max_queued=1)
    try:
        speech = str(_speech(tmp_path / "s.wav", 3.0))
        running = worker.submit(_req(tmp_path, speech, "long"))
        time.sleep(0.3)  # let the dispatcher take it: then one may wait
        waiting = worker.submit(_req(tmp_path, speech, "next"))
        with pytest.raises(QueueFull, match="already waiting"):
            worker.submit(_req(tmp_path, speech, "one too many"))
        assert waiting.ahead() >= 1
        last = list(running)[-1]
        assert last.kind == "error" and "longer than the limit" in last.message
        waiting.cancel()
        assert list(waiting)[-1].kind in ("cancelled", "error")
    finally:
        worker.close()


# -- the launched app -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    """``python app.py`` in a subprocess, on a free port, with its own outputs folder."""

    def __init__(self, outputs: Path, *args: str, **env: str):
        self.outputs = outputs
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}/"
        self.proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--device", "cpu", *args],
                                     cwd=REPO, env={**os.environ, "EMAGE_STUDIO_OUTPUTS": str(outputs), **env},
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 120  # a start-up deadline, not a speed check
        while True:
            try:
                urllib.request.urlopen(self.url, timeout=2)
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.proc.kill()
                    pytest.fail(f"app did not start: {self.proc.stdout.read()}")
                time.sleep(1)

    def worker_pid(self) -> int:
        """The generation worker: the app's child started by multiprocessing's spawn (not its resource tracker)."""
        for entry in Path("/proc").iterdir():
            try:
                stat = (entry / "stat").read_text()
                cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
            except (OSError, ValueError):
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid and "spawn_main" in cmd:
                return int(entry.name)
        raise AssertionError("no worker process found")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    # the concurrency test below plays four users from one address: allow them four requests at once
    app = App(tmp_path_factory.mktemp("app_outputs"), EMAGE_STUDIO_JOBS_PER_CLIENT="4")
    yield app.url
    app.close()


def test_worker_faults_and_retention_through_the_api(tmp_path):
    """kill -9 of an idle worker costs no request; kill -STOP of a busy one fails that request within the
    watchdog time, clearly, and the next succeeds; outputs are gone (404, folders removed) after retention."""
    import signal

    from gradio_client import Client, handle_file

    app = App(tmp_path / "outputs", "--watchdog", "4", EMAGE_STUDIO_RETENTION_S="3")
    try:
        client = Client(app.url, verbose=False)
        speech = handle_file(str(_speech(tmp_path / "s.wav", 1.0)))
        os.kill(app.worker_pid(), signal.SIGKILL)
        time.sleep(0.5)
        ok = client.predict(speech=speech, renderer="stick", size=128, api_name="/generate")
        assert ok[0].startswith("Done")

        job = client.submit(speech=handle_file(str(_speech(tmp_path / "long.wav", 20.0))), renderer="mesh",
                            size=256, api_name="/generate")
        deadline = time.monotonic() + 120  # wait for the job to be running; not a speed check
        while not any(str(u[0]).startswith("Working") for u in job.outputs() if u) and time.monotonic() < deadline:
            time.sleep(0.2)
        os.kill(app.worker_pid(), signal.SIGSTOP)
        with pytest.raises(Exception, match="stopped responding"):
            job.result(timeout=120)
        after = client.predict(speech=speech, renderer="stick", size=128, api_name="/generate")
        assert after[0].startswith("Done")

        (instance,) = (tmp_path / "outputs").glob("run-*")
        served = [p for p in (instance / "gradio").rglob("*.mp4")]
        assert served and urllib.request.urlopen(f"{app.url}gradio_api/file={served[0]}").status == 200
        deadline = time.monotonic() + 60  # retention 3 s, swept every second
        while any((instance / "requests").iterdir()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not any((instance / "requests").iterdir())
        with pytest.raises(urllib.error.HTTPError) as gone:
            urllib.request.urlopen(f"{app.url}gradio_api/file={served[0]}")
        assert gone.value.code in (403, 404)
    finally:
        app.close()
    assert not (tmp_path / "outputs" / f"run-{app.proc.pid}").exists()  # a stopped app leaves nothing


def test_api_generate_with_the_speech_alone(app_url, tmp_path):
    """Every parameter but the speech has a default, the reference motion included."""
    from gradio_client import Client, handle_file

    client = Client(app_url, verbose=False)
    result = client.predict(speech=handle_file(str(_speech(tmp_path / "only.wav", 1.0))), api_name="/generate")
    status, grid = result[0], result[1]
    video = grid["video"] if isinstance(grid, dict) else grid
    assert status.startswith("Done") and Path(video).stat().st_size > 0


def test_api_generate_with_gradio_client_concurrently(app_url, tmp_path):
    from gradio_client import Client, handle_file

    speech = _speech(tmp_path / "api.wav", 1.5)

    def call(seed: int):
        client = Client(app_url, verbose=False)
        return client.predict(speech=handle_file(str(speech)), model=BUNDLED, seed=seed, variants=1,
                              temperature=1.0, size=128, renderer="stick", reference=None, api_name="/generate")

    with cf.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(call, [1, 2, 3, 4]))
    metas = [r[-1] if isinstance(r[-1], dict) else r[-2] for r in results]
    metas = [m if isinstance(m, dict) else json.loads(Path(m).read_text()) for m in metas]
    assert sorted(m["seeds"][0] for m in metas) == [1, 2, 3, 4]
    grids = [r[1]["video"] if isinstance(r[1], dict) else r[1] for r in results]
    assert len({Path(g).read_bytes() for g in grids}) == 4  # four distinct videos
    npz = [next(f for f in r[-2] if str(f).endswith("variant_1.npz")) for r in results]
    assert len({str(p) for p in npz}) == 4  # nobody shares an output path


def _chromium():
    """(playwright's sync API, Debian's chromium executable): the browser tests' tools (a skip names the missing
    one; under EMAGE_STUDIO_STRICT_TESTS it fails, as CI installs both)."""
    pw = pytest.importorskip("playwright.sync_api", reason="playwright is a test requirement")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("Debian's chromium is not installed (scripts/install.sh --test installs it)")
    return pw, chromium


def test_real_browser_generates_and_downloads(app_url, tmp_path):
    pw, chromium = _chromium()
    speech = _speech(tmp_path / "browser.wav", 2.5)
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.goto(app_url)
        page.locator("input[type=file]").first.set_input_files(str(speech))
        page.get_by_text("Video", exact=True).click()
        page.get_by_label("stick").check()
        page.get_by_role("button", name="Generate", exact=True).click()
        page.wait_for_function("() => document.body.innerText.includes('Done:')", timeout=120_000)
        duration = page.evaluate("""async () => {
            const v = document.querySelector('video');
            if (v.readyState < 1) await new Promise(r => v.addEventListener('loadedmetadata', r, {once: true}));
            return v.duration; }""")
        assert abs(duration - 2.5) < 0.15
        links = page.eval_on_selector_all("a[href*='variant_1']", "els => els.map(e => e.href)")
        assert links, "download links are shown"
        for href in links:
            r = page.request.get(href)
            assert r.ok and len(r.body()) > 100
        page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
        browser.close()


_SWIFTSHADER = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
                "--autoplay-policy=no-user-gesture-required", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
_CANVAS = ".emage-viewer canvas"


def test_real_browser_3d_viewer_follows_the_audio(app_url, tmp_path):
    """The 3D viewer (three.js, software WebGL): after "Emotion vs neutral" both bodies show on the canvas
    before the videos are done, and the animation time is the audio element's (seek, play, pause)."""
    from PIL import Image

    pw, chromium = _chromium()
    speech = _speech(tmp_path / "viewer.wav", 3.0)
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=_SWIFTSHADER)
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.goto(app_url)
        page.wait_for_function(f"() => document.querySelector('{_CANVAS}')", timeout=60_000)  # viewer.js loaded
        page.locator("input[type=file]").first.set_input_files(str(speech))
        page.get_by_text("Video", exact=True).click()
        page.get_by_label("stick").check()
        page.get_by_text("Emotion and style", exact=True).click()
        page.get_by_role("button", name="Emotion vs neutral", exact=True).click()
        page.wait_for_function(f"() => document.querySelector('{_CANVAS}').dataset.bodies === '2'", timeout=120_000)
        assert "Done:" not in page.inner_text("body")  # the viewer came first (stick videos are fast: not timed)
        png = tmp_path / "viewer.png"
        page.locator(".emage-viewer").screenshot(path=str(png))
        pixels = np.asarray(Image.open(png).convert("L"), dtype=np.float32)
        assert pixels.std() > 10, "the canvas shows the bodies, not a blank background"

        def viewer_time(seconds=None):
            """Seek the audio (when given), let the page draw, return (viewer time, audio time, paused)."""
            return page.evaluate("""async (t) => {
                const a = document.querySelector('.emage-viewer audio');
                if (a.readyState < 1) await new Promise(r => a.addEventListener('loadedmetadata', r, {once: true}));
                if (t !== null) {
                    a.currentTime = t;
                    await new Promise(r => a.addEventListener('seeked', r, {once: true})); }
                await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
                const shown = Number(document.querySelector('.emage-viewer canvas').dataset.time);
                return [shown, a.currentTime, a.paused]; }""",
                                 seconds)

        for t in (1.0, 2.25, 0.5):  # scrub: the bodies' time is the audio's
            shown, audio, _ = viewer_time(t)
            assert abs(shown - t) < 1e-3 and abs(audio - t) < 1e-3
        before = pixels
        page.locator(".emage-viewer").screenshot(path=str(png))
        assert np.abs(np.asarray(Image.open(png).convert("L"), dtype=np.float32) - before).mean() > 0.1  # it moved
        page.evaluate("() => document.querySelector('.emage-viewer audio').play()")
        page.wait_for_function("() => document.querySelector('.emage-viewer audio').currentTime > 1.0", timeout=10_000)
        shown, audio, paused = viewer_time()
        assert not paused and shown > 1.0 and abs(shown - audio) < 0.25  # playing: follows within a frame or so
        page.evaluate("() => document.querySelector('.emage-viewer audio').pause()")
        shown, audio, paused = viewer_time()
        assert paused and abs(shown - audio) < 1e-3
        page.wait_for_function("() => document.body.innerText.includes('Done:')", timeout=120_000)  # videos follow
        assert page.evaluate(f"() => document.querySelector('{_CANVAS}').dataset.bodies") == "2"

        # no WebGL: a message where the canvas was, and the page still works
        page = browser.new_page()
        page.add_init_script("""(() => { const get = HTMLCanvasElement.prototype.getContext;
            HTMLCanvasElement.prototype.getContext = function (kind, ...rest) {
                return /webgl/.test(kind) ? null : get.call(this, kind, ...rest); }; })()""")
        page.goto(app_url)
        page.wait_for_function("() => document.querySelector('.emage-viewer')?.innerText.includes('needs WebGL')",
                               timeout=60_000)
        assert page.get_by_role("button", name="Generate", exact=True).is_enabled()
        browser.close()


# -- live mode (the Live tab and its WebSocket) ------------------------------------------------------

_LIVE_FILES = {"take.npz", "take.json", "take.bvh", "take.glb", "take.wav", "metadata.json"}


def _live_connect(app_url: str, opened: list, model: str = "emage", timeout: float = 120, **start):
    """A new live connection after its start message: (connection, first reply); the connection goes into
    ``opened`` (close them all: the worker's one slot is shared with the module's other tests). The first
    session of a server waits for the worker to load the model: ``timeout`` is a deadline, not a speed check."""
    from websockets.sync.client import connect

    ws = connect(app_url.replace("http", "ws", 1) + "live/ws", open_timeout=30, max_size=None, legacy=True)
    opened.append(ws)
    ws.send(json.dumps({"type": "start", "model": model, "seed": 0, **start}))
    return ws, json.loads(ws.recv(timeout))


def _live_session(app_url: str, opened: list, free_within: float = 10.0, **start):
    """A ready live session, once the worker's slot is free (an ended session frees it asynchronously:
    poll for ``free_within`` seconds, a deadline); returns (connection, ready message)."""
    t0 = time.monotonic()
    while True:
        ws, reply = _live_connect(app_url, opened, **start)
        if reply["type"] == "ready":
            return ws, reply
        ws.close()
        assert reply["type"] == "busy" and time.monotonic() - t0 < free_within, reply
        time.sleep(0.1)


@pytest.fixture
def live_connections():
    """Where `_live_connect` keeps its connections: every one is closed after the test."""
    opened = []
    yield opened
    for ws in opened:
        ws.close()


def _live_closed(ws, timeout: float = 30) -> list[dict]:
    """The messages until the server closes ``ws``."""
    from websockets.exceptions import ConnectionClosed

    messages = []
    try:
        while True:
            messages.append(json.loads(ws.recv(timeout)))
    except ConnectionClosed:
        return messages


def _http(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def test_live_websocket_slot_and_input_rules(app_url, live_connections, tmp_path):
    """Through the running app: one live session at a time (a second page gets 'busy'), a dropped
    connection frees the slot at once, a model path or an oversized chunk is refused, the take's files
    are served by session and name only, and /live/body.glb is the body the page poses."""
    status, body = _http(app_url + "live/body.glb")
    assert status == 200 and body[:4] == b"glTF"
    for bad in ("0" * 32 + "/take.npz",  # no such session
                "a" * 32 + "/../../etc/passwd", "..%2F..%2Fetc/passwd", "a" * 32 + "/..%2F..%2Fetc%2Fpasswd",
                "a" * 32 + "/passwd", "nothex/take.npz"):
        assert _http(f"{app_url}live/take/{bad}")[0] == 404, bad

    speech = sf.read(_speech(tmp_path / "s.wav", 1.0), dtype="float32")[0]
    chunks = [speech[i:i + 3200].astype("<f4").tobytes() for i in range(0, len(speech), 3200)]
    first, ready = _live_session(app_url, live_connections)
    try:
        assert ready["model"] == "emage" and ready["fps"] == 30 and ready["lookahead_frames"] > 0
        first.send(chunks[0])
        assert json.loads(first.recv(60))["type"] == "motion"
        second, reply = _live_connect(app_url, live_connections)  # another page while this one is live
        assert reply["type"] == "busy" and "busy" in reply["message"]
        assert _live_closed(second) == []
    finally:
        first.socket.shutdown(socket.SHUT_RDWR)  # the page vanishes: no stop, no close handshake
        first.close()
    # the dropped page's slot is free well before the 30 s no-speech timeout could have freed it
    # (`_live_session` gives up after 10 s: a deadline, not a speed check)
    third, _ = _live_session(app_url, live_connections)
    third.send(b"\0" * (16000 * 4 * 2 + 4))  # more than 2 s of float32 speech in one message
    (error,) = _live_closed(third)
    assert error["type"] == "error" and "at most 2 s" in error["message"]

    # a model reference must not name a folder of the server: refused before any session starts, with the
    # same message whether the folder exists (the repository's) or not, naming no path but the one sent
    replies = []
    for model in (f"emage:{REPO / 'emage_core'}", f"emage:{REPO / 'nothere' / 'emage_core'}"):
        ws, reply = _live_connect(app_url, live_connections, model=model)
        assert reply["type"] == "error" and "paths on the server are not accepted" in reply["message"], reply
        assert _live_closed(ws) == []
        replies.append(reply["message"].replace(model, "<model>"))
    assert replies[0] == replies[1] and str(REPO) not in replies[0], replies

    # a whole session: speech, stop, the take's files
    ws, _ = _live_session(app_url, live_connections)
    for chunk in chunks:
        ws.send(chunk)
    ws.send(json.dumps({"type": "stop"}))
    messages = _live_closed(ws)
    take = messages[-1]
    motion = [m for m in messages[:-1] if m["type"] == "motion"]
    # one message per push, + the rest at stop; chunks that queued up while a push ran go into one push
    assert take["type"] == "take" and 2 <= len(motion) == len(messages) - 1 <= len(chunks) + 1
    assert take["seconds"] == 1.0 and take["frames"] == 30 == sum(m["n"] for m in motion)
    assert [m["start"] for m in motion] == list(np.cumsum([0] + [m["n"] for m in motion[:-1]]))
    assert all(len(m["q"]) == m["n"] * 55 * 4 and len(m["root"]) == m["n"] * 3 for m in motion)
    assert {f["name"] for f in take["files"]} == _LIVE_FILES
    session = take["files"][0]["url"].split("/")[2]
    for f in take["files"]:
        status, data = _http(app_url + f["url"])
        assert status == 200 and data, f
    assert _http(f"{app_url}live/take/{session}/recording")[0] == 404
    assert _http(f"{app_url}live/take/{session}/..%2F..%2Fmetadata.json")[0] == 404
    ws, _ = _live_session(app_url, live_connections)  # the slot is free after a take
    ws.send(json.dumps({"type": "stop"}))  # and this one ends at once (no speech: no take), freeing it
    *nothing, error = _live_closed(ws)
    assert all(m["type"] == "motion" and m["n"] == 0 for m in nothing)
    assert error["type"] == "error" and "before any motion" in error["message"]


def test_live_websocket_pace_origin_and_rate(app_url, live_connections, tmp_path):
    """Speech sent faster than it can be spoken, an empty chunk, or a connection from another site's page are
    refused (nothing piles up on the server); a page that captures at 48 kHz gets a take at 16 kHz of the
    same length."""
    from websockets.sync.client import connect

    ws = connect(app_url.replace("http", "ws", 1) + "live/ws", open_timeout=30, legacy=True,
                 additional_headers={"Origin": "http://elsewhere.example"})
    live_connections.append(ws)
    (error,) = _live_closed(ws)
    assert error["type"] == "error" and "own page" in error["message"]

    ws, _ = _live_session(app_url, live_connections)
    two_seconds = np.zeros(32000, "<f4").tobytes()
    for _ in range(5):  # 10 s of speech at once: refused once it is well ahead of the clock
        try:
            ws.send(two_seconds)
        except Exception:  # noqa: BLE001 - closed by the server meanwhile
            break
    messages = _live_closed(ws)
    assert messages[-1]["type"] == "error" and "faster than it can be spoken" in messages[-1]["message"]

    ws, _ = _live_session(app_url, live_connections)
    ws.send(b"")
    assert _live_closed(ws)[-1]["type"] == "error"
    ws, reply = _live_connect(app_url, live_connections, temperature=5)  # the page's Variation, out of range
    assert reply["type"] == "error" and "temperature" in reply["message"], reply

    # a 48 kHz page: 1.5 s of speech in 200 ms chunks, resampled in the worker
    t = np.arange(72000) / 48000
    speech = (0.3 * np.clip(np.sin(2 * np.pi * 3 * t), 0, None) * np.sin(2 * np.pi * 150 * t)).astype("<f4")
    ws, _ = _live_session(app_url, live_connections, sample_rate=48000)
    for i in range(0, len(speech), 9600):
        ws.send(speech[i:i + 9600].tobytes())
    ws.send(json.dumps({"type": "stop"}))
    take = _live_closed(ws)[-1]
    assert take["type"] == "take" and take["seconds"] == 1.5 and take["frames"] == 45, take
    status, data = _http(app_url + next(f["url"] for f in take["files"] if f["name"] == "take.wav"))
    wav, rate = sf.read(io.BytesIO(data))
    assert status == 200 and rate == 16000 and len(wav) == 24000


def test_real_browser_live_mode(app_url, live_connections, tmp_path):
    """The issue's acceptance test: Chromium's fake microphone plays real speech into the Live tab; the
    body moves while it speaks; Stop gives the take, whose motion covers exactly the speech recorded,
    which is the speech played, and whose jaw follows it."""
    from PIL import Image

    from conftest import BEAT2, need
    from emage_core.audio import load_audio
    from emage_core.metrics.motion import jaw_envelope_correlation
    from emage_core.motion.beat2 import read_beat2

    pw, chromium = _chromium()
    played = load_audio(need(BEAT2 / "2_scott_0_2_2.wav"))[:16000 * 6]  # 1.5 s of silence, then speech
    duration = len(played) / 16000
    mic = tmp_path / "mic.wav"
    sf.write(mic, played, 16000, subtype="PCM_16")
    # the worker loads the model on its first session: do that now, so the page goes live at once
    ws, _ = _live_session(app_url, live_connections)
    ws.send(json.dumps({"type": "stop"}))
    _live_closed(ws)  # no speech, no take: the session ends and frees the slot

    live = ".emage-live canvas"
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            *_SWIFTSHADER, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic}%noloop"])
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.goto(app_url)
        page.get_by_role("tab", name="Live").click()
        page.wait_for_function(f"() => document.querySelector('{live}')", timeout=60_000)  # live.js loaded
        page.locator(".emage-live-start").click()
        page.wait_for_function(f"() => document.querySelector('{live}').dataset.state === 'live'", timeout=30_000)
        shots = []
        for frames in (30, 75):  # two moments while it speaks: the body is drawn, and it moved
            page.wait_for_function(f"() => Number(document.querySelector('{live}').dataset.shown) >= {frames}",
                                   timeout=30_000)
            png = tmp_path / f"live_{frames}.png"
            page.locator(".emage-live").screenshot(path=str(png))
            shots.append(np.asarray(Image.open(png).convert("L"), dtype=np.float32))
        assert shots[0].std() > 10, "the canvas shows the body, not a blank background"
        assert np.abs(shots[1] - shots[0]).mean() > 0.1, "the body moves"
        # Stop as soon as the page has sent as much speech as the file holds (a chunk may be in flight)
        page.evaluate(f"""async () => {{
            const canvas = document.querySelector('{live}');
            while (0.2 * Number(canvas.dataset.sent) < {duration}) await new Promise((r) => setTimeout(r, 5));
            document.querySelector('.emage-live-stop').click(); }}""")
        page.wait_for_function(f"() => document.querySelector('{live}').dataset.state === 'done'", timeout=60_000)
        stats = page.evaluate(f"() => ({{...document.querySelector('{live}').dataset}})")
        latencies = page.evaluate("() => window.emageLiveStats.latencies")
        links = page.eval_on_selector_all(".emage-live-take a", "els => els.map(e => [e.textContent, e.href])")
        status = page.inner_text(".emage-live-status")
        browser.close()

    files = {}
    for name, href in links:
        code, files[name] = _http(href)
        assert code == 200 and files[name], name
    assert set(files) == _LIVE_FILES
    (tmp_path / "take.npz").write_bytes(files["take.npz"])
    take = read_beat2(tmp_path / "take.npz")
    recorded, sr = sf.read(io.BytesIO(files["take.wav"]), dtype="float32")
    meta = json.loads(files["metadata.json"])
    seconds, sent = len(recorded) / sr, int(stats["sent"])
    print(f"live: sent {sent} chunks, take {seconds:.3f} s / {take.n_frames} frames, shown {stats['shown']}, "
          f"latency median {1000 * np.median(latencies):.0f} ms, max {1000 * max(latencies):.0f} ms; {status}")

    # the take is what the page sent, all of it, and its motion covers exactly that speech
    assert sr == 16000 and len(recorded) == sent * 3200 and meta["live"]["speech_seconds"] == seconds
    assert abs(take.n_frames / 30 - seconds) < 1 / 30 and take.n_frames == meta["frames"] == int(stats["received"])
    assert f"{take.n_frames} frames" in status and 0 < int(stats["shown"]) <= take.n_frames
    # ... which is the speech played: the file from the moment the page went live (the page missed at most
    # some of its leading silence), in order, nothing dropped or repeated. (After the file, Chromium's fake
    # microphone repeats its last buffer rather than falling silent: the take's tail is not compared.)
    hop = 160  # 10 ms loudness steps
    env = lambda a: np.sqrt((a[: len(a) // hop * hop].reshape(-1, hop) ** 2).mean(1))
    pad = 100  # the page may also go live up to 1 s before the microphone starts playing the file
    e_played = env(np.concatenate([np.zeros(pad * hop, np.float32), played, np.zeros(2 * 16000, np.float32)]))
    e_take = env(recorded)

    def best_lag(lo, hi):  # the take's steps [lo, hi) against the file's, started lag steps earlier
        scores = [np.corrcoef(e_take[lo:hi], e_played[pad + lo + k:pad + hi + k])[0, 1] for k in range(-pad, 150)]
        return int(np.argmax(scores)) - pad, max(scores)

    lag, _ = best_lag(0, len(e_take) - 150)  # the take's first 4.5 s lie within the file
    n = len(played) // hop - max(lag, 0)  # the take's steps that hold the file
    (lag, r), (lag1, r1), (lag2, r2) = (best_lag(a, b) for a, b in ((0, n), (0, n // 2), (n // 2, n)))
    missed = lag * hop / 16000  # < 0: the take starts with silence from before the file played
    print(f"live: the take starts {missed:+.2f} s into the file (r {r:.3f}; halves at {lag1}, {lag2} x 10 ms)")
    assert r > 0.9 and min(r1, r2) > 0.8 and max(abs(lag1 - lag), abs(lag2 - lag)) <= 2, (lag, r, lag1, r1, lag2, r2)
    assert np.abs(played[: max(lag, 0) * hop]).max(initial=0) < 0.01, "the page missed only the file's leading silence"
    assert np.abs(recorded[: max(-lag - 2, 0) * hop]).max(initial=0) < 0.01  # before the file: silence
    # Stop came once the page had sent as much as the file lasts, and within the chunk in flight
    assert 0 <= seconds - duration <= 0.2 + 1e-6 and abs(take.n_frames / 30 - duration) <= 0.2 + 1 / 30
    # the jaw follows the speech
    jaw = jaw_envelope_correlation(take.poses, recorded)
    print(f"live: jaw-envelope r {jaw:.2f}")
    assert jaw > 0.2, f"the jaw does not follow the speech (r = {jaw:.2f})"
    # labelled as live, naming the model (by its reference) and the look-ahead; no server path
    assert meta["live"]["generated_live"] is True and meta["model_id"] == "emage"
    assert meta["live"]["lookahead_frames"] == 6 and meta["live"]["lookahead_s"] == 0.2
    assert meta["weights"]["source"] == "emage"
    text = files["metadata.json"].decode() + files["take.json"].decode()
    for secret in (str(REPO), tempfile.gettempdir()):
        assert secret not in text, secret
    assert latencies  # motion came back for the speech (how fast: bench/bench_live.py)
