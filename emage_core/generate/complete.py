"""Completing what a family does not generate with EMAGE, honestly labelled.

A family that produces, say, only the upper body leaves the other parts at rest. `complete_parts` asks
an EMAGE generator to fill them in: the family's parts go to EMAGE as locked parts over the whole clip
(EMAGE's masked gesture modelling conditions on them), so the completed parts fit the given ones, and
the given parts are copied into the result exactly. Each clip's ``meta["parts"]`` records which parts
came from which model.
"""
from __future__ import annotations

import numpy as np

from ..edit.locks import Lock
from ..motion.clip import Motion
from .interface import Generator, parts_meta
from .settings import GenerationSettings


def complete_parts(clips: list[Motion], speech: np.ndarray, produced: frozenset[str] | set[str],
                   completer: Generator, settings: GenerationSettings, progress=None) -> list[Motion]:
    """Fill the parts not in ``produced`` of each clip with ``completer`` (an EMAGE generator).

    speech: the (N,) 16 kHz samples the clips were generated from. Each clip keeps its seed; the
    completer samples at the same temperature. Returns new clips; their ``meta`` extends the originals'.
    """
    missing = [p for p in completer.capabilities.parts if p not in produced]
    if not missing:
        return clips
    out = []
    for k, clip in enumerate(clips):
        span = clip.n_frames / clip.fps
        locks = [Lock(part, 0.0, span) for part in sorted(produced)]
        run = GenerationSettings(seed=clip.meta.get("seed"), variants=1, temperature=settings.temperature,
                                 locks=locks, reference=clip, crossfade=0.0, emage=settings.emage)

        def report(f, m, k=k):
            if progress is not None:
                progress((k + f) / len(clips), f"completing with {completer.model_id}: {m}")

        filled = completer.generate(speech, run, progress=report)[0]
        filled.meta = {**clip.meta,
                       "parts": parts_meta(produced, {p: completer.model_id for p in missing}),
                       "completed_by": {"model": completer.model_id, "weights": completer.provenance,
                                        "parts": missing, "settings": run.to_dict()}}
        out.append(filled)
    return out
