"""Transcripts for Emotion-Beat Mining: Praat TextGrid word timings -> one word id per motion frame.

BEAT2 ships a TextGrid per take (a "words" interval tier). Training aligns the audio's beat features
with features of these words frame by frame (`losses.beat_text_infonce`); inference never needs text.

Word embedding: the paper uses pretrained FastText vectors, which are not reachable offline. Here each
word is hashed (CRC-32 of its lower-case spelling) into one of ``buckets - 1`` rows of an embedding
that is learned with the model (`model.TextEncoder`); row 0 is "no word" (silence, or no transcript).
Hashing needs no vocabulary file, and unseen words get a consistent (if shared) row.
"""
from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...motion.clip import DEFAULT_FPS as FPS

NO_WORD = 0


@dataclass(frozen=True)
class Word:
    start: float  # seconds
    end: float
    text: str


_TOKEN = re.compile(r'"(?:[^"]|"")*"|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|<exists>|<absent>')
_INDEX = re.compile(r"^\s*(?:item|intervals|points)\s*\[\d*\]\s*:?\s*$", re.M)


def read_textgrid(path: str | os.PathLike, tier: str = "words") -> list[Word]:
    """The non-empty intervals of tier ``tier`` (else the first interval tier) of a Praat TextGrid,
    long or short text format. Raises ValueError for a file that is not one."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    if "TextGrid" not in text[:200]:
        raise ValueError(f"{Path(path).name}: not a Praat TextGrid")
    tokens = _TOKEN.findall(_INDEX.sub("", text))

    def string(tok: str) -> str:
        if not tok.startswith('"'):
            raise ValueError(f"{Path(path).name}: malformed TextGrid (expected a string, got {tok!r})")
        return tok[1:-1].replace('""', '"')

    try:
        i = 2  # "ooTextFile", "TextGrid"
        i += 2  # xmin, xmax
        if tokens[i] not in ("<exists>", "<absent>"):
            raise ValueError(f"{Path(path).name}: malformed TextGrid header")
        if tokens[i] == "<absent>":
            return []
        n_tiers, i = int(float(tokens[i + 1])), i + 2
        tiers = []
        for _ in range(n_tiers):
            kind, name = string(tokens[i]), string(tokens[i + 1])
            n, i = int(float(tokens[i + 4])), i + 5
            items = []
            width = 3 if kind == "IntervalTier" else 2
            for k in range(n):
                a = tokens[i + width * k: i + width * (k + 1)]
                if kind == "IntervalTier":
                    items.append(Word(float(a[0]), float(a[1]), string(a[2]).strip()))
            i += width * n
            if kind == "IntervalTier":
                tiers.append((name, items))
    except (IndexError, ValueError) as e:
        raise ValueError(f"{Path(path).name}: malformed TextGrid ({e})") from None
    if not tiers:
        return []
    chosen = next((items for name, items in tiers if name == tier), tiers[0][1])
    return [w for w in chosen if w.text]


def word_bucket(word: str, buckets: int) -> int:
    """A word's embedding row, 1 .. buckets - 1 (0 is "no word")."""
    word = word.strip().lower()
    if not word:
        return NO_WORD
    return 1 + zlib.crc32(word.encode("utf-8")) % (buckets - 1)


def frame_words(words: list[Word], n_frames: int, buckets: int, fps: float = FPS) -> np.ndarray:
    """(n_frames,) int64: the row of the word uttered at each frame's centre time ((t + 0.5) / fps),
    0 where no word is (silence, or past the transcript)."""
    out = np.zeros(n_frames, np.int64)
    centres = (np.arange(n_frames) + 0.5) / fps
    for w in words:
        inside = (centres >= w.start) & (centres < w.end)
        out[inside] = word_bucket(w.text, buckets)
    return out
