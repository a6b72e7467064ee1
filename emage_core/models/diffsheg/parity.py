"""Parity against the reference's golden outputs (``golden/inputs.npz`` -> ``golden/outputs.npz``).

    python -m emage_core parity diffsheg ../shared/reference/diffsheg/golden   # table; exit 1 beyond tolerance

Every case replays the recorded inputs and noise (nothing else is random) through this package.
"""
from __future__ import annotations

import fnmatch
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from .audio import mel_features, mel_reference_15fps, resample
from .diffusion import (
    Conditions, NoiseSchedule, SamplerConfig, foppas_schedule, foppas_stream, foppas_windows, sample_ddim,
    training_losses,
)
from .model import DiffSHEGConfig, load_denoiser
from .channels import denormalize, norm_stats_232, to_smplx

# (glob, kind, bound) - the first matching pattern wins. From the reference README's table.
TOLERANCES: list[tuple[str, str, float]] = [
    ("eval_*_eps", "abs", 1e-4),
    ("train_eps_pred", "abs", 1e-4),
    ("train_x_t", "abs", 1e-4),
    ("eval_*_expr_x0", "rel", 1e-5),
    ("eval_audio_feat", "rel", 1e-5),
    ("train_pred_x0", "rel", 1e-5),
    ("train_loss_*", "rel", 1e-5),
    ("ddim_*", "rel", 2e-5),
    ("foppas_*", "rel", 1e-4),
    ("smplx_*", "abs", 1e-5),
    ("mel_30fps", "rel", 2e-4),
    ("mel_15fps_reference", "rel", 2e-4),
    ("mel_wave_18k", "rel", 5e-2),
]


class ReplayNoise:
    """A ``NoiseFn`` serving recorded arrays in order, per (kind, window); checks every shape."""

    def __init__(self, queues: dict[tuple[str, int], list[np.ndarray]]):
        self.queues = {k: [torch.from_numpy(np.asarray(a, np.float32)) for a in v] for k, v in queues.items()}

    def __call__(self, kind: str, shape: tuple[int, ...], window: int) -> torch.Tensor:
        queue = self.queues.get((kind, window))
        if not queue:
            raise KeyError(f"no recorded noise left for {kind!r} in window {window}")
        n = queue.pop(0)
        if tuple(n.shape) != tuple(shape):
            raise ValueError(f"recorded {kind!r} noise has shape {tuple(n.shape)}, sampler asks {tuple(shape)}")
        return n

    def leftover(self) -> dict[tuple[str, int], int]:
        return {k: len(v) for k, v in self.queues.items() if v}


def load_golden_model(golden_dir: str | Path):
    golden_dir = Path(golden_dir)
    cfg = DiffSHEGConfig.from_dict(json.loads((golden_dir / "config.json").read_text()))
    return load_denoiser(str(golden_dir / "model.safetensors"), cfg)


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a))


def run_parity(golden_dir: str | Path, *, audio=None) -> dict[str, np.ndarray]:
    """Run every recorded case; returns outputs under the keys of ``outputs.npz``."""
    golden_dir = Path(golden_dir)
    inp = dict(np.load(golden_dir / "inputs.npz"))
    model = load_golden_model(golden_dir)
    base = NoiseSchedule.linear()
    out: dict[str, np.ndarray] = {}

    with torch.no_grad():
        # eval: one forward at each guidance scale, coefficients from the 1000-step tables
        t = _t(inp["eval_t"])
        c1, c2 = base.model_coefs(t)
        for s in inp["eval_cond_scales"].tolist():
            r = model(_t(inp["eval_x_t"]), t, c1, c2, _t(inp["eval_mel"]), _t(inp["eval_person_id"]),
                      cond_scale=round(float(s), 6))
            tag = f"cfg{s:.2f}".replace(".", "p")
            out[f"eval_{tag}_eps"] = r.eps.numpy()
            out[f"eval_{tag}_expr_x0"] = r.expr_x0.numpy()
            out["eval_audio_feat"] = r.audio_feat.numpy()

        # train: training-mode forward with the recorded t, noise and null rows
        model.train()
        try:
            cond = Conditions(_t(inp["train_mel"]), _t(inp["train_person_id"]))
            r = training_losses(model, _t(inp["train_x0"]), cond, t=_t(inp["train_t"]), noise=_t(inp["train_noise"]),
                                null_rows=_t(inp["train_null_cond_mask"]), schedule=base)
        finally:
            model.eval()
        for k in ("x_t", "eps_pred", "pred_x0"):
            out[f"train_{k}"] = r[k].numpy()
        for k, v in (("loss_eps", "loss_eps"), ("loss_vel_term", "loss_vel"), ("loss_vel_logged", "loss_vel_logged"),
                     ("loss_x0", "loss_x0"), ("loss_total", "loss")):
            out[f"train_{k}"] = r[v].numpy()

    # ddim: short plain sample, every step recorded
    xs, x0s = [], []
    sample = sample_ddim(
        model, Conditions(_t(inp["ddim_mel"]), _t(inp["ddim_person_id"])), steps=int(inp["ddim_steps"]),
        cond_scale=round(float(inp["ddim_cond_scale"]), 6), noise=ReplayNoise({("x_T", 0): [inp["ddim_xT"]]}),
        schedule=base, on_step=lambda i, o: (xs.append(o.x_prev.numpy()), x0s.append(o.pred_x0.numpy())),
    )
    out["ddim_sample"] = sample.numpy()
    out["ddim_x_per_step"] = np.stack(xs)
    out["ddim_pred_x0_per_step"] = np.stack(x0s)

    # foppas: long sample, recorded noise per window
    cfg = SamplerConfig(
        ddim_steps=int(inp["foppas_ddim_steps"]), cond_scale=round(float(inp["foppas_cond_scale"]), 6),
        window=int(inp["foppas_window"]), overlap=int(inp["foppas_overlap"]),
        jump_length=int(inp["foppas_jump_length"]), jump_n_sample=int(inp["foppas_jump_n_sample"]),
    )
    length = int(inp["foppas_length"])
    wins = foppas_windows(length, cfg.window, cfg.overlap)
    assert [w[0] for w in wins] == inp["foppas_window_starts"].tolist(), wins
    assert [w[1] for w in wins] == inp["foppas_window_lengths"].tolist(), wins
    assert foppas_schedule(cfg.ddim_steps, cfg.jump_length, cfg.jump_n_sample) == inp["foppas_schedule"].tolist()
    queues = defaultdict(list)
    for k in range(len(wins)):
        queues[("x_T", k)] = [inp[f"foppas_w{k}_xT"]]
        if k:
            queues[("repaint", k)] = list(inp[f"foppas_w{k}_repaint"])
            queues[("undo", k)] = list(inp[f"foppas_w{k}_undo"])
    noise = ReplayNoise(queues)
    parts = []
    for w in foppas_stream(model, Conditions(_t(inp["foppas_mel"]), _t(inp["foppas_person_id"])), length, cfg,
                           noise, base):
        out[f"foppas_w{w.index}_out"] = w.motion.numpy()
        parts.append(w.new_frames.numpy())
    out["foppas_motion"] = np.concatenate(parts, axis=1)
    if noise.leftover():
        raise AssertionError(f"recorded noise not consumed: {noise.leftover()}")

    # smplx: statistics -> (mean, std) -> de-normalisation -> SMPL-X arrays
    mean, std = norm_stats_232(inp["stats_pose_mean"], inp["stats_pose_std"],
                               inp["stats_expression_mean"], inp["stats_expression_std"])
    out["smplx_norm_mean_232"], out["smplx_norm_std_232"] = mean, std  # compared with the recorded inputs
    motion = denormalize(inp["smplx_motion_norm"], mean, std)
    smplx = to_smplx(motion)
    out["smplx_motion"] = motion
    out["smplx_poses"] = smplx["poses"].reshape(len(motion), -1)
    out["smplx_expressions"] = smplx["expressions"]

    # mel features of real speech
    wave = inp["mel_wave_16k"]
    out["mel_30fps"] = mel_features(wave)
    out["mel_15fps_reference"] = mel_reference_15fps(wave)
    out["mel_wave_18k"] = resample(wave, 16000, 18000)
    return out


def golden_with_inputs(golden_dir: str | Path) -> dict[str, np.ndarray]:
    """outputs.npz plus the recorded statistics vectors (checked against ``norm_stats_232``)."""
    golden_dir = Path(golden_dir)
    gold = dict(np.load(golden_dir / "outputs.npz"))
    inp = np.load(golden_dir / "inputs.npz")
    gold["smplx_norm_mean_232"], gold["smplx_norm_std_232"] = inp["norm_mean_232"], inp["norm_std_232"]
    return gold


def tolerance_for(key: str, tolerances=TOLERANCES) -> tuple[str, float]:
    for pattern, kind, bound in tolerances:
        if fnmatch.fnmatchcase(key, pattern):
            return kind, bound
    raise KeyError(f"no tolerance for {key!r}")


def compare(outputs: dict[str, np.ndarray], golden: str | Path | dict,
            tolerances=TOLERANCES) -> list[tuple[str, float, float, bool]]:
    """(key, max_abs_err, tolerance, ok) for every golden key; ``tolerance`` is the absolute bound
    (relative bounds are multiplied by max |golden|). Missing keys and shape mismatches fail (err inf).

    ``golden``: the golden folder (no rows when it has no outputs.npz) or its outputs as a dict.
    """
    if not isinstance(golden, dict):
        if not (Path(golden) / "outputs.npz").is_file():
            return []
        golden = golden_with_inputs(golden)
    golden_outputs = golden
    rows = []
    for key in sorted(golden_outputs):
        g = np.asarray(golden_outputs[key], np.float64)
        kind, bound = tolerance_for(key, tolerances)
        tol = bound * float(np.abs(g).max()) if kind == "rel" else bound
        o = outputs.get(key)
        if o is None or np.shape(o) != g.shape:
            rows.append((key, float("inf"), tol, False))
            continue
        err = float(np.abs(np.asarray(o, np.float64) - g).max()) if g.size else 0.0
        rows.append((key, err, tol, bool(err <= tol)))
    return rows


def format_table(rows, tolerances=TOLERANCES, golden_outputs=None) -> str:
    lines = [f"{'key':32s} {'max abs err':>12s} {'tolerance':>12s}  {'rule':14s} {'rel err':>10s}  ok"]
    for key, err, tol, ok in rows:
        kind, bound = tolerance_for(key, tolerances)
        rel = ""
        if golden_outputs is not None and np.isfinite(err):
            scale = float(np.abs(golden_outputs[key]).max())
            rel = f"{err / scale:10.2e}" if scale > 0 else ""
        lines.append(f"{key:32s} {err:12.3e} {tol:12.3e}  {kind + ' ' + format(bound, '.0e'):14s} {rel:>10s}  "
                     f"{'ok' if ok else 'FAIL'}")
    return "\n".join(lines)
