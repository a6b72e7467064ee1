"""The locked-parts timeline picture: parts x time, locked spans shaded over the speech waveform."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from emage_core.edit.locks import Lock
from emage_core.motion.skeleton import PART_NAMES

_COLORS = {"face": (231, 111, 81), "upper": (42, 157, 143), "hands": (233, 196, 106),
           "lower": (38, 70, 83), "global": (155, 93, 229)}


def draw_timeline(locks: list[Lock], duration: float, wav: np.ndarray | None = None,
                  width: int = 900, row_height: int = 26) -> Image.Image:
    """An RGB picture: one row per part, its locked spans filled, the waveform (16 kHz) in grey behind.

    ``duration`` (seconds) sets the time axis; spans beyond it are drawn clipped, in red outline.
    """
    left, top, axis_h = 70, 8, 22
    rows = len(PART_NAMES)
    height = top + rows * row_height + axis_h
    img = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(img)
    duration = max(duration, 1e-3)
    plot_w = width - left - 10

    def x_of(t: float) -> int:
        return left + int(round(plot_w * min(max(t, 0.0), duration) / duration))

    if wav is not None and wav.size:  # waveform envelope, one column per pixel
        cols = np.array_split(np.abs(wav[: int(duration * 16000)]), plot_w)
        peak = max(float(np.abs(wav).max()), 1e-6)
        mid, half = top + rows * row_height / 2, rows * row_height / 2 - 2
        for i, c in enumerate(cols):
            a = (float(c.max()) / peak * half) if c.size else 0.0
            draw.line([(left + i, mid - a), (left + i, mid + a)], fill=(215, 215, 215))
    for r, part in enumerate(PART_NAMES):
        y0 = top + r * row_height
        draw.text((6, y0 + row_height / 2 - 6), part, fill=(40, 40, 40))
        draw.line([(left, y0 + row_height - 1), (width - 10, y0 + row_height - 1)], fill=(225, 225, 225))
        for lock in locks:
            if lock.part != part:
                continue
            outside = lock.end > duration + 1e-9
            draw.rectangle([x_of(lock.start), y0 + 4, x_of(lock.end), y0 + row_height - 5],
                           fill=_COLORS[part], outline=(200, 0, 0) if outside else _COLORS[part], width=2)
    # time axis with ticks every 1, 2, 5, 10 ... seconds
    ya = top + rows * row_height
    step = next(s for s in (0.5, 1, 2, 5, 10, 20, 30, 60, 120) if duration / s <= 12)
    for t in np.arange(0, duration + 1e-9, step):
        x = x_of(float(t))
        draw.line([(x, ya), (x, ya + 4)], fill=(90, 90, 90))
        draw.text((x - 6, ya + 6), f"{t:g}s", fill=(90, 90, 90))
    return img
