"""Explicit expressive controls: measurable edits applied to any generated `Motion`.

The released EMAGE weights know no emotions, so the expressive quality of a clip is changed *after*
generation by a few explicit, documented, measurable operations. They work with any model and
are meant for building conditions in perception studies: each control does one thing, neutral values
are an exact identity, and ``motion.meta["style"]`` records what was applied.

Controls (`StyleControls`; neutral value first):

==================  =======  ============================================================================
``amplitude``       1        gesture amplitude / spatial extent: spine, collar, shoulder, elbow and wrist
                             rotations scaled about the clip's own rest posture (`rest_posture`), by
                             scaling each rotation's deviation (quaternion log/exp), so results stay valid
``tempo``           1        speed contrast *within* phrases, length and phrase boundaries unchanged:
                             >1 = strokes play faster and holds last longer, <1 = slower strokes and
                             shorter holds (`tempo_warp`); upper body and hands only, the face keeps
                             its lip sync
``spine_flexion``   0 rad    added across spine1-3 (a third each); >0 bends forward (slump), <0 extends
``head_pitch``      0 rad    added across neck and head (half each); >0 chin down, <0 head up
``head_turn``       0 rad    added across neck and head; >0 turns to the speaker's left
``shoulder_raise``  0 rad    collars rotated up (>0, a shrug) or down (<0); the arms keep their
                             orientation (the shoulder joint compensates), so only the shoulders move
``fluidity``        0        temporal smoothing of the upper body and hands (Gaussian on quaternions,
                             sigma = fluidity x 0.08 s); lowers jerk. 0 = none; never negative (no
                             sharpening: use tempo for sharper strokes)
``head_activity``   1        the head's faster movements (nods, shakes, beats: what a 0.25 s Gaussian
                             removes) scaled about its slow trajectory; 0 = only the slow drift
``face_intensity``  1        jaw rotation and the 100 FLAME expression coefficients scaled about neutral
                             (closed jaw, zero expression). Expressions only show on SMPL-X renders; the
                             free Anny body shows the jaw only
``jaw_open``        0 rad    constant jaw opening added on top (surprise)
==================  =======  ============================================================================

Order: tempo, amplitude, head activity, fluidity, posture offsets, face. The legs, the translation and
the betas are never changed. Tempo, fluidity and head activity edit *world* rotations (see
`_edit_in_world`): filtering parent-relative ones would undo mocap's parent/child compensation and add
jerk. Amplitude and posture edit parent-relative rotations (posture in the parent's frame: X lateral,
Y up, Z forward).

What to expect (measured on BEAT2 ``2_scott_0_1_1``, 63 s, by ``tests/test_style.py``'s statistics):
amplitude 1.3 / 0.7 -> mean wrist distance from the rest posture x1.27 / x0.71; tempo 1.3 / 0.75 ->
95th-percentile wrist speed x1.12 / x0.87 with the mean unchanged; fluidity 0.5 / 1 -> mean jerk
x0.85 / x0.78; head_activity 1.5 / 0.5 -> world head angular speed x1.31 / x0.72 (much of real head
motion is slow drift, which is kept).

Presets (`PRESETS`, `preset`) for BEAT's eight emotion labels are *heuristics derived from* the
qualitative directions reported in the literature, not measurements of BEAT or of any speaker.
Their magnitudes are our choice, kept modest; tune them per study with ``dataclasses.replace``.
Sources:

- Wallbott, H. G. (1998). Bodily expression of emotion. European Journal of Social Psychology, 28(6),
  879-896. Actors' portrayals of 14 emotions: movement activity, expansiveness and dynamics are high for
  elated joy and hot anger and low for sadness; a collapsed upper body for sadness; differences are
  partly explained by activation (arousal).
- Dael, N., Mortillaro, M., & Scherer, K. R. (2012). Emotion expression in body action and posture.
  Emotion, 12(5), 1085-1101. Body action patterns differ by emotion and often reflect functional
  components such as action readiness (approach vs. withdrawal) and arousal.
- Gross, M. M., Crane, E. A., & Fredrickson, B. L. (2012). Effort-Shape and kinematic assessment of
  bodily expression of emotion during gait. Human Movement Science, 31(1), 202-221. Fastest for joy and
  anger, slowest for sadness; larger limb and trunk amplitude for anger and joy; neck and thoracic
  flexion with sadness; trunk extension and shoulder depression with joy.
- Roether, C. L., Omlor, L., Christensen, A., & Giese, M. A. (2009). Critical features for the
  perception of emotion from gait. Journal of Vision, 9(6):15. Speed, limb-movement amplitude and
  head inclination (lowered for sadness and fear) as critical features.
- Pollick, F. E., Paterson, H. M., Bruderlin, A., & Sanford, A. J. (2001). Perceiving affect from arm
  movement. Cognition, 82(2), B51-B61. Perceived activation (arousal) tracks movement kinematics
  (speed): fast = anger/happiness, slow = sadness.
- Castellano, G., Villalba, S. D., & Camurri, A. (2007). Recognising human emotions from body movement
  and gesture dynamics. ACII 2007, LNCS 4738, 71-82. Amplitude, speed and fluidity as emotion cues.
- Halovic, S., & Kroos, C. (2018). Not all is noticed: Kinematic cues of emotion-specific gait. Human
  Movement Science, 57, 478-488. Fear: fast, short movements with less (mainly lower-) arm movement.
- Darwin, C. (1872). The expression of the emotions in man and animals. Turning away in disgust; the
  raised, averted head of disdain / contempt; open mouth in astonishment. With Ekman, P., & Friesen,
  W. V. (1975). Unmasking the face (dropped jaw in surprise). Contempt, disgust and surprise are the
  least supported presets: the body literature above says little about them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter1d

from ..motion.beat2 import EMOTIONS as BEAT_EMOTIONS
from ..motion import rotation
from ..motion.kinematics import joint_positions
from .locks import Lock, crossfade_weights, part_frame_masks, validate_locks
from ..motion.clip import Motion
from ..motion.skeleton import HANDS_JOINTS, JAW, N_JOINTS, PARENTS, PARTS, UPPER_JOINTS, joint_index

__all__ = [
    "StyleControls", "StyleError", "PRESETS", "EMOTIONS", "CONTROL_RANGES", "preset", "apply_style",
    "parse_style", "describe", "rest_posture", "phrase_boundaries", "tempo_warp",
]

# -- joints -------------------------------------------------------------------------------------
SPINE = tuple(joint_index(n) for n in ("spine1", "spine2", "spine3"))
NECK_HEAD = (joint_index("neck"), joint_index("head"))
L_COLLAR, R_COLLAR = joint_index("left_collar"), joint_index("right_collar")
L_SHOULDER, R_SHOULDER = joint_index("left_shoulder"), joint_index("right_shoulder")
WRISTS = (joint_index("left_wrist"), joint_index("right_wrist"))
#: Joints `amplitude` scales: the spine and both arms down to the wrists (not neck/head, not fingers).
AMPLITUDE_JOINTS = SPINE + (L_COLLAR, R_COLLAR, L_SHOULDER, R_SHOULDER) + tuple(
    joint_index(f"{s}_{j}") for j in ("elbow", "wrist") for s in ("left", "right"))
#: Joints `tempo` re-times and `fluidity` smooths: the gesturing body (upper + hands), not the face
#: (lip sync), legs or translation.
BODY_JOINTS = tuple(UPPER_JOINTS) + tuple(HANDS_JOINTS)

# -- time constants (seconds) -------------------------------------------------------------------
FLUIDITY_SIGMA_S = 0.08  # Gaussian sigma per unit of fluidity
HEAD_TREND_S = 0.25  # sigma of the slow head trajectory head_activity scales about
PHRASE_S = 1.5  # nominal phrase length for tempo
PHRASE_SEARCH_S = 0.5  # each boundary moves to the quietest frame within this distance
HOLD_MIN, HOLD_MAX = 0.25, 4.0  # tempo: holds play at most 4x faster or 4x slower
QUIET_FRACTION = 0.2  # rest posture = mean of the quietest 20% of frames
DEFAULT_RAMP = 0.3  # seconds over which an edit fades out next to a locked span
MAX_DEVIATION = 0.95 * math.pi  # scaled rotations never pass this angle from their reference


class StyleError(ValueError):
    """A style control that is unknown, not a number, or out of its range."""


#: name -> (low, high, unit, what it does). Ranges are generous sanity limits, not recommendations.
CONTROL_RANGES: dict[str, tuple[float, float, str, str]] = {
    "amplitude": (0.0, 3.0, "x", "gesture amplitude about the clip's rest posture"),
    "tempo": (0.25, 4.0, "x", "stroke speed contrast within phrases (length unchanged)"),
    "spine_flexion": (-0.8, 0.8, "rad", "forward (+) / backward (-) bend over spine1-3"),
    "head_pitch": (-0.8, 0.8, "rad", "chin down (+) / head up (-)"),
    "head_turn": (-0.8, 0.8, "rad", "head turned to the speaker's left (+) / right (-)"),
    "shoulder_raise": (-0.4, 0.4, "rad", "collars up (+, shrug) / down (-)"),
    "fluidity": (0.0, 5.0, "", "temporal smoothing (sigma = fluidity x 0.08 s), 0 = none"),
    "head_activity": (0.0, 3.0, "x", "head/neck motion about its smoothed trajectory"),
    "face_intensity": (0.0, 3.0, "x", "jaw rotation and FLAME expressions about neutral"),
    "jaw_open": (0.0, 0.4, "rad", "constant extra jaw opening"),
}


@dataclass(frozen=True)
class StyleControls:
    """Explicit expressive controls; the defaults are neutral (an exact identity edit).

    ``preset`` / ``intensity`` only record where the values came from (`preset`); they take no part
    in comparisons or in the edit. Edit with ``dataclasses.replace(controls, tempo=1.1)``.
    """

    amplitude: float = 1.0
    tempo: float = 1.0
    spine_flexion: float = 0.0
    head_pitch: float = 0.0
    head_turn: float = 0.0
    shoulder_raise: float = 0.0
    fluidity: float = 0.0
    head_activity: float = 1.0
    face_intensity: float = 1.0
    jaw_open: float = 0.0
    preset: str | None = field(default=None, compare=False)
    intensity: float | None = field(default=None, compare=False)

    def __post_init__(self):
        for name, (lo, hi, unit, _) in CONTROL_RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise StyleError(f"style control {name} must be a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value) or not lo <= value <= hi:
                where = f" (preset {self.preset!r} at intensity {self.intensity})" if self.preset else ""
                raise StyleError(f"style control {name}={value:g} is outside [{lo:g}, {hi:g}]"
                                 f"{' rad' if unit == 'rad' else ''}{where}")
            object.__setattr__(self, name, value)

    def values(self) -> dict[str, float]:
        """The numeric controls, ``{name: value}``."""
        return {name: getattr(self, name) for name in CONTROL_RANGES}

    @property
    def is_neutral(self) -> bool:
        return self == NEUTRAL


NEUTRAL = StyleControls()


# -- presets --------------------------------------------------------------------------------------
#: BEAT's eight emotion labels -> controls. Heuristic directions from the sources in the module
#: docstring; magnitudes are ours (modest, so intensity 2 is still plausible). Radians throughout.
PRESETS: dict[str, StyleControls] = {
    "neutral": NEUTRAL,
    # Larger, faster, expanded (Wallbott 1998: high activity/expansiveness for elated joy; Gross et al.
    # 2012: fast, larger amplitude, trunk extension and shoulder depression with joy; Pollick et al.
    # 2001: high activation = fast). Head slightly up: upright, open posture.
    "happiness": StyleControls(amplitude=1.2, tempo=1.15, spine_flexion=-0.05, head_pitch=-0.08, shoulder_raise=-0.03,
                    head_activity=1.2, face_intensity=1.2),
    # Larger, faster, sharper strokes, no smoothing (Wallbott 1998: hot anger high activity, expansive,
    # dynamic; Gross et al. 2012: fast, larger amplitude; Pollick et al. 2001; Castellano et al. 2007:
    # fluidity as a cue). Forward lean with the head kept level = head thrust forward (approach, Dael et
    # al. 2012).
    "anger": StyleControls(amplitude=1.25, tempo=1.2, spine_flexion=0.06, head_pitch=-0.06, shoulder_raise=0.03,
                head_activity=1.2, face_intensity=1.3),
    # Smaller, slower, slumped, head down, smooth low-energy movement (Wallbott 1998: collapsed upper
    # body, low activity; Gross et al. 2012: slowest, neck and thoracic flexion, smaller amplitude;
    # Roether et al. 2009: lowered head, reduced amplitude; Pollick et al. 2001: low activation = slow).
    "sadness": StyleControls(amplitude=0.6, tempo=0.8, spine_flexion=0.12, head_pitch=0.15, shoulder_raise=-0.03,
                  fluidity=0.6, head_activity=0.6, face_intensity=0.7),
    # Restrained, upright, head raised and slightly averted ("looking down the nose"; Darwin 1872).
    # Wallbott (1998) found few specific body cues for contempt: weakly supported.
    "contempt": StyleControls(amplitude=0.85, tempo=0.9, spine_flexion=-0.03, head_pitch=-0.08, head_turn=0.08,
                   fluidity=0.2, head_activity=0.8),
    # Expanded, head up, jaw dropped (Darwin 1872; Ekman & Friesen 1975). Not in Wallbott's, Dael's, Gross's
    # or Roether's sets: weakly supported beyond the face.
    "surprise": StyleControls(amplitude=1.15, tempo=1.1, spine_flexion=-0.05, head_pitch=-0.10, shoulder_raise=0.05,
                   head_activity=1.1, face_intensity=1.2, jaw_open=0.08),
    # Contracted, shoulders raised, small fast movements, head lowered, vigilant head (Halovic & Kroos
    # 2018: fast, short, less arm movement; Roether et al. 2009: lowered head; Dael et al. 2012:
    # withdrawal). Shoulder raise and head activity are our protective / scanning heuristics.
    "fear": StyleControls(amplitude=0.75, tempo=1.25, spine_flexion=0.08, head_pitch=0.06, shoulder_raise=0.2,
               head_activity=1.3, face_intensity=1.1),
    # Turned away, slightly down and contracted (Darwin 1872: turning away; Dael et al. 2012: avoidance).
    # Wallbott (1998) found few specific body cues for disgust: weakly supported.
    "disgust": StyleControls(amplitude=0.85, spine_flexion=0.04, head_pitch=0.06, head_turn=-0.15, shoulder_raise=0.04,
                  face_intensity=1.1),
}
EMOTIONS: tuple[str, ...] = BEAT_EMOTIONS  # a preset for each of BEAT's emotions, in BEAT's order


def preset(name: str, intensity: float = 1.0) -> StyleControls:
    """The controls of emotion ``name`` at ``intensity``: 0 = neutral, 1 = the preset, >1 exaggerates.

    Every control is interpolated linearly from its neutral value; an intensity that pushes a control
    out of its range (e.g. sadness at 3 would need a negative amplitude) raises `StyleError`.
    """
    key = str(name).strip().lower()
    if key not in PRESETS:
        raise StyleError(f"unknown emotion preset {name!r}; presets are {', '.join(PRESETS)}")
    try:
        intensity = float(intensity)
    except (TypeError, ValueError):
        raise StyleError(f"preset intensity must be a number, got {intensity!r}") from None
    if not (math.isfinite(intensity) and intensity >= 0):
        raise StyleError(f"preset intensity must be a finite number >= 0, got {intensity!r}")
    p, n = PRESETS[key].values(), NEUTRAL.values()
    values = {k: n[k] + intensity * (p[k] - n[k]) for k in n}
    return StyleControls(**values, preset=key, intensity=intensity)


def describe(controls: StyleControls) -> dict:
    """JSON-serialisable account of ``controls``: kind, every numeric control, preset, intensity,
    ``edited`` (True when the values differ from what the named preset gives), and ``changed``
    (only the non-neutral controls)."""
    values = controls.values()
    edited = None
    if controls.preset is not None:
        edited = controls != preset(controls.preset, 1.0 if controls.intensity is None else controls.intensity)
    neutral = NEUTRAL.values()
    return {
        "kind": "explicit edit",
        "controls": values,
        "changed": {k: v for k, v in values.items() if v != neutral[k]},
        "preset": controls.preset,
        "intensity": controls.intensity,
        "edited": edited,
    }


def parse_style(items: list[str] | tuple[str, ...] | str | None) -> StyleControls:
    """The CLI's ``--style KEY=VALUE`` items (also comma-separated in one item) -> `StyleControls`.

    ``preset=NAME`` (one of `EMOTIONS`) and ``intensity=X`` start from a preset; any other key is a
    control name (see `CONTROL_RANGES`) that overrides it. Unknown keys, repeated keys, values that are
    not numbers and out-of-range values raise `StyleError`.
    """
    if isinstance(items, str):
        items = [items]
    pairs: dict[str, str] = {}
    for item in items or []:
        for text in str(item).split(","):
            if not text.strip():
                continue
            key, sep, value = text.partition("=")
            key = key.strip().lower().replace("-", "_")
            if not sep or not key or not value.strip():
                raise StyleError(f"cannot read style {text.strip()!r}: expected KEY=VALUE, e.g. amplitude=1.2")
            if key not in CONTROL_RANGES and key not in ("preset", "intensity"):
                raise StyleError(f"unknown style control {key!r}; known: preset, intensity, "
                                 + ", ".join(CONTROL_RANGES))
            if key in pairs:
                raise StyleError(f"style control {key!r} given twice")
            pairs[key] = value.strip()
    numbers: dict[str, float] = {}
    for key, value in pairs.items():
        if key == "preset":
            continue
        try:
            number = float(value)
        except ValueError:
            raise StyleError(f"style {key}={value!r}: not a number") from None
        if not math.isfinite(number):
            raise StyleError(f"style {key}={value!r}: must be finite")
        numbers[key] = number
    intensity = numbers.pop("intensity", None)
    if "preset" in pairs:
        base = preset(pairs["preset"], 1.0 if intensity is None else intensity)
    elif intensity is not None:
        raise StyleError("style intensity needs a preset, e.g. preset=sadness,intensity=0.5")
    else:
        base = NEUTRAL
    return replace(base, **numbers)


# -- quaternion helpers (NumPy float64, (w, x, y, z); emage_core.rotation does the algebra) --------------
_aa_to_q = rotation.axis_angle_to_quaternion
_q_to_aa = rotation.quaternion_to_axis_angle
_qmul = rotation.quaternion_multiply
_qconj = rotation.quaternion_conjugate


def _slerp(q0: np.ndarray, q1: np.ndarray, t) -> np.ndarray:
    """Short-way spherical interpolation (`rotation.quaternion_slerp`); t broadcasts against q0[..., 0]."""
    return rotation.quaternion_slerp(q0, q1, np.broadcast_to(np.asarray(t, float), q0.shape[:-1]).copy())


def _scale_about(q: np.ndarray, ref: np.ndarray, k) -> np.ndarray:
    """Scale rotations ``q`` about ``ref`` (broadcastable): ``exp(k log(q ref^-1)) ref``.

    The deviation is taken in the parent's frame (left of ``ref``); its angle is capped at
    `MAX_DEVIATION` so a large k never wraps round through pi.
    """
    dev = _q_to_aa(_qmul(q, _qconj(ref))) * float(k)
    angle = np.linalg.norm(dev, axis=-1, keepdims=True)
    dev = dev * np.minimum(1.0, MAX_DEVIATION / np.maximum(angle, 1e-12))
    return _qmul(_aa_to_q(dev), ref)


def _continuous(q: np.ndarray) -> np.ndarray:
    """Flip signs along time (axis 0) so consecutive quaternions lie in the same hemisphere, which
    filtering them component-wise needs."""
    dots = np.sum(q[1:] * q[:-1], axis=-1)
    sign = np.cumprod(np.where(dots < 0, -1.0, 1.0), axis=0)
    out = q.copy()
    out[1:] *= sign[..., None]
    return out


def _smooth(q: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of (T, J, 4) quaternions along time, renormalised (a good approximation of a
    rotation average for the small windows used here)."""
    if sigma <= 0 or q.shape[0] < 2:
        return q.copy()
    s = gaussian_filter1d(_continuous(q), sigma, axis=0, mode="nearest")
    return s / np.linalg.norm(s, axis=-1, keepdims=True)


_PARENTS = np.array([max(p, 0) for p in PARENTS])


def _to_world(q: np.ndarray) -> np.ndarray:
    """(T, 55, 4) parent-relative -> world rotations (SMPL-X order: parents come first)."""
    g = np.empty_like(q)
    g[:, 0] = q[:, 0]
    for j in range(1, N_JOINTS):
        g[:, j] = _qmul(g[:, _PARENTS[j]], q[:, j])
    return g


def _edit_in_world(q: np.ndarray, joints: list[int], edit) -> None:
    """Apply ``edit`` ((T, J, 4) -> (T, J, 4)) to the *world* rotations of ``joints`` and write back the
    local rotations, in place. Other joints keep their local rotations (the jaw and eyes ride along).

    Filtering or re-timing local rotations would break the compensation between parent and child that
    mocap is full of (pelvis sway cancelled by the spine, torso jitter by the neck) and *add* jerk to
    what the viewer sees; editing world rotations edits the visible motion.
    """
    g = _to_world(q)
    new = g.copy()
    new[:, joints] = edit(g[:, joints])
    parents = _PARENTS[joints]
    q[:, joints] = _qmul(_qconj(new[:, parents]), new[:, joints])


# -- analysis: activity, rest posture, phrases, the tempo warp ---------------------------------------
def _wrist_speed(motion: Motion) -> np.ndarray:
    """(T - 1,) mean speed of the two wrists relative to the pelvis, metres per frame, per interval."""
    pos = joint_positions(motion).astype(np.float64)
    rel = pos[:, WRISTS] - pos[:, :1]
    return np.linalg.norm(np.diff(rel, axis=0), axis=-1).mean(axis=1)


def _frame_activity(speed: np.ndarray, T: int) -> np.ndarray:
    """(T,) per-frame activity: interval speeds spread onto frames and lightly smoothed (2 frames)."""
    if T < 2:
        return np.zeros(T)
    per_frame = np.concatenate([speed[:1], (speed[:-1] + speed[1:]) / 2, speed[-1:]])
    return gaussian_filter1d(per_frame, 2.0, mode="nearest")


def _qmean(q: np.ndarray) -> np.ndarray:
    """(N, J, 4) -> (J, 4) hemisphere-aligned normalised mean (fine for clustered rotations)."""
    ref = q[:1]
    aligned = np.where(np.sum(q * ref, axis=-1, keepdims=True) < 0, -q, q)
    m = aligned.mean(axis=0)
    return m / np.linalg.norm(m, axis=-1, keepdims=True)


def rest_posture(motion: Motion, *, quiet_fraction: float = QUIET_FRACTION, _speed=None) -> np.ndarray:
    """(55, 3) axis-angle: the clip's own rest (home) posture that `amplitude` scales about.

    Gestures start from and return to a rest position (Kendon, McNeill), so the rest posture is the
    mean rotation of each joint over the clip's quietest frames: the ``quiet_fraction`` of frames with
    the lowest wrist speed (relative to the pelvis). A clip that never pauses gets its least active
    frames; a one-frame clip is its own rest.
    """
    T = motion.n_frames
    q = _aa_to_q(motion.poses.astype(np.float64))
    if T < 3:
        return _q_to_aa(_qmean(q)).astype(np.float32)
    activity = _frame_activity(_wrist_speed(motion) if _speed is None else _speed, T)
    n = max(1, min(T, int(round(quiet_fraction * T))))
    quiet = np.argsort(activity, kind="stable")[:n]
    return _q_to_aa(_qmean(q[quiet])).astype(np.float32)


def phrase_boundaries(motion: Motion, fps: float | None = None, *, phrase_s: float = PHRASE_S,
                      search_s: float = PHRASE_SEARCH_S, _speed=None) -> np.ndarray:
    """Sorted frame indices where `tempo` pins the timing (first and last frame included).

    Nominal phrases of ``phrase_s`` seconds; each boundary moves to the quietest frame (lowest wrist
    speed) within ``search_s`` of its nominal place, so the warp pivots at pauses and never shifts the
    motion against the speech by more than about one phrase.
    """
    fps = motion.fps if fps is None else fps
    T = motion.n_frames
    if T < 3:
        return np.array(sorted({0, max(T - 1, 0)}), int)
    activity = _frame_activity(_wrist_speed(motion) if _speed is None else _speed, T)
    L = max(4, int(round(phrase_s * fps)))
    W = min(L // 2 - 1, int(round(search_s * fps)))
    bounds = [0]
    nominal = L
    while nominal < T - 1 - L // 2:
        lo, hi = max(bounds[-1] + 2, nominal - W), min(T - 3, nominal + W)
        if hi < lo:
            break
        b = lo + int(np.argmin(activity[lo:hi + 1]))
        bounds.append(b)
        nominal = b + L
    bounds.append(T - 1)
    return np.array(bounds, int)


def tempo_warp(motion: Motion, tempo: float, fps: float | None = None, *, _speed=None) -> np.ndarray:
    """(T,) float source frame shown at each output frame: a monotonic time warp per phrase.

    Each source interval k has an activity a_k in [0, 1] (its wrist speed over the clip's 95th
    percentile). Within a phrase (`phrase_boundaries`; boundaries map to themselves exactly) the
    interval plays for ``a_k / tempo + (1 - a_k) * h`` output frames, with the hold factor h chosen so
    the phrase keeps its length: strokes (a = 1) play ``tempo`` times faster, holds (a = 0) absorb the
    difference (longer holds for tempo > 1, shorter for tempo < 1). h stays within [1/4, 4]; a phrase
    with too little hold time to absorb the change gets a weaker effective tempo, and one with no
    movement is left alone. Length, phrase boundaries, endpoints and so each phrase's mean speed are
    unchanged: tempo redistributes speed between strokes and holds, it does not slow the clip.
    """
    T = motion.n_frames
    identity = np.arange(T, dtype=np.float64)
    if tempo == 1 or T < 3:
        return identity
    speed = _wrist_speed(motion) if _speed is None else _speed
    smooth = gaussian_filter1d(speed, 1.5, mode="nearest")  # no warp jitter from frame noise
    scale = np.percentile(smooth, 95)
    if not scale > 1e-9:
        return identity
    a = np.clip(smooth / scale, 0, 1)
    bounds = phrase_boundaries(motion, fps, _speed=speed)
    phrase = np.searchsorted(bounds, np.arange(T - 1), side="right") - 1  # interval k -> its phrase
    n = np.bincount(phrase, minlength=len(bounds) - 1).astype(np.float64)  # intervals per phrase
    A = np.bincount(phrase, a, minlength=len(bounds) - 1)  # active "mass" per phrase
    holds = n - A
    ok = (holds > 0.05 * n) & (A > 1e-3)  # phrases with both strokes and holds to trade between
    h = np.ones_like(n)
    h[ok] = (n[ok] - A[ok] / tempo) / holds[ok]
    h_lim = np.clip(h, HOLD_MIN, HOLD_MAX)
    # where h hit its limit, solve for the stroke factor that keeps the phrase length
    inv_t = np.full_like(n, 1.0 / tempo)
    inv_t[ok] = (n[ok] - h_lim[ok] * holds[ok]) / A[ok]
    inv_t[~ok], h_lim[~ok] = 1.0, 1.0
    dwell = a * inv_t[phrase] + (1 - a) * h_lim[phrase]
    out_time = np.concatenate([[0.0], np.cumsum(dwell)])  # output time of each source frame
    out_time[bounds] = bounds  # pin exactly (the per-phrase sums are exact up to rounding)
    tau = np.interp(identity, out_time, identity)
    near = np.abs(tau - np.round(tau)) < 1e-9
    tau[near] = np.round(tau[near])
    return tau


# -- the edit ------------------------------------------------------------------------------------------
def _axis_q(axis: int, angle: float) -> np.ndarray:
    aa = np.zeros(3)
    aa[axis] = angle
    return _aa_to_q(aa)


def apply_style(motion: Motion, controls: StyleControls, *, locks: list[Lock] | None = None,
                fps: float | None = None, ramp: float = DEFAULT_RAMP) -> Motion:
    """A new `Motion` with ``controls`` applied; same length, fps, translation and betas.

    Args:
        motion: the clip, (T, 55, 3) poses, (T, 100) expressions, (T, 3) trans.
        controls: `StyleControls` (e.g. ``preset("sadness", 0.7)`` or `parse_style` output).
        locks: `Lock` spans whose part keeps the input motion *exactly* (bit-identical on that part's
            channels within the span); the edit fades in over ``ramp`` seconds outside each span
            (slerp / lerp, smoothstep weights) so there is no jump at the hand-over.
        fps: frame rate for the lock spans and time constants; default ``motion.fps``.

    Neutral controls return an exact copy. ``out.meta["style"]`` = `describe` plus the locks and ramp
    (an earlier style record moves to ``["style"]["previous"]``).
    """
    fps = float(motion.fps if fps is None else fps)
    locks = list(locks or [])
    if locks:
        validate_locks(locks, motion.n_frames, motion, fps)
    out = motion.slice()
    record = describe(controls)
    record.update(locks=[str(lock) for lock in locks], ramp_s=ramp if locks else None)
    if "style" in motion.meta:
        record["previous"] = motion.meta["style"]
    out.meta["style"] = record
    T = motion.n_frames
    c = controls
    if c == NEUTRAL or T == 0:
        return out

    q0 = _aa_to_q(motion.poses.astype(np.float64))  # (T, 55, 4) the input
    q = q0.copy()
    changed = np.zeros(N_JOINTS, bool)
    speed = _wrist_speed(motion) if T >= 3 and (c.tempo != 1 or c.amplitude != 1) else None
    body = list(BODY_JOINTS)

    if c.tempo != 1 and T >= 3:  # re-time strokes vs holds within phrases
        tau = tempo_warp(motion, c.tempo, fps, _speed=speed)
        i0 = np.floor(tau).astype(int)
        i1 = np.minimum(i0 + 1, T - 1)
        w = tau - i0
        _edit_in_world(q, body, lambda g: _slerp(g[i0], g[i1], w[:, None]))
        changed[body] = True

    if c.amplitude != 1:  # scale arm/spine excursions about the speaker's rest posture
        amp = list(AMPLITUDE_JOINTS)
        rest = _aa_to_q(rest_posture(motion, _speed=speed).astype(np.float64))
        q[:, amp] = _scale_about(q[:, amp], rest[amp], c.amplitude)
        changed[amp] = True

    if c.head_activity != 1:  # nods and shakes about the head's slow drift
        head = list(NECK_HEAD)
        _edit_in_world(q, head, lambda g: _scale_about(g, _smooth(g, HEAD_TREND_S * fps), c.head_activity))
        changed[head] = True

    if c.fluidity > 0 and T >= 2:  # low-pass the gesturing body: less jerk
        _edit_in_world(q, body, lambda g: _smooth(g, c.fluidity * FLUIDITY_SIGMA_S * fps))
        changed[body] = True

    # posture: constant offsets in each joint's parent frame (X lateral, Y up, Z forward)
    if c.spine_flexion:
        off = _axis_q(0, c.spine_flexion / len(SPINE))  # +X tips the parent's up axis forward
        q[:, list(SPINE)] = _qmul(off, q[:, list(SPINE)])
        changed[list(SPINE)] = True
    if c.head_pitch or c.head_turn:
        off = _aa_to_q(np.array([c.head_pitch, c.head_turn, 0.0]) / len(NECK_HEAD))
        q[:, list(NECK_HEAD)] = _qmul(off, q[:, list(NECK_HEAD)])
        changed[list(NECK_HEAD)] = True
    if c.shoulder_raise:
        for collar, shoulder, sign in ((L_COLLAR, L_SHOULDER, 1.0), (R_COLLAR, R_SHOULDER, -1.0)):
            off = _axis_q(2, sign * c.shoulder_raise)  # left collar points +X: +Z lifts it; right: -Z
            new_collar = _qmul(off, q[:, collar])
            # keep the arm's orientation: shoulder' = collar'^-1 collar shoulder
            q[:, shoulder] = _qmul(_qmul(_qconj(new_collar), q[:, collar]), q[:, shoulder])
            q[:, collar] = new_collar
            changed[[collar, shoulder]] = True

    expressions = out.expressions
    if c.face_intensity != 1 or c.jaw_open:
        jaw = _aa_to_q(_q_to_aa(q[:, JAW]) * c.face_intensity)  # about the closed, neutral jaw
        if c.jaw_open:
            jaw = _qmul(_axis_q(0, c.jaw_open), jaw)  # +X opens the jaw (chin down)
        q[:, JAW] = jaw
        changed[JAW] = True
        if c.face_intensity != 1:
            expressions = (motion.expressions.astype(np.float64) * c.face_intensity).astype(np.float32)

    poses = out.poses
    idx = np.flatnonzero(changed)
    new = _q_to_aa(q[:, idx]).astype(np.float32)
    same = np.all(q[:, idx] == q0[:, idx], axis=-1)  # untouched values keep their exact bits
    new[same] = motion.poses[:, idx][same]
    poses[:, idx] = new

    if locks:
        n_ramp = int(round(ramp * fps))
        for part, locked in part_frame_masks(locks, T, fps).items():
            w = crossfade_weights(distance_transform_edt(~locked), n_ramp)  # 1 in span -> 0 after ramp
            frames = np.flatnonzero(w > 0)
            exact, blend = frames[w[frames] >= 1], frames[(w[frames] > 0) & (w[frames] < 1)]
            joints = [j for j in PARTS[part] if changed[j]]
            if joints:
                if blend.size:
                    a = _aa_to_q(poses[blend][:, joints].astype(np.float64))
                    b = q0[blend][:, joints]
                    poses[blend[:, None], joints] = _q_to_aa(_slerp(a, b, w[blend][:, None])).astype(np.float32)
                poses[exact[:, None], joints] = motion.poses[exact[:, None], joints]
            if part == "face" and expressions is not out.expressions:
                wb = w[blend][:, None]
                expressions[blend] = ((1 - wb) * expressions[blend] + wb * motion.expressions[blend]).astype(np.float32)
                expressions[exact] = motion.expressions[exact]
    out.expressions = np.ascontiguousarray(expressions, dtype=np.float32)
    out.validate()
    return out
