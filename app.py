"""Start EMAGE Studio: ``python app.py [--host H] [--port P] [--share]``."""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import tempfile
from pathlib import Path

# Before torch loads OpenMP: idle threads sleep instead of spinning. Same numbers; on a shared
# machine spinning threads slowed generation and style edits several-fold (measured on 2 cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from emage_core.serve.outputs import claim_instance  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description="EMAGE Studio web app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--queue-size", type=int, default=16, help="requests waiting at most (default 16)")
    parser.add_argument("--watchdog", type=float, default=float(os.environ.get("EMAGE_STUDIO_WATCHDOG_S", 60)),
                        help="fail a job whose worker shows no sign of life for this many seconds (default 60)")
    parser.add_argument("--max-job-minutes", type=float, default=float(os.environ.get("EMAGE_STUDIO_MAX_JOB_MIN", 40)),
                        help="stop a request that runs longer than this (default 40)")
    args = parser.parse_args()

    # This server's own folder: request outputs and Gradio's file cache (uploads and served copies), so
    # retention can remove every copy; folders of servers that are no longer running are removed now.
    instance = claim_instance(os.environ.get("EMAGE_STUDIO_OUTPUTS") or Path(tempfile.gettempdir()) / "emage_studio")
    cache = instance / "gradio"
    os.environ["GRADIO_TEMP_DIR"] = str(cache)  # read by Gradio when it stores a file

    from emage_core.serve.live_web import add_live_routes
    from emage_core.serve.worker import GenerationWorker
    from ui.blocks import build_demo
    from ui.studio import Studio

    worker = GenerationWorker(device=args.device, watchdog_s=args.watchdog, max_job_s=args.max_job_minutes * 60,
                              max_queued=args.queue_size)
    studio = Studio(worker, root=instance / "requests", cache_dir=cache)
    demo = build_demo(studio).queue(max_size=args.queue_size * 2)

    def stop(signum, frame):  # SIGTERM (a service manager, a Space restart): shut down as on Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size="100mb",
                    prevent_thread_lock=True)
        add_live_routes(demo.app, worker, studio)  # live mode: a WebSocket beside Gradio's routes
        demo.block_thread()
    finally:
        studio.close()
        shutil.rmtree(instance, ignore_errors=True)


if __name__ == "__main__":
    main()
