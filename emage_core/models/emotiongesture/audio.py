"""EmotionGesture's audio input: a log-mel spectrogram with exactly one row per motion frame.

    log_mel(wav) -> (floor(N x 30 / 16000), 80) float32

Frame t (30 fps) is the 1024-sample (64 ms) Hann window centred on sample round((t + 0.5) x 16000 / 30),
zero-padded past either end of the speech, so every frame has its own audio whatever the length and
no frame drifts (16000 / 30 is not a whole number of samples). Power spectrum -> 80 Slaney mel bands
(0-8 kHz) -> decibels relative to the clip's loud level (the 99th percentile of the frames' loudest
band, so a microphone's gain does not matter; never below -30 dB, so near-silence stays quiet) ->
clipped at -80 dB -> divided by 80 (about [-1, 0]).
The training data's per-band mean and std (saved with the checkpoint) normalise it for the network.
"""
from __future__ import annotations

import functools

import numpy as np

from ...audio import SAMPLE_RATE
from ...motion.clip import DEFAULT_FPS as FPS

N_MELS = 80
N_FFT = 1024
TOP_DB = 80.0
REF_FLOOR_DB = -30.0  # speech at ordinary levels sits near +20 dB here
_CHUNK = 4096  # frames per FFT batch: bounds memory on long speech


@functools.lru_cache(maxsize=4)
def _mel_basis(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=0.0, fmax=sr / 2, htk=False,
                               norm="slaney").astype(np.float32)


def n_frames_of(n_samples: int, sr: int = SAMPLE_RATE, fps: int = FPS) -> int:
    """Motion frames for ``n_samples`` of speech: floor(N x fps / sr)."""
    return (n_samples * fps) // sr


def log_mel(wav: np.ndarray, sr: int = SAMPLE_RATE, fps: int = FPS, n_mels: int = N_MELS) -> np.ndarray:
    """(N,) speech -> (floor(N fps / sr), n_mels) float32 log-mel, one row per motion frame (see module)."""
    wav = np.asarray(wav, np.float32).reshape(-1)
    T = n_frames_of(wav.shape[0], sr, fps)
    half = N_FFT // 2
    padded = np.pad(wav, (half, half + N_FFT))
    centres = np.round((np.arange(T) + 0.5) * sr / fps).astype(np.int64)  # in the original signal
    window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann
    basis = _mel_basis(sr, N_FFT, n_mels)
    out = np.empty((T, n_mels), np.float32)
    offsets = np.arange(N_FFT)
    for a in range(0, T, _CHUNK):
        starts = centres[a:a + _CHUNK]  # window start in `padded` = centre - half + half
        frames = padded[starts[:, None] + offsets] * window
        power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
        out[a:a + _CHUNK] = power.astype(np.float32) @ basis.T
    db = 10.0 * np.log10(np.maximum(out, 1e-10))
    ref = max(float(np.percentile(db.max(axis=1), 99)) if T else REF_FLOOR_DB, REF_FLOOR_DB)
    return (np.maximum(db - ref, -TOP_DB) / TOP_DB).astype(np.float32)
