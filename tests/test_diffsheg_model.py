"""DiffSHEG's networks, diffusion and FOPPAS against the reference's golden set (../shared/reference/diffsheg),
plus the pieces around them: the channel map, the statistics reader, the reference's checkpoint layout."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED
from emage_core.models.diffsheg.audio import hubert_features, mel_features, n_motion_frames
from emage_core.models.diffsheg.diffusion import (
    Conditions, NoiseSchedule, SamplerConfig, foppas_schedule, foppas_stream, foppas_windows, sample_ddim,
    sample_foppas, training_losses,
)
from emage_core.models.diffsheg.model import DiffSHEGConfig, DiffSHEGDenoiser
from emage_core.models.diffsheg.channels import (
    denormalize, from_smplx, load_talkshow_stats, norm_stats_232, normalize, to_smplx,
)
from emage_core.models.diffsheg.parity import compare, golden_with_inputs, load_golden_model, run_parity

GOLDEN = SHARED / "reference" / "diffsheg" / "golden"
needs_golden = pytest.mark.skipif(not (GOLDEN / "inputs.npz").exists(),
                                  reason=f"needs the DiffSHEG golden set {GOLDEN} (shared test data); absent here")



@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The golden cases are tiny; more threads only contend (the machine is shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def golden_model():
    return load_golden_model(GOLDEN)


@pytest.fixture(scope="module")
def parity_rows():
    gold = golden_with_inputs(GOLDEN)
    return {row[0]: row for row in compare(run_parity(GOLDEN), gold)}


def _cond(T: int, B: int = 1, seed: int = 0) -> Conditions:
    g = torch.Generator().manual_seed(seed)
    mel = torch.rand(B, T, 128, generator=g) * 10
    pid = torch.nn.functional.one_hot(torch.arange(B) % 4, 4).float()
    return Conditions(mel, pid)


# -----------------------------------------------------------------------------
# State dicts


@needs_golden
def test_golden_checkpoint_loads_strict(golden_model):
    sd = golden_model.state_dict()
    assert len(sd) == 180
    assert sum(v.numel() for v in sd.values()) == 254_923
    # strictness: a missing and an unexpected key are both refused
    model = DiffSHEGDenoiser(golden_model.cfg)
    broken = dict(sd)
    broken.pop("encoder_ges.out.bias")
    with pytest.raises(RuntimeError):
        model.load_state_dict(broken, strict=True)
    with pytest.raises(RuntimeError):
        model.load_state_dict({**sd, "encoder_ges.extra": torch.zeros(1)}, strict=True)


@needs_golden
def test_released_show_state_dict_matches_manifest():
    manifest = json.loads((GOLDEN / "manifest_released_show.json").read_text())
    cfg = DiffSHEGConfig.from_dict(manifest["config"])
    with torch.device("meta"):
        model = DiffSHEGDenoiser(cfg)
    got = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]
    want = [(e["key"], e["shape"], e["dtype"]) for e in manifest["keys"]]
    assert got == want  # same keys, shapes, dtypes and order
    assert sum(p.numel() for p in model.parameters()) == manifest["n_parameters"]
    assert sum(b.numel() for b in model.buffers()) == manifest["n_buffer_elements"]


# -----------------------------------------------------------------------------
# Parity with the reference (one test per golden key)

if (GOLDEN / "outputs.npz").exists():
    _GOLDEN_KEYS = sorted(golden_with_inputs(GOLDEN))
else:
    _GOLDEN_KEYS = []


@needs_golden
@pytest.mark.parametrize("key", _GOLDEN_KEYS)
def test_parity(parity_rows, key):
    _, err, tol, ok = parity_rows[key]
    assert ok, f"{key}: max abs err {err:.3e} > {tol:.3e}"


# -----------------------------------------------------------------------------
# Model behaviour


@needs_golden
def test_guidance_is_uncond_plus_scaled_difference(golden_model):
    m = golden_model
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 12, 232, generator=g)
    t = torch.tensor([500, 100])
    c1, c2 = NoiseSchedule.linear().model_coefs(t)
    cond = _cond(12, 2)
    with torch.no_grad():
        plain = m(x, t, c1, c2, cond.mel, cond.person_id, cond_scale=1.0)
        guided = m(x, t, c1, c2, cond.mel, cond.person_id, cond_scale=1.3)
        null = torch.ones(2, dtype=torch.bool)
        # the expression branch alone: guided = uncond + s (cond - uncond)
        xe = x[..., 129:]
        audio = torch.cat([cond.mel, plain.audio_feat], -1)
        ue = m.encoder_exp(xe, t, audio, cond.person_id, None, None, null)
        ce = m.encoder_exp(xe, t, audio, cond.person_id, None, None, None)
    torch.testing.assert_close(plain.eps[..., 129:], ce, rtol=0, atol=1e-5)
    torch.testing.assert_close(guided.eps[..., 129:], ue + 1.3 * (ce - ue), rtol=0, atol=1e-4)
    torch.testing.assert_close(guided.audio_feat, plain.audio_feat)


def test_hubert_configuration_runs_in_eval_and_train():
    cfg = DiffSHEGConfig(latent_dim=16, num_layers=1, ff_size=32, num_heads=4, audio_latent_dim=8, use_hubert=True)
    model = DiffSHEGDenoiser(cfg)
    assert model.encoder_ges.temporal_decoder_blocks[0].feat_proj[0].normalized_shape == (16 + 8 + 128 + 103,)
    cond = _cond(10, 2)
    cond.hubert = torch.randn(2, 10, 1024)
    x0 = torch.randn(2, 10, 232)
    model.train()
    r = training_losses(model, x0, cond, generator=torch.Generator().manual_seed(0))
    r["loss"].backward()
    assert torch.isfinite(r["loss"])
    model.eval()
    out = sample_ddim(model, cond, steps=5, noise=torch.Generator().manual_seed(0))
    assert out.shape == (2, 10, 232) and torch.isfinite(out).all()
    with pytest.raises(ValueError):
        sample_ddim(model, _cond(10, 2), steps=5)  # HuBERT missing


# -----------------------------------------------------------------------------
# Diffusion


def test_respacing_and_foppas_schedule():
    base = NoiseSchedule.linear()
    assert base.respaced(25).timesteps.tolist() == list(range(0, 1000, 40))
    assert base.respaced(5).timesteps.tolist() == [0, 200, 400, 600, 800]
    np.testing.assert_allclose(base.respaced(25).alphas_cumprod, base.alphas_cumprod[::40], rtol=1e-12)
    for (jl, jn), (down, up) in {(3, 5): (63, 48), (3, 2): (27, 12), (3, 1): (15, 0)}.items():
        walk = foppas_schedule(25, jl, jn)
        assert walk[0] == 14 and walk[-1] == -1
        steps = np.diff(walk)
        assert (np.abs(steps) == 1).all()
        assert ((steps < 0).sum(), (steps > 0).sum()) == (down, up)


@needs_golden
def test_training_losses_terms(golden_model):
    golden_model.train()
    try:
        r = training_losses(golden_model, torch.randn(3, 12, 232), _cond(12, 3),
                            generator=torch.Generator().manual_seed(3))
    finally:
        golden_model.eval()
    assert r["null_rows"].shape == (3,) and r["null_rows"].dtype == torch.bool
    torch.testing.assert_close(r["loss"], r["loss_eps"] + r["loss_vel"] + r["loss_x0"])
    torch.testing.assert_close(r["loss_vel_logged"], 100 * r["loss_vel"])


@needs_golden
def test_ddim_is_deterministic_given_a_seed(golden_model):
    cond = _cond(16, 2)
    a = sample_ddim(golden_model, cond, steps=5, noise=torch.Generator().manual_seed(7))
    b = sample_ddim(golden_model, cond, steps=5, noise=torch.Generator().manual_seed(7))
    c = sample_ddim(golden_model, cond, steps=5, noise=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_foppas_windows_cover_exactly():
    for length in [1, 5, 16, 17, 20, 23, 29, 34, 35, 100, 1001]:
        window, overlap = 16, 4
        wins = foppas_windows(length, window, overlap)
        if length <= window:
            assert wins == [(0, length)]
            continue
        assert wins[0][0] == 0 and wins[-1][0] + wins[-1][1] == length
        for (s0, n0), (s1, n1) in zip(wins, wins[1:]):
            assert n0 == window and s1 == s0 + window - overlap  # consecutive windows share `overlap` frames
        assert wins[-1][1] > overlap
    assert foppas_windows(34, 16, 4) == [(0, 16), (12, 16), (24, 10)]  # the golden case


FAST = SamplerConfig(ddim_steps=10, cond_scale=1.15, window=16, overlap=4, jump_length=3, jump_n_sample=2)


@needs_golden
@pytest.mark.parametrize("length", [1, 7, 16, 17, 23, 30, 41])
def test_foppas_output_has_requested_length(golden_model, length):
    cond = _cond(45)
    out = sample_foppas(golden_model, cond, length, FAST, noise=torch.Generator().manual_seed(0))
    assert out.shape == (1, length, 232)
    assert torch.isfinite(out).all()


@needs_golden
def test_foppas_overlap_comes_from_previous_window(golden_model):
    cond = _cond(41)
    ov = FAST.overlap
    # no blend: the known frames are re-imposed exactly at the last step (abar_prev = 1)
    no_blend = SamplerConfig(**{**FAST.__dict__, "blend": False})
    wins = list(foppas_stream(golden_model, cond, 41, no_blend, noise=torch.Generator().manual_seed(0)))
    assert len(wins) == 4
    for prev, nxt in zip(wins, wins[1:]):
        assert torch.equal(nxt.motion[:, :ov], prev.motion[:, -ov:])
        assert not torch.equal(nxt.motion[:, ov:ov + 1], prev.motion[:, -1:])
    # with the blend: a crossfade that starts exactly on the previous window's tail
    wins = list(foppas_stream(golden_model, cond, 41, FAST, noise=torch.Generator().manual_seed(0)))
    for prev, nxt in zip(wins, wins[1:]):
        assert torch.equal(nxt.motion[:, 0], prev.motion[:, -ov])
    # the assembled output is the windows' new frames, in order
    full = sample_foppas(golden_model, cond, 41, FAST, noise=torch.Generator().manual_seed(0))
    torch.testing.assert_close(full, torch.cat([w.new_frames for w in wins], 1), rtol=0, atol=0)


@needs_golden
def test_foppas_is_causal(golden_model):
    """Changing the audio after window k leaves windows 0..k untouched (streams window by window)."""
    cond = _cond(41)
    later = Conditions(cond.mel.clone(), cond.person_id)
    later.mel[:, 30:] += 5.0  # only the last window (frames 36-40) and the one before (24-39) see it
    a = list(foppas_stream(golden_model, cond, 41, FAST, noise=torch.Generator().manual_seed(0)))
    b = list(foppas_stream(golden_model, later, 41, FAST, noise=torch.Generator().manual_seed(0)))
    assert [w.start for w in a] == [0, 12, 24, 36]
    assert torch.equal(a[0].motion, b[0].motion) and torch.equal(a[1].motion, b[1].motion)
    assert not torch.equal(a[2].motion, b[2].motion)


# -----------------------------------------------------------------------------
# Motion channels and statistics


def test_channel_mapping_round_trip():
    rng = np.random.default_rng(0)
    motion = rng.normal(size=(9, 232)).astype(np.float32)
    smplx = to_smplx(motion)
    assert smplx["poses"].shape == (9, 55, 3) and smplx["expressions"].shape == (9, 100)
    assert (smplx["trans"] == 0).all()
    np.testing.assert_array_equal(from_smplx(smplx["poses"], smplx["expressions"]), motion)
    p = smplx["poses"]
    np.testing.assert_array_equal(p[:, 3], motion[:, 0:3])  # spine1
    np.testing.assert_array_equal(p[:, 9], motion[:, 6:9])  # spine3
    np.testing.assert_array_equal(p[:, 12], motion[:, 9:12])  # neck
    np.testing.assert_array_equal(p[:, 21], motion[:, 36:39])  # right wrist
    np.testing.assert_array_equal(p[:, 25], motion[:, 39:42])  # left index 1
    np.testing.assert_array_equal(p[:, 40], motion[:, 84:87])  # right index 1
    np.testing.assert_array_equal(p[:, 54], motion[:, 126:129])
    np.testing.assert_array_equal(p[:, 22], motion[:, 129:132])  # jaw
    np.testing.assert_array_equal(smplx["expressions"], motion[:, 132:])
    for rest in (0, 1, 2, 4, 5, 7, 8, 10, 11, 23, 24):
        assert (p[:, rest] == 0).all()
    mean, std = rng.normal(size=232).astype(np.float32), rng.uniform(0.1, 1, 232).astype(np.float32)
    np.testing.assert_allclose(normalize(denormalize(motion, mean, std), mean, std), motion, atol=1e-5)


@pytest.mark.skipif(not os.environ.get("DIFFSHEG_STATS"), reason="optional: set DIFFSHEG_STATS to the reference's talkshow_mean_std.npy (not redistributable) to check its real statistics")
def test_reference_statistics_file_matches_golden():
    """The reference's own file (assets/data.tar.gz: data/SHOW/talkshow_mean_std.npy, numpy-1 pickle)."""
    stats = load_talkshow_stats(os.environ["DIFFSHEG_STATS"])
    inp = np.load(GOLDEN / "inputs.npz")
    for k, v in stats.items():
        np.testing.assert_array_equal(v, inp[f"stats_{k}"])
    mean, std = norm_stats_232(**stats)
    np.testing.assert_array_equal(mean, inp["norm_mean_232"])
    np.testing.assert_array_equal(std, inp["norm_std_232"])


def test_statistics_file_and_jaw_quirk(tmp_path):
    rng = np.random.default_rng(0)
    stats = {"pose_mean": rng.normal(size=165), "pose_std": rng.uniform(0.1, 1, 165),
             "expression_mean": rng.normal(size=100), "expression_std": rng.uniform(0.1, 1, 100)}
    path = tmp_path / "talkshow_mean_std.npy"
    np.save(path, stats, allow_pickle=True)
    loaded = load_talkshow_stats(str(path))
    for k, v in stats.items():
        np.testing.assert_array_equal(loaded[k], v)
    mean, std = norm_stats_232(**loaded)
    np.testing.assert_array_equal(std[129:132], np.float32(stats["pose_mean"][0:3]))  # jaw std = jaw mean
    np.testing.assert_array_equal(mean[129:132], np.float32(stats["pose_mean"][0:3]))
    np.testing.assert_array_equal(mean[0:3], np.float32(stats["pose_mean"][12 + 6:12 + 9]))  # joint 3 in body
    np.testing.assert_array_equal(std[39:42], np.float32(stats["pose_std"][75:78]))  # joint 25: first hand

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    bad = tmp_path / "evil.npy"
    np.save(bad, np.array(Evil(), dtype=object), allow_pickle=True)
    with pytest.raises(pickle.UnpicklingError):
        load_talkshow_stats(str(bad))


# -----------------------------------------------------------------------------
# Audio


def test_mel_frame_count_and_rates():
    wave = np.random.default_rng(0).normal(size=16000 * 2 + 123).astype(np.float32) * 0.1
    mel = mel_features(wave)
    assert mel.shape == (n_motion_frames(len(wave)), 128) == (60, 128)
    assert mel_features(wave, fps=15).shape == (30, 128)


def test_hubert_chunking_with_a_stand_in_model():
    calls = []

    def fake(x):  # a HuBERT-shaped stand-in: floor((n - 400) / 320) + 1 frames of 1024
        calls.append(x.shape[1])
        n = (x.shape[1] - 400) // 320 + 1
        return torch.arange(n, dtype=torch.float32)[None, :, None].expand(1, n, 1024)

    wave = np.random.default_rng(0).normal(size=50_000).astype(np.float32)
    feats = hubert_features(wave, n_motion_frames(len(wave)), fake, chunk=16_000)
    assert feats.shape == (93, 1024)
    assert calls == [16_080, 16_080, 16_080, 2_000]  # chunks of chunk + 80 samples, then the rest


@needs_golden
def test_reference_style_checkpoint_loads_weights_only(golden_model, tmp_path):
    """The released .tar layout: state dict under 'encoder', Adam state, numpy scalar metrics."""
    from emage_core.models.diffsheg.model import load_denoiser

    sd = golden_model.state_dict()
    opt = torch.optim.Adam(golden_model.parameters(), lr=2e-4)
    ckpt = {"encoder": sd, "opt_encoder": opt.state_dict(), "ep": 2599, "total_it": 123,
            "FGD": np.float64(1.5), "best_fgd": np.float64(1.2), "MSE": 0.3, "best_mse": None,
            "PCK": np.float32(0.5), "best_pck": np.int64(3)}
    path = tmp_path / "ckpt_e2599.tar"
    torch.save(ckpt, path)
    model = load_denoiser(str(path), golden_model.cfg)
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k])


def test_train_step_updates_weights():
    from emage_core.models.diffsheg.diffusion import make_optimizer, train_step

    torch.manual_seed(0)
    model = DiffSHEGDenoiser(DiffSHEGConfig(latent_dim=16, num_layers=1, ff_size=32, num_heads=4,
                                            audio_latent_dim=8, use_hubert=False))
    opt = make_optimizer(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    logs = train_step(model, opt, torch.randn(4, 12, 232, generator=g), _cond(12, 4), generator=g)
    assert np.isfinite(logs["loss"])
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert "encoder_ges.out.weight" in changed and "encoder_exp.null_cond_emb" in changed
    assert not any(k.endswith("PE.pe") for k in changed)


def test_compare_flags_errors_missing_keys_and_shapes(monkeypatch, capsys, tmp_path):
    from emage_core.cli import main
    from emage_core.models.diffsheg import parity

    gold = {"ddim_sample": np.full((2, 3), 10.0), "smplx_poses": np.zeros((2, 165)), "mel_30fps": np.ones((4, 128))}
    ours = {"ddim_sample": gold["ddim_sample"] + 1e-4,  # rel 1e-5 <= 2e-5
            "smplx_poses": gold["smplx_poses"] + 2e-5,  # abs 2e-5 > 1e-5
            "mel_30fps": np.ones((5, 128))}  # wrong shape
    rows = {r[0]: r for r in compare(ours, gold)}
    assert rows["ddim_sample"][3] and rows["ddim_sample"][2] == pytest.approx(2e-4)
    assert not rows["smplx_poses"][3]
    assert not rows["mel_30fps"][3] and rows["mel_30fps"][1] == float("inf")
    assert not compare({}, gold)[0][3]
    # the command line exits 1 beyond tolerance
    for name in ("inputs.npz", "outputs.npz"):
        np.savez(tmp_path / name, x=np.zeros(1))
    monkeypatch.setattr(parity, "run_parity", lambda d, audio=None: ours)
    monkeypatch.setattr(parity, "golden_with_inputs", lambda d: gold)
    assert main(["parity", "diffsheg", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "NO" in out and "beyond: mel_30fps, smplx_poses" in out
