"""The official BEAT2 metrics of a model on the one BEAT2 take available offline, with a stand-in evaluator.

    python bench/eval_sample.py [--model emage] [--out DIR] [--keep]

Builds, in a temporary folder (or ``--out``), what ``evaluate`` reads when the real data and the Hub
are out of reach: BEAT2's layout cut from ``../shared/fixtures/beat2/2_scott_0_1_1`` (frames 0-476 as
a train take, 476-952, 952-1428 and 1428-1906 as three speaker-2 test takes), and an evaluator folder
holding the reference golden's RANDOM evaluator (``../shared/reference/emage_eval/golden``: reduced
size, random weights) as ``AESKConv_240_100.bin`` with its config.json and the BC normaliser. Then it
runs ``python -m emage_core evaluate`` on them and prints the table.

The numbers are for checking the machinery only: the evaluator's weights are random (its FGD means
nothing about motion quality and is not comparable with published numbers), the test takes are three
16 s pieces of one take, and the bundled model was trained on that very take.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SAMPLE = SHARED / "fixtures" / "beat2" / "2_scott_0_1_1"
GOLDEN = SHARED / "reference" / "emage_eval" / "golden"
TAKES = {"2_scott_0_1_1": (0, 476, "train"), "2_scott_0_2_2": (476, 952, "test"),
         "2_scott_0_3_3": (952, 1428, "test"), "2_scott_0_4_4": (1428, 1906, "test")}


def build(out: Path) -> tuple[Path, Path]:
    import soundfile as sf

    from emage_core.metrics.fgd_encoder import RELEASED_FILE, load_fgd_encoder, save_released_bin
    from emage_core.motion.beat2 import read_beat2, write_beat2

    for path in (SAMPLE.with_suffix(".npz"), SAMPLE.with_suffix(".wav"), GOLDEN / "model.safetensors"):
        if not path.is_file():
            raise SystemExit(f"error: {path} is missing (the shared data beside the repository)")
    data = out / "beat2" / "beat_english_v2.0.0"
    (data / "wave16k").mkdir(parents=True, exist_ok=True)
    motion = read_beat2(SAMPLE.with_suffix(".npz"))
    speech, sr = sf.read(SAMPLE.with_suffix(".wav"), dtype="float32")
    rows = ["id,type"]
    for take, (a, b, split) in TAKES.items():
        write_beat2(motion.slice(a, b), data / "smplxflame_30" / f"{take}.npz")
        sf.write(data / "wave16k" / f"{take}.wav", speech[a * sr // 30:b * sr // 30], sr, subtype="FLOAT")
        rows.append(f"{take},{split}")
    (data / "train_test_split.csv").write_text("\n".join(rows) + "\n")
    evaluator = out / "evaluator"
    evaluator.mkdir(exist_ok=True)
    save_released_bin(load_fgd_encoder(GOLDEN / "model.safetensors").state_dict(), evaluator / RELEASED_FILE)
    shutil.copy(GOLDEN / "config.json", evaluator / "config.json")
    np.save(evaluator / "mean_vel_smplxflame_30.npy", np.load(GOLDEN / "inputs.npz")["bc_mean_vel"])
    return data, evaluator


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", default=None, help="model reference (repeatable; default emage)")
    ap.add_argument("--out", default=None, help="folder for the data, evaluator and results (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = ap.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="emage_eval_sample_"))
    try:
        data, evaluator = build(out)
        cmd = [sys.executable, "-m", "emage_core", "evaluate", "--data", str(data), "--evaluator", str(evaluator),
               "-o", str(out / "results" / "evaluation")]
        for ref in args.model or ["emage"]:
            cmd += ["--model", ref]
        print("$ " + " ".join(cmd), flush=True)
        return subprocess.call(cmd, cwd=REPO)
    finally:
        if not (args.out or args.keep):
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
