"""The app: handlers, the worker process, the API through gradio_client, and a real browser."""
from __future__ import annotations

import concurrent.futures as cf
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soundfile as sf

from conftest import REPO
from emage_core import hub
from emage_core.beat2 import write_beat2
from emage_core.jobs import JobSettings
from emage_core.motion import Motion
from emage_core.worker import GenerationWorker, JobRequest
from ui.studio import BUNDLED, N_OUTPUTS, Studio, model_choices, model_source

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
    s.worker.close()


def _run(studio, speech, *, lock_rows=None, reference=None, use_previous=False, previous=None, **kw):
    args = {**FAST, **{k: kw.pop(k) for k in list(kw) if k in FAST}}
    outs = list(studio.generate(speech, BUNDLED, kw.pop("emotion", "neutral"), kw.pop("intensity", 1.0),
                                lock_rows or [["", None, None]], reference, use_previous, args["variants"],
                                args["seed"], args["temperature"], args["view"], args["size"], args["show_labels"],
                                args["renderer"], previous, compare_neutral=kw.pop("compare_neutral", False),
                                progress=lambda *a, **k: None, **kw))
    return outs[-1]


# -- handlers -------------------------------------------------------------------------------------


def test_generate_handler_returns_every_output(studio, tmp_path):
    out = _run(studio, str(_speech(tmp_path / "s.wav")), variants=2, temperature=0.9)
    assert len(out) == N_OUTPUTS
    status, grid, *cells = out[:2 + 4]
    files, meta, previous = out[-3:]
    assert "2 variant(s)" in status and Path(grid).is_file()
    assert [c["visible"] for c in cells] == [True, True, False, False]
    names = sorted(Path(f).name for f in files)
    assert names == ["emage_outputs.zip", "metadata.json", "variant_1.bvh", "variant_1.npz", "variant_2.bvh",
                     "variant_2.npz"]
    assert meta["seeds"] == [3, 4] and meta["frames"] == 60 and len(meta["speech"]["sha256"]) == 64
    assert meta["weights"]["files"]  # sha256 of every weight file
    assert Path(previous).name == "variant_1.npz" and Path(previous).parent.parent == studio.root


def test_emotion_vs_neutral_is_an_honest_explicit_edit(studio, tmp_path):
    out = _run(studio, str(_speech(tmp_path / "s.wav")), emotion="sadness", intensity=0.8, compare_neutral=True,
               amplitude=0.5)
    meta = out[-2]
    names = sorted(Path(f).name for f in out[-3])
    assert "neutral_1.npz" in names and "variant_1.npz" in names
    assert meta["emotion"]["learned"] is None  # the bundled model knows no emotions
    explicit = meta["emotion"]["explicit"]
    assert explicit["kind"] == "explicit edit" and explicit["preset"] == "sadness"
    assert explicit["controls"]["amplitude"] == 0.5 and explicit["edited"] is True  # the slider override
    emo, neutral = (np.load(Path(out[-1]).parent / f"{n}.npz")["poses"] for n in ("variant_1", "neutral_1"))
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
    ("pickled_reference", "Python objects"),
    ("short_reference", "reference motion has only"),
    ("no_previous", "no previous result"),
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


def test_lock_to_previous_result(studio, tmp_path):
    speech = str(_speech(tmp_path / "s.wav"))
    first = _run(studio, speech)
    previous = first[-1]
    second = _run(studio, speech, lock_rows=[["hands", 0.5, 1.5]], use_previous=True, previous=previous)
    meta = second[-2]
    assert meta["settings"]["locks"] == ["hands:0.5-1.5"] and meta["reference_sha256"]
    a, b = (np.load(p)["poses"].reshape(-1, 55, 3) for p in (previous, second[-1]))
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
    assert BUNDLED in values and f"local:{tmp_path / 'ckpts'}{os.sep}mine" in values
    assert model_source(BUNDLED) == str(hub.BUNDLED_CHECKPOINT)
    assert model_source(f"local:{tmp_path / 'ckpts'}{os.sep}mine") == str(ckpt)
    with pytest.raises(gr.Error, match="unknown model"):
        model_source("local:/etc")


def test_guidance_slider_is_live_only_for_learned_emotions(tmp_path, monkeypatch):
    import json

    from ui.studio import guidance_update

    ckpt = tmp_path / "ckpts" / "emo"
    (ckpt / "emage_vq").mkdir(parents=True)
    (ckpt / "config.json").write_text(json.dumps({"emotion_labels": ["neutral", "happiness"]}))
    monkeypatch.setenv("EMAGE_CHECKPOINT_DIRS", str(tmp_path / "ckpts"))
    emo = f"local:{tmp_path / 'ckpts'}{os.sep}emo"
    assert guidance_update(emo, "happiness")["interactive"] is True
    for choice, emotion in ((emo, "sadness"), (emo, "neutral"), (BUNDLED, "happiness")):
        update = guidance_update(choice, emotion)
        assert update["interactive"] is False and update["value"] == 1.0


# -- the worker process -----------------------------------------------------------------------


def test_worker_survives_a_crash_and_cancellation(tmp_path):
    worker = GenerationWorker(device="cpu")
    try:
        speech = str(_speech(tmp_path / "s.wav", 6.0))
        req = lambda name, **kw: JobRequest(name, speech, str(tmp_path / name), JobSettings(**{**FAST, **kw}))
        # cancel: abandon the job after its first progress event; the next job still runs
        events = worker.submit(req("cancelled"))
        assert next(events).kind == "progress"
        events.close()
        assert list(worker.submit(req("after_cancel")))[-1].kind == "done"
        # crash: kill the worker mid-job; that request fails clearly, the next one works
        pid = worker.pid
        events = worker.submit(req("crashed"))
        next(events)
        os.kill(pid, 9)
        last = list(events)[-1]
        assert last.kind == "error" and "stopped unexpectedly" in last.message and worker.restarts == 1
        assert worker.pid != pid
        assert list(worker.submit(req("after_crash")))[-1].kind == "done"
        bad = list(worker.submit(req("bad", size=5)))[-1]
        assert bad.kind == "error" and "video size" in bad.message
    finally:
        worker.close()


# -- the launched app -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    port = _free_port()
    env = {**os.environ, "EMAGE_STUDIO_OUTPUTS": str(tmp_path_factory.mktemp("app_outputs"))}
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--device", "cpu"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"app did not start: {proc.stdout.read()}")
            time.sleep(1)
    yield url
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


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


def test_real_browser_generates_and_downloads(app_url, tmp_path):
    pw = pytest.importorskip("playwright.sync_api", reason="playwright is a test requirement")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("Debian's chromium is not installed (scripts/install.sh --test installs it)")
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
        page.get_by_role("button", name="Generate").click()
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
