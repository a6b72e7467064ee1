"""EmotionGesture (Qi et al., 2023, arXiv 2305.18891), rebuilt from the paper for SMPL-X: speech ->
upper body and hands at 30 fps, with learned emotion labels and a sampled emotion latent.

``model`` (the network: audio encoder with emotion and beat heads, emotion classifier, word encoder,
emotion VAE, Spatial-Temporal Prompter, transformer encoder-decoder), ``losses`` (one function per
training term, with the formulas), ``channels`` (43 joints in 6D <-> SMPL-X), ``audio`` (log-mel, one
row per frame), ``text`` (TextGrid words per frame), ``inference`` (windows of any length),
``checkpoint`` (our safe layout).
"""
from .checkpoint import EmotionGestureCheckpoint, Statistics, load_pretrained, save_pretrained
from .model import EmotionGestureConfig, EmotionGestureModel

__all__ = ["EmotionGestureCheckpoint", "EmotionGestureConfig", "EmotionGestureModel", "Statistics",
           "load_pretrained", "save_pretrained"]
