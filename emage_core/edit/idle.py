"""Idling in silence for live motion: an explicit, causal edit (not learned), applied chunk by chunk.

While the speaker is silent, a generator trained on speech either keeps gesturing as if someone were talking
(the bundled EMAGE does) or freezes. `Idle` calms the body in silence instead: it low-passes the body's
rotations (gestures settle into slow drift) and adds breathing (spine) and a slow head sway, fading in after
``after_s`` of silence and out within ``release_s`` when speech resumes. The jaw and expressions are left as
generated (the model closes the mouth in silence).

    idle = Idle(seed=0)
    poses = idle.apply(poses, samples)   # (n, 55, 3) axis-angle, the (n * 16000 / 30,) samples they cover
    idle.describe()                       # what it did, for the metadata
"""
from __future__ import annotations

import math

import numpy as np

from ..audio import SAMPLE_RATE
from ..motion.clip import DEFAULT_FPS
from ..motion.skeleton import BODY_JOINTS

SPINE = (3, 6, 9)  # spine1-3: breathing
HEAD = (12, 15)  # neck, head: sway
_BODY = list(BODY_JOINTS)


class Idle:
    """Causal silence detector and idle layer. State is a few numbers: memory does not grow."""

    def __init__(self, *, seed: int = 0, after_s: float = 0.4, attack_s: float = 0.5, release_s: float = 0.15,
                 floor_rms: float = 0.004, relative: float = 0.08, calm: float = 0.9,
                 breath_rad: float = 0.02, sway_rad: float = 0.03, fps: float = DEFAULT_FPS):
        self.fps, self.after_s, self.attack_s, self.release_s = fps, after_s, attack_s, release_s
        self.floor_rms, self.relative = floor_rms, relative
        self.calm, self.breath_rad, self.sway_rad = calm, breath_rad, sway_rad
        phases = np.random.default_rng(seed).uniform(0, 2 * math.pi, 4)
        self._phase = phases
        self.frame = 0
        self.silent_s = 0.0
        self.gate = 0.0  # 0 = speaking (motion as generated), 1 = idling
        self.peak_rms = 0.0  # a slowly decaying level of the speech: silence is relative to it
        self._smooth: np.ndarray | None = None  # (55, 3) the low-passed pose
        self.idle_frames = 0

    def _is_silent(self, frame_samples: np.ndarray) -> bool:
        rms = float(np.sqrt(np.mean(np.square(frame_samples)))) if frame_samples.size else 0.0
        self.peak_rms = max(rms, self.peak_rms * math.exp(-1 / (self.fps * 20)))  # forgets over ~20 s
        return rms < max(self.floor_rms, self.relative * self.peak_rms)

    def apply(self, poses: np.ndarray, samples: np.ndarray) -> np.ndarray:
        """(n, 55, 3) generated poses and the 16 kHz samples of those n frames -> (n, 55, 3) poses shown."""
        poses = np.array(poses, np.float32, copy=True)
        spf = SAMPLE_RATE / self.fps
        dt = 1 / self.fps
        for i in range(poses.shape[0]):
            seg = samples[int(round(i * spf)): int(round((i + 1) * spf))]
            if self._is_silent(seg):
                self.silent_s += dt
            else:
                self.silent_s = 0.0
            target = 1.0 if self.silent_s >= self.after_s else 0.0
            step = dt / (self.attack_s if target > self.gate else self.release_s)
            self.gate = min(max(self.gate + math.copysign(step, target - self.gate), 0.0), 1.0) \
                if abs(target - self.gate) > 1e-9 else target
            pose = poses[i]
            if self._smooth is None:
                self._smooth = pose.copy()
            # one-pole low-pass whose strength follows the gate: pass-through while speaking
            alpha = 1.0 - self.calm * self.gate * (1.0 - 0.03)
            self._smooth += alpha * (pose - self._smooth)
            pose[_BODY] = self._smooth[_BODY]
            if self.gate > 0:
                t = self.frame / self.fps
                breath = self.breath_rad * self.gate * math.sin(2 * math.pi * 0.25 * t + self._phase[0])
                for j in SPINE:
                    pose[j, 0] += breath / len(SPINE)
                pose[HEAD[1], 1] += self.sway_rad * self.gate * (0.6 * math.sin(2 * math.pi * 0.11 * t + self._phase[1])
                                                                 + 0.4 * math.sin(2 * math.pi * 0.17 * t + self._phase[2]))
                pose[HEAD[0], 0] += 0.5 * self.sway_rad * self.gate * math.sin(2 * math.pi * 0.07 * t + self._phase[3])
                self.idle_frames += 1
            self.frame += 1
        return poses

    def describe(self) -> dict:
        return {"kind": "explicit edit (procedural, not learned)",
                "what": "in silence the body's rotations are low-passed (gestures settle) and breathing (spine) "
                        "and a slow head sway are added; jaw and expressions as generated",
                "silence": f"frame RMS below max({self.floor_rms}, {self.relative} x the recent speech peak) "
                           f"for {self.after_s} s; fades in over {self.attack_s} s, out over {self.release_s} s",
                "frames_idling": self.idle_frames}
