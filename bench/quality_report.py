"""Quality of a checkpoint on speech it was not trained on, next to the real BEAT2 capture.

    python bench/quality_report.py                       # the bundled default checkpoint
    python bench/quality_report.py --weights runs/x      # any checkpoint folder or Hub repo id
    python bench/quality_report.py --overlap 0 --snap-face --reference-timing   # as the reference decodes

Reads the BEAT2 sample in ../shared/fixtures/beat2 (CC BY-NC 4.0): the real motion of
2_scott_0_1_1 with its speech, and speeches 2_scott_0_{2..5}_* that have no motion (the bundled
default never saw them). For each it prints BC (EMAGE's beat consistency, speeds normalised by
the real capture's mean joint speeds, as EMAGE normalises by its dataset's), jerk (m/s^3, all 55
joints) and the jaw-envelope correlation (lip-sync proxy), then checks the quality gates:

- jaw-envelope correlation above 0.2 on every unseen speech;
- jerk within 2x of the real capture's (0.5x .. 2x) on every unseen speech.

Also L1 diversity of 3 variants (temperature 1) of the first unseen speech. Exit status 1 when a
gate fails. ``--markdown`` prints the table as the model card has it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

from emage_core import metrics
from emage_core.audio import load_audio
from emage_core.motion.beat2 import read_beat2
from emage_core.motion.kinematics import joint_positions
from emage_core.generate.emage import EmageGenerator

FIXTURES = REPO.parent / "shared" / "fixtures" / "beat2"
REAL = "2_scott_0_1_1"
UNSEEN = ("2_scott_0_2_2", "2_scott_0_3_3", "2_scott_0_4_4", "2_scott_0_5_5")
JAW_GATE = 0.2
JERK_GATE = 2.0


def _row(name: str, motion, wav: np.ndarray, normalizer: np.ndarray) -> dict:
    pos = joint_positions(motion)
    T = min(motion.n_frames, len(wav) * 30 // 16000)
    return {
        "clip": name,
        "seconds": motion.n_frames / 30,
        "bc": metrics.beat_consistency(pos[:T], audio=wav[: T * 16000 // 30], normalizer=normalizer),
        "jerk": metrics.jerk(pos),
        "jaw": metrics.jaw_envelope_correlation(motion.poses, wav),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="checkpoint folder or Hub repo id (default: the default source)")
    parser.add_argument("--fixtures", type=Path, default=FIXTURES, help="folder with the BEAT2 sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", action="store_true", help="print the table in Markdown")
    parser.add_argument("--overlap", type=int, default=None,
                        help="frames crossfaded between windows (default: the pipeline's, 8; 0 = the reference's windows)")
    parser.add_argument("--snap-face", action="store_true",
                        help="decode the face from the nearest code, as the reference (default: the latent as is)")
    parser.add_argument("--reference-timing", action="store_true",
                        help="the reference's audio windows, drifting 1/3 sample per frame (default: exact timing)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not (args.fixtures / f"{REAL}.npz").is_file():
        print(f"needs the BEAT2 sample in {args.fixtures} (shared test data); absent here", file=sys.stderr)
        return 2

    real = read_beat2(args.fixtures / f"{REAL}.npz")
    real_wav = load_audio(args.fixtures / f"{REAL}.wav")
    normalizer = metrics.joint_speed(joint_positions(real)).mean(axis=0)  # EMAGE's "mean velocity" file
    rows = [{**_row(f"{REAL} (real capture)", real, real_wav, normalizer), "kind": "real"}]

    gen = EmageGenerator.from_pretrained(args.weights, device="cpu")
    opts = {"snap_face": args.snap_face, "exact_audio_timing": not args.reference_timing,
            **({} if args.overlap is None else {"overlap": args.overlap})}
    t0 = time.time()
    seen = gen.generate(real_wav, seed=args.seed, **opts)[0]
    rows.append({**_row(f"{REAL} (generated, seen speech)", seen, real_wav, normalizer), "kind": "seen"})
    wavs = {name: load_audio(args.fixtures / f"{name}.wav") for name in UNSEEN}
    for name, wav in wavs.items():
        clip = gen.generate(wav, seed=args.seed, **opts)[0]
        rows.append({**_row(f"{name} (generated)", clip, wav, normalizer), "kind": "unseen"})
    variants = gen.generate(wavs[UNSEEN[0]], seed=args.seed, variants=3, temperature=1.0, **opts)
    diversity = metrics.l1_diversity(np.stack([joint_positions(v) for v in variants]))
    seconds = time.time() - t0

    unseen = [r for r in rows if r["kind"] == "unseen"]
    real_jerk = rows[0]["jerk"]
    gates = {
        f"jaw-envelope correlation > {JAW_GATE} on every unseen speech": all(r["jaw"] > JAW_GATE for r in unseen),
        f"jerk within {JERK_GATE:g}x of the real capture's ({real_jerk:.1f} m/s^3)":
            all(1 / JERK_GATE <= r["jerk"] / real_jerk <= JERK_GATE for r in unseen),
    }

    print(f"checkpoint: {gen.model_id}; window overlap {seen.meta['window_overlap']} frames, "
          f"face {'snapped to codes' if seen.meta['snap_face'] else 'decoded from its latent'}, "
          f"{'exact' if seen.meta['exact_audio_timing'] else 'reference'} audio timing")
    if args.markdown:
        print("\n| clip | seconds | BC | jerk (m/s³) | jerk / real | jaw-envelope r |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for r in rows:
            print(f"| {r['clip']} | {r['seconds']:.1f} | {r['bc']:.3f} | {r['jerk']:.1f} | "
                  f"{r['jerk'] / real_jerk:.2f} | {r['jaw']:.3f} |")
        mean = {k: np.mean([r[k] for r in unseen]) for k in ("bc", "jerk", "jaw")}
        print(f"| **unseen mean** | | **{mean['bc']:.3f}** | **{mean['jerk']:.1f}** | "
              f"**{mean['jerk'] / real_jerk:.2f}** | **{mean['jaw']:.3f}** |")
    else:
        print(f"{'clip':<42} {'sec':>5} {'BC':>6} {'jerk':>7} {'/real':>6} {'jaw r':>6}")
        for r in rows:
            print(f"{r['clip']:<42} {r['seconds']:>5.1f} {r['bc']:>6.3f} {r['jerk']:>7.1f} "
                  f"{r['jerk'] / real_jerk:>6.2f} {r['jaw']:>6.3f}")
    print(f"\nL1 diversity, 3 variants at temperature 1 of {UNSEEN[0]}: {diversity:.3f} m")
    print(f"generation: {seconds:.1f} s on CPU ({args.threads} threads) for everything above")
    for gate, ok in gates.items():
        print(f"{'PASS' if ok else 'FAIL'}: {gate}")
    return 0 if all(gates.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
