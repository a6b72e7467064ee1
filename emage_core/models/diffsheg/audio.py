"""Audio conditions of DiffSHEG (SHOW): a 128-bin mel spectrogram per motion frame, and HuBERT.

Mel (ours, 30 fps = the motion's frame rate): speech -> 18 kHz (band-limited resampling) -> power
mel spectrogram (n_fft 2048, Hann 2048, hop 600, centred with zero padding, 128 Slaney bands
0-9 kHz, Slaney norm, power 2, no log) -> the first floor(N x 30 / sr) frames.

The reference's custom-audio path (``mel_reference_15fps``) resamples to 22,050 Hz first (what
``librosa.load`` does), then to 18 kHz, uses hop 1200 and drops the last frame: ~15 frames per
second for a 30-fps model (upstream issue #16). Kept only as an explicit option.

HuBERT (released model only): ``facebook/hubert-large-ls960-ft`` last hidden state (1024-d,
50 per second), computed in chunks on 16 kHz audio and linearly interpolated to the motion frames.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ...audio import SAMPLE_RATE
from ...motion.clip import DEFAULT_FPS as FPS

MEL_SR = 18000
N_MELS = 128
N_FFT = 2048


def n_motion_frames(n_samples: int, sr: int = SAMPLE_RATE, fps: int = FPS) -> int:
    """Frames of motion for ``n_samples`` of audio: floor(N x fps / sr)."""
    return (n_samples * fps) // sr


def resample(wave: np.ndarray, orig_sr: int, target_sr: int, res_type: str | None = None) -> np.ndarray:
    """Band-limited resampling via librosa (default: its default, soxr_hq in librosa >= 0.10;
    the reference used librosa 0.9.2's ``kaiser_best`` (resampy), pass it if resampy is installed)."""
    import librosa

    kw = {} if res_type is None else {"res_type": res_type}
    return librosa.resample(np.asarray(wave, dtype=np.float32), orig_sr=orig_sr, target_sr=target_sr, **kw)


def power_mel(wave_18k: np.ndarray, hop_length: int) -> np.ndarray:
    """(N,) 18 kHz waveform -> (frames, 128) power mel spectrogram, no log."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=wave_18k, sr=MEL_SR, n_fft=N_FFT, hop_length=hop_length, win_length=N_FFT, window="hann",
        center=True, pad_mode="constant", power=2.0, n_mels=N_MELS, fmin=0.0, fmax=MEL_SR / 2,
        htk=False, norm="slaney",
    )
    return np.ascontiguousarray(mel.T)


def mel_features(wave: np.ndarray, sr: int = SAMPLE_RATE, fps: int = FPS,
                 res_type: str | None = None) -> np.ndarray:
    """Mel condition at the motion frame rate: (floor(N fps / sr), 128) float32.

    ``fps`` must divide 18000 (30 -> hop 600; 15 -> hop 1200, the reference's BEAT recipe).
    """
    if MEL_SR % fps:
        raise ValueError(f"fps {fps} does not divide {MEL_SR}")
    wave_18k = wave if sr == MEL_SR else resample(wave, sr, MEL_SR, res_type)
    mel = power_mel(wave_18k, MEL_SR // fps)
    n = n_motion_frames(len(wave), sr, fps)
    if mel.shape[0] < n:
        raise AssertionError(f"mel has {mel.shape[0]} frames, {n} needed")
    return mel[:n].astype(np.float32)


def mel_reference_15fps(wave: np.ndarray, sr: int = SAMPLE_RATE, res_type: str | None = None) -> np.ndarray:
    """The reference's custom-audio features (bug: ~15 fps for a 30-fps model) -> (frames, 128).

    ``librosa.load`` resamples to 22,050 Hz; then 22,050 -> 18,000, hop 1200, last frame dropped.
    """
    wave_22k = wave if sr == 22050 else resample(wave, sr, 22050, res_type)
    wave_18k = resample(wave_22k, 22050, MEL_SR, res_type)
    return power_mel(wave_18k, 1200)[:-1].astype(np.float32)


# -----------------------------------------------------------------------------
# HuBERT


HUBERT_MODEL_ID = "facebook/hubert-large-ls960-ft"
HUBERT_KERNEL, HUBERT_STRIDE = 400, 320  # the CNN front end's receptive field and hop, in samples


def load_hubert(model_id: str = HUBERT_MODEL_ID, device: str = "cpu") -> Any:
    """``transformers.HubertModel`` in eval mode (needs ``transformers`` and the weights)."""
    from transformers import HubertModel

    return HubertModel.from_pretrained(model_id).eval().to(device)


def hubert_features(wave_16k: np.ndarray, n_frames: int, model: Any, chunk: int = 320_000) -> np.ndarray:
    """HuBERT last hidden states of 16 kHz speech, interpolated to ``n_frames`` -> (n_frames, 1024).

    As the reference: per-clip zero-mean unit-variance input (the processor's normalisation),
    floor((N - 80) / 320) feature frames computed in chunks of ``chunk`` (+80) samples, then linear
    interpolation with aligned corners. Unlike the reference (which fed 22,050 Hz audio labelled
    16 kHz), the input must really be 16 kHz. ``model(input (1, n)) -> .last_hidden_state (1, m, 1024)``.
    """
    import torch
    import torch.nn.functional as F

    x = np.asarray(wave_16k, dtype=np.float32)
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    x = torch.from_numpy(x)[None]
    n = x.shape[1]
    expected = (n - (HUBERT_KERNEL - HUBERT_STRIDE)) // HUBERT_STRIDE
    span = chunk - HUBERT_STRIDE + HUBERT_KERNEL  # chunk + 80: consecutive chunks share 80 samples
    feats = []
    with torch.no_grad():
        for start in range(0, n, chunk):
            piece = x[:, start: start + span]
            if piece.shape[1] < HUBERT_KERNEL:
                break
            out = model(piece)
            feats.append(getattr(out, "last_hidden_state", out)[0].float().cpu())
    h = torch.cat(feats) if feats else torch.zeros(0, 1024)
    if abs(h.shape[0] - expected) > 1:
        raise AssertionError(f"HuBERT gave {h.shape[0]} frames, expected {expected}")
    h = F.pad(h, (0, 0, 0, max(0, expected - h.shape[0])))[:expected]
    h = F.interpolate(h.T[None], size=n_frames, mode="linear", align_corners=True)[0].T
    return h.numpy()
