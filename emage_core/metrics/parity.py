"""Recompute the official evaluator's golden cases and compare (``python -m emage_core parity evaltools``).

A golden folder (``../shared/reference/emage_eval/golden``) holds ``config.json`` (the evaluator's
architecture and the speech's sha256), ``model.safetensors`` (evaluator weights), ``inputs.npz``,
optionally ``inputs_beat2.npz`` (the real-motion FGD case), ``outputs.npz`` (what the reference code
returned) and ``tolerances.json``. `run_parity` recomputes every case under the golden's keys: the
encoder's latents, FGD features, ``fgd_{small,large,beat2}`` and their terms, ``bc_0..bc_3`` with their
onsets and beats and ``bc_avg`` (evaltools and ``bc_paper_*``), ``l1div_synth``, ``mse_face``,
``lvd_face`` and ``lvd_face_paper``. `compare` checks them against ``outputs.npz`` with the golden's
tolerances (``tolerances.json``; the reference README's table when absent).

The BC cases need the speech the golden was made from (BEAT2 ``2_scott_0_1_1.wav``, CC BY-NC, read
where it lies); without it they are left out, and `compare` reports their keys as missing.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from ..files import sha256_file
from .beat import BCConfig, clip_beat_consistency, pad_beats, speech_from_array
from .fgd_encoder import FGDEncoderConfig, load_fgd_encoder
from .official import face_mse, frechet_terms, l1div, lvd, paired_fgd_features, split_clips

__all__ = ["DEFAULT_TOLERANCES", "run_parity", "compare", "tolerance_for"]

#: The reference README's tolerances: |ours - golden| <= atol + rtol |golden| per element, the longest
#: matching key pattern (prefix or suffix) applies; ``exact``: integer arrays equal in shape and value;
#: ``same_length``: as many elements as the golden.
DEFAULT_TOLERANCES: dict[str, dict] = {
    "latents": {"atol": 1e-4, "rtol": 0.0},
    "features_": {"atol": 1e-4, "rtol": 0.0},
    "fgd_": {"atol": 1e-9, "rtol": 1e-4},
    "bc_": {"atol": 1e-6, "rtol": 0.0},
    "_onsets": {"atol": 1e-6, "rtol": 0.0, "same_length": True},
    "_beats": {"exact": True},
    "l1div_synth": {"atol": 0.0, "rtol": 1e-5},
    "mse_face": {"atol": 0.0, "rtol": 1e-5},
    "lvd_face": {"atol": 0.0, "rtol": 1e-5},
}


def _fgd_case(model, name: str, inputs: dict, out: dict) -> None:
    pred = split_clips(inputs[f"fgd_{name}_pred"], inputs[f"fgd_{name}_pred_lengths"])
    target = split_clips(inputs[f"fgd_{name}_target"], inputs[f"fgd_{name}_target_lengths"])
    fp, ft = paired_fgd_features(model, pred, target)
    out[f"features_{name}_pred"], out[f"features_{name}_target"] = fp, ft
    terms = frechet_terms(fp, ft)  # generated first, as FGD.compute passes them
    out[f"fgd_{name}"] = np.float64(terms.value)
    out[f"fgd_{name}_mean"] = np.float64(terms.mean)
    out[f"fgd_{name}_trace_pred"] = np.float64(terms.trace_gen)
    out[f"fgd_{name}_trace_target"] = np.float64(terms.trace_real)
    out[f"fgd_{name}_trace_sqrt"] = np.float64(terms.trace_sqrt)


def _bc_cases(inputs: dict, speech16k: np.ndarray, out: dict) -> None:
    mean_vel = inputs["bc_mean_vel"]
    n_cases = sum(1 for k in inputs if k.startswith("bc_") and k.endswith("_positions"))
    for prefix, cfg in (("bc", BCConfig()), ("bc_paper", BCConfig.paper())):
        clips = []
        for k in range(n_cases):
            # case k's "file audio" is the speech from bc_k_audio_start to its end
            file_audio = speech16k[int(inputs[f"bc_{k}_audio_start"]):]
            speech = speech_from_array(file_audio, 16000, cfg)
            clip = clip_beat_consistency(inputs[f"bc_{k}_positions"], speech, mean_vel, cfg)
            out[f"{prefix}_{k}"] = np.float64(clip.bc)
            out[f"{prefix}_{k}_onsets"] = np.asarray(clip.onsets)
            out[f"{prefix}_{k}_beats"] = pad_beats(clip.beats)
            clips.append(clip)
        out[f"{prefix}_avg"] = np.float64(sum(c.bc * c.weight for c in clips) / sum(c.weight for c in clips))


def run_parity(golden_dir: Path, *, audio: Path | None) -> dict[str, np.ndarray]:
    """Every case of a golden folder recomputed, under the golden's output keys.

    ``audio``: the speech the BC cases were cut from (its sha256 is checked against config.json's
    ``bc_speech``; a different file only warns, a different length is an error). None leaves the BC
    cases out. ``inputs_beat2.npz`` absent leaves ``fgd_beat2`` out.
    """
    import librosa

    golden_dir = Path(golden_dir)
    inputs = dict(np.load(golden_dir / "inputs.npz"))
    if (golden_dir / "inputs_beat2.npz").is_file():
        inputs.update(np.load(golden_dir / "inputs_beat2.npz"))
    config = json.loads((golden_dir / "config.json").read_text())
    out: dict[str, np.ndarray] = {}

    model = load_fgd_encoder(golden_dir / "model.safetensors", FGDEncoderConfig.from_dict(config))
    out["latents"] = model.map2latent(torch.from_numpy(inputs["enc_x"])).numpy()
    for name in ("small", "large", "beat2"):
        if f"fgd_{name}_pred" in inputs:
            _fgd_case(model, name, inputs, out)

    speech_info = config.get("bc_speech", {})
    if audio is not None and "bc_mean_vel" in inputs:
        audio = Path(audio)
        if not audio.is_file():
            raise FileNotFoundError(f"{audio}: no such speech file")
        if speech_info.get("sha256") and sha256_file(audio) != speech_info["sha256"]:
            print(f"warning: {audio} differs from the golden's speech {speech_info.get('file', '')} (sha256)",
                  file=sys.stderr)
        speech, _ = librosa.load(audio, sr=16000)  # evaltools reads speech this way
        want = speech_info.get("samples_16k")
        if want is not None and len(speech) != want:
            raise ValueError(f"{audio}: {len(speech)} samples at 16 kHz, the golden's speech "
                             f"{speech_info.get('file', '')} has {want}")
        _bc_cases(inputs, speech, out)
    elif "bc_mean_vel" in inputs:
        print(f"note: no speech given (--audio {speech_info.get('file', 'SPEECH.wav')}): the BC cases are left out",
              file=sys.stderr)

    if "l1div_positions" in inputs:
        out["l1div_synth"] = np.float64(l1div(split_clips(inputs["l1div_positions"], inputs["l1div_lengths"])))
    if "face_pred_vertices" in inputs:
        fp = split_clips(inputs["face_pred_vertices"], inputs["face_lengths"])
        ft = split_clips(inputs["face_target_vertices"], inputs["face_lengths"])
        out["mse_face"] = np.float64(face_mse(fp, ft))
        out["lvd_face"] = np.float64(lvd(fp, ft, "evaltools"))
        out["lvd_face_paper"] = np.float64(lvd(fp, ft, "paper"))
    return out


def tolerance_for(key: str, rules: dict[str, dict]) -> dict:
    """The rule of the longest pattern matching ``key`` as a prefix or a suffix."""
    hits = [p for p in rules if key.startswith(p) or key.endswith(p)]
    if not hits:
        raise KeyError(f"no tolerance rule for {key!r}")
    return rules[max(hits, key=len)]


def compare(outputs: dict, golden_dir: Path) -> list[tuple[str, float, float, bool]]:
    """``(key, max abs error, tolerance, ok)`` for every key of the golden's ``outputs.npz``; [] without one.

    The tolerance is ``atol + rtol |golden|`` at the element nearest to (or furthest past) its bound;
    ``exact`` keys have tolerance 0. A missing key or a shape mismatch has error ``inf``.
    """
    golden_dir = Path(golden_dir)
    if not (golden_dir / "outputs.npz").is_file():
        return []
    rules = DEFAULT_TOLERANCES
    if (golden_dir / "tolerances.json").is_file():
        rules = json.loads((golden_dir / "tolerances.json").read_text()).get("keys", rules)
    rows = []
    with np.load(golden_dir / "outputs.npz") as golden:
        for key in golden.files:
            g = np.asarray(golden[key])
            rule = tolerance_for(key, rules)
            o = outputs.get(key)
            if o is None:
                rows.append((key, float("inf"), 0.0 if rule.get("exact") else float(rule.get("atol", 0.0)), False))
                continue
            o = np.asarray(o)
            if rule.get("exact"):
                same = o.shape == g.shape and np.array_equal(o, g)
                err = 0.0 if same else (float(np.abs(o - g).max()) if o.shape == g.shape and o.size else float("inf"))
                rows.append((key, err, 0.0, same))
                continue
            atol, rtol = float(rule.get("atol", 0.0)), float(rule.get("rtol", 0.0))
            if o.shape != g.shape:
                rows.append((key, float("inf"), atol + rtol * float(np.abs(g).max(initial=0.0)), False))
                continue
            err = np.abs(o.astype(np.float64) - g.astype(np.float64)).reshape(-1)
            bound = (atol + rtol * np.abs(g.astype(np.float64))).reshape(-1)
            if err.size == 0:
                rows.append((key, 0.0, atol, True))
                continue
            worst = int(np.argmax(err / np.where(bound > 0, bound, np.finfo(float).tiny)))
            rows.append((key, float(err.max()), float(bound[worst]), bool(np.all(err <= bound))))
    return rows
