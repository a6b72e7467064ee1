"""Parity of emage_core.models.emage.model / emage_core.models.emage.inference with the official EMAGE implementation.

Uses the reference data in ``shared/reference/emage`` (manifests of every state-dict key, a
reduced-size checkpoint in Hub layout and the official pipeline's outputs for it).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from emage_core.models.emage.inference import run
from emage_core.models.emage.windows import plan_windows
from emage_core.models.emage.model import EmageAudioConfig, EmageModels, VQConfig
from parity import assert_axis_angle_matches, assert_rot6d_motion_matches

REF = Path(__file__).resolve().parents[2] / "shared" / "reference" / "emage"
GOLDEN = REF / "golden"
PARTS = ("face", "upper", "hands", "lower", "global")
FIELD = {"face": "face", "upper": "upper", "hands": "hands", "lower": "lower", "global": "global_"}
ATOL = 1e-4

pytestmark = pytest.mark.skipif(not REF.is_dir(), reason=f"reference data not found at {REF}")


def _manifest(name: str) -> dict:
    return json.loads((REF / name).read_text())


def _components(models: EmageModels):
    yield "emage_audio", models.audio
    for p in PARTS:
        yield f"emage_vq/{p}", getattr(models, FIELD[p])


@pytest.fixture(scope="module")
def golden_models() -> EmageModels:
    audio_cfg = json.loads((GOLDEN / "config.json").read_text())
    part_cfgs = {p: json.loads((GOLDEN / "emage_vq" / p / "config.json").read_text()) for p in PARTS}
    models = EmageModels.from_configs(audio_cfg, part_cfgs)
    models.audio.load_state_dict(load_file(GOLDEN / "model.safetensors"), strict=True)
    for p in PARTS:
        getattr(models, FIELD[p]).load_state_dict(load_file(GOLDEN / "emage_vq" / p / "model.safetensors"), strict=True)
    return models.eval()


@pytest.fixture(scope="module")
def inputs() -> dict[str, np.ndarray]:
    with np.load(GOLDEN / "inputs.npz") as z:
        return {k: z[k] for k in ("a2s", "b2p5s")}


# -- (a) structure ---------------------------------------------------------------------------


@pytest.mark.parametrize("manifest", ["manifest_reduced.json", "manifest_official.json"])
def test_state_dict_matches_manifest(manifest):
    subs = _manifest(manifest)["submodels"]
    with torch.device("meta"):  # the official size has 153 M parameters: shapes are all we need
        models = EmageModels.from_configs(subs["emage_audio"]["config"], {p: subs[f"emage_vq/{p}"]["config"] for p in PARTS})
    for key, module in _components(models):
        expected = [(e["key"], tuple(e["shape"]), e["dtype"]) for e in subs[key]["state_dict"]]
        got = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in module.state_dict().items()]
        assert got == expected, key
        params = {e["key"] for e in subs[key]["state_dict"] if e["is_parameter"]}
        assert set(dict(module.named_parameters())) == params, key
        assert sum(p.numel() for p in module.parameters()) == subs[key]["num_parameters"], key


def test_configs_ignore_unknown_keys():
    cfg = EmageAudioConfig.from_dict({"hidden_size": 128, "transformers_version": "x", "architectures": []})
    assert cfg.hidden_size == 128 and cfg.motion_dim == 337
    assert VQConfig.from_dict({"vae_layer": 2, "name_pyfile": "y"}).vae_layer == 2


# -- (b) loading, (c) one window ------------------------------------------------------------


def test_golden_weights_load_strict(golden_models):
    # strict=True in the fixture already; also check the values really arrived
    sd = load_file(GOLDEN / "emage_vq" / "hands" / "model.safetensors")
    assert torch.equal(golden_models.hands.quantizer.embedding.weight, sd["quantizer.embedding.weight"])


def test_forward_window64(golden_models, inputs):
    with np.load(GOLDEN / "forward_window64.npz") as z:
        ref = {k: z[k] for k in z.files}
    audio = torch.from_numpy(inputs["b2p5s"][:34112])[None]
    args = (torch.from_numpy(ref["speaker_id"]), torch.from_numpy(ref["masked_motion"]), torch.from_numpy(ref["mask"]))
    for grad_mode in (torch.no_grad, torch.inference_mode):
        with grad_mode():
            out = golden_models.audio(audio, *args)
        for k in ("rec_face", "rec_upper", "rec_hands", "rec_lower", "cls_face", "cls_upper", "cls_hands", "cls_lower"):
            np.testing.assert_allclose(out[k].numpy(), ref[k], atol=ATOL, rtol=0, err_msg=k)


def test_use_audio_false_and_training_forward(golden_models, inputs):
    audio_model = copy.deepcopy(golden_models.audio)  # training mode updates BatchNorm statistics
    T = 16
    audio = torch.from_numpy(inputs["a2s"][: T * 533])[None]
    motion = torch.randn(1, T, 337)
    mask = torch.ones(1, T, 337)
    mask[:, :4] = 0
    spk = torch.zeros(1, 1, dtype=torch.long)
    with torch.no_grad():
        a = audio_model(audio, spk, motion, mask, use_audio=True)
        b = audio_model(audio, spk, motion, mask, use_audio=False)
    assert torch.equal(a["rec_face"], b["rec_face"])  # the switch only concerns the body
    assert not torch.allclose(a["rec_upper"], b["rec_upper"])
    audio_model.train()
    out = audio_model(audio, spk, motion, mask, use_audio=False)
    sum(v.square().mean() for v in out.values()).backward()
    assert audio_model.mask_embedding.grad is not None


# -- (d) the whole pipeline ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a2s", "b2p5s"])
def test_run_matches_golden(golden_models, inputs, name):
    with np.load(GOLDEN / f"outputs_{name}.npz") as z:
        ref = {k: z[k] for k in z.files}
    calls = []
    out = run(golden_models, torch.from_numpy(inputs[name])[None], progress=lambda f, m: calls.append(f))
    assert calls and calls[-1] == 1.0
    for k, want in ref.items():
        got = out[k].cpu().numpy()
        assert got.shape == want.shape, k
        if want.dtype.kind == "i":
            np.testing.assert_array_equal(got, want, err_msg=k)
        elif k == "motion_axis_angle":
            assert_axis_angle_matches(got, want)
        elif k == "all_motion4inference":
            assert_rot6d_motion_matches(got, want)
        else:
            np.testing.assert_allclose(got, want, atol=ATOL, rtol=0, err_msg=k)
    np.testing.assert_array_equal(out["face_index"].numpy(), ref["face_index_from_latent"])


def test_chunked_decode_matches_golden(golden_models, inputs, monkeypatch):
    """The final decode runs in chunks with receptive-field context: seams must not show."""
    import emage_core.models.emage.inference as inference

    monkeypatch.setattr(inference, "DECODE_CHUNK", 16)
    out = run(golden_models, torch.from_numpy(inputs["b2p5s"])[None])
    with np.load(GOLDEN / "outputs_b2p5s.npz") as z:
        assert_axis_angle_matches(out["motion_axis_angle"].numpy(), z["motion_axis_angle"])
        assert_rot6d_motion_matches(out["all_motion4inference"].numpy(), z["all_motion4inference"])
        for k in ("expression", "trans"):
            np.testing.assert_allclose(out[k].numpy(), z[k], atol=ATOL, rtol=0, err_msg=k)


# -- (e) any length -------------------------------------------------------------------------


def test_plan_covers_every_frame_once():
    for n in range(9, 400):
        plan = plan_windows(n)
        covered = np.zeros(n, int)
        for i, w in enumerate(plan):
            stop = plan[i + 1].start + plan[i + 1].keep if i + 1 < len(plan) else w.end
            covered[w.start + w.keep : stop] += 1
            assert w.n_seed >= 4 and w.end <= n
            if i:  # seeds come from frames the previous window decoded
                assert plan[i - 1].start <= w.start and w.start + w.n_seed <= plan[i - 1].end
        assert (covered == 1).all(), n
    # where the reference returns every frame, the windows are its own
    assert [(w.start, w.length) for w in plan_windows(75)] == [(0, 64), (60, 15)]
    assert [(w.start, w.length) for w in plan_windows(60)] == [(0, 60)]


@pytest.mark.parametrize(
    "n_samples",
    [4800, 8000, 64 * 533, 64 * 533 + 1000, 65 * 533, 4799, 1000]  # 0.3 s, 0.5 s, the 64-frame edges, < 9 frames
    + [(60 * k + 4 + r) * 16000 // 30 + 7 for k in (1, 2) for r in (0, 1, 2, 3, 4)],  # remainders the reference drops
)
def test_any_length_gives_exactly_T_frames(golden_models, n_samples):
    audio = torch.from_numpy(np.random.default_rng(n_samples).standard_normal(n_samples).astype(np.float32) * 0.1)
    T = n_samples * 30 // 16000
    out = run(golden_models, audio[None])
    for k, v in out.items():
        assert v.shape[:2] == (1, T), k
        assert torch.isfinite(v.float()).all(), k
    assert out["motion_axis_angle"].shape == (1, T, 165) and out["trans"].shape == (1, T, 3)


def test_exact_audio_timing(golden_models, inputs):
    audio = torch.from_numpy(inputs["b2p5s"])[None]
    ref = run(golden_models, audio)
    exact = run(golden_models, audio, exact_audio_timing=True)
    assert exact["motion_axis_angle"].shape == ref["motion_axis_angle"].shape
    # the first window starts at sample 0 either way; the second at 32000 instead of 31980
    torch.testing.assert_close(exact["latent_rec_upper"][:, :60], ref["latent_rec_upper"][:, :60])
    assert not torch.allclose(exact["latent_rec_upper"][:, 60:], ref["latent_rec_upper"][:, 60:])


def test_extension_keeps_reference_frames(golden_models):
    """T = 124 (the reference drops 4 frames): frames 0-119 equal those of a longer clip."""
    audio = torch.from_numpy(np.random.default_rng(1).standard_normal(16000 * 5).astype(np.float32) * 0.1)
    short = run(golden_models, audio[None, : 124 * 16000 // 30 + 1])
    long = run(golden_models, audio[None, : 140 * 16000 // 30 + 1])
    assert short["upper_index"].shape[1] == 124
    for k in ("upper_index", "hands_index", "lower_index", "face_index", "latent_rec_face", "latent_cls_lower"):
        torch.testing.assert_close(short[k][:, :120], long[k][:, :120], atol=1e-5, rtol=0, msg=k)


def test_given_motion_seeds_and_reference_translation(golden_models, inputs):
    audio = torch.from_numpy(inputs["a2s"])[None]
    T = 60
    motion = torch.zeros(1, T, 337)
    motion[..., : 330] = torch.tensor([1.0, 0, 0, 0, 1, 0]).repeat(55)
    motion[:, :, 330:333] = torch.tensor([0.5, 0.9, -2.0])
    out = run(golden_models, audio, motion=motion)
    default = run(golden_models, audio)
    # identity seeds either way, so only the integration start of x and z moves
    torch.testing.assert_close(out["trans"][..., 0] - default["trans"][..., 0], torch.full((1, T), 0.5), atol=1e-5, rtol=0)
    torch.testing.assert_close(out["trans"][..., 2] - default["trans"][..., 2], torch.full((1, T), -2.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(out["trans"][..., 1], default["trans"][..., 1])
    # locking: a given (mask 0) channel changes the result
    mask = torch.ones(1, T, 337)
    mask[:, 20:40, :78] = 0
    locked = run(golden_models, audio, motion=torch.randn(1, T, 337), mask=mask)
    assert not torch.equal(locked["latent_rec_upper"], default["latent_rec_upper"])


# -- (f) sampling ---------------------------------------------------------------------------


def test_temperature_sampling(golden_models, inputs):
    audio = torch.from_numpy(inputs["b2p5s"])[None]
    codes = lambda o: torch.cat([o[f"{p}_index"] for p in ("upper", "hands", "lower")])  # noqa: E731
    a = run(golden_models, audio, temperature=1.0, generator=torch.Generator().manual_seed(1))
    b = run(golden_models, audio, temperature=1.0, generator=torch.Generator().manual_seed(1))
    c = run(golden_models, audio, temperature=1.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(codes(a), codes(b))
    assert torch.equal(a["motion_axis_angle"], b["motion_axis_angle"])
    assert not torch.equal(codes(a), codes(c))
    # temperature 0 is the deterministic argmax whatever the generator
    d = run(golden_models, audio, temperature=0.0, generator=torch.Generator().manual_seed(3))
    e = run(golden_models, audio)
    assert torch.equal(codes(d), codes(e))
    with np.load(GOLDEN / "outputs_b2p5s.npz") as z:
        assert np.array_equal(d["upper_index"].numpy(), z["upper_index"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="optional: needs a CUDA GPU (none here)")
def test_cuda_matches_cpu(golden_models, inputs):
    audio = torch.from_numpy(inputs["b2p5s"])[None]
    cpu = run(golden_models, audio)
    models = EmageModels(**{k: v for k, v in vars(golden_models).items()})
    try:
        gpu = run(models.to("cuda"), audio)
        assert gpu["motion_axis_angle"].device.type == "cuda"
        torch.testing.assert_close(gpu["latent_rec_upper"].cpu(), cpu["latent_rec_upper"], atol=1e-3, rtol=0)
        run(models, audio, temperature=0.7, generator=torch.Generator().manual_seed(0))  # CPU generator, CUDA model
    finally:
        golden_models.to("cpu")
