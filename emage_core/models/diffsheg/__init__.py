"""DiffSHEG (Chen et al., CVPR 2024), SHOW configuration: speech -> SMPL-X upper body, hands, jaw and
expressions at 30 fps. ``model`` (denoiser), ``diffusion`` (schedule, DDIM, FOPPAS, losses), ``audio``
(mel / HuBERT conditions), ``channels`` (232 channels <-> SMPL-X), ``checkpoint`` (our safe layout and the
reference's files), ``parity`` (golden-set check). The BEAT configuration (a 47-joint BVH skeleton with
ARKit blendshapes) is out of scope: only the SHOW (SMPL-X + FLAME) configuration is implemented."""
from .diffusion import Conditions, NoiseSchedule, SamplerConfig, sample_ddim, sample_foppas, training_losses
from .model import DiffSHEGConfig, DiffSHEGDenoiser, load_denoiser

__all__ = [
    "Conditions", "DiffSHEGConfig", "DiffSHEGDenoiser", "NoiseSchedule", "SamplerConfig", "load_denoiser",
    "sample_ddim", "sample_foppas", "training_losses",
]
