"""The official evaluator re-implemented (`emage_core.metrics`): the FGD encoder loads strictly at both
sizes, the golden's every key is reproduced (``parity evaltools``), and FGD / BC / L1div / face metrics
behave as the reference's code does on cases whose answer is known.

The golden (``../shared/reference/emage_eval``) and the BEAT2 speech (CC BY-NC, read in place, never
copied) are shared test data: tests that need them skip with a message when they are absent.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from emage_core.metrics.beat import BCConfig, beat_consistency, clip_beat_consistency, onset_window, speech_onsets
from emage_core.metrics.fgd_encoder import (RELEASED_FILE, SMPLX_PARENTS, FGDAutoencoder, FGDEncoderConfig,
                                            build_fgd_encoder, load_fgd_encoder, load_released_bin,
                                            save_released_bin, topology_constants)
from emage_core.metrics.official import (body_fk_poses, display, face_fk_poses, face_mse, fgd, fgd_features,
                                         frechet_terms, l1div, lvd, split_clips)
from emage_core.metrics.parity import DEFAULT_TOLERANCES, compare, run_parity, tolerance_for
from emage_core.metrics.rot6d import poses_to_rot6d
from emage_core.metrics.skeleton_topology import build_edges, edge_chains, plan_pooling
from emage_core.motion.skeleton import PARENTS, UPPER_JOINTS

from conftest import BEAT2, SHARED, need

REF = SHARED / "reference" / "emage_eval"
GOLDEN = REF / "golden"
SPEECH = BEAT2 / "2_scott_0_1_1.wav"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # librosa's lazy imports


@pytest.fixture(scope="module")
def golden():
    return need(GOLDEN)


@pytest.fixture(scope="module")
def golden_model(golden) -> FGDAutoencoder:
    return load_fgd_encoder(golden / "model.safetensors")


# ------------------------------------------------------------------------------ topology / loading


def test_chain_pooling_on_a_toy_tree():
    # 0 -> 1 -> 2 -> 3 (an arm of 3 bones) and 0 -> 4 (one bone); virtual edge 0 = (0, 5)
    edges = build_edges([-1, 0, 1, 2, 0])
    assert edges == [(0, 5), (0, 1), (1, 2), (2, 3), (0, 4)]
    assert edge_chains(edges) == [[0], [1, 2, 3], [4]]
    plan = plan_pooling(edges)
    assert plan.groups == ((0,), (1,), (2, 3), (4,))  # an odd chain keeps its first edge alone
    assert plan.new_edges == ((0, 5), (0, 1), (1, 3), (0, 4))
    assert plan.reduces


def test_evaluator_skeleton_is_the_project_skeleton():
    assert SMPLX_PARENTS == PARENTS and FGDEncoderConfig.released().parents == PARENTS
    assert BCConfig().upper_body == UPPER_JOINTS


def test_golden_loads_strict(golden, golden_model):
    from safetensors.numpy import load_file

    assert golden_model.config.vae_grow == (1, 1, 1, 1) and len(golden_model.config.joints) == 25
    ref = load_file(str(golden / "model.safetensors"))
    sd = golden_model.state_dict()
    assert set(sd) == set(ref)
    for k, v in ref.items():
        np.testing.assert_array_equal(sd[k].numpy(), v)
    assert sum(p.numel() for p in golden_model.parameters()) == 576_480
    for k, v in topology_constants(golden_model.config).items():  # masks and pools derived = stored
        np.testing.assert_array_equal(v, ref[k], err_msg=k)


def test_released_size_matches_the_manifest():
    manifest = json.loads(need(REF / "manifest_released.json").read_text())
    cfg = FGDEncoderConfig.from_dict(manifest["config"])
    assert cfg == FGDEncoderConfig.released()
    model = build_fgd_encoder(cfg, device="meta")
    sd = model.state_dict()
    assert list(sd) == [e["key"] for e in manifest["keys"]]  # names and order: the reference's
    for e in manifest["keys"]:
        assert list(sd[e["key"]].shape) == e["shape"], e["key"]
    assert sum(p.numel() for p in model.parameters()) == manifest["n_parameters"] == 4_384_500
    assert sum(p.numel() for p in model.encoder.parameters()) == manifest["n_parameters_encoder"]
    consts = topology_constants(cfg)  # derived from the 55 SMPL-X parents: the released ones, bit for bit
    for e in manifest["keys"]:
        if e.get("topology_constant"):
            v = consts[e["key"]]
            assert float(v.sum()) == e["sum"], e["key"]
            assert hashlib.sha256(v.astype("<f4").tobytes()).hexdigest() == e["sha256_float32"], e["key"]
    full = {e["key"]: torch.from_numpy(consts[e["key"]]) if e["key"] in consts else torch.randn(e["shape"])
            for e in manifest["keys"]}
    fresh = FGDAutoencoder(cfg, None, "meta")
    fresh.load_state_dict(full, strict=True, assign=True)
    z = fresh.map2latent(torch.randn(1, 64, 330))
    assert z.shape == (1, 4, 240) and torch.isfinite(z).all()
    with pytest.raises(RuntimeError):  # strict: one key short fails
        FGDAutoencoder(cfg, None, "meta").load_state_dict({k: v for k, v in full.items() if k != "fc_mu.bias"},
                                                          strict=True, assign=True)


def _reduced_config() -> FGDEncoderConfig:
    return FGDEncoderConfig(joints=tuple(range(25)), parents=SMPLX_PARENTS[:25], vae_grow=(1, 1, 1, 1),
                            vae_test_dim=150, vae_length=60)


def test_released_bin_round_trip(tmp_path):
    cfg = _reduced_config()
    model = build_fgd_encoder(cfg).eval()
    path = tmp_path / RELEASED_FILE
    save_released_bin(model.state_dict(), path)  # {"model_state": {"module.<key>": tensor}}
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"model_state"} and all(k.startswith("module.") for k in raw["model_state"])
    state = load_released_bin(path)
    assert set(state) == set(model.state_dict())
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))  # picked up beside the weights
    again = load_fgd_encoder(path)
    x = torch.randn(2, 32, 150)
    assert torch.equal(again.map2latent(x), model.map2latent(x))


@dataclass
class _NotATensor:
    value: int = 1


def test_released_bin_refuses_pickled_objects(tmp_path):
    path = tmp_path / RELEASED_FILE
    torch.save({"model_state": {"w": torch.zeros(2)}, "extra": _NotATensor()}, path)
    with pytest.raises(ValueError, match="weights_only"):
        load_released_bin(path)


def test_wrong_topology_is_refused(golden):
    cfg = FGDEncoderConfig.from_json(golden / "config.json")
    parents = list(cfg.parents)
    parents[22] = 9  # the jaw hung on spine3 instead of the head: same shapes, other masks
    with pytest.raises(ValueError, match="topology"):
        load_fgd_encoder(golden / "model.safetensors", FGDEncoderConfig(**{**cfg.to_dict(), "parents": tuple(parents)}))


def test_golden_as_released_bin(tmp_path, golden, golden_model):
    """The golden's random evaluator saved as AESKConv_240_100.bin + its config.json stands in for the
    official one (the evaluate tests put it in a local Hub cache)."""
    save_released_bin(golden_model.state_dict(), tmp_path / RELEASED_FILE)
    shutil.copy(golden / "config.json", tmp_path / "config.json")
    model = load_fgd_encoder(tmp_path / RELEASED_FILE)
    x = torch.from_numpy(np.load(golden / "inputs.npz")["enc_x"])
    assert torch.equal(model.map2latent(x), golden_model.map2latent(x))


# ------------------------------------------------------------------------------------- parity


def test_parity_every_golden_key_within_tolerance(golden, tmp_path, capsys):
    """``python -m emage_core parity evaltools GOLDEN --audio SPEECH -o OUT.npz``: 52/52 keys, exit 0."""
    from emage_core.cli.main import main

    speech = need(SPEECH)
    out = tmp_path / "ours.npz"
    rc = main(["parity", "evaltools", str(golden), "--audio", str(speech), "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "52/52 keys within tolerance" in text
    with np.load(out) as ours, np.load(golden / "outputs.npz") as want:
        assert set(ours.files) == set(want.files)
        rows = compare(dict(ours), golden)
    assert len(rows) == 52 and all(ok for *_, ok in rows), [r for r in rows if not r[3]]


def test_parity_without_speech_leaves_bc_out_and_fails(golden):
    ours = run_parity(golden, audio=None)
    assert not any(k.startswith("bc_") for k in ours)
    rows = {k: (err, ok) for k, err, _, ok in compare(ours, golden)}
    assert rows["fgd_large"][1] and rows["l1div_synth"][1]
    assert rows["bc_avg"] == (float("inf"), False)


def test_compare_flags_errors_beyond_tolerance(golden, tmp_path):
    with np.load(golden / "outputs.npz") as g:
        want = {k: np.array(g[k]) for k in g.files}
    assert all(ok for *_, ok in compare(want, golden))
    ours = {k: v.copy() for k, v in want.items()}
    ours["bc_0"] = want["bc_0"] + 2e-6  # atol 1e-6
    ours["bc_1_beats"][3, 0] += 1  # exact
    ours["bc_2_onsets"] = want["bc_2_onsets"][:-1]  # one onset short
    ours["fgd_small"] = want["fgd_small"] * (1 + 2e-4)  # rtol 1e-4
    del ours["lvd_face"]
    rows = {k: (err, tol, ok) for k, err, tol, ok in compare(ours, golden)}
    assert {k for k, (_, _, ok) in rows.items() if not ok} == {"bc_0", "bc_1_beats", "bc_2_onsets", "fgd_small",
                                                               "lvd_face"}
    assert rows["bc_0"][0] == pytest.approx(2e-6) and rows["bc_0"][1] == 1e-6
    assert rows["fgd_small"][1] == pytest.approx(1e-9 + 1e-4 * abs(float(want["fgd_small"])))
    assert compare(want, tmp_path) == []  # no outputs.npz: nothing to compare


def test_tolerance_rule_longest_pattern(golden):
    assert tolerance_for("bc_paper_2_onsets", DEFAULT_TOLERANCES)["same_length"]
    assert tolerance_for("bc_paper_2_beats", DEFAULT_TOLERANCES)["exact"]
    assert tolerance_for("bc_paper_avg", DEFAULT_TOLERANCES) == DEFAULT_TOLERANCES["bc_"]
    assert tolerance_for("lvd_face_paper", DEFAULT_TOLERANCES) == DEFAULT_TOLERANCES["lvd_face"]
    # the built-in table is the golden's tolerances.json
    assert json.loads((golden / "tolerances.json").read_text())["keys"] == DEFAULT_TOLERANCES


# ------------------------------------------------------------------------------------------ FGD


def test_frechet_of_a_set_with_itself_is_minus_2_d_eps():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16)).astype(np.float32)
    # (S + eps)(S + eps) has the root S + eps, so FD = -2 D eps exactly: the reference's always-on eps
    assert fgd(x, x) == pytest.approx(-2 * 16 * 1e-6, abs=1e-9)
    assert abs(fgd(x, x, variant="paper")) < 1e-8


def test_frechet_gaussian_shift_matches_closed_form():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(20000, 4)).astype(np.float32)
    b = (rng.normal(size=(20000, 4)) * 2 + 1).astype(np.float32)
    # N(0, I) vs N(1, 4I): |mu|^2 = 4, tr = 4 + 16 - 2 * 8 = 4 -> FD = 8
    assert fgd(a, b) == pytest.approx(8.0, rel=0.03)
    t = frechet_terms(b, a)
    assert t.value == pytest.approx(t.mean + t.trace_gen + t.trace_real - 2 * t.trace_sqrt)
    assert not t.rank_deficient and frechet_terms(a[:4], b[:4]).rank_deficient


def test_fgd_grows_with_noise_on_real_motion(golden, golden_model):
    inputs = np.load(golden / "inputs.npz")
    clips = split_clips(inputs["fgd_large_target"], inputs["fgd_large_target_lengths"])
    real = np.concatenate([fgd_features(golden_model, c) for c in clips])
    assert abs(fgd(real, real)) < 1e-3
    rng = np.random.default_rng(0)
    values = []
    for sigma in (0.02, 0.1, 0.3, 1.0):
        noisy = [c + rng.normal(scale=sigma, size=c.shape).astype(np.float32) * (c != 0) for c in clips]
        values.append(fgd(real, np.concatenate([fgd_features(golden_model, c) for c in noisy])))
    assert values[0] > 1e-3 and all(b > a for a, b in zip(values, values[1:])), values


def test_fgd_features_drop_to_a_multiple_of_32(golden_model):
    poses = np.zeros((100, 165), np.float32)
    assert fgd_features(golden_model, poses).shape == (6, 60)  # 96 frames kept -> 6 rows
    assert fgd_features(golden_model, poses[:31]).shape == (0, 60)  # too short: no row


def test_rot6d_is_the_first_two_rows():
    aa = np.array([[0.0, 0.0, np.pi / 2], [0.0, 0.0, 0.0]], np.float64)  # 90 degrees about z; identity
    r = poses_to_rot6d(aa.reshape(1, 6))
    assert r.dtype == torch.float32
    np.testing.assert_allclose(r[0, :6].numpy(), [0, -1, 0, 1, 0, 0], atol=1e-7)  # rows of Rz(90)
    np.testing.assert_allclose(r[0, 6:].numpy(), [1, 0, 0, 0, 1, 0], atol=0)


# ------------------------------------------------------------------------------------------- BC


def _speed_minima_motion(target_frames: np.ndarray, t: int, upper_body, fps: int = 30) -> np.ndarray:
    """(t, 55, 3) positions whose upper-body speed has one strict minimum at each target frame:
    speed 0.3 + (1 - cos 2 pi phase) m/s with the phase integer exactly at the targets."""
    tf = np.asarray(target_frames, float)
    pad = 20.0 * np.arange(1, 11)
    knots = np.concatenate([tf[0] - pad[::-1], tf, tf[-1] + pad])
    fine = np.arange(0, t, 0.01)
    phase = np.interp(fine, knots, np.arange(len(knots)))
    speed = 0.3 + (1 - np.cos(2 * np.pi * phase))
    x = np.concatenate([[0.0], np.cumsum((speed[1:] + speed[:-1]) / 2 * 0.01 / fps)])
    p = np.zeros((t, 55, 3), np.float32)
    p[:, list(upper_body), 0] = np.interp(np.arange(t), fine, x)[:, None]
    return p


def _click_speech(t: int, sr: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = rng.normal(0, 1e-3, t * sr // 30).astype(np.float32)
    c = 2.4
    while c < t / 30 - 2.5:
        i, n = int(c * sr), int(0.03 * sr)
        y[i:i + n] += (rng.normal(0, 0.5, n) * np.exp(-np.arange(n) / (0.008 * sr))).astype(np.float32)
        c += rng.uniform(0.5, 0.9)
    return y


def _aligned_and_shifted(speech: np.ndarray, t: int, cfg: BCConfig) -> tuple[float, float]:
    lo, hi = onset_window(len(speech), t, cfg)
    onsets = speech_onsets(speech[lo:hi], cfg)
    kept = [onsets[0]]
    for o in onsets[1:]:  # one target per onset cluster (librosa may fire twice on one event)
        if o - kept[-1] > 0.3:
            kept.append(o)
    targets = np.round(np.asarray(kept) * cfg.fps).astype(int) + cfg.trim_frames  # onset time 0 = frame 60
    mean_vel = np.ones(55, np.float32)
    aligned = clip_beat_consistency(_speed_minima_motion(targets, t, cfg.upper_body), speech, mean_vel, cfg)
    beats = aligned.beats[cfg.upper_body[0]] + cfg.trim_frames
    assert np.abs(beats[:, None] - targets[None, :]).min(axis=0).max() <= 1  # a beat at every target
    midway = (targets[:-1] + targets[1:]) // 2
    shifted = clip_beat_consistency(_speed_minima_motion(midway, t, cfg.upper_body), speech, mean_vel, cfg)
    return aligned.bc, shifted.bc


def test_bc_aligned_beats_score_higher_on_clicks():
    pytest.importorskip("librosa")
    aligned, shifted = _aligned_and_shifted(_click_speech(600), 600, BCConfig())
    assert aligned > 0.95 and aligned - shifted > 0.2, (aligned, shifted)


def test_bc_aligned_beats_score_higher_on_real_speech():
    import librosa

    speech, _ = librosa.load(need(SPEECH), sr=16000)
    aligned, shifted = _aligned_and_shifted(speech[: 31 * 16000], 900, BCConfig())
    assert aligned > 0.9 and aligned > shifted + 0.03, (aligned, shifted)


def test_bc_skips_silent_and_short_clips():
    pytest.importorskip("librosa")
    t = 300
    rng = np.random.default_rng(0)
    pos = np.cumsum(rng.normal(size=(t, 55, 3)) * 0.01, axis=0).astype(np.float32)
    silent = np.zeros(t * 16000 // 30, np.float32)
    clicks = _click_speech(t)
    res = beat_consistency([(pos, clicks), (pos, silent), (pos[:100], clicks)], np.ones(55, np.float32))
    assert [i for i, _ in res.skipped] == [1, 2] and len(res.clips) == 1
    assert res.value == pytest.approx(res.clips[0].bc) and 0 <= res.value <= 1


def test_bc_weights_clips_by_length_minus_trims():
    pytest.importorskip("librosa")
    rng = np.random.default_rng(3)
    clips = [(np.cumsum(rng.normal(size=(t, 55, 3)) * 0.01, axis=0).astype(np.float32), _click_speech(t, seed=t))
             for t in (300, 450)]
    res = beat_consistency(clips, np.ones(55, np.float32))
    a, b = res.clips
    assert (a.weight, b.weight) == (180, 330)
    assert res.value == pytest.approx((a.bc * a.weight + b.bc * b.weight) / (a.weight + b.weight))


def test_paper_variant_window_runs_to_the_motion_end_when_the_audio_is_longer():
    paper = BCConfig.paper()
    assert onset_window(10 * 16000, 150, paper) == (32000, 80000)  # the motion's end (5 s), not 3 s
    assert onset_window(10 * 16000, 150, BCConfig()) == (32000, 48000)
    assert onset_window(5 * 16000, 150, paper) == (32000, 48000)  # audio = motion: 2 s before the end


# ------------------------------------------------------------------------------ L1div / face


def test_l1div_is_within_clip_variability_not_a_distance_between_variants():
    from emage_core import metrics

    p = np.zeros((10, 165), np.float32)
    p[::2, 0], p[1::2, 0] = 1, -1  # one coordinate alternating +-1: |p - mean| = 1 per frame
    still = np.ones((30, 165), np.float32)
    assert l1div([p]) == pytest.approx(1.0)
    assert l1div([p, still]) == pytest.approx(10 / 40)  # summed over clips / total frames
    assert metrics.l1div is l1div
    # the project's variant distance of two identical clips is 0, however much each moves
    assert metrics.variant_l1_distance([p, p]) == 0 and l1div([p, p]) == pytest.approx(1.0)


def test_face_metrics_closed_form():
    t, c = 5, 6
    gt, pred = np.zeros((t, c)), np.zeros((t, c))
    pred[2:] = 0.1  # a step at frame 2: position error 0.1 on frames 2-4, one velocity jump
    assert face_mse([pred], [gt]) == pytest.approx(0.01 * 3 / 5)
    assert lvd([pred], [gt]) == pytest.approx(0.1 * c / (t * c))  # divides by T 3V, not (T-1) 3V
    assert lvd([pred], [gt], variant="paper") == pytest.approx(0.1 * 3 / 4)  # mean |pred - gt| on frames 1..T-1


def test_fk_pose_masks_and_display_scale():
    poses = np.random.default_rng(0).normal(size=(4, 165)).astype(np.float32)
    body = body_fk_poses(poses).reshape(4, 55, 3)
    assert not body[:, [0, 22, 23, 24]].any() and np.array_equal(body[:, 1:22], poses.reshape(4, 55, 3)[:, 1:22])
    face = face_fk_poses(poses).reshape(4, 55, 3)
    assert np.array_equal(face[:, 22], poses.reshape(4, 55, 3)[:, 22]) and not np.delete(face, 22, axis=1).any()
    assert display("fgd", 0.5512) == (0.5512, pytest.approx(5.512))
    assert display("bc", 0.7724)[1] == pytest.approx(7.724)
