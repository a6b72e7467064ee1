"""Speed of rendering motion to mp4: ms per frame and real-time factor, encoding included.

Renders 10 s of motion (the BEAT2 sample when ../shared is there, else a synthetic gesture clip)
at 512x512 with speech, end to end (posing, rendering, H.264 + AAC encoding, muxing), and prints
a table. Real time at 30 fps is 33.3 ms per frame; "x real time" > 1 means faster than playback.
"CPU ms/frame" is the CPU time of all threads and encoder processes: on N idle cores the wall
time can approach CPU / N.

    python bench/bench_render.py
    python bench/bench_render.py --seconds 5 --size 256 --cases mesh stick
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emage_core import Motion  # noqa: E402
from emage_core import render  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "beat2" / "2_scott_0_1_1.npz"
CASES = {
    # name: (description, keyword arguments of render_grid, number of clips)
    "mesh": ("mesh, EGL, no MSAA", dict(renderer="mesh", msaa=0), 1),
    "mesh-msaa4": ("mesh, EGL, 4x MSAA", dict(renderer="mesh", msaa=4), 1),
    "stick": ("stick figure", dict(renderer="stick"), 1),
    "grid2": ("grid of 2 mesh clips (+2 cell files)", dict(renderer="mesh", msaa=0), 2),
    "frames": ("mesh frames only, no encoding", None, 1),
}


def cpu_seconds() -> float:
    """CPU time used so far by this process (all threads) and its finished children (ffmpeg)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def synthetic(seconds: float) -> Motion:
    """Arms and head swinging, slow sway: enough motion to exercise the renderer."""
    n = int(seconds * 30)
    t = np.arange(n) / 30
    m = Motion.zeros(n)
    m.poses[:, 16, 2] = 1.1 + 0.4 * np.sin(2 * np.pi * 0.7 * t)  # left arm down-ish, waving
    m.poses[:, 17, 2] = -1.1 - 0.4 * np.sin(2 * np.pi * 0.9 * t)
    m.poses[:, 18, 1] = 0.8 + 0.3 * np.sin(2 * np.pi * 1.3 * t)
    m.poses[:, 15, 1] = 0.3 * np.sin(2 * np.pi * 0.4 * t)
    m.trans[:, 0] = 0.1 * np.sin(2 * np.pi * 0.1 * t)
    return m


def load_motion(seconds: float) -> tuple[Motion, str]:
    n = int(seconds * 30)
    if SAMPLE.exists():
        from emage_core.beat2 import read_beat2

        m = read_beat2(SAMPLE)
        if m.n_frames >= 2 * n:
            return m, f"BEAT2 sample {SAMPLE.name}"
    return synthetic(2 * seconds), "synthetic gestures"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10)")
    ap.add_argument("--size", type=int, default=512, help="cell size in pixels (default 512)")
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--out", type=Path, default=None, help="keep the videos in this folder")
    args = ap.parse_args()

    source, what = load_motion(args.seconds)
    n = int(args.seconds * 30)
    clips = [source[:n], source[n:2 * n]]
    t = np.arange(int(args.seconds * 16000)) / 16000
    speech = (0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)

    reason = render.egl_unavailable_reason()
    print(f"motion: {what}, {n} frames ({args.seconds:g} s at 30 fps), {args.size}x{args.size} per clip")
    print(f"OpenGL: {reason or render.gl_renderer_name()}")
    print(f"CPU cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
    print()
    print(f"{'case':<40} {'wall s':>7} {'ms/frame':>9} {'x real time':>12} {'CPU ms/frame':>13}")
    print("-" * 85)
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="bench_render_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    render_grid = render.render_grid
    render.motion_frames([clips[0][:2]], size=args.size)  # warm up: context, body, shaders
    for name in args.cases:
        label, kw, k = CASES[name]
        if reason and name != "stick":
            print(f"{label:<40} skipped: {reason}")
            continue
        start, cpu_start = time.perf_counter(), cpu_seconds()
        if kw is None:
            for _ in render.motion_frames([clips[0]], size=args.size)[0]:
                pass
        else:
            render_grid(clips[:k], out_dir / f"{name}.mp4", audio=speech, size=args.size, **kw)
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
        print(f"{label:<40} {wall:7.2f} {1000 * wall / n:9.1f} {args.seconds / wall:12.2f} {1000 * cpu / n:13.1f}")
    if args.out is None:
        for f in out_dir.iterdir():
            f.unlink()
        out_dir.rmdir()
    print(f"\nload average after: {os.getloadavg()[0]:.2f} (other work on the machine slows the wall times;"
          " CPU ms/frame, summed over all cores and the ffmpeg encoders, does not depend on it)")


if __name__ == "__main__":
    main()
