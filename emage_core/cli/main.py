"""Command line: ``python -m emage_core <command> ...``.

Each command is a small function taking the parsed arguments; heavy modules are imported
inside them so ``--help`` stays instant.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _looks_like_npz(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"PK\x03\x04"  # .npz files are zip archives


def cmd_info(args: argparse.Namespace) -> int:
    """Print what a motion (.npz) or audio file holds."""
    path = Path(args.file)
    if not path.is_file():
        raise SystemExit(f"error: {path} is not a file")
    if _looks_like_npz(path):
        from ..motion.beat2 import read_beat2
        from ..motion.skeleton import PARTS

        m = read_beat2(path)
        print(f"motion file:  {path}")
        print(f"frames:       {m.n_frames}")
        print(f"fps:          {m.fps:g}")
        print(f"duration:     {m.duration:.2f} s")
        print("part ranges (min .. max; rotations in radians, translation in metres):")
        rows = {part: m.poses[:, list(joints)] if joints else m.trans for part, joints in PARTS.items()}
        rows["face"] = m.poses[:, list(PARTS["face"])]  # the jaw; expressions get their own row
        rows["face expressions"] = m.expressions
        for label, v in rows.items():
            print(f"  {label:<17} {v[0].size:>4} values  {v.min():+.3f} .. {v.max():+.3f}")
        return 0
    from ..audio import probe_audio

    info = probe_audio(path)
    print(f"audio file:   {path}")
    print(f"format:       {info.format}" + (f" ({info.subtype})" if getattr(info, "subtype", None) else ""))
    print(f"sample rate:  {info.sample_rate} Hz")
    print(f"channels:     {info.channels}")
    print(f"duration:     {info.duration:.2f} s")
    return 0


def _variant_paths(out: Path, n: int) -> list[Path]:
    """OUT.npz for one clip; OUT_1.npz ... OUT_n.npz for several."""
    out = out if out.suffix == ".npz" else out.with_name(out.name + ".npz")
    if n == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{k}.npz") for k in range(1, n + 1)]


def cmd_generate(args: argparse.Namespace) -> int:
    """Speech -> BEAT2 motion file(s) with a JSON provenance side-car each."""
    from tqdm import tqdm

    from ..motion.beat2 import read_beat2, sidecar_path, write_beat2
    from ..edit.locks import Lock
    from ..generate.emage import EmageGenerator

    locks = [Lock.parse(text) for text in args.lock]
    reference = read_beat2(args.reference) if args.reference else None
    if locks and reference is None:
        raise SystemExit("error: --lock needs --reference REF.npz (the motion to take the locked parts from)")
    if reference is not None and reference.fps != 30:
        reference = reference.resample(30)
    from ..edit.style import parse_style

    overrides = parse_style(args.style).values() if args.style else None
    if overrides:
        neutral = parse_style([]).values()
        overrides = {k: v for k, v in overrides.items() if v != neutral[k]}
    print(f"loading weights from {args.weights or 'the default source'} ...", file=sys.stderr)
    gen = EmageGenerator.from_pretrained(args.weights, revision=args.revision, device=args.device)
    learned, style = gen.plan_expression(args.emotion, args.intensity, overrides)
    if args.guidance != 1 and not learned:
        raise SystemExit(f"error: --guidance needs an --emotion the model learned (it knows: {', '.join(gen.emotions) or 'none'})")
    if args.emotion and args.emotion != "neutral":
        how = "learned conditioning" if learned else "explicit edit (the model has no learned emotions)"
        print(f"emotion {args.emotion} at intensity {args.intensity:g}: {how}", file=sys.stderr)
    with tqdm(total=100, bar_format="{percentage:3.0f}%|{bar:30}| {desc} [{elapsed}]", file=sys.stderr) as bar:
        def progress(frac: float, msg: str) -> None:
            bar.n = round(100 * frac, 1)
            bar.set_description_str(msg)  # also refreshes the bar

        clips = gen.generate(args.speech, seed=args.seed, variants=args.variants, temperature=args.temperature,
                             locks=locks, reference=reference, crossfade=args.crossfade, emotion=learned,
                             style=style, progress=progress, guidance=args.guidance, speaker=args.speaker,
                             snap_face=args.snap_face, exact_audio_timing=not args.reference_timing,
                             **({} if args.overlap is None else {"overlap": args.overlap}))
    for clip, path in zip(clips, _variant_paths(Path(args.output), len(clips))):
        write_beat2(clip, path)
        print(f"wrote {path} ({clip.n_frames} frames, seed {clip.meta['seed']}) + {sidecar_path(path).name}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m emage_core",
        description="EMAGE Studio core: speech to holistic 3D co-speech motion (SMPL-X + FLAME).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("info", help="describe a motion (.npz) or audio file")
    p.add_argument("file", help="a BEAT2 .npz motion file or an audio file (wav, mp3, flac, ogg, m4a)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("generate", help="speech to motion (BEAT2 .npz + JSON provenance side-car)")
    p.add_argument("speech", help="speech file (wav, mp3, flac, ogg, m4a; any rate, mono or stereo)")
    p.add_argument("-o", "--output", required=True, help="output .npz (several variants: OUT_1.npz, OUT_2.npz, ...)")
    p.add_argument("--weights", default=None, help="checkpoint folder or Hugging Face repo id (default: the default model)")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--seed", type=int, default=None, help="random seed; variant k uses seed + k (default: random, recorded)")
    p.add_argument("--variants", type=int, default=1, help="number of motions to generate (default 1)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="0 = most likely codes, deterministic (default); > 0 samples body codes")
    p.add_argument("--overlap", type=int, default=None, metavar="FRAMES",
                   help="frames neighbouring 64-frame windows share, crossfaded so the motion does not jump at "
                        "window seams (default 8; 0 = the reference's windows; at most 28)")
    p.add_argument("--snap-face", action="store_true",
                   help="decode the face from the nearest code, as the reference does (default: the predicted "
                        "latent as it is)")
    p.add_argument("--reference-timing", action="store_true",
                   help="start window f's audio at f * 533 samples as the reference does (it drifts 1/3 sample "
                        "per frame: 40 ms after a minute); --overlap 0 --snap-face --reference-timing reproduces "
                        "the released implementation")
    p.add_argument("--lock", action="append", default=[], metavar="PART:START-END",
                   help="keep a part of --reference over a span in seconds, e.g. upper:1.5-3; "
                        "parts: face, upper, hands, lower, global (repeatable)")
    p.add_argument("--reference", default=None, help="BEAT2 .npz motion the locked parts come from")
    p.add_argument("--crossfade", type=float, default=0.2, help="seconds of blending around locked spans (default 0.2)")
    p.add_argument("--emotion", default=None, type=str.lower,
                   help="neutral, happiness, anger, sadness, contempt, surprise, fear, disgust: learned "
                        "conditioning when the model knows the label, else its explicit preset")
    p.add_argument("--intensity", type=float, default=1.0, help="emotion intensity (0 = neutral, 1 = preset, >1 more)")
    p.add_argument("--guidance", type=float, default=1.0,
                   help="classifier-free guidance of a learned --emotion: 1 = as trained (default), 0 = no emotion, "
                        ">1 stronger (e.g. 2)")
    p.add_argument("--speaker", default=None,
                   help="a speaker the model learned (BEAT2 '{id}_{name}', e.g. 2_scott; an unknown name lists "
                        "the known ones); default: no speaker label / the released weights' single speaker")
    p.add_argument("--style", action="append", default=[], metavar="KEY=VALUE",
                   help="explicit control, e.g. amplitude=1.3, tempo=0.8, head_pitch=0.1, fluidity=0.5 (repeatable)")
    p.set_defaults(func=cmd_generate)

    from .train import add_train_parsers

    add_train_parsers(sub)  # train, metrics
    from .render import add_render_parser

    add_render_parser(sub)  # render, export
    from ..batch import add_batch_parser

    add_batch_parser(sub)  # batch
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError, OSError) as e:
        # Our errors (bad files, bad settings) are ValueError/RuntimeError subclasses with
        # messages meant for people: print them without a traceback.
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
