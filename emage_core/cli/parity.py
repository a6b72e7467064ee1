"""``parity SUBJECT GOLDEN_DIR``: recompute a reference implementation's golden cases and compare.

    python -m emage_core parity diffsheg ../shared/reference/diffsheg/golden [-o out.npz]
    python -m emage_core parity evaltools ../shared/reference/emage_eval/golden --audio speech.wav

The golden folder holds ``config.json``, ``model.safetensors``, ``inputs.npz`` and, when present,
``outputs.npz`` (and tolerances): every case is recomputed and written under the same keys; with
``outputs.npz`` there, the largest error per key is printed and the exit code is 1 beyond tolerance.
Users can run it to check an install.
"""
from __future__ import annotations

import argparse
from pathlib import Path

SUBJECTS = {  # subject -> module providing run_parity(golden, *, audio) and compare(outputs, golden)
    "diffsheg": "emage_core.models.diffsheg.parity",
    "evaltools": "emage_core.metrics.parity",
}


def add_parity_parser(sub) -> None:
    p = sub.add_parser("parity", help="recompute a reference implementation's golden outputs and compare")
    p.add_argument("subject", choices=sorted(SUBJECTS), help="what to check: the DiffSHEG generator or the "
                                                             "official BEAT2 evaluator")
    p.add_argument("golden", help="a folder laid out like ../shared/reference/<subject>/golden")
    p.add_argument("--audio", default=None, help="speech the golden cases were made from (evaltools' BC)")
    p.add_argument("-o", "--output", default=None, help="write the recomputed outputs here (.npz)")
    p.set_defaults(func=cmd_parity)


def cmd_parity(args: argparse.Namespace) -> int:
    import importlib

    import numpy as np

    golden = Path(args.golden)
    if not (golden / "inputs.npz").is_file():
        raise SystemExit(f"error: {golden} has no inputs.npz (expected a golden folder)")
    module = importlib.import_module(SUBJECTS[args.subject])
    outputs = module.run_parity(golden, audio=Path(args.audio) if args.audio else None)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, **{k: np.asarray(v) for k, v in outputs.items()})
        print(f"wrote {out} ({len(outputs)} keys)")
    rows = module.compare(outputs, golden)
    if not rows:
        print(f"{golden / 'outputs.npz'} absent: nothing to compare with")
        return 0
    width = max(len(r[0]) for r in rows)
    print(f"{'key':<{width}}  {'max error':>11}  {'tolerance':>11}  ok")
    for key, err, tol, ok in rows:
        print(f"{key:<{width}}  {err:11.3e}  {tol:11.3e}  {'yes' if ok else 'NO'}")
    bad = [r[0] for r in rows if not r[3]]
    print(f"{len(rows) - len(bad)}/{len(rows)} keys within tolerance" + (f"; beyond: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0
