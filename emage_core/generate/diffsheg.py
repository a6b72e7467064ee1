"""`DiffshegGenerator`: the DiffSHEG family (Chen et al., CVPR 2024) behind the generator interface.

    gen = DiffshegGenerator.from_pretrained()        # the bundled default; or a folder / Hub repo id
    clips = gen.generate("speech.wav", GenerationSettings(seed=3, variants=2))

DiffSHEG generates the face (jaw + 100 expressions), the upper body and the hands jointly with a
diffusion model, sampling each window of 88 frames by outpainting it from the previous one (FOPPAS), so
any length runs window by window (`stream` hands them out as they are done). The legs, the global
orientation and the translation are not modelled: they stay at rest, or EMAGE completes them when asked
(`emage_core.generate.complete`); every clip's ``meta["parts"]`` says which.

Locks of the parts DiffSHEG models are inpainted at every sampling step (as FOPPAS keeps the overlap),
so the motion continues into and out of them; locks of other parts are copied. Locked frames equal the
reference exactly either way. Only the SHOW (SMPL-X + FLAME) configuration exists; the reference's BEAT
configuration (a 47-joint BVH skeleton with ARKit blendshapes) is out of scope.
"""
from __future__ import annotations

import dataclasses
import random
import time
from typing import Iterable, Iterator

import numpy as np
import torch

from ..audio import SAMPLE_RATE
from ..edit.locks import apply_locks, part_frame_masks, validate_locks
from ..edit.style import apply_style
from ..models import hub
from ..models.diffsheg.audio import hubert_features, load_hubert, mel_features, mel_reference_15fps
from ..models.diffsheg.channels import CHANNEL_JOINTS, EXPRESSION_SLICE, denormalize, from_smplx, normalize, to_smplx
from ..models.diffsheg.checkpoint import CONFIG_NAME, STATS_NAME, WEIGHTS_NAME, DiffshegCheckpoint, load_pretrained
from ..models.diffsheg.diffusion import Conditions, NoiseSchedule, SamplerConfig, foppas_stream, foppas_window
from ..motion.clip import DEFAULT_FPS as FPS
from ..motion.clip import Motion
from ..motion.skeleton import JAW, PARTS
from .interface import Capabilities, Generator, Progress, load_checkpoint, load_speech, parts_meta, plan_expression
from .interface import versions
from .live import MotionChunk
from .settings import GenerationSettings, SettingsError

PARTS_GENERATED = ("face", "upper", "hands")
BUNDLED = hub.CHECKPOINTS / "diffsheg_studio_default"
NO_DEFAULT = ("DiffSHEG has no bundled default in this version (a small one trained on a CPU did not yet meet "
              "the quality gates): name a checkpoint, e.g. diffsheg:owner/name on the Hub, or a folder made by "
              "'python -m emage_core import diffsheg' or 'python -m emage_core train --family diffsheg'")


def _part_channels(part: str) -> list[int]:
    """Channels of the 232 that a part owns (the face: the jaw and the expressions)."""
    joints = [JAW] if part == "face" else list(PARTS[part])
    out = [3 * CHANNEL_JOINTS.index(j) + a for j in joints if j in CHANNEL_JOINTS for a in range(3)]
    if part == "face":
        out += list(range(EXPRESSION_SLICE.start, EXPRESSION_SLICE.stop))
    return out


class DiffshegGenerator(Generator):
    """A DiffSHEG checkpoint ready to generate. Build it with `from_pretrained`."""

    family = "diffsheg"
    display_name = "DiffSHEG"
    parts_generated = PARTS_GENERATED
    bundled_note = ("A small DiffSHEG trained by EMAGE Studio on a 63 s BEAT2 sample (speaker 2, CC BY-NC 4.0), "
                    "without HuBERT. Works offline; generates the face, upper body and hands.")

    def __init__(self, ckpt: DiffshegCheckpoint, provenance: dict, model_id: str):
        self.ckpt = ckpt
        self.provenance = provenance
        self.model_id = model_id
        self._hubert = None

    @classmethod
    def default_source(cls):
        return BUNDLED

    @classmethod
    def from_pretrained(cls, source=None, revision: str | None = None, device=None) -> "DiffshegGenerator":
        """Load a checkpoint folder in our layout, or a Hub repo holding one (``None``: the bundled default).

        The reference's own files (``.tar`` + ``talkshow_mean_std.npy``) load after
        ``python -m emage_core import diffsheg``.
        """
        if source is None and not (BUNDLED / WEIGHTS_NAME).is_file():
            raise hub.WeightsError(NO_DEFAULT)
        return cls(*load_checkpoint(BUNDLED if source is None else source, revision,
                                    (CONFIG_NAME, WEIGHTS_NAME, STATS_NAME), load_pretrained, device))

    @property
    def device(self) -> torch.device:
        return next(self.ckpt.model.parameters()).device

    @property
    def capabilities(self) -> Capabilities:
        parts = frozenset(PARTS_GENERATED)
        return Capabilities(parts=parts, lock_parts=parts, emotions=(), speakers=self.ckpt.speakers, streaming=True)

    def sampler(self, settings: GenerationSettings) -> SamplerConfig:
        """The checkpoint's sampler defaults with the settings' choices on top."""
        o, base = settings.diffsheg, self.ckpt.sampler
        chosen = {"ddim_steps": o.steps, "cond_scale": o.guidance_scale, "window": o.window, "overlap": o.overlap,
                  "jump_n_sample": o.repeats}
        cfg = dataclasses.replace(base, **{k: v for k, v in chosen.items() if v is not None})
        if cfg.window > self.ckpt.config.pe_buffer_len:
            raise SettingsError(f"window must be at most {self.ckpt.config.pe_buffer_len} frames for this model")
        if not 0 <= cfg.overlap < cfg.window // 2 + 1:
            raise SettingsError(f"overlap must be 0-{cfg.window // 2} frames, got {cfg.overlap}")
        return cfg

    def conditions(self, wav: np.ndarray, settings: GenerationSettings, n_frames: int) -> Conditions:
        """Mel (and HuBERT, for models that use it) at 30 fps, and the speaker one-hot, batch 1."""
        if settings.diffsheg.mel_fps == 15:  # the reference's custom-audio bug, on request only
            mel = mel_reference_15fps(wav, SAMPLE_RATE)
            mel = np.repeat(mel, 2, axis=0)[:n_frames]
            mel = np.pad(mel, ((0, n_frames - len(mel)), (0, 0)), mode="edge")
        else:
            mel = mel_features(wav, SAMPLE_RATE, FPS)
        cfg, dev = self.ckpt.config, self.device
        person = torch.zeros(1, cfg.style_dim)
        person[0, self.ckpt.speakers.index(settings.speaker) if settings.speaker else 0] = 1
        hubert = None
        if cfg.use_hubert:
            if self._hubert is None:
                self._hubert = load_hubert(self.ckpt.hubert_model_id, device=str(dev))
            hubert = torch.from_numpy(hubert_features(wav, n_frames, self._hubert))[None].to(dev)
        return Conditions(torch.from_numpy(mel)[None].to(dev), person.to(dev), hubert)

    def generate(self, audio, settings: GenerationSettings | None = None, progress: Progress | None = None,
                 **by_name) -> list[Motion]:
        """Speech -> ``settings.variants`` motions of exactly ``floor(N * 30 / 16000)`` frames each.

        Variant k samples with seed ``seed + k`` (a random seed when None). Explicit style edits and
        emotion presets apply to the generated motion (DiffSHEG learned no emotions).
        """
        settings = (settings.replace() if settings is not None else GenerationSettings()).replace(**by_name)
        settings.validate()
        learned, style = plan_expression((), settings.emotion, settings.intensity, settings.style)
        if settings.guidance != 1:
            raise SettingsError("guidance applies to learned emotions only, and DiffSHEG learned none: leave it at 1 "
                                "(the sampler's own guidance is diffsheg.guidance_scale)")
        if settings.speaker is not None and settings.speaker not in self.ckpt.speakers:
            raise SettingsError(f"this model has no learned speaker {settings.speaker!r} (it knows: "
                                f"{', '.join(self.ckpt.speakers) or 'none'})")
        sampler = self.sampler(settings)
        wav, audio_sha256 = load_speech(audio)
        n_frames = wav.shape[0] * FPS // SAMPLE_RATE
        locks, reference = list(settings.locks), settings.reference
        validate_locks(locks, n_frames, reference if locks else None, FPS)
        cond = self.conditions(wav, settings, n_frames)
        known = mask = None
        if locks:
            known, mask = self._known(reference, locks, n_frames)
        seed = settings.seed if settings.seed is not None else random.SystemRandom().randrange(2**31)
        n_windows = max(1, -(-max(n_frames - sampler.overlap, 1) // (sampler.window - sampler.overlap)))
        clips = []
        for k in range(settings.variants):
            generator = torch.Generator(device="cpu").manual_seed(seed + k)
            pieces = []
            for w in foppas_stream(self.ckpt.model, cond, n_frames, sampler, noise=_cpu_noise(generator, self.device),
                                   known=known, known_mask=mask):
                pieces.append(w.new_frames)
                if progress is not None:
                    done = min(1.0, (w.index + 1) / n_windows)
                    progress((k + done) / settings.variants,
                             f"variant {k + 1}/{settings.variants}: window {w.index + 1}/{n_windows}")
            x = torch.cat(pieces, dim=1)[0].cpu().numpy()
            clip = Motion(**to_smplx(denormalize(x, self.ckpt.mean, self.ckpt.std)), fps=FPS)
            if locks:
                clip = apply_locks(clip, reference, locks, settings.crossfade)
            if style is not None and not style.is_neutral:
                clip = apply_style(clip, style, locks=locks)
            clip.meta = clip.meta | self._meta(seed + k, k, settings, sampler, locks, audio_sha256, wav, clip)
            clips.append(clip)
        return clips

    def stream(self, chunks: Iterable[np.ndarray], settings: GenerationSettings | None = None,
               **options) -> Iterator[MotionChunk]:
        """Speech arriving in chunks ((N_i,) float32 16 kHz) -> motion, one window at a time.

        Each window is sampled once the speech it covers has arrived, outpainted from the window before
        (FOPPAS is causal across windows), so what was yielded never changes. Memory stays bounded: only
        the audio of the current window and the previous window's motion are kept. The last chunk flushes
        what is left. Yields `live.MotionChunk` s whose frames follow on from the previous one's.
        """
        if options:
            raise TypeError(f"unknown streaming option(s) for DiffSHEG: {', '.join(sorted(options))}")
        settings = (settings or GenerationSettings()).validate()
        sampler = self.sampler(settings)
        generator = torch.Generator(device="cpu").manual_seed(settings.seed if settings.seed is not None else 0)
        draw = _cpu_noise(generator, self.device)
        schedule = NoiseSchedule.linear().respaced(sampler.ddim_steps)
        W, ov = sampler.window, sampler.overlap
        samples_per_frame = SAMPLE_RATE / FPS
        buffer = np.zeros(0, np.float32)  # audio from the current window's start
        prev = None
        k = start = heard = 0
        done = False
        it = iter(chunks)
        while not done:
            try:
                chunk = np.asarray(next(it), np.float32).reshape(-1)
                buffer, heard = np.concatenate([buffer, chunk]), heard + chunk.shape[0]
            except StopIteration:
                done = True
            t0 = time.perf_counter()
            need = int(np.ceil(W * samples_per_frame))
            while len(buffer) >= need or (done and len(buffer) >= samples_per_frame):
                frames = min(W, int(len(buffer) * FPS // SAMPLE_RATE))
                wav = buffer[: int(round(frames * samples_per_frame))]
                cond = self.conditions(wav, settings, frames)
                x = foppas_window(self.ckpt.model, cond, sampler, schedule, draw, k, prev)
                last = done and len(buffer) < need
                new = x if last else x[:, : W - ov]
                piece = new[0].cpu().numpy()
                m = to_smplx(denormalize(piece, self.ckpt.mean, self.ckpt.std))
                yield MotionChunk(start, m["poses"], m["expressions"], m["trans"], heard / SAMPLE_RATE,
                                  time.perf_counter() - t0, FPS)
                start, t0 = start + piece.shape[0], time.perf_counter()
                if last:
                    return
                prev = x
                buffer = buffer[int(round((W - ov) * samples_per_frame)):]
                k += 1
                if done and len(buffer) < samples_per_frame * (ov + 1):
                    return

    def _known(self, reference: Motion, locks, n_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Locked parts the model generates -> normalised known values and their mask, (1, T, 232)."""
        ref = reference.slice(0, n_frames)
        values = normalize(from_smplx(ref.poses, ref.expressions), self.ckpt.mean, self.ckpt.std)
        mask = np.zeros_like(values, dtype=bool)
        for part, frames in part_frame_masks(list(locks), n_frames, FPS).items():
            if part in PARTS_GENERATED:
                mask[np.ix_(np.flatnonzero(frames), _part_channels(part))] = True
        to = lambda a: torch.from_numpy(a)[None].to(self.device)  # noqa: E731
        return to(values.astype(np.float32)), to(mask)

    def _meta(self, seed, variant, settings, sampler, locks, audio_sha256, wav, clip) -> dict:
        return {
            "model": "DiffSHEG (UniEG diffusion, SHOW configuration)",
            "family": self.family,
            "model_id": self.model_id,
            "weights": self.provenance,
            "device": str(self.device),
            "versions": versions(),
            "parts": parts_meta(PARTS_GENERATED),
            "seed": seed,
            "variant": variant,
            "sampler": dataclasses.asdict(sampler),
            "locks": [str(lock) for lock in locks],
            "crossfade": settings.crossfade,
            "audio_sha256": audio_sha256,
            "audio_seconds": wav.shape[0] / SAMPLE_RATE,
            "expression": {"learned": None, "explicit": clip.meta.get("style")},
            "settings": {**settings.to_dict(), "seed": seed - variant},
        }


def _cpu_noise(generator: torch.Generator, device: torch.device):
    """Noise drawn on the CPU from ``generator`` (the same numbers on every device), moved to ``device``."""
    def draw(kind: str, shape, window: int) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=generator).to(device)
    return draw
