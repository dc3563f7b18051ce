"""The Python API: one call loads the shipped model, one call generates.

    >>> from diffusion import load_pipeline
    >>> pipe = load_pipeline()                      # checkpoints/unet.safetensors + .json
    >>> digits = pipe.generate([3, 1, 4], seed=0)   # uint8 [3,28,28], 0 = background, 255 = ink
    >>> for step in pipe.denoising_steps([7]):      # every intermediate x_t and x̂_0, for animations
    ...     print(step.index, step.t)
    >>> eights = pipe.edit([8] * 4, digits[0], strength=0.6)   # SDEdit: re-imagine the 3 as an 8

The defaults, the limits and the request check live in `requests.py`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from .checkpoints import DEFAULT_UNET, load_module
from .editing import prepare_run
from .data import to_uint8
from .devices import resolve_device
from .model import ClassConditionalUNet, bf16_is_fast, build_unet
from .requests import (DEFAULT_GUIDANCE, DEFAULT_GUIDANCE_INTERVAL, DEFAULT_SAMPLER, DEFAULT_STEPS,
                       SamplingRequest, check_edit_request, check_sampling_request)
from .sampling import SamplerStep, has_guidance_head, is_guided_step, sample_steps, timestep_sequence
from .schedules import NoiseSchedule



class DigitDiffusion:
    """A loaded diffusion model with its noise schedule. Use `load_pipeline()` to make one."""

    def __init__(self, model: ClassConditionalUNet, schedule: NoiseSchedule, config: dict, judge=None):
        self.model = model.eval()
        self.schedule = schedule
        self.config = config
        self.judge = judge  # a noise-aware classifier, for classifier guidance (None: not available)

    @property
    def num_train_steps(self) -> int:
        """T, the number of steps of the forward process the model was trained on."""
        return self.schedule.num_train_steps

    def network_evaluations(self, num_inference_steps: int, guidance: float,
                            guidance_interval: tuple[float, float] = DEFAULT_GUIDANCE_INTERVAL) -> int:
        """Network evaluations per sample: one per step, two at the steps where guidance applies
        (one there too for a network with a guidance head)."""
        if has_guidance_head(self.model):
            return num_inference_steps
        guided = sum(is_guided_step(t, self.num_train_steps, guidance_interval)
                     for t in timestep_sequence(self.schedule, num_inference_steps))
        return num_inference_steps + (guided if guidance else 0)

    def check_request(self, digits: Sequence[int], *, guidance: float = DEFAULT_GUIDANCE,
                      sampler: str = DEFAULT_SAMPLER, num_inference_steps: int = DEFAULT_STEPS, seed: int = 0,
                      eta: float = 0.0, guidance_interval: tuple[float, float] = DEFAULT_GUIDANCE_INTERVAL,
                      classifier_scale: float = 0.0) -> SamplingRequest:
        """A checked request for these samples (one entry of `digits` per sample); raises ValueError
        with a message meant for the user (see `requests.check_sampling_request`)."""
        return check_sampling_request(list(digits), guidance=guidance, sampler=sampler, steps=num_inference_steps,
                                      seed=seed, eta=eta, guidance_interval=guidance_interval,
                                      classifier_scale=classifier_scale,
                                      num_train_steps=self.num_train_steps)

    def run(self, request: SamplingRequest, x0_score=None, x0_scale: float = 0.0,
            include_start: bool = False) -> Iterator[SamplerStep]:
        """Yield a `SamplerStep` (x_t and x̂_0, float [B,1,28,28] in [-1,1]) after each step of a checked request.
        x0_score, x0_scale: guidance by a judge of x̂_0, e.g. CLIP toward prompts (`sampling.x0_guided_eps`).
        include_start: first yield step 0, x_T itself (x0 None), as the network server does."""
        generator = torch.Generator().manual_seed(request.seed)
        sampler, x_T = prepare_run(request, self.schedule, generator, next(self.model.parameters()).device)
        if include_start:
            yield SamplerStep(index=0, total=len(sampler.timesteps), t=sampler.timesteps[0], x=x_T, x0=None)
        yield from sample_steps(self.model, self.schedule, torch.tensor(request.digits), guidance=request.guidance,
                                sampler=sampler, x_T=x_T, generator=generator,
                                guidance_interval=request.guidance_interval, judge=self.judge,
                                classifier_scale=request.classifier_scale, x0_score=x0_score, x0_scale=x0_scale)

    def denoising_steps(self, digits: Sequence[int], **settings) -> Iterator[SamplerStep]:
        """Yield a `SamplerStep` (x_t and x̂_0, float [B,1,28,28] in [-1,1]) after each step.

        settings: guidance, sampler, num_inference_steps, seed, eta, guidance_interval (see `check_request`).
        """
        yield from self.run(self.check_request(digits, **settings))

    def generate(self, digits: Sequence[int], **settings) -> np.ndarray:
        """Samples of the requested digits as uint8 [N,28,28] (0 = background, 255 = ink).

        settings: as `denoising_steps`. The same seed and settings always give the same images.
        """
        last = None
        for last in self.denoising_steps(digits, **settings):
            pass
        return to_uint8(last.x)

    def check_edit(self, digits: Sequence[int], image, *, strength: float, keep_mask=None, resample: int = 1,
                   **settings) -> SamplingRequest:
        """A checked edit of `image` (uint8 [28,28]) into each of `digits`: SDEdit at strength s in [0,1], or
        with keep_mask ([28,28], 1 = keep) inpainting (see `editing.py`); settings as `check_request`."""
        return check_edit_request(self.check_request(digits, **settings), image, strength=strength,
                                  keep_mask=keep_mask, resample=resample, num_train_steps=self.num_train_steps)

    def edit(self, digits: Sequence[int], image, **options) -> np.ndarray:
        """The edited digits as uint8 [N,28,28]. options: as `check_edit` (the same seed gives the same images)."""
        last = None
        for last in self.run(self.check_edit(digits, image, **options)):
            pass
        return to_uint8(last.x)

    def generate_many(self, digits: Sequence[int], *, batch_size: int = 500, progress: bool = False,
                      seed: int = 0, **settings) -> np.ndarray:
        """Like `generate` for many samples: batches of `batch_size` (batch i seeded with seed + i),
        with an optional progress bar. Returns uint8 [N,28,28]."""
        from tqdm import tqdm

        digits = list(digits)
        chunks = [digits[i:i + batch_size] for i in range(0, len(digits), batch_size)]
        out = [self.generate(chunk, seed=seed + i, **settings)
               for i, chunk in enumerate(tqdm(chunks, desc="sampling", unit="batch", disable=not progress))]
        return np.concatenate(out)


def load_pipeline(checkpoint: str | Path = DEFAULT_UNET, bf16: bool | None = None,
                  device: str | torch.device = "cpu", judge=None) -> DigitDiffusion:
    """Load a diffusion checkpoint (default: the shipped one) into a `DigitDiffusion` on `device` (cpu, cuda[:N],
    mps or auto: see `devices.resolve_device`; ValueError where it is not here).

    bf16: run the network in bfloat16 (about 2× faster where the CPU has bf16 kernels; the
    sampler's arithmetic stays float32). None = where `bf16_is_fast(device)`. A float32 network is
    stored channels-last instead, which oneDNN's float32 convolutions run ~25% faster (same numbers).
    judge: a noise-aware classifier (`classifier.load_noise_classifier()`) for classifier guidance.
    """
    device = resolve_device(str(device))
    model, config = load_module(checkpoint, build_unet, kind="diffusion-unet")
    model = model.to(device)
    if bf16 if bf16 is not None else bf16_is_fast(device):
        model = model.to(torch.bfloat16)
    else:
        model = model.to(memory_format=torch.channels_last)
    return DigitDiffusion(model, NoiseSchedule.from_config(config["schedule"]), config, judge=judge)
