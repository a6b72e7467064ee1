"""Time from "Generate" to the first video, as the app runs a request (worker process + job).

    python bench/bench_app.py [--speech emage_core/assets/speech/story.wav] [--size 384] [--renderer mesh]

Prints the seconds from submitting the request to the finished video (model load included on the
first request, as a user meets it after start-up), and a second request with the model loaded.
Target on the 2-core development CPU: 10 s of speech -> first video in at most 20 s, bundled model.
"""
from __future__ import annotations

import argparse
import tempfile
import time



from emage_core.assets import EXAMPLE_SPEECH
from emage_core.audio import load_audio
from emage_core.serve.jobs import JobSettings
from emage_core.serve.worker import GenerationWorker, JobRequest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--speech", default=str(EXAMPLE_SPEECH / "story.wav"))
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--renderer", default="mesh", choices=["mesh", "stick"])
    args = ap.parse_args()
    seconds = load_audio(args.speech).shape[0] / 16000
    worker = GenerationWorker()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for run in ("first request (loads the model)", "second request"):
                t0 = time.perf_counter()
                req = JobRequest(run[:5], args.speech, f"{tmp}/{run[:5]}",
                                 JobSettings.of(seed=1, size=args.size, renderer=args.renderer))
                last = list(worker.submit(req))[-1]
                assert last.kind == "done", last.message
                print(f"{run:<34} {seconds:5.1f} s of speech -> video in {time.perf_counter() - t0:5.1f} s")
    finally:
        worker.close()


if __name__ == "__main__":
    main()
