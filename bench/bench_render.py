"""Speed of rendering motion to mp4: where the time goes, and end to end against the targets.

Motion: the BEAT2 sample ``../shared/fixtures/beat2/2_scott_0_1_1.npz`` and its speech (``.wav``)
when ../shared is there, else a synthetic gesture clip and a synthetic tone.

Three tables:

1. Breakdown, per frame, for ``--frames`` (300) frames at each ``--sizes`` (512x512, 720x480):
   posing (``Body.vertices``, batched), rendering (``MeshRenderer.render_frame`` on the posed
   frames, camera already set), encoding (``VideoWriter``: H.264 + the AAC mux, on the rendered
   frames held in memory). Each stage is timed alone; the sum is what a purely sequential
   pipeline would cost. ``render_motion`` overlaps them (ffmpeg encodes in its own process on the
   other core while the next frame renders), so its wall time can be below the sum.
2. End to end, ``render_grid``/``render_motion`` with speech (posing, framing, rendering,
   labels, H.264 + AAC, muxing) for the usual cases, with targets: a 10 s single-view 512x512 clip
   in <= 10 s, a 2-up grid of 10 s clips (512x512 cells; the grid and both cell files, as the
   web app writes them) in <= 20 s.
3. Where the time of one 512x512 frame goes, for the 2-up grid (``--profile``; a cProfile of
   the grid case).

Real time at 30 fps is 33.3 ms per frame. "CPU ms/frame" is the CPU time of all threads
(llvmpipe renders on all cores) and of the ffmpeg encoders: on N idle cores the wall time can
approach CPU / N; another job on the machine raises the wall time but not the CPU time. The load
average is printed before and after.

One frame (``--frame-index``, default 150) of the 10 s single-view clip is saved as a PNG
(``--frame-png``, default /tmp/bench_render_frame.png), decoded from the mp4, to look at.

    python bench/bench_render.py
    python bench/bench_render.py --sizes 512x512 --cases mesh grid2 --profile
    python bench/bench_render.py --seconds 5 --cases mesh stick --no-breakdown
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


from emage_core import Motion
from emage_core.render import camera, gl, grid, mesh
from emage_core.render.video import VideoWriter

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "beat2"
SAMPLE = FIXTURES / "2_scott_0_1_1.npz"
CASES = {
    # name: (description, keyword arguments of render_grid, number of clips, target wall s for 10 s)
    "mesh": ("1 view, mesh, no MSAA", dict(renderer="mesh", msaa=0), 1, 10.0),
    "grid2": ("2-up grid, mesh (+2 cell files)", dict(renderer="mesh", msaa=0), 2, 20.0),
    "grid2-nocells": ("2-up grid, mesh, grid file only", dict(renderer="mesh", msaa=0, write_cells=False), 2, None),
    "mesh-msaa4": ("1 view, mesh, 4x MSAA", dict(renderer="mesh", msaa=4), 1, None),
    "stick": ("1 view, stick figure", dict(renderer="stick"), 1, None),
    "frames": ("1 view, mesh frames only, no video", None, 1, None),
}
DEFAULT_CASES = ["mesh", "grid2", "mesh-msaa4", "stick", "frames"]


def cpu_seconds() -> float:
    """CPU time used so far by this process (all threads) and its finished children (ffmpeg)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Timer:
    """``with Timer() as t: ...`` -> t.wall, t.cpu (seconds)."""

    def __enter__(self):
        self._wall, self._cpu = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self._wall, cpu_seconds() - self._cpu


def loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"


def synthetic(seconds: float) -> Motion:
    """Arms down and gesturing, head turning, slow sway: enough motion to exercise the renderer."""
    n = int(seconds * 30)
    t = np.arange(n) / 30
    m = Motion.zeros(n)
    m.poses[:, 16, 2] = -1.1 - 0.4 * np.sin(2 * np.pi * 0.7 * t)  # left shoulder: arm down-ish, waving
    m.poses[:, 17, 2] = 1.1 + 0.4 * np.sin(2 * np.pi * 0.9 * t)  # right shoulder
    m.poses[:, 18, 1] = -0.8 - 0.3 * np.sin(2 * np.pi * 1.3 * t)  # left elbow
    m.poses[:, 15, 1] = 0.3 * np.sin(2 * np.pi * 0.4 * t)  # head turns
    m.poses[:, 22, 0] = 0.15 * (1 + np.sin(2 * np.pi * 3 * t))  # jaw
    m.trans[:, 0] = 0.1 * np.sin(2 * np.pi * 0.1 * t)
    return m


def load_inputs(seconds: float) -> tuple[Motion, np.ndarray, str]:
    """(motion of at least 2 x seconds, speech (N,) 16 kHz for its first ``seconds``, description)."""
    n = int(seconds * 30)
    if SAMPLE.exists():
        from emage_core.motion.beat2 import read_beat2

        m = read_beat2(SAMPLE)
        if m.fps != 30:
            m = m.resample(30)
        wav = SAMPLE.with_suffix(".wav")
        if m.n_frames >= 2 * n and wav.exists():
            from emage_core.audio import load_audio

            speech = load_audio(wav, min_seconds=0.0)[: int(seconds * 16000)]
            return m, speech, f"BEAT2 {SAMPLE.name} + {wav.name}"
    t = np.arange(int(seconds * 16000)) / 16000
    speech = (0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return synthetic(2 * seconds), speech, "synthetic gestures + tone"


def parse_size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h or w)


# ---------------------------------------------------------------------------------- table 1

def breakdown(motion: Motion, speech: np.ndarray, sizes: list[tuple[int, int]], out_dir: Path) -> None:
    from emage_core.body.anny import Body

    body = Body.load()
    faces = np.asarray(body.faces)
    n = motion.n_frames
    print(f"Breakdown: {n} frames ({n / 30:g} s), each stage timed alone; ms per frame, wall (CPU)")
    head = (f"{'size':<9} {'posing':>13} {'rendering':>13} {'encoding':>13} {'sum':>13} "
            f"{'render_motion':>15} {'x real time':>11}")
    print(head)
    print("-" * len(head))
    for w, h in sizes:
        # Posing: batched linear blend skinning of every frame (render_motion does chunks of 32).
        body.vertices(motion.poses[:2], motion.trans[:2])  # warm caches
        with Timer() as pose_t:
            verts = body.vertices(motion.poses, motion.trans, expressions=motion.expressions)
        # Rendering: the frames only (camera and floor set up before the clock starts).
        r = mesh.MeshRenderer(w, h, view="full")
        r.set_camera(camera.clip_camera(verts[::3], "full", w / h))
        r.render_frame(verts[0], faces)  # uploads the mesh, compiles shaders
        frames = np.empty((n, h, w, 3), np.uint8)
        with Timer() as render_t:
            for i, v in enumerate(verts):
                frames[i] = r.render_frame(v)
        del verts
        # Encoding: x264 in ffmpeg fed through the pipe, then the AAC mux (VideoWriter.close).
        with Timer() as enc_t:
            with VideoWriter(out_dir / f"enc_{w}x{h}.mp4", w, h, 30, audio=speech) as vw:
                for f in frames:
                    vw.write(f)
        del frames
        # The same, end to end and overlapped.
        with Timer() as e2e_t:
            grid.render_motion(motion, out_dir / f"e2e_{w}x{h}.mp4", audio=speech, size=(w, h), body=body)
        total_wall = pose_t.wall + render_t.wall + enc_t.wall
        total_cpu = pose_t.cpu + render_t.cpu + enc_t.cpu

        def cell(t_wall, t_cpu):
            return f"{1000 * t_wall / n:6.1f} ({1000 * t_cpu / n:4.1f})"

        print(f"{w}x{h:<5} {cell(pose_t.wall, pose_t.cpu):>13} {cell(render_t.wall, render_t.cpu):>13} "
              f"{cell(enc_t.wall, enc_t.cpu):>13} {cell(total_wall, total_cpu):>13} "
              f"{cell(e2e_t.wall, e2e_t.cpu):>15} {n / 30 / e2e_t.wall:11.2f}")
    print()


# ---------------------------------------------------------------------------------- table 2

def end_to_end(clips: list[Motion], speech: np.ndarray, size: int, cases: list[str], out_dir: Path,
               seconds: float) -> dict[str, Path]:
    n = clips[0].n_frames
    print(f"End to end: {n} frames ({seconds:g} s) with speech, {size}x{size} per clip")
    head = (f"{'case':<36} {'wall s':>7} {'ms/frame':>9} {'x real time':>12} {'CPU ms/frame':>13} "
            f"{'target':>12}")
    print(head)
    print("-" * len(head))
    outputs = {}
    for name in cases:
        label, kw, k, target = CASES[name]
        with Timer() as t:
            if kw is None:
                for _ in grid.motion_frames([clips[0]], size=size)[0]:
                    pass
            else:
                out = out_dir / f"{name}.mp4"
                labels = ["A", "B"][:k] if k > 1 else None
                grid.render_grid(clips[:k], out, audio=speech, size=size, labels=labels, **kw)
                outputs[name] = out
        verdict = ""
        if target is not None:
            scaled = target * seconds / 10  # targets are for 10 s of speech
            verdict = f"<= {scaled:g} s " + ("ok" if t.wall <= scaled else "MISS")
        print(f"{label:<36} {t.wall:7.2f} {1000 * t.wall / n:9.1f} {seconds / t.wall:12.2f} "
              f"{1000 * t.cpu / n:13.1f} {verdict:>12}")
    print()
    return outputs


def save_frame(video: Path, index: int, png: Path) -> None:
    """Decode frame ``index`` of an mp4 (as a viewer sees it) into a PNG."""
    import imageio_ffmpeg
    from PIL import Image

    gen = imageio_ffmpeg.read_frames(os.fspath(video))
    meta = next(gen)
    w, h = meta["size"]
    frame = None
    for i, raw in enumerate(gen):
        if i == index:
            frame = np.frombuffer(raw, np.uint8).reshape(h, w, 3)
            break
    gen.close()
    if frame is None:
        print(f"{video.name} has fewer than {index + 1} frames: no PNG written")
        return
    png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame).save(png)
    print(f"frame {index} of the single-view clip: {png}")


# ---------------------------------------------------------------------------------- table 3

def profile_grid(clips: list[Motion], speech: np.ndarray, size: int, out_dir: Path, top: int = 18) -> None:
    import cProfile
    import pstats

    prof = cProfile.Profile()
    with Timer() as t:
        prof.enable()
        grid.render_grid(clips[:2], out_dir / "profile.mp4", audio=speech, size=size, labels=["A", "B"])
        prof.disable()
    n = clips[0].n_frames
    print(f"Profile of the 2-up grid ({t.wall:.1f} s wall under cProfile, {1000 * t.wall / n:.0f} ms per grid "
          f"frame): main-thread time by function, ms per grid frame (2 cells)")
    stats = pstats.Stats(prof)
    rows = []
    for (file, line, func), (cc, nc, tt, ct, callers) in stats.stats.items():
        rows.append((ct, tt, nc, f"{Path(file).name}:{line} {func}"))
    rows.sort(reverse=True)
    print(f"{'cumulative':>10} {'own':>7} {'calls':>7}  function")
    for ct, tt, nc, where in rows[:top]:
        print(f"{1000 * ct / n:10.1f} {1000 * tt / n:7.1f} {nc:7d}  {where}")
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length of the end-to-end cases (default 10)")
    ap.add_argument("--size", type=int, default=512, help="cell size of the end-to-end cases (default 512)")
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=DEFAULT_CASES)
    ap.add_argument("--frames", type=int, default=300, help="frames of the breakdown (default 300)")
    ap.add_argument("--sizes", nargs="+", default=["512x512", "720x480"], help="breakdown sizes, WxH")
    ap.add_argument("--no-breakdown", action="store_true", help="skip table 1")
    ap.add_argument("--profile", action="store_true", help="also profile the 2-up grid (table 3)")
    ap.add_argument("--frame-png", default="/tmp/bench_render_frame.png",
                    help="where to save one frame of the single-view clip ('' for none; "
                         "default /tmp/bench_render_frame.png)")
    ap.add_argument("--frame-index", type=int, default=150, help="which frame to save (default 150)")
    ap.add_argument("--out", type=Path, default=None, help="keep the videos in this folder")
    args = ap.parse_args()

    source, speech_all, what = load_inputs(max(args.seconds, args.frames / 30))
    n = int(args.seconds * 30)
    clips = [source[:n], source[n:2 * n]]
    speech = speech_all[: int(args.seconds * 16000)]

    reason = gl.egl_unavailable_reason()
    print(f"motion: {what}")
    print(f"OpenGL: {reason or gl.gl_renderer_name()}")
    print(f"CPU cores: {os.cpu_count()}, load average before: {loadavg()}")
    print()
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="bench_render_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        if reason:
            cases = [c for c in args.cases if c == "stick"]
            print(f"mesh cases skipped: {reason}\n")
        else:
            cases = args.cases
            grid.motion_frames([clips[0][:2]], size=args.size)  # warm up: context, body, shaders
            if not args.no_breakdown:
                breakdown(source[:args.frames], speech_all[: int(args.frames / 30 * 16000)],
                          [parse_size(s) for s in args.sizes], out_dir)
        outputs = end_to_end(clips, speech, args.size, cases, out_dir, args.seconds)
        if args.profile and not reason:
            profile_grid(clips, speech, args.size, out_dir)
        single = outputs.get("mesh") or outputs.get("mesh-msaa4") or outputs.get("stick")
        if single is not None and args.frame_png:
            save_frame(single, args.frame_index, Path(args.frame_png))
    finally:
        if args.out is None:
            for f in out_dir.iterdir():
                f.unlink()
            out_dir.rmdir()
    print(f"load average after: {loadavg()} (other work on the machine slows the wall times; CPU ms/frame,"
          " summed over all cores and the ffmpeg encoders, does not depend on it)")


if __name__ == "__main__":
    main()
