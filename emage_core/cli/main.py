"""Command line: ``python -m emage_core <command> ...``.

Each command is a small function taking the parsed arguments; heavy modules are imported
inside them so ``--help`` stays instant.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _looks_like_npz(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"PK\x03\x04"  # .npz files are zip archives


def cmd_info(args: argparse.Namespace) -> int:
    """Print what a motion (.npz) or audio file holds."""
    path = Path(args.file)
    if not path.is_file():
        raise SystemExit(f"error: {path} is not a file")
    if _looks_like_npz(path):
        from ..motion.beat2 import read_beat2
        from ..motion.skeleton import PARTS

        m = read_beat2(path)
        print(f"motion file:  {path}")
        print(f"frames:       {m.n_frames}")
        print(f"fps:          {m.fps:g}")
        print(f"duration:     {m.duration:.2f} s")
        print("part ranges (min .. max; rotations in radians, translation in metres):")
        rows = {part: m.poses[:, list(joints)] if joints else m.trans for part, joints in PARTS.items()}
        rows["face"] = m.poses[:, list(PARTS["face"])]  # the jaw; expressions get their own row
        rows["face expressions"] = m.expressions
        for label, v in rows.items():
            print(f"  {label:<17} {v[0].size:>4} values  {v.min():+.3f} .. {v.max():+.3f}")
        return 0
    from ..audio import probe_audio

    info = probe_audio(path)
    print(f"audio file:   {path}")
    print(f"format:       {info.format}" + (f" ({info.subtype})" if getattr(info, "subtype", None) else ""))
    print(f"sample rate:  {info.sample_rate} Hz")
    print(f"channels:     {info.channels}")
    print(f"duration:     {info.duration:.2f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m emage_core",
        description="EMAGE Studio core: speech to holistic 3D co-speech motion (SMPL-X + FLAME).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("info", help="describe a motion (.npz) or audio file")
    p.add_argument("file", help="a BEAT2 .npz motion file or an audio file (wav, mp3, flac, ogg, m4a)")
    p.set_defaults(func=cmd_info)

    from .generate import add_generate_parsers

    add_generate_parsers(sub)  # generate, compare
    from .parity import add_parity_parser

    add_parity_parser(sub)  # parity
    from .imports import add_import_parser

    add_import_parser(sub)  # import
    from .evaluate import add_evaluate_parser

    add_evaluate_parser(sub)  # evaluate
    from .train import add_train_parsers

    add_train_parsers(sub)  # train, metrics
    from .render import add_render_parser

    add_render_parser(sub)  # render, export
    from .live import add_live_parser

    add_live_parser(sub)  # live
    from ..batch import add_batch_parser

    add_batch_parser(sub)  # batch
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError, OSError) as e:
        # Our errors (bad files, bad settings) are ValueError/RuntimeError subclasses with
        # messages meant for people: print them without a traceback.
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
