"""DiffSHEG generation speed: frames per second of motion, side by side in one run.

    python bench/bench_diffsheg.py [--seconds 10] [--released-seconds 4] [--device cpu]

Rows: the released size (155.8 M parameters, random weights, no HuBERT features: its own cost is apart)
and the bundled default, each with 5 and 2 FOPPAS resampling repeats (25 DDIM steps, windows of 88 frames
overlapping by 10, guidance 1.15), on speech-shaped noise. Prints frames/s (real time = 30), seconds per
second of speech and peak resident memory. Goal: the bundled DiffSHEG faster than real time on a 2-core CPU.
The reference claims 50+ frames/s on an A100.
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from emage_core.generate.diffsheg import BUNDLED, DiffshegGenerator
from emage_core.generate.settings import DiffshegOptions, GenerationSettings
from emage_core.models.diffsheg.checkpoint import DiffshegCheckpoint
from emage_core.models.diffsheg.diffusion import SamplerConfig
from emage_core.models.diffsheg.model import DiffSHEGConfig, DiffSHEGDenoiser


def speech(seconds: float) -> np.ndarray:
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    return (0.3 * np.clip(np.sin(2 * np.pi * 3.1 * t), 0, None) * np.sin(2 * np.pi * 160 * t)).astype(np.float32)


def released(device: str) -> DiffshegGenerator:
    """The released SHOW size with random weights (HuBERT off: its features are not measured here)."""
    cfg = DiffSHEGConfig(use_hubert=False)
    model = DiffSHEGDenoiser(cfg).to(device).eval()
    ckpt = DiffshegCheckpoint(model, cfg, np.zeros(232, np.float32), np.ones(232, np.float32), SamplerConfig(),
                              speakers=tuple(f"speaker_{k}" for k in range(cfg.style_dim)))
    return DiffshegGenerator(ckpt, {"files": {}}, "released size, random weights")


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="speech for the bundled model (default 10)")
    ap.add_argument("--released-seconds", type=float, default=4.0, help="speech for the released size (default 4)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print(f"{'model':<34} {'repeats':>7} {'frames':>6} {'seconds':>8} {'frames/s':>9} {'s per s':>8} {'peak GB':>8}")
    models = [("released size (155.8 M, random)", released(args.device), args.released_seconds)]
    if (BUNDLED / "config.json").is_file():
        gen = DiffshegGenerator.from_pretrained(None, device=args.device)
        n = sum(p.numel() for p in gen.ckpt.model.parameters())
        models.append((f"bundled default ({n / 1e6:.1f} M)", gen, args.seconds))
    for name, gen, seconds in models:
        wav = speech(seconds)
        gen.generate(wav[:16000], GenerationSettings(seed=0, diffsheg=DiffshegOptions(repeats=1, steps=5)))  # warm-up
        for repeats in (5, 2):
            settings = GenerationSettings(seed=0, diffsheg=DiffshegOptions(repeats=repeats))
            t0 = time.perf_counter()
            clip = gen.generate(wav, settings)[0]
            dt = time.perf_counter() - t0
            print(f"{name:<34} {repeats:>7} {clip.n_frames:>6} {dt:>8.2f} {clip.n_frames / dt:>9.1f} "
                  f"{dt / seconds:>8.3f} {peak_rss_gb():>8.2f}")


if __name__ == "__main__":
    main()
