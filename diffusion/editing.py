"""Editing with the diffusion model: SDEdit and inpainting, as starting points of the ordinary sampler.

SDEdit (Meng et al. 2022): noise a digit x_0 part of the way, to t = s·T, and denoise it as digit k.
    x_t = √ᾱ_t·x_0 + √(1-ᾱ_t)·ε      then the reverse process from t instead of from T.
At small strength s the noise hides little, so the strokes survive; at large s the label decides.

Inpainting (RePaint, Lugmayr et al. 2022): regenerate only where a mask says so. After every reverse step
t -> s, the pixels to keep are replaced by the original noised to s, so the regenerated part has to
grow around them; then the step is taken again from a re-noised x_t a few times (`resample`), which lets
the two parts agree instead of meeting at a seam. At the end the kept pixels are the original's, exactly.

Both are a `SamplingRequest` with an init_image (see `requests.check_edit_request`); `prepare_run` turns
any request into its sampler and starting x, for the pipeline and the network server alike.
"""
from __future__ import annotations

import numpy as np
import torch

from .requests import SamplingRequest, edit_start_t
from .sampling import Generators, Sampler, StepOutput, initial_noise, make_sampler, randn_like
from .schedules import NoiseSchedule

# Defaults, measured on the shipped model (benchmarks/bench_editing.py). SDEdit toward another digit needs
# stronger steering than generating does: at s = 0.6 (t = 300 of the cosine schedule, √ᾱ_t ≈ 0.59) much of
# the old digit is left. Over 20 seeds, the three shipped real 3s become 8s in 75/15/35 % of runs at the app's
# w = 0.6, 90/20/50 % at w = 4, and 100/95/95 % at w = 4 with classifier guidance at scale 15 (the noise-aware
# classifier's gradient toward the new digit), which keeps s = 0.2 as close to the input. The scale was chosen
# on digits the bars do not use (`bench_editing --data-dir`: 60 MNIST training 3s, 5 seeds each): 90 / 95 / 98 %
# eights at scales 10 / 15 / 20; 20 is MAX_CLASSIFIER_SCALE, where its artefacts begin.
DEFAULT_STRENGTH = 0.6
DEFAULT_EDIT_GUIDANCE = 4.0
DEFAULT_EDIT_CLASSIFIER_SCALE = 15.0
STRENGTH_STRIP = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # one seed over s: where the strokes give way
# Inpainting: ddpm, 16 steps, each resampled 3 times (46 network evaluations): the regenerated half of a real 7
# is a 7 in 20 of 20 seeds, and the kept half is unchanged.
INPAINT_SAMPLER, INPAINT_STEPS, INPAINT_RESAMPLE = "ddpm", 16, 3


def image_from_bytes(data: bytes, device) -> torch.Tensor:
    """784 uint8 bytes -> [1,1,28,28] in [-1,1]."""
    pixels = torch.from_numpy(np.frombuffer(data, dtype=np.uint8).copy()).float().reshape(1, 1, 28, 28)
    return (pixels / 127.5 - 1.0).to(device)


def prepare_run(request: SamplingRequest, schedule: NoiseSchedule, generator: Generators,
                device: torch.device | str = "cpu") -> tuple[Sampler, torch.Tensor]:
    """(a fresh sampler, the starting x [N,1,28,28]) for a checked request. x_T is always drawn first from
    the request's generator, so an edit and a generation with the same seed share their noise."""
    x_T = initial_noise(request.num_samples, generator, device)
    if request.init_image is None:
        return make_sampler(request.sampler, schedule, request.num_inference_steps, eta=request.eta), x_T
    start_t = edit_start_t(request.strength, schedule.num_train_steps)
    sampler = make_sampler(request.sampler, schedule, request.num_inference_steps, eta=request.eta, start_t=start_t)
    x0 = image_from_bytes(request.init_image, device).expand(request.num_samples, -1, -1, -1)
    x = x_T if start_t is None else schedule.q_sample(x0, torch.full((request.num_samples,), start_t), x_T)
    if request.keep_mask is not None:
        keep = torch.from_numpy(np.frombuffer(request.keep_mask, dtype=np.uint8).copy()).float()
        sampler = Inpainting(sampler, x0, keep.reshape(1, 1, 28, 28).to(device), request.resample)
    return sampler, x


class Inpainting:
    """RePaint around a one-step sampler (ddpm or ddim): the same `timesteps` / `step` interface, so the
    pipeline and the network server drive it like any sampler. Every step but the last is taken
    `resample` times; `timesteps` lists each repetition.

    x0: [N,1,28,28] the original in [-1,1]; keep: [1,1,28,28] 1 = keep the pixel, 0 = regenerate it.
    """

    def __init__(self, sampler: Sampler, x0: torch.Tensor, keep: torch.Tensor, resample: int = 1):
        self.sampler, self.schedule, self.x0, self.keep = sampler, sampler.schedule, x0, keep
        self.name, self.stochastic = sampler.name, True
        ts = sampler.timesteps
        self.timesteps = [t for t in ts[:-1] for _ in range(resample)] + ts[-1:]
        self._taken = 0

    def known(self, s: int, x: torch.Tensor, generator: Generators) -> torch.Tensor:
        """The original noised to time s (itself at s = 0)."""
        if s == 0:
            return self.x0
        return self.schedule.q_sample(self.x0, torch.full((len(x),), s), randn_like(x, generator))

    def step(self, eps: torch.Tensor, t: int, x: torch.Tensor, generator: Generators = None) -> StepOutput:
        out = self.sampler.step(eps, t, x, generator)
        x_s = self.keep * self.known(out.t, x, generator) + (1 - self.keep) * out.x
        self._taken += 1
        if self._taken < len(self.timesteps) and self.timesteps[self._taken] == t:  # resample: back to t
            a = (self.schedule.alpha_bar[t] / self.schedule.alpha_bar[out.t]).item()
            return StepOutput(a**0.5 * x_s + (1 - a) ** 0.5 * randn_like(x, generator), out.x0, t)
        return StepOutput(x_s, out.x0, out.t)
