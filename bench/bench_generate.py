"""Speed of EMAGE generation (`emage_core.models.emage.inference.run`) at the released model size, on
random weights: the pipeline's default settings side by side with the reference-equivalent mode.

The modes run interleaved in one process (rotating which goes first), so load from other processes
falls on all alike; each is timed ``--repeats`` times per audio length and the table gives the
median, the spread (min-max) and, per mode, the ratio reference / mode (of the medians, and the
median and range of the per-repeat ratios). The load average is printed before and after.

- default: the pipeline's `EmageOptions` (windows overlapping by 8 crossfaded frames, face from its
  latent, exact audio timing, the audio encoded once per clip, the audio model in bfloat16 where the
  device has native bf16);
- float32: the same with ``audio_context="window"`` and ``precision="float32"`` (the default before
  0.4: each window's audio encoded alone, float32);
- reference: ``generate --as-released`` (no overlap, face snapped, the reference's timing, per-window
  audio, float32), which
  computes what the released implementation computes (golden parity) at about its speed.

    python bench/bench_generate.py                      # 10 s and 60 s of audio, 2 threads
    python bench/bench_generate.py --seconds 10 60 600 --repeats 5 --threads 1
    python bench/bench_generate.py --modes default      # one mode only
    python bench/bench_generate.py --device cuda
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import torch

from emage_core.generate.settings import EmageOptions, GenerationSettings
from emage_core.models.emage.inference import native_bf16, run
from emage_core.models.emage.model import EmageAudioConfig, EmageModels, VQConfig
from emage_core.models.emage.windows import plan_windows

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


def mode_kwargs(opts: EmageOptions, device) -> dict:
    """`run` keyword arguments for an `EmageOptions`, as `EmageGenerator.generate` resolves them."""
    precision = opts.precision
    if precision == "auto":
        precision = "bfloat16" if native_bf16(device) else "float32"
    return dict(overlap=opts.overlap, snap_face=opts.snap_face, exact_audio_timing=opts.exact_audio_timing,
                audio_context=opts.audio_context, precision=precision)


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, nargs="+", default=[10, 60], help="audio lengths to time")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per length and mode (interleaved)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (0: torch's own choice)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--modes", nargs="+", default=["default", "float32", "reference"],
                    choices=["default", "float32", "reference"])
    ap.add_argument("--manifest", type=Path, default=MANIFEST, help="manifest_official.json for the configs")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    models = build(args.manifest).to(device).eval()
    n_params = sum(p.numel() for m in models.as_dict().values() for p in m.parameters())
    modes = {"default": mode_kwargs(EmageOptions(), device),
             "float32": mode_kwargs(EmageOptions(audio_context="window", precision="float32"), device),
             "reference": mode_kwargs(GenerationSettings.reference_preset("emage").emage, device)}
    modes = {k: v for k, v in modes.items() if k in args.modes}
    print(f"models: {n_params / 1e6:.1f} M parameters, built in {time.perf_counter() - t0:.1f} s; device {device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"native bf16: {native_bf16(device)}")
    for name, kw in modes.items():
        print(f"  {name}: {kw}")
    print(f"load average before: {load()}")

    sr = models.audio.config.audio_sr
    g = torch.Generator().manual_seed(0)
    for kw in modes.values():  # warm-up (allocator, kernels, the bf16 weights)
        run(models, torch.randn(1, 3 * sr, generator=g) * 0.1, **kw)
    print(f"peak RSS after warm-up: {peak_rss_mb():.0f} MB")

    def timed(audio, kw) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        out = run(models, audio, **kw)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - t
        assert out["motion_axis_angle"].shape[1] == audio.shape[1] * 30 // sr
        return elapsed

    rows = []
    for seconds in args.seconds:
        audio = (torch.randn(1, int(seconds * sr), generator=g) * 0.1).to(device)
        n_frames = audio.shape[1] * 30 // sr
        times = {name: [] for name in modes}
        order = list(modes)
        for r in range(args.repeats):
            for name in order[r % len(order):] + order[: r % len(order)]:
                times[name].append(timed(audio, modes[name]))
        for name, kw in modes.items():
            t = times[name]
            rows.append((seconds, name, len(plan_windows(max(n_frames, 9), overlap=kw["overlap"])), statistics.median(t),
                         min(t), max(t), statistics.median(t) / seconds, peak_rss_mb()))
        for name in modes:
            if name != "reference" and "reference" in modes:
                paired = [r / d for d, r in zip(times[name], times["reference"])]
                rows.append((seconds, f"ref/{name}", statistics.median(times["reference"]) / statistics.median(times[name]),
                             statistics.median(paired), min(paired), max(paired)))

    print(f"load average after: {load()}")
    print()
    print(f"{'audio s':>8} {'mode':>10} {'windows':>8} {'median s':>9} {'min s':>8} {'max s':>8} {'s per s':>8} {'peak RSS MB':>12}")
    for row in rows:
        if row[1].startswith("ref/"):
            seconds, label, of_medians, med, lo, hi = row
            print(f"{seconds:>8.1f} {label:>10} {'':>8} {of_medians:>8.2f}x   per-repeat median {med:.2f}x "
                  f"(range {lo:.2f}-{hi:.2f})")
        else:
            seconds, name, windows, med, lo, hi, per, rss = row
            print(f"{seconds:>8.1f} {name:>10} {windows:>8d} {med:>9.3f} {lo:>8.3f} {hi:>8.3f} {per:>8.4f} {rss:>12.0f}")


if __name__ == "__main__":
    main()
