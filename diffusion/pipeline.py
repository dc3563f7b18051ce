"""The Python API: one call loads the shipped model, one call generates.

    >>> from diffusion import load_pipeline
    >>> pipe = load_pipeline()                      # checkpoints/unet.safetensors + .json
    >>> digits = pipe.generate([3, 1, 4], seed=0)   # uint8 [3,28,28], 0 = background, 255 = ink
    >>> for step in pipe.denoising_steps([7]):      # every intermediate x_t and x̂_0, for animations
    ...     print(step.index, step.t)

The defaults below are the app's defaults, picked from `python -m diffusion.evaluate` (see
`checkpoints/evaluation.md`): the fewest network evaluations that pass the quality bar. At 12 steps
both w = 0.5 and w = 0.6 pass with the default seed; w = 0.6 because with a second seed (--seed 99)
its worst digit stays at 98.5 % where w = 0.5 drops to 97.5 %.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from .checkpoints import CHECKPOINT_DIR, load_module
from .data import to_uint8
from .model import ClassConditionalUNet, bf16_is_fast, build_unet
from .sampling import (EVERY_STEP, SAMPLERS, SamplerStep, has_guidance_head, is_guided_step, sample_steps,
                       timestep_sequence)
from .schedules import NoiseSchedule

DEFAULT_UNET = CHECKPOINT_DIR / "unet"
DEFAULT_SAMPLER = "dpm++2m-sde"
DEFAULT_STEPS = 12
DEFAULT_GUIDANCE = 0.6
DEFAULT_GUIDANCE_INTERVAL = EVERY_STEP
MAX_GUIDANCE = 20.0
MAX_BATCH = 10_000


class DigitDiffusion:
    """A loaded diffusion model with its noise schedule. Use `load_pipeline()` to make one."""

    def __init__(self, model: ClassConditionalUNet, schedule: NoiseSchedule, config: dict):
        self.model = model.eval()
        self.schedule = schedule
        self.config = config

    @property
    def num_train_steps(self) -> int:
        """T, the number of steps of the forward process the model was trained on."""
        return self.schedule.num_steps

    def network_evaluations(self, steps: int, guidance: float,
                            guidance_interval: tuple[float, float] = DEFAULT_GUIDANCE_INTERVAL) -> int:
        """Network evaluations per sample: one per step, two at the steps where guidance applies
        (one there too for a network with a guidance head)."""
        if has_guidance_head(self.model):
            return steps
        guided = sum(is_guided_step(t, self.num_train_steps, guidance_interval)
                     for t in timestep_sequence(self.schedule, steps))
        return steps + (guided if guidance else 0)

    def check_request(self, digits: Sequence[int], guidance: float, sampler: str, steps: int,
                      guidance_interval: tuple[float, float] = DEFAULT_GUIDANCE_INTERVAL) -> list[int]:
        """Validate a request; raises ValueError with a message meant for the user. Returns the digits."""
        try:
            digits = [int(d) for d in digits]
        except (TypeError, ValueError):
            raise ValueError(f"digits must be integers from 0 to 9, got {digits!r}") from None
        if not digits:
            raise ValueError("ask for at least one digit")
        if len(digits) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} samples per call, got {len(digits)}")
        if any(not 0 <= d <= 9 for d in digits):
            raise ValueError(f"digits must be from 0 to 9, got {sorted(set(d for d in digits if not 0 <= d <= 9))}")
        if not isinstance(guidance, (int, float)) or not math.isfinite(guidance) or not 0 <= guidance <= MAX_GUIDANCE:
            raise ValueError(f"guidance w must be a finite number from 0 to {MAX_GUIDANCE:g}, got {guidance!r}")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= self.num_train_steps:
            raise ValueError(f"steps must be an integer from 1 to {self.num_train_steps}, got {steps!r}")
        lo, hi = guidance_interval
        if not 0 <= lo <= hi <= 1:
            raise ValueError(f"guidance_interval must be (lo, hi) with 0 ≤ lo ≤ hi ≤ 1, got {guidance_interval!r}")
        return digits

    def denoising_steps(self, digits: Sequence[int], *, guidance: float = DEFAULT_GUIDANCE,
                        sampler: str = DEFAULT_SAMPLER, steps: int = DEFAULT_STEPS, seed: int = 0,
                        eta: float = 0.0, guidance_interval: tuple[float, float] = DEFAULT_GUIDANCE_INTERVAL,
                        ) -> Iterator[SamplerStep]:
        """Yield a `SamplerStep` (x_t and x̂_0, float [B,1,28,28] in [-1,1]) after each step.

        guidance_interval: (lo, hi), guide only while lo ≤ t/T ≤ hi (see `sample_steps`).
        """
        digits = self.check_request(digits, guidance, sampler, steps, guidance_interval)
        lo, hi = guidance_interval
        generator = torch.Generator().manual_seed(int(seed))
        yield from sample_steps(self.model, self.schedule, torch.tensor(digits), guidance=float(guidance),
                                sampler=sampler, steps=steps, eta=eta, generator=generator,
                                guidance_interval=(float(lo), float(hi)))

    def generate(self, digits: Sequence[int], *, guidance: float = DEFAULT_GUIDANCE, sampler: str = DEFAULT_SAMPLER,
                 steps: int = DEFAULT_STEPS, seed: int = 0, eta: float = 0.0,
                 guidance_interval: tuple[float, float] = DEFAULT_GUIDANCE_INTERVAL) -> np.ndarray:
        """Samples of the requested digits as uint8 [N,28,28] (0 = background, 255 = ink).

        The same seed and settings always give the same images.
        """
        last = None
        for last in self.denoising_steps(digits, guidance=guidance, sampler=sampler, steps=steps, seed=seed, eta=eta,
                                          guidance_interval=guidance_interval):
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


def load_pipeline(checkpoint: str | Path = DEFAULT_UNET, bf16: bool | None = None) -> DigitDiffusion:
    """Load a diffusion checkpoint (default: the shipped one) into a `DigitDiffusion` on the CPU.

    bf16: run the network in bfloat16 (about 2× faster where the CPU has bf16 kernels; the
    sampler's arithmetic stays float32). None = where `bf16_is_fast()`. A float32 network is
    stored channels-last instead, which oneDNN's float32 convolutions run ~25% faster (same numbers).
    """
    model, config = load_module(checkpoint, build_unet, kind="diffusion-unet")
    if bf16 if bf16 is not None else bf16_is_fast():
        model = model.to(torch.bfloat16)
    else:
        model = model.to(memory_format=torch.channels_last)
    return DigitDiffusion(model, NoiseSchedule.create(**config["schedule"]), config)
