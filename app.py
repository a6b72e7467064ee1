"""Start EMAGE Studio: ``python app.py [--host H] [--port P] [--share]``."""
from __future__ import annotations

import argparse
import os

# Before torch loads OpenMP: idle threads sleep instead of spinning. Same numbers; on a shared
# machine spinning threads slowed generation and style edits several-fold (measured on 2 cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from emage_core.worker import GenerationWorker  # noqa: E402
from ui.blocks import build_demo  # noqa: E402
from ui.studio import Studio  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description="EMAGE Studio web app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--queue-size", type=int, default=16, help="requests waiting at most (default 16)")
    args = parser.parse_args()

    studio = Studio(GenerationWorker(device=args.device))
    demo = build_demo(studio).queue(max_size=args.queue_size)
    try:
        demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                    max_file_size="100mb", allowed_paths=[str(studio.root)])
    finally:
        studio.worker.close()


if __name__ == "__main__":
    main()
