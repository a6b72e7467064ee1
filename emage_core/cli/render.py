"""Command line for seeing and exporting motion: ``render`` (mp4) and ``export`` (BVH, glTF, FBX).

Registered by `emage_core.cli` through `add_render_parser`. Heavy modules (OpenGL, the body)
are imported inside the commands so ``--help`` stays instant.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..body import BODIES
from ..export import RIGS, ROOT_MODES
from ..render import VIEWS


def cmd_render(args: argparse.Namespace) -> int:
    """One motion -> OUT.mp4; 2-4 motions -> a side-by-side OUT.mp4 plus OUT_cell<k>.mp4 each."""
    from tqdm import tqdm

    from ..body import check_body, default_body
    from ..motion.beat2 import read_beat2
    from ..render.grid import render_grid

    body = check_body(args.body or default_body())
    motions = [read_beat2(p) for p in args.motions]
    if args.labels is not None:
        labels = [s.strip() for s in args.labels.split(",")]
    else:
        labels = [Path(p).stem for p in args.motions]
    if len(motions) == 1 and args.labels is None:
        labels = None  # a single clip needs no name on it unless asked for
    audio = None
    if args.audio:
        from ..audio import load_audio

        audio = load_audio(args.audio)
    out = Path(args.output)
    if out.suffix.lower() != ".mp4":
        out = out.with_name(out.name + ".mp4")
    with tqdm(total=100, bar_format="{percentage:3.0f}%|{bar:30}| {desc} [{elapsed}]", file=sys.stderr) as bar:
        def progress(frac: float, msg: str) -> None:
            bar.n = round(100 * frac, 1)
            bar.set_description_str(msg)

        result = render_grid(motions, out, audio=audio, labels=labels, show_labels=not args.no_labels,
                             view=args.view, size=args.size, renderer="stick" if args.stick else "mesh",
                             body=body, msaa=args.msaa, keep_translation=False if args.no_translation else None,
                             progress=progress)
    shown = "stick figure" if args.stick else f"{body} body"
    print(f"wrote {result.grid_path} ({shown} on the SMPL-X skeleton of each motion's shape)")
    for p in result.cell_paths:
        if p != result.grid_path:
            print(f"wrote {p}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Motion (.npz) -> BVH, animated glTF (.glb) or FBX (through Blender), by the output's suffix."""
    from ..export import FORMATS, export_motion
    from ..motion.beat2 import read_beat2

    out = Path(args.output)
    if out.suffix.lower() not in FORMATS:
        out = out.with_name(out.name + ".bvh")
    motion = read_beat2(args.motion)
    export_motion(motion, out, rig=args.rig, root=args.root, skeleton_only=args.skeleton_only)
    what = {".bvh": "BVH", ".glb": "glTF", ".fbx": "FBX"}[out.suffix.lower()]
    body = "" if out.suffix.lower() == ".bvh" else ("skeleton only, " if args.skeleton_only else "Anny body, ")
    print(f"wrote {out} ({what}: {motion.n_frames} frames at {motion.fps:g} fps, {body}SMPL-X skeleton of the "
          f"motion's shape with {args.rig} bone names, mean hand pose in the finger rotations"
          f"{', root in place' if args.root == 'in-place' else ''})")
    return 0


def _size(text: str) -> int | tuple[int, int]:
    """``512`` or ``640x360``."""
    try:
        if "x" in text.lower():
            w, h = (int(v) for v in text.lower().split("x"))
            return w, h
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be N or WxH, got {text!r}") from None


def add_render_parser(subparsers) -> None:
    """Add the ``render`` and ``export`` commands to the main parser's subparsers."""
    p = subparsers.add_parser("render", help="render motion(s) to mp4 (several: side by side + one file each)")
    p.add_argument("motions", nargs="+", metavar="MOTION.npz", help="1 to 4 BEAT2 .npz motions of equal length")
    p.add_argument("-o", "--output", required=True, help="output .mp4 (with several motions also OUT_cell1.mp4 ...)")
    p.add_argument("--audio", default=None, metavar="SPEECH", help="speech to put in the video (wav, mp3, ...)")
    p.add_argument("--view", choices=VIEWS, default="full", help="camera framing (default full)")
    p.add_argument("--size", type=_size, default=512, help="cell size in pixels, N or WxH, even (default 512)")
    p.add_argument("--no-labels", action="store_true", help="no text in the frames (blind comparisons)")
    p.add_argument("--labels", default=None, metavar="A,B", help="comma-separated cell labels (default: file names)")
    p.add_argument("--stick", action="store_true", help="fast 2D stick-figure preview instead of the body mesh")
    p.add_argument("--body", choices=BODIES, default=None,
                   help="the body: anny (free, human-looking), mannequin (wooden, no identity cues, for blind "
                        "studies) or smplx (the official mesh; needs $EMAGE_SMPLX_MODEL). Default: smplx where "
                        "$EMAGE_SMPLX_MODEL is set, else anny. All are posed on SMPL-X's skeleton")
    p.add_argument("--msaa", type=int, default=0, choices=(0, 2, 4, 8),
                   help="anti-aliasing samples (default 0; 4 is smoother and ~2x slower on a CPU)")
    p.add_argument("--no-translation", action="store_true",
                   help="remove the root's ground-plane drift (default: kept in the full view only)")
    p.set_defaults(func=cmd_render)

    p = subparsers.add_parser("export", help="export a motion (.npz) as BVH, animated glTF (.glb) or FBX")
    p.add_argument("motion", metavar="MOTION.npz", help="a BEAT2 .npz motion")
    p.add_argument("-o", "--output", required=True,
                   help="output .bvh, .glb (skinned Anny body + skeleton + animation) or .fbx (converted by "
                        "Blender, which must be installed); any other name gets .bvh appended")
    p.add_argument("--rig", choices=RIGS, default="smplx",
                   help="bone names: smplx (SMPL-X's joint names) or mixamo (mixamorig:Hips ..., which Unity, Unreal "
                        "and Blender retargeters map automatically). Default smplx")
    p.add_argument("--root", choices=ROOT_MODES, default="full",
                   help="full: the root travels as recorded; in-place: no horizontal travel, height kept")
    p.add_argument("--skeleton-only", action="store_true", help=".glb/.fbx: bones and animation, no mesh")
    p.set_defaults(func=cmd_export)
