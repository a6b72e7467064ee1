"""``live``: simulate a live session on a speech file, chunk by chunk, printing each chunk's latency.

    python -m emage_core live speech.wav --chunk-ms 200 -o take.npz

Chunks are pushed at the speech's own pace (``--realtime``, the default: each chunk when it would have
been spoken) or as fast as they are generated (``--no-realtime``). The take is written like any result:
take.npz (+ .json), .bvh, .glb, .wav and metadata.json beside it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_live_parser(sub) -> None:
    from ..generate.emage import LIVE_LOOKAHEAD

    p = sub.add_parser("live", help="simulate live generation on a speech file (per-chunk latency, the take)")
    p.add_argument("speech", help="speech file (wav, mp3, flac, ogg, m4a; any rate)")
    p.add_argument("-o", "--output", required=True, help="the take's BEAT2 .npz (its .bvh, .glb, .wav and "
                                                         "metadata.json go beside it)")
    p.add_argument("--chunk-ms", type=int, default=200, help="speech per chunk in milliseconds (default 200)")
    p.add_argument("--model", default="emage", metavar="REF", help="a model that can stream (default: emage)")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random, recorded)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = most likely motion (default); > 0 samples")
    p.add_argument("--lookahead", type=int, default=LIVE_LOOKAHEAD, metavar="FRAMES",
                   help=f"speech (30-fps frames) each frame may hear after itself (default {LIVE_LOOKAHEAD} = "
                        f"{LIVE_LOOKAHEAD / 30:.1f} s)")
    p.add_argument("--no-idle", action="store_true", help="no calming and breathing in silence")
    p.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=True,
                   help="push chunks at the speech's pace (default) or as fast as possible")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.set_defaults(func=cmd_live)


def cmd_live(args: argparse.Namespace) -> int:
    import numpy as np

    from ..audio import SAMPLE_RATE, load_audio
    from ..serve.live import write_take
    from ..generate.registry import load

    if not 20 <= args.chunk_ms <= 2000:
        raise ValueError(f"--chunk-ms must be 20-2000, got {args.chunk_ms}")
    out = Path(args.output)
    if out.suffix != ".npz":
        raise ValueError(f"the take is a BEAT2 .npz; got {out.name}")
    wav = load_audio(args.speech)
    print(f"loading {args.model} ...", file=sys.stderr)
    gen = load(args.model, revision=args.revision, device=args.device)
    live = gen.live(seed=args.seed, temperature=args.temperature, lookahead=args.lookahead, idle=not args.no_idle)
    n = args.chunk_ms * SAMPLE_RATE // 1000
    latencies = []
    start = time.perf_counter()
    print(f"{'chunk':>5} {'speech s':>8} {'frames':>7} {'latency ms':>10}", file=sys.stderr)
    for k, i in enumerate(range(0, wav.shape[0], n)):
        if args.realtime:  # wait until this chunk would have been fully spoken
            time.sleep(max(0.0, start + (i + n) / SAMPLE_RATE - time.perf_counter()))
        chunk = live.push(wav[i: i + n])
        latencies.append(chunk.compute_s)
        if not args.quiet:
            print(f"{k:>5} {live.heard_s:>8.2f} {chunk.n_frames:>7} {1000 * chunk.compute_s:>10.1f}", file=sys.stderr)
    last = live.finish()
    files = write_take(live, out.parent, stem=out.stem)
    lat = np.array(latencies) * 1000
    print(f"{len(lat)} chunks of {args.chunk_ms} ms: latency median {np.median(lat):.1f} ms, "
          f"95th percentile {np.percentile(lat, 95):.1f} ms, max {lat.max():.1f} ms (generation only; final flush "
          f"{1000 * last.compute_s:.1f} ms)")
    print(f"take: {live.frames} frames ({live.frames / 30:.2f} s) for {live.heard_s:.2f} s of speech -> "
          + ", ".join(p.name for p in files.values()))
    return 0
