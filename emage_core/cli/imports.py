"""``import FAMILY ...``: turn a reference implementation's released files into our safe layout.

    python -m emage_core import diffsheg CKPT.tar --stats talkshow_mean_std.npy -o FOLDER
    python -m emage_core generate speech.wav -o out.npz --model diffsheg:FOLDER
"""
from __future__ import annotations

import argparse


def add_import_parser(sub) -> None:
    p = sub.add_parser("import", help="convert a reference's released checkpoint into our layout (no pickle)")
    p.add_argument("family", choices=("diffsheg",), help="whose files: diffsheg (the SHOW configuration)")
    p.add_argument("checkpoint", help="the reference's checkpoint (.tar / .pt), read with weights_only=True")
    p.add_argument("--stats", required=True, help="its normalisation statistics (talkshow_mean_std.npy), read "
                                                   "without unpickling anything but numpy arrays")
    p.add_argument("--config", default=None, help="the reference's model configuration (JSON) when it is not the "
                                                    "released SHOW size")
    p.add_argument("-o", "--output", required=True, help="the checkpoint folder to write")
    p.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    from ..files import sha256_file
    from ..models.diffsheg.checkpoint import import_reference

    config = None
    if args.config:
        import json

        from ..models.diffsheg.model import DiffSHEGConfig

        with open(args.config) as fh:
            config = DiffSHEGConfig.from_dict(json.load(fh))
    folder = import_reference(args.checkpoint, args.stats, args.output, config=config)
    print(f"wrote {folder}: config.json, model.safetensors, statistics.npz "
          f"(from {args.checkpoint}, sha256 {sha256_file(args.checkpoint)[:12]}...)")
    print(f"use it: python -m emage_core generate SPEECH -o OUT.npz --model diffsheg:{folder}")
    return 0
