"""Command line for training and metrics: ``python -m emage_core train|metrics ...``.

`add_train_parsers` adds both sub-commands to the main parser (`emage_core.cli`); heavy modules
are imported inside the commands so ``--help`` stays instant.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SIZE_NAMES = ("tiny", "base", "official")  # = emage_core.train.SIZES (kept in sync by a test)


def cmd_train(args: argparse.Namespace) -> int:
    """Train (or resume) and say where the checkpoint is."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.family == "diffsheg":
        from ..train.diffsheg import DiffshegTrainConfig, train_diffsheg

        train_diffsheg(DiffshegTrainConfig(
            data=args.data, out=args.out, size=args.size, steps=args.steps, batch_size=args.batch_size,
            lr=args.lr if args.lr is not None else 2e-4, stride=args.stride if args.stride is not None else 10,
            mirror=args.mirror, seed=args.seed, device=args.device, save_every=args.save_every, resume=args.resume))
        print(f"checkpoint: {args.out} (python -m emage_core generate SPEECH -o OUT.npz --model diffsheg:{args.out})")
        return 0
    if args.family == "emotiongesture":
        from ..train.emotiongesture import EmotionGestureTrainConfig, train_emotiongesture

        if args.size == "official":
            raise SystemExit("EmotionGesture has no released size: choose --size tiny or base")
        train_emotiongesture(EmotionGestureTrainConfig(
            data=args.data, out=args.out, size=args.size, steps=args.steps, batch_size=args.batch_size,
            lr=args.lr if args.lr is not None else 1e-3, stride=args.stride if args.stride is not None else 4,
            mirror=args.mirror, emotions="all" if args.emotions is None else args.emotions,
            label_dropout=args.label_dropout, seed=args.seed, device=args.device, save_every=args.save_every,
            resume=args.resume))
        print(f"checkpoint: {args.out} (python -m emage_core generate SPEECH -o OUT.npz --model emotiongesture:{args.out})")
        return 0
    from ..train.emage import TrainConfig, train

    config = TrainConfig(
        data=args.data, out=args.out, size=args.size, steps=args.steps, vq_steps=args.vq_steps, stage=args.stage,
        batch_size=args.batch_size, lr=args.lr if args.lr is not None else 1.5e-4, vq_lr=args.vq_lr,
        stride=args.stride if args.stride is not None else 20, mirror=args.mirror,
        seed=args.seed, device=args.device, save_every=args.save_every, resume=args.resume, vq_from=args.vq_from,
        emotions=args.emotions, speakers=args.speakers, label_dropout=args.label_dropout,
        aligned_audio=args.aligned_audio,
    )
    train(config)
    print(f"checkpoint: {args.out} (python -m emage_core generate SPEECH -o OUT.npz --weights {args.out})")
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    """Print BC, jerk and the jaw-envelope correlation of each motion (+ L1 diversity of several)."""
    import numpy as np

    from ..audio import load_audio
    from ..motion.beat2 import read_beat2
    from ..motion.kinematics import joint_positions
    from ..metrics import l1_diversity, motion_metrics

    wav = load_audio(args.audio)
    motions = [read_beat2(p) for p in args.motion]
    motions = [m.resample() for m in motions]  # at 30 fps
    rows = [{"file": str(path), **motion_metrics(m, wav)} for path, m in zip(args.motion, motions)]
    result: dict[str, Any] = {"audio": str(args.audio), "motions": rows}
    if len(motions) > 1:
        T = min(m.n_frames for m in motions)
        result["l1_diversity"] = l1_diversity(np.stack([joint_positions(m)[:T] for m in motions]))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"speech: {args.audio}")
    print(f"{'motion':<40} {'frames':>6} {'BC':>6} {'jerk m/s^3':>11} {'jaw-env r':>9}")
    for r in rows:
        print(f"{Path(r['file']).name:<40} {r['frames']:>6} {r['bc']:>6.3f} {r['jerk']:>11.1f} "
              f"{r['jaw_envelope_corr']:>9.3f}")
    if "l1_diversity" in result:
        print(f"L1 diversity across the {len(motions)} motions: {result['l1_diversity']:.4f} m")
    return 0


def add_train_parsers(subparsers) -> None:
    """Add ``train`` and ``metrics`` to the ``python -m emage_core`` sub-commands."""
    p = subparsers.add_parser("train", help="train a model family on motion + speech (EMAGE: the released layout)")
    p.add_argument("--family", default="emage", choices=("emage", "diffsheg", "emotiongesture"),
                   help="what to train: emage (default), diffsheg (upper body, hands, face; no HuBERT) or "
                        "emotiongesture (upper body and hands; emotion labels from BEAT2 names, TextGrid transcripts)")
    p.add_argument("--data", required=True,
                   help="BEAT2 folder (smplxflame_30/ + wave16k/) or a folder of name.npz + name.wav pairs")
    p.add_argument("--out", required=True, help="checkpoint folder to write (and to --resume)")
    p.add_argument("--size", default="tiny", choices=SIZE_NAMES,
                   help="widths: tiny (hidden 128, codebooks 64x64, 22 MB, CPU), base (256, 128x128), "
                        "official (768, 256x256, the released sizes); default tiny")
    p.add_argument("--steps", type=int, default=2000, help="audio-model steps (default 2000)")
    p.add_argument("--vq-steps", type=int, default=None, help="autoencoder steps (default: --steps)")
    p.add_argument("--stage", default="all", choices=["all", "vq", "audio"],
                   help="vq = the five autoencoders, audio = the audio model on trained ones, all = both (default)")
    p.add_argument("--batch-size", type=int, default=16, help="windows per step (default 16; the reference 56)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (EMAGE's audio model: 1.5e-4; DiffSHEG: 2e-4, the references'; EmotionGesture: 1e-3)")
    p.add_argument("--vq-lr", type=float, default=3e-4, help="autoencoder learning rate (default 3e-4)")
    p.add_argument("--stride", type=int, default=None,
                   help="frames between training windows (EMAGE's 64-frame windows: 20; DiffSHEG's 88: 10; EmotionGesture's 72: 4)")
    p.add_argument("--mirror", action="store_true", help="add left/right mirrored copies of every clip")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--save-every", type=int, default=500, help="steps between checkpoints (default 500)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--vq-from", default=None,
                   help="take the five autoencoders from this checkpoint (folder or Hub id) instead of training them")
    p.add_argument("--emotions", default=None, metavar="LABELS", type=str.lower,
                   help="learn emotion conditioning: comma-separated BEAT labels (neutral,happiness,...) or 'all' "
                        "(those in the data, from BEAT2 file names); default: none, as the release "
                        "(EmotionGesture: all)")
    p.add_argument("--speakers", default=None, metavar="LABELS",
                   help="learn speaker embeddings: BEAT2 '{id}_{name}' labels (2_scott,...) or 'all'; default: one speaker")
    p.add_argument("--label-dropout", type=float, default=0.15,
                   help="chance a window's label is dropped to 'no label', for classifier-free guidance (default 0.15)")
    p.add_argument("--aligned-audio", action=argparse.BooleanOptionalAction, default=True,
                   help="let each output frame read its own audio frame (face query + positions on the audio; "
                        "no extra parameters). --no-aligned-audio trains the released architecture exactly. "
                        "Fixed when a run starts (default: on)")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("metrics", help="BC, jerk and lip-sync proxy of motion(s) for a speech file")
    p.add_argument("motion", nargs="+", help="BEAT2 .npz motion(s); several are variants (adds L1 diversity)")
    p.add_argument("--audio", required=True, help="the speech the motion goes with")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_metrics)
