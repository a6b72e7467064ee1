"""EmotionGesture's training objective, one function per term.

Notation: x (B, L, C) a pose sequence in normalised 6D channels (the S seed frames followed by the T
generated ones), x̂ the model's, Δ_t = x_{t+1} - x_t its offsets (B, L - 1, C).

    reconstruction      L_rec  = mean |x̂ - x| + mean |Δx̂ - Δx| + mean |Δ²x̂ - Δ²x|
                        (values over the generated frames, differences over seed + generated, so the first
                        generated frames must also continue the seed; ours: the paper says "reconstruction")
    prompter forecast   L_fc   = mean |f̂ - x|                                     (the prompter's own forecast)
    motion smooth       L_ms   = mean_{b,c} KL(p_{b,c} || q_{b,c}),
                        p = softmax_t(Δ / Γ),  q = softmax_t(Δ̂),  Γ = 10           [reconstruction of the paper]
    beat-text InfoNCE   L_nce  = -mean_{i in word frames} log softmax_j(<b_i, w_j> / τ)[j = i],
                        b, w L2-normalised beat and word features, j over every frame of the batch's
                        windows that have a transcript, τ = 0.1                        [reconstruction]
    emotion classifier  L_cls  = cross-entropy of the 8 BEAT labels (windows whose label is known), on the
                                 audio's emotion features e and on the VAE's ê (for the label it was given; ours)
    emotion VAE         L_vae  = mean |ê - sg(e)|^2 (sg: stop-gradient),  L_kl = KL(N(mu, σ²) || N(0, I))

The motion-smooth loss, as we reconstruct it from the paper's description ("the ground-truth offsets
smoothed with a temperature Γ = 10, and a KL divergence pulling the generated offsets toward them"):
dividing the real offsets by Γ before the softmax flattens their distribution over time, so a frame-to-
frame spike of capture jitter weighs 10x less in the target than in the generated motion. Its minimum
is at Δ̂ = Δ / Γ + const per channel: alone it damps all motion, but next to L_rec (which holds the
poses, i.e. the low frequencies, to the data) what it removes is mostly the high-frequency part, the
jitter. Which distribution is softened (only the target) and the softmax axis (time, per channel) are
our reading; the paper's exact formula was not reachable here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

SMOOTH_TEMPERATURE = 10.0  # the paper's Γ
INFONCE_TEMPERATURE = 0.1  # ours


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between (B, T, C) sequences."""
    return F.l1_loss(pred, target)


def motion_reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, seed: int) -> torch.Tensor:
    """L1 of the values after the first ``seed`` frames, plus L1 of the first and second frame-to-frame
    differences over the whole (B, L, C) sequences (seed + generated): jitter costs little in value but
    much in its differences, and a jump at the seed does too."""
    d1p, d1t = offsets(pred), offsets(target)
    return (F.l1_loss(pred[:, seed:], target[:, seed:]) + F.l1_loss(d1p, d1t)
            + F.l1_loss(offsets(d1p), offsets(d1t)))


def offsets(x: torch.Tensor) -> torch.Tensor:
    """(B, L, C) -> (B, L - 1, C) frame-to-frame offsets."""
    return x[:, 1:] - x[:, :-1]


def motion_smooth_loss(pred: torch.Tensor, target: torch.Tensor, temperature: float = SMOOTH_TEMPERATURE) -> torch.Tensor:
    """KL(softmax_t(Δ / Γ) || softmax_t(Δ̂)), mean over batch and channels (see the module docstring).

    pred, target: (B, L, C) pose sequences (seed + generated frames), L >= 3.
    """
    log_q = F.log_softmax(offsets(pred), dim=1)
    log_p = F.log_softmax(offsets(target) / temperature, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()


def beat_text_infonce(beat: torch.Tensor, text: torch.Tensor, words: torch.Tensor, has_text: torch.Tensor | None = None,
                      temperature: float = INFONCE_TEMPERATURE) -> torch.Tensor:
    """Emotion-Beat Mining's contrastive loss: each beat feature at a frame where a word is uttered must
    pick its own frame's word feature out of every frame of the batch (silent frames and other windows
    included as negatives).

    beat, text: (B, W, C) contrastive features; words: (B, W) int64 word rows (0 = no word);
    has_text: (B,) bool, windows with a transcript (default: all). Returns 0 when no frame has a word.
    """
    B, W, C = beat.shape
    has_text = torch.ones(B, dtype=torch.bool, device=beat.device) if has_text is None else has_text.bool()
    beat, text, words = beat[has_text], text[has_text], words[has_text]
    anchors = (words > 0).reshape(-1)
    if not anchors.any():
        return beat.sum() * 0.0
    b = F.normalize(beat.reshape(-1, C), dim=-1)
    w = F.normalize(text.reshape(-1, C), dim=-1)
    logits = b[anchors] @ w.T / temperature
    target = torch.nonzero(anchors).squeeze(1)
    return F.cross_entropy(logits, target)


def emotion_classification_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (B, 8) logits against (B,) BEAT label indices; -1 (unknown) is ignored."""
    known = target >= 0
    if not known.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[known], target[known])


def vae_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over the latent, mean over the batch; (B, Z) each."""
    return (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)).sum(dim=-1).mean()


def vae_reconstruction(emotion_hat: torch.Tensor, emotion: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the decoded emotion features against the audio's (not back-propagated into)."""
    return F.mse_loss(emotion_hat, emotion.detach())
