"""A trivial model family for tests: it generates the upper body only, from the speech's loudness.

It plugs in the way any family does: ``EMAGE_STUDIO_GENERATORS=upper_family:UpperOnly`` (with this
folder on the import path) registers it in every process, the app's worker included.
"""
from __future__ import annotations

import numpy as np

from emage_core.audio import SAMPLE_RATE
from emage_core.generate.interface import Capabilities, Generator, load_speech, parts_meta, versions
from emage_core.motion.clip import DEFAULT_FPS, Motion
from emage_core.motion.skeleton import PARTS


class UpperOnly(Generator):
    family = "upper-test"
    display_name = "Upper-body test family"
    bundled_note = "Arm swings that follow the speech's loudness (a test fixture, not a model)."
    parts_generated = ("upper",)

    def __init__(self):
        self.model_id = self.family
        self.provenance = {"source": None, "kind": "none", "revision": None, "files": {}}

    @classmethod
    def from_pretrained(cls, source=None, revision=None, device=None) -> "UpperOnly":
        return cls()

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(parts=frozenset({"upper"}))

    def generate(self, speech, settings=None, progress=None, **by_name) -> list[Motion]:
        from emage_core.generate.settings import GenerationSettings

        settings = (settings or GenerationSettings()).replace(**by_name).validate()
        wav, sha = load_speech(speech)
        T = wav.shape[0] * DEFAULT_FPS // SAMPLE_RATE
        hop = SAMPLE_RATE // DEFAULT_FPS
        loud = np.array([np.abs(wav[t * hop:(t + 1) * hop]).mean() for t in range(T)], np.float32)
        seed = settings.seed if settings.seed is not None else 0
        clips = []
        for k in range(settings.variants):
            phase = np.random.default_rng(seed + k).uniform(0, 2 * np.pi)
            m = Motion.zeros(T)
            swing = 0.3 * np.sin(np.arange(T) / 6 + phase) * (loud / (loud.max() + 1e-6))
            for j in PARTS["upper"]:
                m.poses[:, j, 2] = swing
            m.meta = {"model": self.display_name, "family": self.family, "model_id": self.model_id,
                      "weights": self.provenance, "seed": seed + k, "versions": versions(),
                      "audio_sha256": sha, "parts": parts_meta({"upper"}), "settings": settings.to_dict()}
            clips.append(m)
            if progress is not None:
                progress((k + 1) / settings.variants, f"variant {k + 1}")
        return clips
