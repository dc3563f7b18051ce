"""Noise schedules: the pure math of the forward process (no network here).

A schedule fixes β_1..β_T, the variance of the noise added at each forward step
    q(x_t | x_{t-1}) = N(√(1-β_t)·x_{t-1}, β_t·I).
Everything else follows from β:
    α_t   = 1 - β_t
    ᾱ_t   = α_1·α_2·…·α_t              (how much of x_0 survives to step t)
    SNR_t = ᾱ_t / (1 - ᾱ_t)             (signal-to-noise ratio of x_t)
    q(x_t | x_0)       = N(√ᾱ_t·x_0, (1-ᾱ_t)·I)      -> `q_sample`
    q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t·I)            -> `q_posterior`

Time steps are integers t = 1..T as in the DDPM paper; arrays are stored with a
leading entry for t = 0 (β_0 = 0, ᾱ_0 = 1) so that `alpha_bar[t]` reads like the maths.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCHEDULE_NAMES = ("linear", "cosine", "quadratic", "sigmoid")
DEFAULT_BETA_RANGE = (1e-4, 0.02)  # the course's (Ho et al.'s) β_1 and β_T


def make_betas(name: str, num_train_steps: int, beta_start: float = DEFAULT_BETA_RANGE[0],
               beta_end: float = DEFAULT_BETA_RANGE[1]) -> torch.Tensor:
    """β_1..β_T as float64 [T] for a named schedule.

    linear:    β rises linearly from beta_start to beta_end (Ho et al. 2020; the course uses 1e-4..0.02).
    quadratic: √β rises linearly, so β grows slowly at first.
    sigmoid:   β follows a sigmoid between beta_start and beta_end (GeoDiff, Xu et al. 2022).
    cosine:    ᾱ_t = cos²(((t/T)+s)/(1+s)·π/2) with s = 0.008, β clipped at 0.999
               (Nichol & Dhariwal 2021); beta_start/beta_end are not used.
    """
    if isinstance(num_train_steps, bool) or not isinstance(num_train_steps, int) or num_train_steps < 1:
        raise ValueError(f"T (num_train_steps) must be a positive integer, got {num_train_steps!r}")
    if name != "cosine" and not (0.0 < beta_start < beta_end < 1.0):
        raise ValueError(f"need 0 < beta_start < beta_end < 1, got {beta_start}, {beta_end}")
    T = num_train_steps
    if name == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    if name == "quadratic":
        return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2
    if name == "sigmoid":
        s = torch.sigmoid(torch.linspace(-6.0, 6.0, T, dtype=torch.float64))
        return beta_start + (beta_end - beta_start) * s
    if name == "cosine":
        s = 0.008
        t = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        alpha_bar = f / f[0]
        return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULE_NAMES)}")


@dataclass(frozen=True)
class NoiseSchedule:
    """All per-step constants of a schedule, indexed by t = 0..T (entry 0 is 'no noise').

    Attributes are float64 tensors of shape [T+1]. Build one with `NoiseSchedule.create`.
    """

    name: str
    num_train_steps: int  # T, the number of steps of the forward process
    beta_start: float
    beta_end: float
    betas: torch.Tensor
    alphas: torch.Tensor
    alpha_bar: torch.Tensor

    @classmethod
    def create(cls, name: str = "linear", num_train_steps: int = 1000, beta_start: float = DEFAULT_BETA_RANGE[0],
               beta_end: float = DEFAULT_BETA_RANGE[1]) -> "NoiseSchedule":
        betas = torch.cat([torch.zeros(1, dtype=torch.float64),
                           make_betas(name, num_train_steps, beta_start, beta_end)])
        alphas = 1.0 - betas
        return cls(name=name, num_train_steps=num_train_steps, beta_start=beta_start, beta_end=beta_end, betas=betas, alphas=alphas,
                   alpha_bar=torch.cumprod(alphas, dim=0))

    # --- derived quantities -------------------------------------------------------------
    @property
    def snr(self) -> torch.Tensor:
        """SNR_t = ᾱ_t / (1 - ᾱ_t), [T+1] (infinite at t = 0)."""
        return self.alpha_bar / (1.0 - self.alpha_bar)

    @property
    def log_snr(self) -> torch.Tensor:
        """log SNR_t, [T+1]."""
        return torch.log(self.alpha_bar) - torch.log1p(-self.alpha_bar)

    @property
    def posterior_variance(self) -> torch.Tensor:
        """β̃_t = β_t·(1-ᾱ_{t-1})/(1-ᾱ_t), [T+1] (0 at t = 0 and t = 1)."""
        var = torch.zeros_like(self.betas)
        ab, ab_prev = self.alpha_bar[1:], self.alpha_bar[:-1]
        var[1:] = self.betas[1:] * (1.0 - ab_prev) / (1.0 - ab)
        return var

    def scales(self, t: int) -> tuple[float, float]:
        """(√ᾱ_t, √(1-ᾱ_t)): how much of x_0 and of the noise make up x_t (see `q_sample`)."""
        alpha_bar = self.alpha_bar[t].item()
        return alpha_bar**0.5, (1.0 - alpha_bar) ** 0.5

    def _gather(self, values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """values[t] reshaped to broadcast against `like` ([B,...]), in like's dtype/device."""
        return self._broadcast(values[torch.as_tensor(t, device=values.device)], like)

    @staticmethod
    def _broadcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Per-row float64 values ([] or [B]) in like's dtype/device, shaped to broadcast against [B,...]."""
        out = values.to(device=like.device, dtype=like.dtype)
        return out.reshape(out.shape + (1,) * (like.dim() - out.dim()))

    # --- the forward process --------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample x_t ~ q(x_t | x_0) = √ᾱ_t·x_0 + √(1-ᾱ_t)·ε.

        x0, noise: [B,C,H,W] (images in [-1,1]); t: [B] integers in 0..T. Returns [B,C,H,W].
        """
        ab = self._gather(self.alpha_bar, t, x0)
        return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t, s=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean [B,C,H,W] (x_t's dtype) and variance [B,1,1,1] (float64, the schedule's precision) of
        q(x_s | x_t, x_0), for 0 ≤ s < t (default s = t-1).

        x0, xt: [B,C,H,W]; t, s: ints or [B] integer tensors. With α_{t|s} = ᾱ_t/ᾱ_s (α_t itself when s = t-1):
            mean     = √ᾱ_s·(1-α_{t|s})/(1-ᾱ_t)·x_0 + √α_{t|s}·(1-ᾱ_s)/(1-ᾱ_t)·x_t
            variance = (1-α_{t|s})·(1-ᾱ_s)/(1-ᾱ_t)
        A sampler that skips steps (t -> s > t-1) uses the same posterior of the respaced process.
        """
        coef_x0, coef_xt, variance = self.posterior_coefficients(t, s)
        mean = self._broadcast(coef_x0, x0) * x0 + self._broadcast(coef_xt, xt) * xt
        return mean, variance.reshape(variance.shape + (1,) * (xt.dim() - variance.dim()))

    def posterior_coefficients(self, t, s=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(coefficient of x_0, coefficient of x_t, variance) of q(x_s | x_t, x_0) (see `q_posterior`), float64,
        shaped like t. t, s: ints or [B] integer tensors, 0 ≤ s < t (default s = t-1)."""
        t = torch.as_tensor(t)
        s = t - 1 if s is None else torch.as_tensor(s)
        ab_t, ab_s = self.alpha_bar[t], self.alpha_bar[s]
        alpha_ts = ab_t / ab_s
        coef_x0 = ab_s.sqrt() * (1.0 - alpha_ts) / (1.0 - ab_t)
        coef_xt = alpha_ts.sqrt() * (1.0 - ab_s) / (1.0 - ab_t)
        return coef_x0, coef_xt, (1.0 - alpha_ts) * (1.0 - ab_s) / (1.0 - ab_t)

    def predict_x0(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Invert q_sample for x_0 given the noise: x̂_0 = (x_t - √(1-ᾱ_t)·ε) / √ᾱ_t."""
        ab = self._gather(self.alpha_bar, t, xt)
        return (xt - (1.0 - ab).sqrt() * eps) / ab.sqrt()

    @classmethod
    def from_config(cls, config: dict) -> "NoiseSchedule":
        """The schedule a checkpoint's "schedule" entry describes (older checkpoints call T "num_steps")."""
        config = dict(config)
        if "num_steps" in config:
            config["num_train_steps"] = config.pop("num_steps")
        return cls.create(**config)

    def to_config(self) -> dict:
        """The arguments of `create`, for a checkpoint's JSON config."""
        return {"name": self.name, "num_train_steps": self.num_train_steps,
                "beta_start": self.beta_start, "beta_end": self.beta_end}
