"""Speed of `emage_core.models.emage.inference.run` at the released model size, on random weights.

Prints, per audio length: wall time, seconds of compute per second of speech, windows, and the
process's peak RSS. The reference implementation needs 0.08-0.10 s per second of speech on
the 2-core development machine.

    python bench/bench_generate.py                 # 10 s and 60 s of audio
    python bench/bench_generate.py --seconds 10 30 600 --repeats 3
    python bench/bench_generate.py --overlap 0     # the reference's windows (default: the pipeline's 8)
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch


from emage_core.models.emage.inference import run
from emage_core.models.emage.windows import DEFAULT_OVERLAP, plan_windows
from emage_core.models.emage.model import EmageAudioConfig, EmageModels, VQConfig

MANIFEST = Path(__file__).resolve().parents[2] / "shared" / "reference" / "emage" / "manifest_official.json"

# The released sizes, used when the reference manifest is not around.
OFFICIAL_PARTS = {
    "face": VQConfig(vae_test_dim=106, vae_layer=2),
    "upper": VQConfig(vae_test_dim=78, vae_layer=2),
    "hands": VQConfig(vae_test_dim=180, vae_layer=2),
    "lower": VQConfig(vae_test_dim=61, vae_layer=4),
    "global": VQConfig(vae_test_dim=61, vae_layer=4),
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def build(manifest: Path | None) -> EmageModels:
    if manifest is not None and manifest.exists():
        subs = json.loads(manifest.read_text())["submodels"]
        parts = {p: subs[f"emage_vq/{p}"]["config"] for p in OFFICIAL_PARTS}
        return EmageModels.from_configs(subs["emage_audio"]["config"], parts)
    return EmageModels.from_configs(EmageAudioConfig(), OFFICIAL_PARTS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, nargs="+", default=[10, 60], help="audio lengths to time")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per length (the best is reported)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP,
                    help=f"frames crossfaded between windows (default {DEFAULT_OVERLAP}, the pipeline's; 0 = the reference)")
    ap.add_argument("--manifest", type=Path, default=MANIFEST, help="manifest_official.json for the configs")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    models = build(args.manifest).to(args.device).eval()
    n_params = sum(p.numel() for m in models.as_dict().values() for p in m.parameters())
    print(f"models: {n_params / 1e6:.1f} M parameters, built in {time.perf_counter() - t0:.1f} s; "
          f"device {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"window overlap {args.overlap}")
    print(f"peak RSS after construction: {peak_rss_mb():.0f} MB")

    sr = models.audio.config.audio_sr
    g = torch.Generator().manual_seed(0)
    run(models, torch.randn(1, 3 * sr, generator=g) * 0.1)  # warm-up (allocator, kernels)

    rows = []
    for seconds in args.seconds:
        audio = torch.randn(1, int(seconds * sr), generator=g) * 0.1
        n_frames = audio.shape[1] * 30 // sr
        times = []
        for _ in range(args.repeats):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            out = run(models, audio, overlap=args.overlap)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        assert out["motion_axis_angle"].shape[1] == n_frames
        best = min(times)
        rows.append((seconds, n_frames, len(plan_windows(max(n_frames, 9), overlap=args.overlap)), best, best / seconds, peak_rss_mb()))

    print()
    print(f"{'audio s':>8} {'frames':>7} {'windows':>8} {'wall s':>8} {'s per s':>8} {'peak RSS MB':>12}")
    for seconds, frames, windows, wall, per, rss in rows:
        print(f"{seconds:>8.1f} {frames:>7d} {windows:>8d} {wall:>8.3f} {per:>8.4f} {rss:>12.0f}")


if __name__ == "__main__":
    main()
