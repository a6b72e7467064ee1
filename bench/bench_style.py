"""Speed of the explicit style edits (`emage_core.edit.style.apply_style`) with every control active.

Motion: the BEAT2 sample ``../shared/fixtures/beat2/2_scott_0_1_1.npz`` (63.5 s) when ../shared
is there, else a minute of zeros-based synthetic motion with sinusoidal arm gestures. Prints the
best of ``--repeat`` runs per minute of motion; target: well under 1 s per minute (the app
applies it to every variant).

    python bench/bench_style.py
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from emage_core.motion.beat2 import read_beat2
from emage_core.motion.clip import Motion
from emage_core.edit.style import StyleControls, apply_style

SAMPLE = REPO.parent / "shared" / "fixtures" / "beat2" / "2_scott_0_1_1.npz"
ALL = StyleControls(amplitude=1.3, tempo=1.2, spine_flexion=0.1, head_pitch=0.1, head_turn=0.05,
                    shoulder_raise=0.05, fluidity=0.5, head_activity=1.2, face_intensity=1.2, jaw_open=0.05)


def _motion() -> Motion:
    if SAMPLE.is_file():
        return read_beat2(SAMPLE)
    T = 1800
    m = Motion.zeros(T)
    t = np.arange(T) / 30
    m.poses[:, 16:22, 2] = 0.4 * np.sin(2 * np.pi * 0.7 * t)[:, None]  # shoulders to wrists swing
    return m


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    motion = _motion()
    apply_style(motion, ALL)  # warm up (imports, caches)
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        apply_style(motion, ALL)
        times.append(time.perf_counter() - start)
    minutes = motion.n_frames / motion.fps / 60
    print(f"apply_style, every control: {min(times) * 1000:.0f} ms for {minutes * 60:.1f} s of motion "
          f"= {min(times) / minutes * 1000:.0f} ms per minute (best of {args.repeat})")


if __name__ == "__main__":
    main()
