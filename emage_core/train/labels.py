"""Learned conditioning labels: which emotions (and speakers) a training run conditions on, and
the label index of every training window.

A model trained with labels declares them in its audio ``config.json``::

    "emotion_labels": ["neutral", "happiness"]            # -> emotion_embedding, 2 + 1 rows
    "speaker_labels": ["2_scott", "4_lawrence"], "speaker_dims": 3

The last row of each embedding is "no label". Training replaces a window's label by it with
probability ``label_dropout`` (and uses it for windows whose label is unknown or not learned), so
one network is both the conditional and the unconditional model that classifier-free guidance
needs (`inference.run(..., emotion=i, guidance=g)`).

Emotions are BEAT's eight (`data.EMOTIONS`); a window's emotion comes from its BEAT2 file name
or from a label given to `data.load_clip`. Speakers are named as BEAT2 does, ``{id}_{name}``
(e.g. ``2_scott``); a window's speaker is the id in its file name.
"""
from __future__ import annotations

import re
from typing import Sequence

import torch

from .data import EMOTIONS, parse_beat2_name

__all__ = ["ALL", "parse_labels", "emotion_labels", "speaker_labels", "label_config", "window_labels"]

ALL = "all"  # "every label present in the data"
_SPEAKER = re.compile(r"^(\d+)_([A-Za-z]+)$")


def parse_labels(text: str | Sequence[str] | None) -> list[str] | str | None:
    """``"neutral,happiness"`` -> ["neutral", "happiness"]; ``"all"`` stays "all"; empty -> None."""
    if text is None:
        return None
    if isinstance(text, str):
        if text.strip().lower() == ALL:
            return ALL
        text = text.split(",")
    labels = [t.strip() for t in text if t.strip()]
    return labels or None


def emotion_labels(spec: Sequence[str] | str | None, clips: Sequence = ()) -> list[str] | None:
    """The emotion labels a run learns: ``spec`` names (checked against `data.EMOTIONS`), or with
    ``"all"`` the emotions of ``clips`` (in `data.EMOTIONS` order); None: no emotion conditioning."""
    if spec is None:
        return None
    if spec == ALL:
        present = {c.emotion for c in clips}
        labels = [e for i, e in enumerate(EMOTIONS) if i in present]
        if not labels:
            raise ValueError("emotions 'all': no clip has a known emotion (BEAT2 names or labels given to load_clip)")
        return labels
    labels = [s.lower() for s in spec]
    unknown = [s for s in labels if s not in EMOTIONS]
    if unknown:
        raise ValueError(f"unknown emotion(s) {unknown}; choose from {', '.join(EMOTIONS)} or 'all'")
    if len(set(labels)) != len(labels):
        raise ValueError(f"emotion labels must be distinct, got {labels}")
    return labels


def speaker_labels(spec: Sequence[str] | str | None, clips: Sequence = ()) -> list[str] | None:
    """The speaker labels a run learns, ``{id}_{name}`` as in BEAT2 file names; ``"all"``: the
    speakers of ``clips``, sorted by id; None: the released single speaker row."""
    if spec is None:
        return None
    if spec == ALL:
        names = {}
        for clip in clips:
            n = parse_beat2_name(clip.name.removesuffix("_mirror"))
            if n is not None:
                names[n.speaker_id] = f"{n.speaker_id}_{n.speaker}"
        if not names:
            raise ValueError("speakers 'all': no clip has a BEAT2 name ({id}_{speaker}_...)")
        return [names[i] for i in sorted(names)]
    labels = list(spec)
    bad = [s for s in labels if not _SPEAKER.match(s)]
    if bad:
        raise ValueError(f"speaker labels are BEAT2 '{{id}}_{{name}}' (e.g. 2_scott), got {bad}")
    ids = [int(s.split("_")[0]) for s in labels]
    if len(set(ids)) != len(ids):
        raise ValueError(f"speaker labels must have distinct ids, got {labels}")
    return labels


def label_config(emotions: list[str] | None, speakers: list[str] | None) -> dict:
    """Audio ``config.json`` entries for the labels (none at all when there are no labels)."""
    out: dict = {}
    if emotions:
        out["emotion_labels"] = list(emotions)
    if speakers:
        out["speaker_labels"] = list(speakers)
        out["speaker_dims"] = len(speakers) + 1
    return out


def _lookup(ids: torch.Tensor, table: dict[int, int], null: int) -> torch.Tensor:
    """Dataset ids (B,) -> label indices (B,); ids not in ``table`` (unknown: -1) -> ``null``."""
    out = torch.full_like(ids, null)
    for i, label in table.items():
        out[ids == i] = label
    return out


def window_labels(config, batch: dict[str, torch.Tensor], dropout: float,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Speaker and emotion indices (B, 1) of a training batch for an `EmageAudioConfig` with labels.

    batch["emotion"] is an index into `data.EMOTIONS`, batch["speaker"] a BEAT2 speaker id (-1:
    unknown). Each label becomes "no label" with probability ``dropout`` (classifier-free guidance).
    Speaker is all zeros without speaker labels (the released row); emotion None without emotion labels.
    """
    B = batch["motion"].shape[0]
    device = batch["motion"].device

    def drop(idx: torch.Tensor, null: int) -> torch.Tensor:
        if dropout <= 0:
            return idx
        gone = (torch.rand(B, generator=generator, device=generator.device) < dropout).to(device)
        return torch.where(gone, torch.full_like(idx, null), idx)

    speaker = torch.zeros(B, dtype=torch.long, device=device)
    if config.speaker_labels:
        table = {int(s.split("_")[0]): k for k, s in enumerate(config.speaker_labels)}
        speaker = drop(_lookup(batch["speaker"].long().to(device), table, config.null_speaker), config.null_speaker)
    emotion = None
    if config.emotion_labels:
        table = {EMOTIONS.index(e): k for k, e in enumerate(config.emotion_labels) if e in EMOTIONS}
        emotion = drop(_lookup(batch["emotion"].long().to(device), table, config.null_emotion), config.null_emotion)
        emotion = emotion[:, None]
    return speaker[:, None], emotion
