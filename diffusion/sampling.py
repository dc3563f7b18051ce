"""The reverse process: classifier-free guidance and the sampling loops.

One loop (`sample_steps`) serves every caller — the app's animation, the CLI, evaluation and the
benchmark. It walks a decreasing list of time steps t_1 > t_2 > … > t_S and, at each, asks the
network for the guided noise estimate, turns it into a prediction of the clean image x̂_0, and
lets a *sampler* move x from t_i to t_{i+1} (or to the clean image after the last step):

    ddpm     the course's ancestral sampler: x_{s} ~ q(x_s | x_t, x̂_0), fresh noise every step.
             With steps = T it is exactly Ho et al.'s loop over all T steps.
    ddim     Song et al. 2021; eta = 0 is deterministic, eta = 1 matches ddpm's noise level.
    dpm++2m  DPM-Solver++(2M), Lu et al. 2022: a second-order multistep solver of the
             probability-flow ODE; sharp samples in ~10 steps.
    dpm++2m-sde  the same solver for the reverse *SDE*: each step forgets part of x_t and adds
             fresh noise, which washes out the errors a deterministic ODE run carries to the end.
             Its samples match the spread of real digits far better (lower Fréchet distance).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from .schedules import NoiseSchedule

SAMPLERS = ("ddpm", "ddim", "dpm++2m", "dpm++2m-sde")


def guided_eps(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor,
               guidance: float | torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance: ε = (1+w)·ε(x,c) − w·ε(x,∅).

    x: [B,1,28,28]; t: [B] time steps; labels: [B] digits 0..9;
    guidance w: a float, or a [B] tensor (one w per sample). Returns ε: [B,1,28,28].
    Both halves run as one doubled batch [x; x] with the second half's labels masked.
    With w = 0 everywhere only the conditional half is evaluated. A network with a guidance head
    gives ε(x,c) and the direction ε(x,c) − ε(x,∅) from one pass: ε = ε(x,c) + w·direction.
    """
    w = torch.as_tensor(guidance, dtype=x.dtype, device=x.device)
    w = w.reshape(-1, 1, 1, 1) if w.dim() else w
    net_dtype = next(model.parameters()).dtype  # the network may run in bfloat16; the sampler's math stays float32
    if not bool((w != 0).any()):
        return model(x.to(net_dtype), t, labels).to(x.dtype)
    if has_guidance_head(model):
        eps_cond, direction = model.eps_and_direction(x.to(net_dtype), t, labels)
        return eps_cond.to(x.dtype) + w * direction.to(x.dtype)
    eps_cond, eps_uncond = conditional_and_unconditional_eps(model, x.to(net_dtype), t, labels)
    return (1 + w) * eps_cond.to(x.dtype) - w * eps_uncond.to(x.dtype)


def conditional_and_unconditional_eps(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor,
                                      context_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ε(x,c), ε(x,∅)), each [B,1,28,28], from one doubled batch [x; x] whose second half has its labels
    masked. context_mask: [B] bool, rows whose first half is masked too (default: none)."""
    B = x.shape[0]
    first = torch.zeros(B, dtype=torch.bool, device=x.device) if context_mask is None else context_mask
    mask = torch.cat([first, torch.ones(B, dtype=torch.bool, device=x.device)])
    return model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, labels]), mask).split(B)


def has_guidance_head(model: torch.nn.Module) -> bool:
    """Whether one pass of `model` gives the guided ε (see `model.add_guidance_head`)."""
    config = getattr(model, "config", None)
    return bool(getattr(config, "guidance_head", False))


# Where a few-step sampler starts. Near t = T the cosine schedule leaves almost no signal (ᾱ_T ≈ 1e-8),
# and an ε-predicting network's guess of the clean image, x̂_0 = (x_t − √(1-ᾱ)·ε̂)/√ᾱ, multiplies its
# errors by 1/√ᾱ ≈ 10⁴ there: the first x̂_0 would be saturated noise that a big first step carries into
# the sample. From the last t with ᾱ ≥ 4e-3 (signal √ᾱ ≈ 6% of x_t, so x_t is still essentially pure
# noise) the amplification is ≤ 16×. Measured on the shipped model: 10-step accuracy 86% -> 95%.
START_ALPHA_BAR = 4e-3


def timestep_sequence(schedule: NoiseSchedule, num_steps: int, start_alpha_bar: float = START_ALPHA_BAR) -> list[int]:
    """S evaluation times, evenly spaced and decreasing to 1, e.g. [480, 427, …, 1] for T = 500, S = 10.

    With S = T this is every step T, T-1, …, 1 (the course's DDPM). With fewer steps the sequence
    starts at the last t whose ᾱ_t ≥ start_alpha_bar (see above; 0 starts at T).
    """
    T = schedule.num_steps
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or not 1 <= num_steps <= T:
        raise ValueError(f"steps must be an integer from 1 to {T}, got {num_steps!r}")
    if num_steps == T:
        return list(range(T, 0, -1))
    t_start = max(int((schedule.alpha_bar[1:] >= start_alpha_bar).sum()), num_steps)
    if num_steps == 1:
        return [t_start]
    return torch.linspace(t_start, 1, num_steps, dtype=torch.float64).round().long().tolist()


EVERY_STEP = (0.0, 1.0)  # the guidance interval that guides at every step: the plain formula above


def is_guided_step(t: int, T: int, guidance_interval: tuple[float, float]) -> bool:
    """Whether guidance applies at step t: lo ≤ t/T ≤ hi (Kynkäänniemi et al. 2024 guide only in a
    middle interval). Outside it a step costs one network evaluation instead of two."""
    return guidance_interval[0] <= t / T <= guidance_interval[1]


@dataclass
class SamplerStep:
    """What the loop reports after each step.

    index: 1..total; t: time step of the new `x` (0 after the last step);
    x: [B,1,28,28] the new x_t (after the last step: the final sample, in [-1,1]);
    x0: [B,1,28,28] the network's current prediction of the clean image x̂_0, in [-1,1].
    """

    index: int
    total: int
    t: int
    x: torch.Tensor
    x0: torch.Tensor


# Where the randomness comes from: one generator for the whole batch, or, when several requests
# share one batch, a list of (generator, rows): each request's rows are drawn from its own generator,
# so a request gets the same samples whether it runs alone or beside others.
Generators = torch.Generator | Sequence[tuple[torch.Generator, int]] | None


def _randn_like(x: torch.Tensor, generator: Generators) -> torch.Tensor:
    """Standard normal noise shaped like x, drawn from `generator` (on its own device) for reproducibility."""
    if isinstance(generator, (list, tuple)):
        if sum(n for _, n in generator) != x.shape[0]:
            raise ValueError(f"the generators' rows {[n for _, n in generator]} do not add up to the batch {x.shape[0]}")
        return torch.cat([_randn_like(x[:n], g) for g, n in generator])
    gen_device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=gen_device, dtype=x.dtype).to(x.device)


def _update_ddpm(sched, x, x0, eps, t, s, gen, eta):
    """Ancestral step t -> s: sample from the posterior q(x_s | x_t, x̂_0) of the (respaced) process."""
    ab_t, ab_s = sched.alpha_bar[t].item(), sched.alpha_bar[s].item()
    alpha_ts = ab_t / ab_s  # α of the jump t -> s (α_t itself when s = t-1)
    beta_ts = 1 - alpha_ts
    mean = (ab_s**0.5 * beta_ts / (1 - ab_t)) * x0 + (alpha_ts**0.5 * (1 - ab_s) / (1 - ab_t)) * x
    var = beta_ts * (1 - ab_s) / (1 - ab_t)
    if s == 0:
        return mean
    return mean + var**0.5 * _randn_like(x, gen)


def _update_ddim(sched, x, x0, eps, t, s, gen, eta):
    """DDIM step t -> s: x_s = √ᾱ_s·x̂_0 + √(1-ᾱ_s-σ²)·ε + σ·z."""
    ab_t, ab_s = sched.alpha_bar[t].item(), sched.alpha_bar[s].item()
    sigma = eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)) ** 0.5
    x_s = ab_s**0.5 * x0 + max(1 - ab_s - sigma**2, 0.0) ** 0.5 * eps
    if sigma > 0 and s > 0:
        x_s = x_s + sigma * _randn_like(x, gen)
    return x_s


class _DPMSolverPP2M:
    """DPM-Solver++(2M) in data-prediction form. Keeps the previous x̂_0 and step size between calls.

    With λ = log(√ᾱ/√(1-ᾱ)) and h = λ_s − λ_t, a step t -> s moves along the probability-flow ODE:

        x_s = (σ_s/σ_t)·x_t − √ᾱ_s·(e^{-h} − 1)·D

    where D = x̂_0 + (x̂_0 − previous x̂_0)/(2r), r = previous h / h, is the second-order estimate.
    """

    def __init__(self):
        self.prev_x0 = None
        self.prev_h = None

    def _second_order(self, sched, x0, t, s):
        """(ᾱ_t, ᾱ_s, h, D) for the step t -> s; remembers x̂_0 and h for the next step."""
        ab_t, ab_s = sched.alpha_bar[t].item(), sched.alpha_bar[s].item()
        log_snr = sched.log_snr
        h = 0.5 * (log_snr[s] - log_snr[t]).item()  # λ = log(√ᾱ/√(1-ᾱ)) is half the log-SNR
        d = x0
        if self.prev_x0 is not None:
            d = x0 + (x0 - self.prev_x0) * (h / self.prev_h) / 2
        self.prev_x0, self.prev_h = x0, h
        return ab_t, ab_s, h, d

    def __call__(self, sched, x, x0, eps, t, s, gen, eta):
        if s == 0:  # the last step lands on the clean image: first order, x_0 = x̂_0
            return x0
        ab_t, ab_s, h, d = self._second_order(sched, x0, t, s)
        sigma_ratio = ((1 - ab_s) / (1 - ab_t)) ** 0.5
        return sigma_ratio * x - ab_s**0.5 * math.expm1(-h) * d


class _SDEDPMSolverPP2M(_DPMSolverPP2M):
    """SDE-DPM-Solver++(2M) (Lu et al. 2022, §5), midpoint form: the same D, but each step also
    forgets part of x_t and adds fresh noise z:

        x_s = (σ_s/σ_t)·e^{-h}·x_t + √ᾱ_s·(1 − e^{-2h})·D + σ_s·√(1 − e^{-2h})·z
    """

    def __call__(self, sched, x, x0, eps, t, s, gen, eta):
        if s == 0:
            return x0
        ab_t, ab_s, h, d = self._second_order(sched, x0, t, s)
        sigma_t, sigma_s = (1 - ab_t) ** 0.5, (1 - ab_s) ** 0.5
        return (sigma_s / sigma_t * math.exp(-h)) * x + ab_s**0.5 * (-math.expm1(-2 * h)) * d \
            + sigma_s * (-math.expm1(-2 * h)) ** 0.5 * _randn_like(x, gen)


def sample_steps(model: torch.nn.Module, schedule: NoiseSchedule, labels: torch.Tensor, *,
                 guidance: float | torch.Tensor = 0.0, sampler: str = "dpm++2m", steps: int = 10,
                 eta: float = 0.0, generator: Generators = None,
                 x_T: torch.Tensor | None = None, clip_x0: bool = True,
                 start_alpha_bar: float = START_ALPHA_BAR,
                 guidance_interval: tuple[float, float] = EVERY_STEP) -> Iterator[SamplerStep]:
    """Run the reverse process, yielding a `SamplerStep` after every step.

    labels: [B] digits 0..9 (one sample per entry); guidance: w (float or [B]);
    sampler: one of SAMPLERS; steps: network evaluations, 1..T; eta: DDIM noise (0 = deterministic);
    generator: seeds x_T and any per-step noise, so the same seed gives the same samples
        (or a list of (generator, rows) for a batch made of several requests);
    x_T: optional starting noise [B,1,28,28] (default: drawn from `generator`);
    start_alpha_bar: where a few-step run starts (see `timestep_sequence`); clip_x0: clamp x̂_0 to [-1,1];
    guidance_interval: (lo, hi) fractions of T; guidance applies only at steps with lo ≤ t/T ≤ hi and
    the other steps use the plain conditional ε (one network evaluation instead of two).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    device = next(model.parameters()).device
    labels = torch.as_tensor(labels, device=device).long().reshape(-1)
    B = labels.shape[0]
    if x_T is None:
        x_T = _randn_like(torch.empty((B, 1, 28, 28), device=device), generator)
    update: Callable = {"ddpm": _update_ddpm, "ddim": _update_ddim, "dpm++2m": _DPMSolverPP2M(),
                       "dpm++2m-sde": _SDEDPMSolverPP2M()}[sampler]
    ts = timestep_sequence(schedule, steps, start_alpha_bar)
    x = x_T
    for i, t in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else 0
        # inference mode is per thread, so it must not span a `yield`: a web server may resume
        # this generator from another thread
        with torch.inference_mode():
            t_batch = torch.full((B,), t, device=device, dtype=torch.long)
            eps = guided_eps(model, x, t_batch, labels,
                             guidance if is_guided_step(t, schedule.num_steps, guidance_interval) else 0.0)
            x0 = schedule.predict_x0(x, t_batch, eps)
            if clip_x0:
                x0 = x0.clamp(-1, 1)
                ab = schedule.alpha_bar[t].item()
                eps = (x - ab**0.5 * x0) / (1 - ab) ** 0.5  # keep ε consistent with the clipped x̂_0
            x = update(schedule, x, x0, eps, t, s, generator, eta)
        yield SamplerStep(index=i + 1, total=len(ts), t=s, x=x, x0=x0)


def sample(model: torch.nn.Module, schedule: NoiseSchedule, labels: torch.Tensor, **kwargs) -> torch.Tensor:
    """Run `sample_steps` to the end and return the final samples [B,1,28,28] in [-1,1]."""
    last = None
    for last in sample_steps(model, schedule, labels, **kwargs):
        pass
    return last.x.clamp(-1, 1)
