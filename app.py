"""Start EMAGE Studio: ``python app.py [--host H] [--port P] [--share]``."""
from __future__ import annotations

import argparse

from ui.blocks import build_demo


def main() -> None:
    parser = argparse.ArgumentParser(description="EMAGE Studio web app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    args = parser.parse_args()
    build_demo().queue(max_size=32).launch(server_name=args.host, server_port=args.port, share=args.share)


if __name__ == "__main__":
    main()
