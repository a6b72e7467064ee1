"""One item's work: generate a motion or render a stimulus.

Pure functions, bytes in and bytes out, so they run the same in-process (`LocalBackend`) or on a Ray
worker (`RayBackend`, which finds them by module path: keep them top-level functions of this module).
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

#: torch CPU threads of a generation task unless the run says otherwise. Pinned, not left to each
#: process: float sums split over a different number of threads round differently, so a Ray worker
#: (which Ray starts with one thread) and this process would write different motion files.
DEFAULT_THREADS = min(4, os.cpu_count() or 1)


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` torch CPU threads, then restore the previous count."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def generate_motion(task: dict, speech: bytes, reference: bytes | None) -> dict[str, bytes]:
    """Generate one motion. Returns ``{"npz": BEAT2 .npz bytes, "json": provenance side-car bytes}``."""
    from ..edit.locks import Lock
    from ..generate.settings import DiffshegOptions, EmageOptions, GenerationSettings
    from ..motion.beat2 import beat2_arrays, npz_bytes, read_beat2

    from ..generate.registry import load_cached

    gen = load_cached(task["model"], revision=task["revision"], device=task["device"], max_loaded=2)
    ref = None
    if reference is not None:
        ref = read_beat2(reference, name="the reference motion").resample()  # at 30 fps
    settings = GenerationSettings(seed=task["seed"], variants=1, temperature=task["temperature"],
                                  locks=[Lock.parse(text) for text in task["locks"]], reference=ref,
                                  crossfade=task["crossfade"], style=task["style"] or {},
                                  emage=EmageOptions(overlap=task["overlap"]),
                                  diffsheg=DiffshegOptions(guidance_scale=task.get("guidance_scale")))
    with torch_threads(task["threads"]):
        clip = gen.generate(speech, settings)[0]
    loaded = clip.meta["weights"]["files"]
    if any(task["weights"].get(name) != sha for name, sha in loaded.items()):
        # e.g. a Ray node whose copy of a checkpoint folder differs from the driver's
        raise RuntimeError(f"the weights loaded from {task['model']} differ from the ones hashed before the run")
    meta = {**clip.meta, "study": task["study"], "torch_threads": task["threads"]}
    return {"npz": npz_bytes(beat2_arrays(clip)),
            "json": (json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n").encode()}


def render_stimulus(task: dict, motions: list[bytes], speech: bytes | None) -> bytes:
    """Render one stimulus (one motion, or two side by side) to mp4 bytes."""
    from ..audio import load_audio
    from ..motion.beat2 import read_beat2
    from ..render.grid import render_grid

    clips = [read_beat2(m) for m in motions]
    audio = load_audio(speech, min_seconds=0.0) if speech is not None else None
    with tempfile.TemporaryDirectory(prefix="emage_stim_") as tmp:
        out = Path(tmp) / "stimulus.mp4"
        render_grid(clips, out, audio=audio, labels=task["labels"], show_labels=task["labels"] is not None,
                    view=task["view"], size=task["size"], renderer=task["renderer"], body=task.get("body", "anny"),
                    write_cells=False)
        return out.read_bytes()
