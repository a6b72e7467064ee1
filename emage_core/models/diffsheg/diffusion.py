"""DiffSHEG's diffusion process, kept apart from the network (diffusers-style split).

- ``NoiseSchedule``: linear betas (1e-4 .. 0.02, 1000 steps, float64) and the tables derived from
  them; ``respaced(N)`` gives the DDIM sub-schedule (timesteps 0, k, 2k, ...).
- ``training_losses``: the reference trainer's three loss terms.
- ``sample_ddim``: plain DDIM (eta 0 by default) with classifier-free guidance.
- ``foppas_stream`` / ``sample_foppas``: Fast Out-Painting-based Partial Autoregressive Sampling,
  DiffSHEG's arbitrary-length generation: overlapping windows, each later window outpaints the
  previous window's tail with RePaint-style resampling.

Randomness is injected: every function that needs Gaussian noise takes ``noise``, either a
``torch.Generator`` (or None: the global RNG) or a callable ``noise(kind, shape, window) -> Tensor``
so that recorded noise can be replayed. Kinds: ``"x_T"`` (a window's starting noise), ``"repaint"``
(noise for the known overlap frames, shape (B, overlap, C)), ``"undo"`` (a RePaint jump back up,
whole window), ``"ddim"`` (only with eta > 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from .model import DiffSHEGDenoiser


class NoiseFn(Protocol):
    def __call__(self, kind: str, shape: tuple[int, ...], window: int) -> torch.Tensor: ...


def as_noise_fn(noise: NoiseFn | torch.Generator | None, device=None) -> NoiseFn:
    """Turn a generator (or None = global RNG) into a ``NoiseFn``; callables pass through."""
    if callable(noise) and not isinstance(noise, torch.Generator):
        return noise
    gen = noise

    def draw(kind: str, shape: tuple[int, ...], window: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen, device=device if gen is None else gen.device)

    return draw


@dataclass
class SamplerConfig:
    """Sampling settings; defaults are the reference's SHOW custom-audio settings."""

    ddim_steps: int = 25
    ddim_eta: float = 0.0
    cond_scale: float = 1.15  # the reference's test script uses 1.25
    window: int = 88  # FOPPAS window (reference: n_poses)
    overlap: int = 10  # reference: overlap_len
    jump_length: int = 3
    jump_n_sample: int = 5  # resampling repeats; 1 = no resampling
    blend: bool = True  # reference: addBlend
    blend_threshold: float = 0.2  # blend the overlap where sqrt(1 - abar_prev) < this

    @classmethod
    def from_dict(cls, d) -> "SamplerConfig":
        """Read the reference's field names (``n_poses``, ``overlap_len``, ``addBlend``, ...)."""
        alias = {"n_poses": "window", "overlap_len": "overlap", "addBlend": "blend"}
        names = set(cls.__dataclass_fields__)
        kw = {alias.get(k, k): v for k, v in d.items() if alias.get(k, k) in names}
        return cls(**kw)


# -----------------------------------------------------------------------------
# Schedule


class NoiseSchedule:
    """A (possibly respaced) variance schedule. Index i addresses ``timesteps[i]`` of the original."""

    def __init__(self, betas: np.ndarray, timesteps: np.ndarray):
        self.betas = np.asarray(betas, dtype=np.float64)
        self.timesteps = np.asarray(timesteps, dtype=np.int64)  # original timestep of each index
        self.alphas_cumprod = np.cumprod(1.0 - self.betas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)  # c1
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1.0)  # c2
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)

    def __len__(self) -> int:
        return len(self.betas)

    @classmethod
    def linear(cls, n: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        scale = 1000 / n
        betas = np.linspace(scale * beta_start, scale * beta_end, n, dtype=np.float64)
        return cls(betas, np.arange(n))

    def respaced(self, n_steps: int) -> "NoiseSchedule":
        """DDIM striding: keep 0, k, 2k, ... with the integer k giving exactly ``n_steps`` steps.

        Respaced betas are 1 - abar(kept_i) / abar(kept_{i-1}); the tables are recomputed from them.
        """
        n = len(self)
        stride = next((k for k in range(1, n) if len(range(0, n, k)) == n_steps), None)
        if stride is None:
            raise ValueError(f"cannot create exactly {n_steps} steps with an integer stride")
        kept = np.arange(0, n, stride)
        abar = self.alphas_cumprod[kept]
        betas = 1.0 - abar / np.append(1.0, abar[:-1])
        return NoiseSchedule(betas, self.timesteps[kept])

    def coef(self, table: str, idx) -> torch.Tensor:
        """float64 table values at idx (int or (B,) indices), cast to float32 as the reference does."""
        return torch.from_numpy(np.asarray(getattr(self, table)[idx])).float()

    def model_coefs(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(c1, c2) = (sqrt(1/abar), sqrt(1/abar - 1)) at (B,) indices, float32."""
        i = idx.cpu().numpy()
        return (self.coef("sqrt_recip_alphas_cumprod", i).to(idx.device),
                self.coef("sqrt_recipm1_alphas_cumprod", i).to(idx.device))


# -----------------------------------------------------------------------------
# Conditions and one model call


@dataclass
class Conditions:
    """Frame-aligned conditions of a batch: mel (B, T, 128), person_id (B, 4), hubert (B, T, 1024)."""

    mel: torch.Tensor
    person_id: torch.Tensor
    hubert: torch.Tensor | None = None

    def window(self, start: int, stop: int) -> "Conditions":
        sl = lambda a: None if a is None else a[:, start:stop]  # noqa: E731
        return Conditions(sl(self.mel), self.person_id, sl(self.hubert))


def predict_eps(model: DiffSHEGDenoiser, sched: NoiseSchedule, x: torch.Tensor, i: int,
                cond: Conditions, cond_scale: float) -> torch.Tensor:
    """Guided noise prediction at schedule index i (the model sees the original timestep)."""
    B = x.shape[0]
    idx = torch.full((B,), i, dtype=torch.long, device=x.device)
    t = torch.full((B,), int(sched.timesteps[i]), dtype=torch.long, device=x.device)
    c1, c2 = sched.model_coefs(idx)
    return model(x, t, c1, c2, cond.mel, cond.person_id, cond.hubert, cond_scale=cond_scale).eps


# -----------------------------------------------------------------------------
# DDIM


class StepOutput(NamedTuple):
    x_prev: torch.Tensor  # (B, T, C) sample at index i - 1
    pred_x0: torch.Tensor  # (B, T, C)


def ddim_step(sched: NoiseSchedule, i: int, x: torch.Tensor, eps: torch.Tensor, eta: float = 0.0,
              noise: torch.Tensor | None = None) -> StepOutput:
    """One DDIM update from index i to i - 1 (epsilon prediction, no clipping)."""
    f = lambda name: sched.coef(name, i).to(x.device)  # noqa: E731
    abar, abar_prev = f("alphas_cumprod"), f("alphas_cumprod_prev")
    c1, c2 = f("sqrt_recip_alphas_cumprod"), f("sqrt_recipm1_alphas_cumprod")
    x0 = c1 * x - c2 * eps
    eps = (c1 * x - x0) / c2  # re-derived, as the reference
    sigma = eta * torch.sqrt((1 - abar_prev) / (1 - abar)) * torch.sqrt(1 - abar / abar_prev)
    x_prev = x0 * torch.sqrt(abar_prev) + torch.sqrt(1 - abar_prev - sigma**2) * eps
    if eta > 0 and i > 0:
        x_prev = x_prev + sigma * noise
    return StepOutput(x_prev, x0)


@torch.no_grad()
def sample_ddim(
    model: DiffSHEGDenoiser,
    cond: Conditions,
    steps: int = 25,
    cond_scale: float = 1.15,
    eta: float = 0.0,
    noise: NoiseFn | torch.Generator | None = None,
    schedule: NoiseSchedule | None = None,
    on_step: Callable[[int, StepOutput], None] | None = None,
) -> torch.Tensor:
    """Plain DDIM sample of one window: x_T ~ N(0, I) at index steps-1, down to 0 -> (B, T, 232)."""
    draw = as_noise_fn(noise, cond.mel.device)
    sched = (schedule or NoiseSchedule.linear()).respaced(steps)
    B, T = cond.mel.shape[:2]
    x = draw("x_T", (B, T, model.cfg.n_channels), 0).to(cond.mel)
    for i in reversed(range(steps)):
        eps = predict_eps(model, sched, x, i, cond, cond_scale)
        n = draw("ddim", tuple(x.shape), 0).to(x) if eta > 0 and i > 0 else None
        out = ddim_step(sched, i, x, eps, eta, n)
        if on_step is not None:
            on_step(i, out)
        x = out.x_prev
    return x


# -----------------------------------------------------------------------------
# FOPPAS


def foppas_windows(length: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """(start, frames) of each window covering ``length`` frames with ``overlap`` shared frames."""
    if not 0 <= overlap < window:
        raise ValueError("need 0 <= overlap < window")
    if length <= window:
        return [(0, length)]
    step = window - overlap
    n_full, rest = divmod(length - overlap, step)
    wins = [(k * step, window) for k in range(n_full)]
    if rest:
        wins.append((n_full * step, length - n_full * step))
    return wins


def foppas_start_index(steps: int) -> int:
    """t_T of the outpainting schedule: later windows start from noise at index t_T - 1."""
    return 15 if steps == 25 else int(steps * 0.6)


def foppas_schedule(steps: int, jump_length: int, jump_n_sample: int) -> list[int]:
    """RePaint-style index walk for windows k >= 1, from t_T - 1 down to -1.

    Consecutive entries (a, b): b < a is a denoise step at index a, b > a an undo from a to b.
    At each jump point j = 0, L, 2L, ... < t_T - L the walk goes back up L indices
    (jump_n_sample - 1) times.
    """
    t_T = foppas_start_index(steps)
    if t_T < 1:
        raise ValueError(f"FOPPAS needs at least 2 DDIM steps, got {steps}")
    jumps = {j: jump_n_sample - 1 for j in range(0, t_T - jump_length, jump_length)}
    t, walk = t_T, []
    while t >= 1:
        t -= 1
        walk.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                walk.append(t)
    walk.append(-1)
    return walk


class WindowOutput(NamedTuple):
    index: int  # window number k
    start: int  # first frame of the window in the full sequence
    motion: torch.Tensor  # (B, L_k, 232) the whole window's sample
    new_frames: torch.Tensor  # (B, n, 232) the frames this window contributes to the output


@torch.no_grad()
def foppas_stream(
    model: DiffSHEGDenoiser,
    cond: Conditions,
    length: int | None = None,
    config: SamplerConfig | None = None,
    noise: NoiseFn | torch.Generator | None = None,
    schedule: NoiseSchedule | None = None,
    known: torch.Tensor | None = None,
    known_mask: torch.Tensor | None = None,
) -> Iterator[WindowOutput]:
    """Generate ``length`` frames window by window; each window needs only the previous one.

    Window 0 is plain DDIM. Window k >= 1 starts from noise at index t_T - 1 and follows
    ``foppas_schedule``; after every denoise step its first ``overlap`` frames are replaced by the
    previous window's tail noised to the current level (blended with the sample in the last steps).

    ``known`` (B, length, 232) with ``known_mask`` (same shape, True = known) are inpainted the same
    way (locked parts): after every denoise step the known entries are replaced by the known values
    noised to that step's level, so the last step leaves them exactly as given and the sample
    around them is generated to fit.
    """
    cfg = config or SamplerConfig()
    draw = as_noise_fn(noise, cond.mel.device)
    sched = (schedule or NoiseSchedule.linear()).respaced(cfg.ddim_steps)
    length = cond.mel.shape[1] if length is None else length
    if length > cond.mel.shape[1]:
        raise ValueError(f"{length} frames requested, conditions cover {cond.mel.shape[1]}")
    wins = foppas_windows(length, cfg.window, cfg.overlap)
    prev = None
    for k, (start, frames) in enumerate(wins):
        lock = None
        if known_mask is not None and bool(known_mask[:, start:start + frames].any()):
            lock = (known[:, start:start + frames], known_mask[:, start:start + frames])
        x = foppas_window(model, cond.window(start, start + frames), cfg, sched, draw, k, prev, lock)
        last = k == len(wins) - 1
        yield WindowOutput(k, start, x, x if last else x[:, : cfg.window - cfg.overlap])
        prev = x


@torch.no_grad()
def foppas_window(model: DiffSHEGDenoiser, cond: Conditions, config: SamplerConfig, sched: NoiseSchedule,
                  noise: NoiseFn, k: int, prev: torch.Tensor | None = None,
                  lock: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Sample window ``k`` over all frames of ``cond`` -> (B, frames, 232); ``sched`` is the respaced
    (``config.ddim_steps``) schedule.

    Without ``prev`` (the first window, or no overlap) it is plain DDIM; with it, the window's first
    ``overlap`` frames are outpainted from ``prev``'s last ones along ``foppas_schedule``. ``lock``
    (values, mask) of this window's frames are inpainted at every step.
    """
    cfg = config
    if cfg.ddim_eta != 0:
        raise NotImplementedError("FOPPAS is defined for deterministic DDIM (eta = 0)")
    B, frames = cond.mel.shape[:2]
    C, ov = model.cfg.n_channels, cfg.overlap
    x = noise("x_T", (B, frames, C), k).to(cond.mel)
    if lock is not None:
        lock = (lock[0].to(x), lock[1].to(x.device))

    def inpaint(x, a):
        """Re-impose the locked entries at the level of schedule index a's output."""
        if lock is None:
            return x
        abar_prev = sched.coef("alphas_cumprod_prev", a).to(x.device)
        g = torch.sqrt(abar_prev) * lock[0] + torch.sqrt(1 - abar_prev) * noise("lock", tuple(x.shape), k).to(x)
        return torch.where(lock[1], g, x)

    if prev is None or ov == 0:  # plain DDIM (nothing known from a previous window)
        for i in reversed(range(cfg.ddim_steps)):
            x = inpaint(ddim_step(sched, i, x, predict_eps(model, sched, x, i, cond, cfg.cond_scale)).x_prev, i)
        return x
    walk = foppas_schedule(cfg.ddim_steps, cfg.jump_length, cfg.jump_n_sample)
    blend_w = torch.linspace(0, 1, ov, device=x.device).view(1, -1, 1)
    tail = prev[:, -ov:]  # the previous window's tail: this window's first frames
    for a, b in zip(walk[:-1], walk[1:]):
        if b < a:  # denoise at index a, then re-impose the known frames
            x = ddim_step(sched, a, x, predict_eps(model, sched, x, a, cond, cfg.cond_scale)).x_prev
            abar_prev = sched.coef("alphas_cumprod_prev", a).to(x.device)
            noise_w = torch.sqrt(1 - abar_prev)
            g = torch.sqrt(abar_prev) * tail + noise_w * noise("repaint", (B, ov, C), k).to(x)
            if cfg.blend and noise_w < cfg.blend_threshold:
                g = g * (1 - blend_w) + x[:, :ov] * blend_w
            x = inpaint(torch.cat([g, x[:, ov:]], dim=1), a)
        else:  # undo: diffuse from index a up to a + 1 (with the beta at the lower index)
            beta = sched.coef("betas", a).to(x.device)
            x = torch.sqrt(1 - beta) * x + torch.sqrt(beta) * noise("undo", tuple(x.shape), k).to(x)
    return x


def sample_foppas(model: DiffSHEGDenoiser, cond: Conditions, length: int | None = None,
                  config: SamplerConfig | None = None, noise: NoiseFn | torch.Generator | None = None,
                  schedule: NoiseSchedule | None = None, known: torch.Tensor | None = None,
                  known_mask: torch.Tensor | None = None) -> torch.Tensor:
    """FOPPAS sample of exactly ``length`` frames (default: all of ``cond``) -> (B, length, 232)."""
    parts = [w.new_frames for w in foppas_stream(model, cond, length, config, noise, schedule, known, known_mask)]
    return torch.cat(parts, dim=1)


# -----------------------------------------------------------------------------
# Training


def huber(pred: torch.Tensor, target: torch.Tensor, delta: float = 0.1) -> torch.Tensor:
    """Mean Huber loss as the reference computes it: smooth_l1(p/delta, y/delta) * delta."""
    return F.smooth_l1_loss(pred / delta, target / delta) * delta


def training_losses(
    model: DiffSHEGDenoiser,
    x0: torch.Tensor,
    cond: Conditions,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    null_rows: torch.Tensor | None = None,
    null_cond_prob: float = 0.2,
    generator: torch.Generator | None = None,
    schedule: NoiseSchedule | None = None,
) -> dict[str, torch.Tensor]:
    """One training forward (the model should be in train mode) and the loss terms.

    x0: (B, T, 232) clean normalised motion. t, noise and null_rows are drawn from ``generator``
    unless given: t ~ U{0..999}, noise ~ N(0, I), each row null with probability ``null_cond_prob``
    (the reference nulls the first ~20 % of the batch by position instead; pass that mask to replay).

    Returns x_t, eps_pred, pred_x0 and the losses: ``loss_eps`` = 1000 MSE(eps), ``loss_vel`` =
    MSE of x0 frame differences (weight 1 in the total; ``loss_vel_logged`` = 100x, what the
    reference logs), ``loss_x0`` = 100 Huber(pred_x0, x0), ``loss`` = their sum.
    """
    sched = schedule or NoiseSchedule.linear()
    B, dev = x0.shape[0], x0.device
    if t is None:
        t = torch.randint(0, len(sched), (B,), generator=generator).to(dev)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator).to(x0)
    if null_rows is None:
        if model.cfg.classifier_free:
            null_rows = (torch.rand(B, generator=generator) < null_cond_prob).to(dev)
    elif not model.cfg.classifier_free:
        raise ValueError("null_rows given to a model without a null condition")

    x_t = sched.coef("sqrt_alphas_cumprod", t.cpu().numpy()).to(dev)[:, None, None] * x0 + \
        sched.coef("sqrt_one_minus_alphas_cumprod", t.cpu().numpy()).to(dev)[:, None, None] * noise
    c1, c2 = sched.model_coefs(t)
    eps_pred = model(x_t, t, c1, c2, cond.mel, cond.person_id, cond.hubert, null_rows=null_rows).eps
    pred_x0 = c1[:, None, None] * x_t - c2[:, None, None] * eps_pred

    vel = lambda x: x[:, :-1] - x[:, 1:]  # noqa: E731
    loss_eps = 1000 * ((eps_pred - noise) ** 2).mean(-1).mean()
    loss_vel = ((vel(pred_x0) - vel(x0)) ** 2).mean(-1).mean()
    loss_x0 = 100 * huber(x0, pred_x0)
    return {
        "x_t": x_t, "eps_pred": eps_pred, "pred_x0": pred_x0, "t": t, "null_rows": null_rows,
        "loss_eps": loss_eps, "loss_vel": loss_vel, "loss_vel_logged": 100 * loss_vel,
        "loss_x0": loss_x0, "loss": loss_eps + loss_vel + loss_x0,
    }


def make_optimizer(model: DiffSHEGDenoiser, lr: float = 2e-4) -> torch.optim.Adam:
    """The reference's optimiser: Adam, betas (0.9, 0.999), no weight decay."""
    return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999))


def train_step(model: DiffSHEGDenoiser, optimizer: torch.optim.Optimizer, x0: torch.Tensor, cond: Conditions,
               generator: torch.Generator | None = None, clip_norm: float = 0.5, **loss_kw) -> dict[str, float]:
    """One optimisation step as the reference trainer: total loss, gradient-norm clip 0.5, step."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    r = training_losses(model, x0, cond, generator=generator, **loss_kw)
    r["loss"].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    return {k: r[k].item() for k in ("loss", "loss_eps", "loss_vel", "loss_vel_logged", "loss_x0")}
