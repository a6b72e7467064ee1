"""Seconds from pressing Generate to the first animated frame in the page's 3D viewer, and to the first video.

    python bench/bench_viewer.py [--speech emage_core/assets/speech/story.wav] [--renderer mesh] [--size 384]
                                 [--screenshot viewer.png]

Runs the app (``app.py --device cpu``) and Debian's Chromium (Playwright, software WebGL) on this machine, as a
user would: the page's defaults (bundled model, mesh video 384 px), the speech uploaded, Generate pressed. A
first request (the worker loads the model) and a second one. "Viewer": the result's bodies are loaded and the
first frame is drawn at the audio's time; "video": the side-by-side video is in the page ("Done:").
Goal on the 2-core development CPU, 10 s of speech: the viewer within 3 s (the video took about 12 s).
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emage_core.assets import EXAMPLE_SPEECH  # noqa: E402
from emage_core.audio import SAMPLE_RATE, load_audio  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


def _start_app(outputs: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--device", "cpu"], cwd=REPO,
                            env={**os.environ, "EMAGE_STUDIO_OUTPUTS": outputs},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("the app did not start")
            time.sleep(0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--speech", default=str(EXAMPLE_SPEECH / "story.wav"))
    ap.add_argument("--renderer", default="mesh", choices=["mesh", "stick"])
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--screenshot", default=None, help="save the viewer's picture after the second request")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    seconds = load_audio(args.speech).shape[0] / SAMPLE_RATE
    with tempfile.TemporaryDirectory() as outputs:
        proc, url = _start_app(outputs)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1200})
                page.goto(url)
                page.wait_for_function("() => document.querySelector('.emage-viewer canvas')", timeout=60_000)
                page.locator("input[type=file]").first.set_input_files(args.speech)
                page.get_by_text("Video", exact=True).click()
                page.get_by_label(args.renderer).check()
                page.get_by_label("Video size (pixels)").last.fill(str(args.size))  # the slider's number box
                page.wait_for_timeout(1000)  # the upload lands
                for n, run in enumerate(("first request (loads the model)", "second request"), 1):
                    t0 = time.perf_counter()
                    page.get_by_role("button", name="Generate", exact=True).click()
                    page.wait_for_function(f"() => document.querySelector('.emage-viewer canvas').dataset.results"
                                           f" === '{n}'", polling="raf", timeout=600_000)
                    viewer = time.perf_counter() - t0
                    # the status said "Motion ready" with the viewer's files; "Done:" comes with the videos
                    page.wait_for_function("() => document.body.innerText.includes('Done:')", timeout=600_000)
                    first_video = time.perf_counter() - t0
                    print(f"{run:<34} {seconds:5.1f} s of speech -> viewer playing in {viewer:5.1f} s, "
                          f"video in {first_video:5.1f} s")
                if args.screenshot:
                    page.evaluate("() => { const a = document.querySelector('.emage-viewer audio');"
                                  " a.currentTime = a.duration / 2; }")
                    page.wait_for_timeout(500)
                    page.locator(".emage-viewer").screenshot(path=args.screenshot)
                browser.close()
        finally:
            proc.terminate()
            proc.wait(15)


if __name__ == "__main__":
    main()
