"""``generate`` (speech -> motion files) and ``compare`` (2-4 models side by side) on the command line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..render import RENDERERS, VIEWS


def add_generate_parsers(sub) -> None:
    p = sub.add_parser("generate", help="speech to motion (BEAT2 .npz + JSON provenance side-car)")
    p.add_argument("speech", help="speech file (wav, mp3, flac, ogg, m4a; any rate, mono or stereo)")
    p.add_argument("-o", "--output", required=True, help="output .npz (several variants: OUT_1.npz, OUT_2.npz, ...)")
    _model_options(p)
    p.add_argument("--variants", type=int, default=1, help="number of motions to generate (default 1)")
    _generation_options(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("compare", help="2-4 models on the same speech and seed, rendered side by side")
    p.add_argument("speech", help="speech file")
    p.add_argument("--model", action="append", required=True, metavar="REF",
                   help="a model reference, FAMILY[:SOURCE] (repeat 2-4 times), e.g. --model emage --model emage:ckpt/")
    p.add_argument("-o", "--output", required=True, help="the side-by-side video (.mp4); each model's motion is "
                                                         "written beside it as OUT_<n>.npz")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit (for every Hub model)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--complete-with", default=None, metavar="REF",
                   help="an EMAGE model that fills the parts a model does not generate (default: they stay at rest)")
    p.add_argument("--no-labels", action="store_true", help="no model names in the video (blind comparisons)")
    p.add_argument("--view", choices=VIEWS, default="full")
    p.add_argument("--size", type=int, default=384, help="pixels per cell (default 384)")
    p.add_argument("--renderer", choices=RENDERERS, default="mesh")
    _generation_options(p)
    p.set_defaults(func=cmd_compare)


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, metavar="REF",
                   help="model reference FAMILY[:SOURCE]: 'emage' (the bundled default), 'emage:owner/name' (Hub), "
                        "'emage:path/to/folder' (default: emage)")
    p.add_argument("--weights", default=None, metavar="SRC",
                   help="checkpoint folder or Hugging Face repo id of an EMAGE model (= --model emage:SRC)")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--complete-with", default=None, metavar="REF",
                   help="an EMAGE model that fills the parts the model does not generate, given the model's parts "
                        "as locked (default: they stay at rest; either way the metadata says so)")


def _generation_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=None, help="random seed; variant k uses seed + k (default: random, recorded)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="0 = most likely motion, deterministic (default); > 0 samples")
    p.add_argument("--overlap", type=int, default=None, metavar="FRAMES",
                   help="EMAGE: frames neighbouring 64-frame windows share, crossfaded so the motion does not jump at "
                        "window seams (default 8; 0 = the reference's windows; at most 28)")
    p.add_argument("--snap-face", action="store_true",
                   help="EMAGE: decode the face from the nearest code, as the reference does (default: the predicted "
                        "latent as it is)")
    p.add_argument("--reference-timing", action="store_true",
                   help="EMAGE: start window f's audio at f * 533 samples as the reference does (it drifts 1/3 sample "
                        "per frame: 40 ms after a minute)")
    p.add_argument("--as-released", action="store_true",
                   help="EMAGE: decode exactly as the released implementation (--overlap 0 --snap-face "
                        "--reference-timing --audio-context window --precision float32; its golden outputs)")
    p.add_argument("--audio-context", choices=("window", "clip"), default=None,
                   help="EMAGE: 'clip' encodes the speech once per clip (real context at window edges; faster; the "
                        "default); 'window' encodes each window alone, zero-padded, as the reference")
    p.add_argument("--precision", choices=("auto", "float32", "bfloat16"), default=None,
                   help="EMAGE: the audio model's precision: 'auto' (the default) runs bfloat16 where the device has "
                        "it natively, about twice as fast; float32 as the reference")
    p.add_argument("--lock", action="append", default=[], metavar="PART:START-END",
                   help="keep a part of --reference over a span in seconds, e.g. upper:1.5-3; "
                        "parts: face, upper, hands, lower, global (repeatable)")
    p.add_argument("--reference", default=None, help="BEAT2 .npz motion the locked parts come from")
    p.add_argument("--crossfade", type=float, default=0.2, help="seconds of blending around locked spans (default 0.2)")
    p.add_argument("--emotion", default=None, type=str.lower,
                   help="neutral, happiness, anger, sadness, contempt, surprise, fear, disgust: learned "
                        "conditioning when the model knows the label, else its explicit preset")
    p.add_argument("--intensity", type=float, default=1.0, help="emotion intensity (0 = neutral, 1 = preset, 2 = most)")
    p.add_argument("--guidance", type=float, default=1.0,
                   help="classifier-free guidance of a learned --emotion: 1 = as trained (default), 0 = no emotion, "
                        ">1 stronger (e.g. 2)")
    p.add_argument("--speaker", default=None,
                   help="a speaker the model learned (BEAT2 '{id}_{name}', e.g. 2_scott; an unknown name lists "
                        "the known ones); default: no speaker label / the released weights' single speaker")
    p.add_argument("--style", action="append", default=[], metavar="KEY=VALUE",
                   help="explicit control, e.g. amplitude=1.3, tempo=0.8, head_pitch=0.1, fluidity=0.5 (repeatable)")


def settings_from_args(args: argparse.Namespace):
    """The one `GenerationSettings` the command line's options describe (checked)."""
    from ..edit.locks import Lock
    from ..edit.style import parse_style
    from ..generate.settings import EmageOptions, GenerationSettings
    from ..motion.beat2 import read_beat2

    locks = [Lock.parse(text) for text in args.lock]
    reference = read_beat2(args.reference) if args.reference else None
    if locks and reference is None:
        raise SystemExit("error: --lock needs --reference REF.npz (the motion to take the locked parts from)")
    if reference is not None:
        reference = reference.resample()  # at 30 fps (a copy when it already is)
    style = {}
    if args.style:
        chosen, neutral = parse_style(args.style).values(), parse_style([]).values()
        style = {k: v for k, v in chosen.items() if v != neutral[k]}
    speed = {name: getattr(args, name) for name in ("audio_context", "precision") if getattr(args, name, None)}
    if getattr(args, "as_released", False):
        emage = GenerationSettings.reference_preset("emage").emage
    else:
        emage = EmageOptions(snap_face=args.snap_face, exact_audio_timing=not args.reference_timing,
                             **({} if args.overlap is None else {"overlap": args.overlap}), **speed)
    return GenerationSettings(seed=args.seed, variants=getattr(args, "variants", 1), temperature=args.temperature,
                              locks=locks, reference=reference, crossfade=args.crossfade, emotion=args.emotion,
                              intensity=args.intensity, style=style, guidance=args.guidance, speaker=args.speaker,
                              emage=emage).validate()


def _load(ref: str, args: argparse.Namespace):
    from ..generate.registry import load

    print(f"loading {ref} ...", file=sys.stderr)
    return load(ref, revision=args.revision, device=args.device)


def _generate(gen, speech, settings, args, bar_desc: str = ""):
    """Generate with a progress bar; completes missing parts when --complete-with is given."""
    from tqdm import tqdm

    from ..generate.complete import complete_parts
    from ..generate.interface import load_speech

    wav, _ = load_speech(speech)
    with tqdm(total=100, bar_format="{percentage:3.0f}%|{bar:30}| {desc} [{elapsed}]", file=sys.stderr) as bar:
        def progress(frac: float, msg: str) -> None:
            bar.n = round(100 * frac, 1)
            bar.set_description_str(f"{bar_desc}{msg}")  # also refreshes the bar

        clips = gen.generate(speech, settings, progress=progress)
        missing = gen.capabilities.missing_parts()
        if missing and args.complete_with:
            clips = complete_parts(clips, wav, gen.capabilities.parts, _load(args.complete_with, args), settings,
                                   progress=progress)
        elif missing:
            print(f"{gen.model_id} does not generate {', '.join(missing)}: left at rest "
                  "(--complete-with emage fills them)", file=sys.stderr)
    return clips


def _variant_paths(out: Path, n: int) -> list[Path]:
    """OUT.npz for one clip; OUT_1.npz ... OUT_n.npz for several."""
    out = out if out.suffix == ".npz" else out.with_name(out.name + ".npz")
    if n == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{k}.npz") for k in range(1, n + 1)]


def cmd_generate(args: argparse.Namespace) -> int:
    """Speech -> BEAT2 motion file(s) with a JSON provenance side-car each."""
    from ..motion.beat2 import sidecar_path, write_beat2

    if args.model and args.weights:
        raise SystemExit("error: give --model or --weights, not both (--weights SRC means --model emage:SRC)")
    settings = settings_from_args(args)
    gen = _load(args.model or (f"emage:{args.weights}" if args.weights else "emage"), args)
    if args.emotion and args.emotion != "neutral":
        learned = args.emotion in gen.capabilities.emotions
        how = "learned conditioning" if learned else "explicit edit (the model has no learned emotion of that name)"
        print(f"emotion {args.emotion} at intensity {args.intensity:g}: {how}", file=sys.stderr)
    clips = _generate(gen, args.speech, settings, args)
    for clip, path in zip(clips, _variant_paths(Path(args.output), len(clips))):
        write_beat2(clip, path)
        print(f"wrote {path} ({clip.n_frames} frames, seed {clip.meta['seed']}) + {sidecar_path(path).name}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """2-4 models, the same speech and seed: a side-by-side video and each model's motion beside it."""
    import random

    from ..audio import load_audio
    from ..generate.registry import parse_ref
    from ..motion.beat2 import write_beat2
    from ..render.grid import render_grid

    if not 2 <= len(args.model) <= 4:
        raise SystemExit(f"error: compare takes 2-4 --model options, got {len(args.model)}")
    labels = [parse_ref(m).label for m in args.model]  # bad references fail before anything loads
    settings = settings_from_args(args)
    if settings.seed is None:
        settings.seed = random.SystemRandom().randrange(2**31)  # one seed for every model, recorded
    out = Path(args.output)
    out = out if out.suffix == ".mp4" else out.with_name(out.name + ".mp4")
    clips = []
    for n, ref in enumerate(args.model, 1):
        gen = _load(ref, args)
        clip = _generate(gen, args.speech, settings, args, bar_desc=f"{labels[n - 1]}: ")[0]
        path = write_beat2(clip, out.with_name(f"{out.stem}_{n}.npz"))
        print(f"wrote {path} ({labels[n - 1]}, seed {clip.meta['seed']})")
        clips.append(clip)
    render_grid(clips, out, audio=load_audio(args.speech), labels=labels, show_labels=not args.no_labels,
                view=args.view, size=args.size, renderer=args.renderer, write_cells=False)
    print(f"wrote {out} ({len(clips)} models side by side{'' if args.no_labels else ', labelled'})")
    return 0
