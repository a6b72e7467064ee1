"""``evaluate``: the official BEAT2 metrics (FGD, BC, L1div, face MSE / LVD) for models or motion folders.

    python -m emage_core evaluate --data BEAT2/beat_english_v2.0.0 --model emage -o results/eval
    python -m emage_core evaluate --data DIR --motions generated/ --smplx SMPLX_NEUTRAL_2020.npz

Prints one table (anchors, then one row per model or folder; display scale and raw), writes it as
``OUT.csv`` and ``OUT.json`` (with provenance). See `emage_core.metrics.evaluate`.
"""
from __future__ import annotations

import argparse
import sys


def add_evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="the official BEAT2 metrics (FGD, BC, L1div, face MSE/LVD) of models "
                                        "or generated motions, with anchors")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="BEAT2 as released: the folder holding train_test_split.csv, smplxflame_30/ and wave16k/ "
                        "(or its parent)")
    p.add_argument("--speakers", default="2", metavar="IDS",
                   help="BEAT2 speaker ids, comma-separated, or 'all' (default 2, as EMAGE's Table 4)")
    p.add_argument("--split", default="test", choices=("test", "val", "train", "additional"),
                   help="which takes of the split file (default test)")
    p.add_argument("--model", action="append", default=[], metavar="REF",
                   help="a model reference FAMILY[:SOURCE] (repeatable): generates every test take from its speech")
    p.add_argument("--motions", action="append", default=[], metavar="DIR",
                   help="a folder of already generated motions, <take id>.npz per test take (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="generation seed for every take (default 0); also the noise "
                                                       "baseline's")
    p.add_argument("--temperature", type=float, default=0.0, help="generation temperature (default 0: most likely)")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit of the models")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cpu for the evaluator; models choose)")
    p.add_argument("--evaluator", default=None, metavar="SRC",
                   help="the evaluator: a Hub repo id or a folder with AESKConv_240_100.bin and "
                        "mean_vel_smplxflame_30.npy (default $EMAGE_EVALTOOLS_REPO or H-Liu1997/emage_evaltools)")
    p.add_argument("--evaluator-revision", default=None, metavar="REV",
                   help="pin the evaluator repo's branch, tag or commit (the commit used is recorded)")
    p.add_argument("--evaluator-sha256", default=None, metavar="HEX",
                   help="refuse an evaluator .bin with another sha256")
    p.add_argument("--smplx", default=None, metavar="FILE",
                   help="the SMPL-X model file (SMPLX_NEUTRAL_2020.npz; licence-restricted, yours): official joints "
                        "for BC and L1div, and face vertices for MSE / LVD. Without it BC and L1div use the "
                        "project's kinematics (not comparable with published numbers) and MSE / LVD are skipped")
    p.add_argument("--variant", default="evaltools", choices=("evaltools", "paper"),
                   help="evaltools (the released evaluator's code, default) or paper (the CVPR 2024 code's FD, "
                        "BC and LVD)")
    p.add_argument("--save-motions", default=None, metavar="DIR",
                   help="also write each model's generated motions as DIR/<model>/<take>.npz (reuse with --motions)")
    p.add_argument("-o", "--output", default="evaluation", metavar="PREFIX",
                   help="write PREFIX.csv and PREFIX.json (default: evaluation.csv / evaluation.json here)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..metrics.evaluate import format_table, parse_speakers, run_evaluation, write_outputs

    table = run_evaluation(
        args.data, models=args.model, motions=args.motions, speakers=parse_speakers(args.speakers),
        split=args.split, seed=args.seed, temperature=args.temperature, revision=args.revision, device=args.device,
        evaluator=args.evaluator, evaluator_revision=args.evaluator_revision, evaluator_sha256=args.evaluator_sha256,
        smplx_model=args.smplx, variant=args.variant, save_motions=args.save_motions,
        progress=not args.no_progress and sys.stderr.isatty())
    print(format_table(table))
    csv_path, json_path = write_outputs(table, args.output)
    print(f"\nwrote {csv_path} and {json_path}")
    return 0
