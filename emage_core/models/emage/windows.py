"""EMAGE's windows over speech of any length: where each 64-frame forward pass starts and what it keeps.

Pure Python (no torch), so settings and manifests can check ``overlap`` without loading the networks.
"""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_OVERLAP = 8  # frames shared by neighbouring windows in the pipeline (run's default 0 = the reference)


@dataclass(frozen=True)
class Window:
    """One forward pass: frames [start, start + length) of the (padded) sequence.

    The first ``n_seed`` frames are given (mask 0), from the previous window's decoded output
    unless the caller's mask is 0 there. Output frames run from ``start + keep`` up to where the
    next window's output begins (to the window's end for the last one).
    """

    start: int
    length: int
    n_seed: int
    keep: int  # offset of the first kept frame inside the window

    @property
    def end(self) -> int:
        return self.start + self.length


def max_overlap(window: int = 64, seed: int = 4) -> int:
    """Largest ``overlap`` `plan_windows` takes: beyond it crossfades of neighbouring seams would meet."""
    return window // 2 - seed


def plan_windows(n_frames: int, window: int = 64, seed: int = 4, overlap: int = 0) -> list[Window]:
    """Windows covering exactly ``n_frames`` (>= seed + 5) frames, the reference's where it has them.

    Reference (``overlap == 0``): windows at 0, 60, 120, ... each keeping its first 60 frames,
    then a final window of 4 + r frames (r = (n - 4) % 60) keeping all of them, run only when
    r > 4. For r <= 4 we add a full window ending at n_frames whose already generated frames are
    all seeds, and keep its last 4 + r frames.

    ``overlap`` > 0 (ours): windows advance by window - seed - overlap frames, so after its seeds
    each window generates ``overlap`` frames that the previous one generated too (`run` crossfades
    them). A final window ends exactly at n_frames, given everything before the last ``overlap``
    frames of the previous window. 0 <= overlap <= `max_overlap`.
    """
    if not 0 <= overlap <= max_overlap(window, seed):
        raise ValueError(f"overlap must be 0..{max_overlap(window, seed)} frames, got {overlap}")
    if n_frames < seed + 5:
        raise ValueError(f"need at least {seed + 5} frames, got {n_frames}")
    hop = window - seed - overlap
    if overlap:
        plan = [Window(0, min(window, n_frames), seed, 0)]
        while plan[-1].end < n_frames:
            last = plan[-1]
            start = last.start + hop
            if start + window <= n_frames:
                plan.append(Window(start, window, seed, 0))
            else:  # end exactly at n_frames; everything up to the crossfade is given
                start = n_frames - window
                given = last.end - overlap - start
                plan.append(Window(start, window, given, given))
        return plan
    rounds, remain = divmod(n_frames - seed, hop)
    plan = [Window(i * hop, window, seed, 0) for i in range(rounds)]
    if remain > seed:
        plan.append(Window(rounds * hop, seed + remain, seed, 0))
    elif rounds:  # remain <= seed: n_frames >= window here
        start = n_frames - window
        plan.append(Window(start, window, rounds * hop - start, rounds * hop - start))
    return plan
