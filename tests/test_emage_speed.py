"""EMAGE's faster paths (audio encoded once per clip, a bfloat16 audio model) and the device choice.

The reference path (``audio_context="window"``, ``precision="float32"``, the defaults) is what the golden
parity tests check; these tests check that the faster paths compute what they claim, leave the float32
weights alone, and that generation runs on, and records, the device it was given.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from emage_core.generate.emage import EmageGenerator
from emage_core.generate.registry import load_cached
from emage_core.generate.settings import EmageOptions, GenerationSettings, SettingsError
from emage_core.models.emage import inference
from emage_core.models.emage.inference import SHARED_BLOCKS, SHARED_STRIDE, _ClipAudio, _shared_blocks, native_bf16, run
from emage_core.models.emage.model import EmageAudioConfig, EmageModels, VQConfig
from emage_core.models.emage.windows import plan_windows
from emage_core.models.hub import BUNDLED_CHECKPOINT

SR, SPF = 16000, 533
FAST = dict(overlap=8, snap_face=False, exact_audio_timing=True)


@pytest.fixture(scope="module")
def models() -> EmageModels:
    """A small random model (hidden 64, audio features 32): the encoders' layout is the released one."""
    torch.manual_seed(0)
    audio = EmageAudioConfig(hidden_size=64, audio_f=32, motion_f=32, vae_codebook_size=32)
    parts = {p: VQConfig(vae_test_dim=d, vae_length=32, vae_codebook_size=32, vae_layer=2)
             for p, d in (("face", 106), ("upper", 78), ("hands", 180), ("lower", 61), ("global", 61))}
    m = EmageModels.from_configs(audio, parts).eval()
    for bn in (mod for mod in m.audio.modules() if isinstance(mod, torch.nn.BatchNorm1d)):  # non-trivial statistics
        bn.running_mean.uniform_(-0.1, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    return m


def _speech(seconds: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, int(seconds * SR), generator=g) * 0.1


@torch.inference_mode()
def test_shared_blocks_equal_the_encoder_over_the_whole_clip(models):
    """Positions [q0, q1) of the shared blocks, computed on a stretch with its halo, are the encoder's
    first blocks run over the whole clip (same zero padding in front, same timing)."""
    enc = models.audio.audio_encoder_body
    audio = _speech(6.0)
    whole = enc.feat_extractor[:SHARED_BLOCKS](audio[:, None])  # the module pads 1600 samples itself
    padded = torch.nn.functional.pad(audio, (1600, 1600))
    # (within ~24 positions of the clip's ends they differ: the clip's stretch reads silence there, the
    # whole-clip encoder the zero padding of its inner convolutions)
    for q0, q1 in ((100, 900), (1000, 1041), (30, 300), (2900, whole.shape[2] - 30)):
        part = _shared_blocks(enc, padded, q0, q1)
        torch.testing.assert_close(part, whole[:, :, q0:q1], atol=1e-5, rtol=1e-4)


@torch.inference_mode()
def test_clip_features_are_the_last_blocks_on_the_clip_slice(models):
    """Each window's features: the last blocks on its slice of the clip's shared activations, starting
    at its audio start snapped to 30 samples (batched by window length, grouped `CLIP_GROUP` at a time)."""
    audio = _speech(40.0, seed=1)
    T = audio.shape[1] * 30 // SR
    plan = plan_windows(T, overlap=8)
    assert len(plan) > inference.CLIP_GROUP  # two groups
    starts = [round(w.start * SR / 30) for w in plan]
    clip = _ClipAudio(models.audio, audio, plan, starts, SPF)
    padded = torch.nn.functional.pad(audio, (1600, 40000))
    for enc, which in ((models.audio.audio_encoder_face, 0), (models.audio.audio_encoder_body, 1)):
        whole = enc.feat_extractor[:SHARED_BLOCKS](padded[:, 1600:][:, None])
        for i in (1, 2, inference.CLIP_GROUP - 1, inference.CLIP_GROUP, len(plan) - 1):  # (0: see above)
            q = round(starts[i] / SHARED_STRIDE)
            n = inference._window_positions(plan[i].length, SPF)
            want = enc.feat_extractor[SHARED_BLOCKS:](whole[:, :, q : q + n]).transpose(1, 2)
            assert want.shape[1] == plan[i].length
            torch.testing.assert_close(clip[i][which], want, atol=1e-5, rtol=1e-4)


def test_clip_context_runs_any_length(models):
    for seconds in (0.31, 2.0, 2.2, 17.3):
        audio = _speech(seconds, seed=2)
        T = audio.shape[1] * 30 // SR
        a = run(models, audio, audio_context="clip", **FAST)
        b = run(models, audio, audio_context="clip", **FAST)
        assert a["motion_axis_angle"].shape == (1, T, 165) and a["trans"].shape == (1, T, 3)
        assert all(torch.equal(a[k], b[k]) for k in a)
    ref = run(models, _speech(2.2, seed=2), audio_context="clip")  # the reference's windows and timing too
    assert ref["motion_axis_angle"].shape[1] == 66


def test_bfloat16_keeps_the_float32_weights(models):
    m = copy.deepcopy(models)
    before = {k: v.clone() for k, v in m.audio.state_dict().items()}
    audio = _speech(4.0, seed=3)
    out = run(m, audio, precision="bfloat16", **FAST)
    again = run(m, audio, precision="bfloat16", **FAST)
    assert all(torch.equal(out[k], again[k]) for k in out)
    assert out["motion_axis_angle"].dtype == torch.float32 and out["latent_rec_upper"].dtype == torch.float32
    import pickle

    pickle.dumps(m.audio)  # nothing unpicklable left on the module
    after = m.audio.state_dict()
    assert list(after) == list(before) and all(torch.equal(before[k], after[k]) and after[k].dtype == before[k].dtype
                                               for k in before)
    shadow = inference._bf16_audio(m.audio)
    assert shadow is inference._bf16_audio(m.audio)  # cast once, not per window or per call
    conv = shadow.audio_encoder_face.feat_extractor[0].conv1
    assert conv.weight.dtype == torch.bfloat16  # (linear layers: packed for oneDNN where it can)
    assert torch.equal(shadow.face_out_proj(torch.ones(2, 64)), torch.nn.functional.linear(
        torch.ones(2, 64).bfloat16(), m.audio.face_out_proj.weight.bfloat16(), m.audio.face_out_proj.bias.bfloat16()))
    assert shadow.position_embeddings.pe.dtype == torch.float32  # norms, embeddings, buffers: shared float32
    # the first window starts from the same seeds: its latents are the float32 ones within bf16 error
    ref = run(m, audio, **FAST)
    torch.testing.assert_close(out["latent_rec_face"][:, :40], ref["latent_rec_face"][:, :40], atol=0.1, rtol=0.05)
    with torch.no_grad():  # new weights (training, loading): the cast copy follows
        m.audio.audio_encoder_face.feat_extractor[0].conv1.weight.mul_(2)
        m.audio.face_out_proj.weight.mul_(2)
    assert inference._bf16_audio(m.audio) is not shadow
    new = inference._bf16_audio(m.audio)
    assert new.audio_encoder_face.feat_extractor[0].conv1.weight.float().allclose(
        m.audio.audio_encoder_face.feat_extractor[0].conv1.weight, rtol=1e-2)
    assert torch.equal(new.face_out_proj(torch.ones(2, 64)), torch.nn.functional.linear(
        torch.ones(2, 64).bfloat16(), m.audio.face_out_proj.weight.bfloat16(), m.audio.face_out_proj.bias.bfloat16()))


def test_guided_fast_path(models):
    m = copy.deepcopy(models)
    cfg = EmageAudioConfig(hidden_size=64, audio_f=32, motion_f=32, vae_codebook_size=32, emotion_labels=("a", "b"))
    state = m.audio.state_dict()
    m.audio = type(m.audio)(cfg).eval()
    missing, unexpected = m.audio.load_state_dict(state, strict=False)
    assert missing == ["emotion_embedding.weight"] and not unexpected
    audio = _speech(3.0, seed=4)
    out = run(m, audio, emotion=1, guidance=2.0, audio_context="clip", precision="bfloat16", **FAST)
    assert out["motion_axis_angle"].shape[1] == 90


def test_bad_options(models):
    with pytest.raises(ValueError, match="audio_context"):
        run(models, _speech(1.0), audio_context="song")
    with pytest.raises(ValueError, match="precision"):
        run(models, _speech(1.0), precision="float16")
    with pytest.raises(SettingsError, match="audio_context"):
        EmageOptions(audio_context="song").validate()
    with pytest.raises(SettingsError, match="precision"):
        EmageOptions(precision="int8").validate()


def test_defaults_are_the_fast_path_and_the_reference_preset_is_the_reference():
    assert (EmageOptions().audio_context, EmageOptions().precision) == ("clip", "auto")
    ref = GenerationSettings.reference_preset("emage").emage
    assert (ref.overlap, ref.snap_face, ref.exact_audio_timing, ref.audio_context, ref.precision) == (
        0, True, False, "window", "float32")


def test_cli_speed_flags():
    import argparse

    from emage_core.cli.generate import _generation_options, settings_from_args

    p = argparse.ArgumentParser()
    _generation_options(p)
    s = settings_from_args(p.parse_args([]))
    assert (s.emage.audio_context, s.emage.precision) == ("clip", "auto")
    s = settings_from_args(p.parse_args(["--precision", "float32"]))
    assert (s.emage.audio_context, s.emage.precision) == ("clip", "float32")
    s = settings_from_args(p.parse_args(["--audio-context", "window", "--precision", "float32"]))
    assert (s.emage.audio_context, s.emage.precision) == ("window", "float32")


# -- the device: honoured and recorded ------------------------------------------------------------


def _wave(seconds: float) -> np.ndarray:
    return _speech(seconds, seed=5)[0].numpy()


def test_device_is_honoured_and_recorded_on_cpu():
    gen = EmageGenerator.from_pretrained(BUNDLED_CHECKPOINT, device="cpu")
    assert gen.device == torch.device("cpu")
    assert all(p.device.type == "cpu" for m in gen.models.as_dict().values() for p in m.parameters())
    clip = gen.generate(_wave(2.5), seed=0, audio_context="window", precision="float32")[0]
    assert clip.meta["device"] == "cpu"
    assert (clip.meta["audio_context"], clip.meta["precision"]) == ("window", "float32")
    fast = gen.generate(_wave(2.5), seed=0)[0]  # the defaults
    assert fast.meta["audio_context"] == "clip"
    assert fast.meta["precision"] == ("bfloat16" if native_bf16("cpu") else "float32")  # what ran, not "auto"
    assert fast.meta["settings"]["emage"]["precision"] == "auto"  # and what was asked
    # the app's worker loads through the registry with its device
    assert load_cached("emage", device="cpu").device == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="optional: needs a CUDA GPU (none here)")
def test_cuda_generation_end_to_end():
    cpu = EmageGenerator.from_pretrained(BUNDLED_CHECKPOINT, device="cpu")
    gpu = EmageGenerator.from_pretrained(BUNDLED_CHECKPOINT, device="cuda")
    assert gpu.device.type == "cuda"
    wav = _wave(6.0)
    a = cpu.generate(wav, seed=0)[0]
    b = gpu.generate(wav, seed=0)[0]
    assert b.meta["device"].startswith("cuda")
    assert np.abs(a.poses - b.poses).mean() < 0.05  # float32 on both: the same motion up to rounding
    fast = gpu.generate(wav, seed=0, audio_context="clip", precision="auto")[0]
    assert fast.meta["precision"] == ("bfloat16" if torch.cuda.is_bf16_supported() else "float32")
    assert fast.n_frames == a.n_frames
    worker_gen = load_cached("emage", device="cuda")
    assert worker_gen.generate(wav, seed=0)[0].meta["device"].startswith("cuda")


def test_bfloat16_without_packed_linears(models, monkeypatch):
    """Where torch lacks oneDNN's packed linear (private ops), the bf16 copy uses F.linear."""
    monkeypatch.setattr(inference, "_packed_linear_works", lambda: False)
    m = copy.deepcopy(models)
    out = run(m, _speech(2.0, seed=6), precision="bfloat16", audio_context="clip", **FAST)
    assert inference._bf16_audio(m.audio).face_out_proj.weight.shape == m.audio.face_out_proj.weight.shape
    assert out["motion_axis_angle"].shape[1] == 60
