"""Quality of models on speech they were not trained on, next to the real BEAT2 capture.

    python bench/quality_report.py                       # the bundled EMAGE
    python bench/quality_report.py --model diffsheg --model emage   # several models, one table each
    python bench/quality_report.py --weights runs/x      # an EMAGE checkpoint folder or Hub repo id (= --model emage:SRC)
    python bench/quality_report.py --live 200            # EMAGE as live mode runs it (200 ms chunks), the takes
    python bench/quality_report.py --overlap 0 --snap-face --reference-timing --audio-context window --precision float32
                                                         # EMAGE as the reference decodes

Reads the BEAT2 sample in ../shared/fixtures/beat2 (CC BY-NC 4.0): the real motion of
2_scott_0_1_1 with its speech, and speeches 2_scott_0_{2..5}_* that have no motion (the bundled
default never saw them). For each it prints BC (EMAGE's beat consistency, speeds normalised by
the real capture's mean joint speeds, as EMAGE normalises by its dataset's), jerk (m/s^3, all 55
joints) and the jaw-envelope correlation (lip-sync proxy), then checks the quality gates:

- jaw-envelope correlation above 0.2 on every unseen speech (models that generate the face);
- jerk within 2x of the real capture's (0.5x .. 2x) on every unseen speech;
- mean arm angular speed (shoulders, elbows, wrists) at least half the real capture's on every unseen speech.

Also L1 diversity of 3 variants (seeds 0-2; EMAGE samples at temperature 1) of the first unseen speech. Exit status 1 when a
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
from emage_core.generate.live import stream as gen_stream
from emage_core.generate.registry import load
from emage_core.generate.settings import EmageOptions, GenerationSettings
from emage_core.motion.kinematics import joint_positions
from emage_core.motion.rotation import axis_angle_to_matrix

FIXTURES = REPO.parent / "shared" / "fixtures" / "beat2"
REAL = "2_scott_0_1_1"
UNSEEN = ("2_scott_0_2_2", "2_scott_0_3_3", "2_scott_0_4_4", "2_scott_0_5_5")
JAW_GATE = 0.2
JERK_GATE = 2.0
ARM_GATE = 0.5
ARM_JOINTS = (16, 17, 18, 19, 20, 21)  # shoulders, elbows, wrists


def arm_angular_speed(poses: np.ndarray, fps: float = 30) -> float:
    """Mean angular speed (rad/s) of the arm joints' local rotations, (T, 55, 3) axis-angle in."""
    R = axis_angle_to_matrix(np.asarray(poses, np.float64)[:, list(ARM_JOINTS)])
    rel = np.einsum("tjab,tjac->tjbc", R[:-1], R[1:])  # R_t^T R_{t+1}
    cos = np.clip((np.trace(rel, axis1=-2, axis2=-1) - 1) / 2, -1, 1)
    return float(np.arccos(cos).mean() * fps)


def _row(name: str, motion, wav: np.ndarray, normalizer: np.ndarray) -> dict:
    pos = joint_positions(motion)
    T = min(motion.n_frames, len(wav) * 30 // 16000)
    return {
        "clip": name,
        "seconds": motion.n_frames / 30,
        "bc": metrics.beat_consistency(pos[:T], audio=wav[: T * 16000 // 30], normalizer=normalizer),
        "jerk": metrics.jerk(pos),
        "jaw": metrics.jaw_envelope_correlation(motion.poses, wav),
        "arm": arm_angular_speed(motion.poses),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=[], metavar="REF",
                        help="model reference FAMILY[:SOURCE], repeatable (default: emage)")
    parser.add_argument("--weights", default=None, help="an EMAGE checkpoint folder or Hub repo id (= --model emage:SRC)")
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
    parser.add_argument("--audio-context", choices=("window", "clip"), default=None,
                        help="EMAGE: audio encoded per window (the default, the reference) or once per clip")
    parser.add_argument("--precision", choices=("auto", "float32", "bfloat16"), default=None,
                        help="EMAGE: the audio model's precision (default float32)")
    parser.add_argument("--live", type=int, default=None, metavar="CHUNK_MS",
                        help="generate as live mode does: the speech pushed in chunks of this many ms (e.g. 200), "
                             "the take measured (idle layer on, as on the page)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not (args.fixtures / f"{REAL}.npz").is_file():
        print(f"needs the BEAT2 sample in {args.fixtures} (shared test data); absent here", file=sys.stderr)
        return 2

    real = read_beat2(args.fixtures / f"{REAL}.npz")
    real_wav = load_audio(args.fixtures / f"{REAL}.wav")
    normalizer = metrics.joint_speed(joint_positions(real)).mean(axis=0)  # EMAGE's "mean velocity" file
    rows = [{**_row(f"{REAL} (real capture)", real, real_wav, normalizer), "kind": "real"}]

    refs = args.model or [f"emage:{args.weights}" if args.weights else "emage"]
    opts = EmageOptions(snap_face=args.snap_face, exact_audio_timing=not args.reference_timing,
                        **({} if args.overlap is None else {"overlap": args.overlap}),
                        **{k: v for k, v in (("audio_context", args.audio_context), ("precision", args.precision))
                           if v is not None})
    wavs = {name: load_audio(args.fixtures / f"{name}.wav") for name in UNSEEN}
    ok = True
    for ref in refs:
        ok &= report(ref, rows[:1], real_wav, wavs, normalizer, opts, args)
    return 0 if ok else 1


def report(ref: str, rows: list, real_wav, wavs, normalizer, opts, args) -> bool:
    """One model's table and gates; True when every gate passes."""
    gen = load(ref, device="cpu")
    settings = GenerationSettings(seed=args.seed, emage=opts)
    t0 = time.time()

    def generate(wav, settings):
        if args.live is None:
            return gen.generate(wav, settings)
        n = args.live * 16
        takes = []
        for k in range(settings.variants):
            live = gen.live(settings.replace(variants=1, seed=settings.seed + k))
            for _ in gen_stream(live, (wav[i:i + n] for i in range(0, len(wav), n))):
                pass
            takes.append(live.take())
        return takes

    how = "generated" if args.live is None else f"live, {args.live} ms chunks"
    seen = generate(real_wav, settings)[0]
    rows = rows + [{**_row(f"{REAL} ({how}, seen speech)", seen, real_wav, normalizer), "kind": "seen"}]
    for name, wav in wavs.items():
        clip = generate(wav, settings)[0]
        rows.append({**_row(f"{name} ({how})", clip, wav, normalizer), "kind": "unseen"})
    variants = generate(wavs[UNSEEN[0]], settings.replace(variants=3, temperature=1.0))
    diversity = metrics.l1_diversity(np.stack([joint_positions(v) for v in variants]))
    seconds = time.time() - t0

    unseen = [r for r in rows if r["kind"] == "unseen"]
    real_jerk, real_arm = rows[0]["jerk"], rows[0]["arm"]
    face = "face" in gen.capabilities.parts  # the lip-sync gate only means something for a generated face
    jaw_gate = f"jaw-envelope correlation > {JAW_GATE} on every unseen speech"
    gates = {
        jaw_gate: all(r["jaw"] > JAW_GATE for r in unseen) if face else None,
        f"jerk within {JERK_GATE:g}x of the real capture's ({real_jerk:.1f} m/s^3)":
            all(1 / JERK_GATE <= r["jerk"] / real_jerk <= JERK_GATE for r in unseen),
        f"arm angular speed at least {ARM_GATE:g}x the real capture's ({real_arm:.2f} rad/s)":
            all(r["arm"] / real_arm >= ARM_GATE for r in unseen),
    }
    print(f"\nmodel: {gen.model_id} ({seen.meta.get('model')}); weights "
          f"{', '.join(f'{k} {v[:12]}' for k, v in list(seen.meta['weights']['files'].items())[:2])}...")
    if args.markdown:
        print("\n| clip | seconds | BC | jerk (m/s³) | jerk / real | arm speed / real | jaw-envelope r |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in rows:
            print(f"| {r['clip']} | {r['seconds']:.1f} | {r['bc']:.3f} | {r['jerk']:.1f} | "
                  f"{r['jerk'] / real_jerk:.2f} | {r['arm'] / real_arm:.2f} | {r['jaw']:.3f} |")
        mean = {k: np.mean([r[k] for r in unseen]) for k in ("bc", "jerk", "jaw", "arm")}
        print(f"| **unseen mean** | | **{mean['bc']:.3f}** | **{mean['jerk']:.1f}** | "
              f"**{mean['jerk'] / real_jerk:.2f}** | **{mean['arm'] / real_arm:.2f}** | **{mean['jaw']:.3f}** |")
    else:
        print(f"{'clip':<42} {'sec':>5} {'BC':>6} {'jerk':>7} {'/real':>6} {'arm/real':>8} {'jaw r':>6}")
        for r in rows:
            print(f"{r['clip']:<42} {r['seconds']:>5.1f} {r['bc']:>6.3f} {r['jerk']:>7.1f} "
                  f"{r['jerk'] / real_jerk:>6.2f} {r['arm'] / real_arm:>8.2f} {r['jaw']:>6.3f}")
    print(f"\nL1 diversity, 3 variants (seeds {args.seed}-{args.seed + 2}) of {UNSEEN[0]}: {diversity:.3f} m")
    print(f"generation: {seconds:.1f} s on CPU ({args.threads} threads) for everything above")
    for gate, passed in gates.items():
        print(f"{'n/a ' if passed is None else 'PASS' if passed else 'FAIL'}: {gate}"
              + (" (the model does not generate the face: it stays at rest)" if passed is None else ""))
    return all(v for v in gates.values() if v is not None)


if __name__ == "__main__":
    sys.exit(main())
