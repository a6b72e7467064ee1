"""Training data: paired motion (BEAT2 ``.npz``) and speech, cut into fixed-length windows.

Two folder layouts are found by `find_pairs`:

- BEAT2 as the public dataset ships it: ``<root>/smplxflame_30/*.npz`` with ``<root>/wave16k/*.wav``
  (``root`` may also be a folder above one or more such language folders);
- a flat folder of ``name.npz`` + ``name.wav`` pairs (any audio format `load_audio` reads).

What a window holds (T = 64 frames at 30 fps, S = T * 533 samples, as inference slices audio):

- ``audio``   (S,)      16 kHz speech;
- ``motion``  (T, 337)  EMAGE's model input: 55 joints in 6D, translation (3), foot contact (4);
- ``face``    (T, 106)  jaw 6D + 100 FLAME expressions;      ``upper`` (T, 78);  ``hands`` (T, 180);
- ``lower``   (T, 61)   9 joints 6D + translation (x, y, z) + contact: what the lower VQ-VAE sees;
- ``global``  (T, 7)    the global autoencoder's target: (vx, y, vz) + contact, where
  ``v[t] = (p[t+1] - p[t]) * fps`` (so `inference.global_translation` integrates it back exactly);
- ``speaker``, ``emotion`` (ints), from the BEAT2 name when it has one (else -1).

The lower part carries the translation itself, not its velocity: that is what the reference
trains its lower VQ-VAE and audio model on (``map2latent(..., tar_trans=trans)``), and what
`pipeline.masked_motion` gives the model for a locked ``global`` part. The global autoencoder
alone turns it into velocity.

Foot contact follows the reference (``datasets/foot_contact.py``): a foot joint (ankles 7, 8 and
toes 10, 11) is in contact while it moves less than 1 cm per frame (0.3 m/s at 30 fps).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..audio import SAMPLE_RATE, load_audio
from ..motion.beat2 import EMOTIONS, read_beat2
from ..motion.clip import DEFAULT_FPS as FPS
from ..motion.clip import Motion
from ..motion.skeleton import FOOT_JOINTS, HANDS_JOINTS, JAW, JOINT_NAMES, LOWER_JOINTS, N_JOINTS, UPPER_JOINTS

__all__ = [
    "FPS", "WINDOW", "SAMPLES_PER_FRAME", "EMOTIONS", "CONTACT_SPEED",
    "Beat2Name", "parse_beat2_name", "emotion_of", "find_pairs",
    "MIRROR_JOINTS", "mirror_motion", "foot_contact", "contact_from_positions",
    "translation_velocity", "motion_features", "Clip", "load_clip", "MotionWindows",
]

WINDOW = 64
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 533: how the reference (and `inference.run`) slices audio
CONTACT_SPEED = 0.3  # m/s; the reference's 0.01 m per frame at 30 fps

# BEAT2 sequence number -> emotion (fixtures README; BEAT, ECCV 2022).
_EMOTION_LAST_SEQ = (64, 72, 80, 86, 94, 102, 110, 118)  # last sequence number of each block

_BEAT2_NAME = re.compile(r"^(\d+)_([A-Za-z]+)_(\d+)_(\d+)_(\d+)$")


@dataclass(frozen=True)
class Beat2Name:
    """``{speaker_id}_{speaker}_{type}_{seq}_{seq}``, e.g. ``2_scott_0_1_1``."""

    speaker_id: int
    speaker: str
    kind: int  # recording type (0 = speech in the English set)
    seq: int

    @property
    def emotion(self) -> str:
        return emotion_of(self.seq)


def parse_beat2_name(name: str) -> Beat2Name | None:
    """Parse a BEAT2 file name (path, stem or name with extension); None if it is not one."""
    m = _BEAT2_NAME.match(Path(name).name.split(".")[0])
    if m is None:
        return None
    return Beat2Name(int(m[1]), m[2], int(m[3]), int(m[4]))


def emotion_of(seq: int) -> str:
    """Emotion of a BEAT2 sequence number: 0-64 neutral, 65-72 happiness, ..., 111-118 disgust."""
    if seq < 0:
        raise ValueError(f"BEAT2 sequence numbers are >= 0, got {seq}")
    for emotion, last in zip(EMOTIONS, _EMOTION_LAST_SEQ):
        if seq <= last:
            return emotion
    raise ValueError(f"BEAT2 sequence {seq} is past the emotion table (0-118)")


# -----------------------------------------------------------------------------------------
# Finding files

_AUDIO_EXTS = (".wav", ".flac", ".mp3", ".ogg", ".m4a")


def find_pairs(root: str | Path) -> list[tuple[Path, Path]]:
    """(motion .npz, speech) pairs under ``root``, sorted by name; motion without speech is skipped.

    BEAT2 layout: every ``smplxflame_30`` folder at or below ``root`` pairs with the ``wave16k``
    folder beside it. Otherwise ``root`` is taken as a flat folder of ``name.npz`` + ``name.wav``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    motion_dirs = [root] if root.name == "smplxflame_30" else sorted(root.glob("**/smplxflame_30"))
    pairs = []
    if motion_dirs:
        for mdir in motion_dirs:
            pairs += _pair_up(sorted(mdir.glob("*.npz")), [mdir.parent / "wave16k"])
    else:
        pairs = _pair_up(sorted(root.glob("*.npz")), [root])
    return pairs


def _pair_up(npzs: Iterable[Path], audio_dirs: Sequence[Path]) -> list[tuple[Path, Path]]:
    pairs = []
    for npz in npzs:
        audio = next((d / (npz.stem + ext) for d in audio_dirs for ext in _AUDIO_EXTS
                      if (d / (npz.stem + ext)).is_file()), None)
        if audio is not None:
            pairs.append((npz, audio))
    return pairs


# -----------------------------------------------------------------------------------------
# Mirroring


def _mirror_joint_order() -> tuple[int, ...]:
    """Joint j of a mirrored pose takes joint MIRROR_JOINTS[j] of the original (left <-> right)."""
    index = {name: i for i, name in enumerate(JOINT_NAMES)}

    def swap(name: str) -> str:
        if name.startswith("left_"):
            return "right_" + name[5:]
        if name.startswith("right_"):
            return "left_" + name[6:]
        return name

    return tuple(index[swap(name)] for name in JOINT_NAMES)


MIRROR_JOINTS = _mirror_joint_order()
_MIRROR_AXIS = np.array([1.0, -1.0, -1.0], np.float32)  # reflecting x: M R M has axis-angle (x, -y, -z)
_MIRROR_CONTACT = [FOOT_JOINTS.index(MIRROR_JOINTS[j]) for j in FOOT_JOINTS]  # [1, 0, 3, 2]


def mirror_motion(motion: Motion) -> Motion:
    """The motion reflected across the body's sagittal plane (world x -> -x; SMPL-X x points left).

    Left and right joints swap; every rotation R becomes M R M with M = diag(-1, 1, 1), which is
    axis-angle (x, y, z) -> (x, -y, -z) (the axis is a pseudovector); translation x -> -x.
    Expressions are kept: FLAME's expression basis has no exact mirror. An involution:
    mirroring twice gives the motion back exactly.
    """
    poses = motion.poses[:, list(MIRROR_JOINTS)] * _MIRROR_AXIS
    trans = motion.trans * np.array([-1.0, 1.0, 1.0], np.float32)
    out = Motion(poses=poses, expressions=motion.expressions.copy(), trans=trans, betas=motion.betas.copy(),
                 fps=motion.fps)
    return out


# -----------------------------------------------------------------------------------------
# Foot contact and translation features


def contact_from_positions(feet: np.ndarray, fps: float = FPS, speed: float = CONTACT_SPEED) -> np.ndarray:
    """(T, 4, 3) foot-joint positions in metres -> (T, 4) float32, 1 where the joint is static.

    Speed is the forward difference ``|p[t+1] - p[t]| * fps``; the last frame repeats the one
    before (the reference calls it static).
    """
    if feet.shape[0] < 2:
        return np.ones(feet.shape[:2], np.float32)
    v = np.linalg.norm(np.diff(feet, axis=0), axis=-1) * fps  # (T-1, 4)
    v = np.concatenate([v, v[-1:]], axis=0)
    return (v < speed).astype(np.float32)


def foot_contact(motion: Motion, speed: float = CONTACT_SPEED) -> np.ndarray:
    """(T, 4) contact of the ankles (7, 8) and toes (10, 11), from forward kinematics."""
    from ..motion.kinematics import joint_positions

    pos = np.asarray(joint_positions(motion))  # (T, 55, 3)
    return contact_from_positions(pos[:, list(FOOT_JOINTS)], motion.fps, speed)


def translation_velocity(trans: np.ndarray, fps: float = FPS) -> np.ndarray:
    """(T, 3) positions -> (T, 3) (vx, y, vz): x, z as ``(p[t+1] - p[t]) * fps`` (the last frame
    repeats the one before), y as it is. `inference.global_translation` inverts this exactly."""
    v = np.zeros_like(trans)
    if trans.shape[0] > 1:
        d = np.diff(trans, axis=0) * fps
        v[:-1] = d
        v[-1] = d[-1]
    v[:, 1] = trans[:, 1]
    return v


def motion_features(motion: Motion, contact: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-frame features of a clip (float32), keys as in the module docstring except audio:
    motion (T, 337), face (T, 106), upper (T, 78), hands (T, 180), lower (T, 61), global (T, 7).
    ``contact`` (T, 4) defaults to `foot_contact` of the motion."""
    T = motion.n_frames
    if contact is None:
        contact = foot_contact(motion)
    rot = motion.rot6d().astype(np.float32)  # (T, 55, 6)
    trans = motion.trans.astype(np.float32)
    contact = np.asarray(contact, np.float32)

    def joints(js):
        return rot[:, list(js)].reshape(T, -1)

    return {
        "motion": np.concatenate([rot.reshape(T, N_JOINTS * 6), trans, contact], axis=1),
        "face": np.concatenate([rot[:, JAW], motion.expressions.astype(np.float32)], axis=1),
        "upper": joints(UPPER_JOINTS),
        "hands": joints(HANDS_JOINTS),
        "lower": np.concatenate([joints(LOWER_JOINTS), trans, contact], axis=1),
        "global": np.concatenate([translation_velocity(trans, motion.fps).astype(np.float32), contact], axis=1),
    }


# -----------------------------------------------------------------------------------------
# Clips and windows


@dataclass
class Clip:
    """One recording: features of every frame plus its speech, ready to window."""

    name: str
    features: dict[str, np.ndarray]  # see `motion_features`, all (T, C)
    audio: np.ndarray  # (N,) 16 kHz, zero-padded to at least T * 533 samples
    speaker: int = -1
    emotion: int = -1
    mirrored: bool = False

    @property
    def n_frames(self) -> int:
        return self.features["motion"].shape[0]


def load_clip(npz: str | Path, audio: str | Path | np.ndarray, mirror: bool = False,
              emotion: str | None = None) -> Clip:
    """Read a motion file (resampled to 30 fps) and its speech; ``mirror`` reflects the motion.
    ``emotion`` (one of `EMOTIONS`) labels the clip instead of its BEAT2 name (for learned emotions).

    The clip keeps the frames that have both motion and speech: ``T = min(motion frames,
    N * 30 // 16000)``, as inference counts frames. Audio is cut (or zero-padded, as 533-sample
    frames drift 1/3 sample per frame from real time) to exactly T * 533 samples.
    """
    if emotion is not None and emotion not in EMOTIONS:
        raise ValueError(f"unknown emotion {emotion!r}; choose from {', '.join(EMOTIONS)}")
    motion = read_beat2(npz)
    if motion.fps != FPS:
        motion = motion.resample(FPS)
    wav = audio if isinstance(audio, np.ndarray) else load_audio(audio, max_seconds=6 * 3600)
    T = min(motion.n_frames, wav.shape[0] * FPS // SAMPLE_RATE)
    motion = motion.slice(0, T)
    contact = foot_contact(motion)
    if mirror:
        motion = mirror_motion(motion)
        contact = contact[:, _MIRROR_CONTACT]  # same contacts, feet swapped (keeps mirroring an involution)
    wav = np.pad(wav[: T * SAMPLES_PER_FRAME], (0, max(0, T * SAMPLES_PER_FRAME - wav.shape[0])))
    name = parse_beat2_name(Path(npz).stem)
    return Clip(
        name=Path(npz).stem + ("_mirror" if mirror else ""),
        features=motion_features(motion, contact),
        audio=wav.astype(np.float32),
        speaker=name.speaker_id if name else -1,
        emotion=_emotion_index(name) if emotion is None else EMOTIONS.index(emotion),
        mirrored=mirror,
    )


def _emotion_index(name: Beat2Name | None) -> int:
    try:
        return EMOTIONS.index(name.emotion) if name else -1
    except ValueError:  # a sequence number past the table
        return -1


class MotionWindows(Dataset):
    """Windows of ``window`` frames every ``stride`` frames over a list of clips.

    A clip of T frames gives ``(T - window) // stride + 1`` windows (none if T < window). Items
    are dicts of tensors: audio (window * 533,), motion (window, 337), face, upper, hands, lower,
    global (window, C) and speaker, emotion (0-d int64).
    """

    def __init__(self, clips: Sequence[Clip], window: int = WINDOW, stride: int = 20):
        if window < 1 or stride < 1:
            raise ValueError(f"window and stride must be >= 1, got {window}, {stride}")
        self.clips, self.window, self.stride = list(clips), window, stride
        self.index = [(c, s) for c, clip in enumerate(self.clips)
                      for s in range(0, clip.n_frames - window + 1, stride)]

    @classmethod
    def from_folder(cls, root: str | Path, window: int = WINDOW, stride: int = 20, mirror: bool = False,
                    speakers: Sequence[int] | None = None) -> "MotionWindows":
        """All pairs under ``root`` (see `find_pairs`); ``mirror`` adds a mirrored copy of each clip;
        ``speakers`` keeps only BEAT2 files of those speaker ids."""
        pairs = find_pairs(root)
        if speakers is not None:
            keep = set(speakers)
            pairs = [p for p in pairs if (n := parse_beat2_name(p[0].stem)) is not None and n.speaker_id in keep]
        if not pairs:
            raise FileNotFoundError(f"no motion .npz with matching speech found under {root}")
        clips = []
        for npz, wav in pairs:
            audio = load_audio(wav, max_seconds=6 * 3600)
            clips.append(load_clip(npz, audio))
            if mirror:
                clips.append(load_clip(npz, audio, mirror=True))
        return cls(clips, window, stride)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        c, s = self.index[i]
        clip = self.clips[c]
        item = {k: torch.from_numpy(v[s : s + self.window]) for k, v in clip.features.items()}
        item["audio"] = torch.from_numpy(clip.audio[s * SAMPLES_PER_FRAME : (s + self.window) * SAMPLES_PER_FRAME])
        item["speaker"] = torch.tensor(clip.speaker)
        item["emotion"] = torch.tensor(clip.emotion)
        return item
