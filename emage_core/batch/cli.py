"""The command line: ``python -m emage_core batch STUDY.yaml -o OUTDIR`` (registered by `emage_core.cli`)."""
from __future__ import annotations

import argparse
import sys

from .manifest import StudyError
from .run import run_study, summary


def add_batch_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``batch`` on the CLI's subparsers (see `emage_core.cli`)."""
    p = subparsers.add_parser(
        "batch", help="generate study stimuli from a manifest (anonymized, counterbalanced, resumable)",
        description="Generate the stimuli of a perception study from a YAML manifest: motions (BEAT2 .npz), "
                    "single and side-by-side videos with anonymous names, a key CSV and a manifest JSON with "
                    "sha256 of every input and output. Rerunning skips finished items. "
                    "Example: python -m emage_core batch examples/study.yaml -o study_out")
    p.add_argument("manifest", help="the study manifest (YAML); see examples/study.yaml")
    p.add_argument("-o", "--output", required=True, help="output folder (created; rerun into it to resume)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: in this process (default); ray: spread items over a Ray cluster")
    p.add_argument("--address", default=None,
                   help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray instance is started)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--device", default=None,
                   help="generation device: cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads of each generation task, local or Ray (default: min(4, CPUs)); "
                        "the same count gives the same motion files")
    p.add_argument("--dry-run", action="store_true", help="check the manifest and inputs, print what would run, stop")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_batch)
    return p


def cmd_batch(args: argparse.Namespace) -> int:
    """Exit codes: 0 all items finished; 1 some failed (the others finished); 2 bad manifest or inputs."""
    try:
        result = run_study(args.manifest, args.output, backend=args.backend, address=args.address,
                           device=args.device, threads=args.threads, num_cpus=args.num_cpus,
                           dry_run=args.dry_run, progress=not args.quiet)
    except StudyError as e:
        print(f"error: the study manifest has {len(e.problems)} problem(s); nothing was generated:", file=sys.stderr)
        for line in str(e).splitlines():
            print(f"  {line}", file=sys.stderr)
        return 2
    print(summary(result, dry_run=args.dry_run))
    return 0 if result.ok else 1
