"""Schedule math: closed forms, and ᾱ cross-checked against diffusers' DDPMScheduler."""
import math

import pytest
import torch

from diffusion.schedules import SCHEDULE_NAMES, NoiseSchedule, make_betas


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_basic_properties(name):
    s = NoiseSchedule.create(name, 200)
    assert s.betas.shape == s.alpha_bar.shape == (201,)
    assert s.betas[0] == 0 and s.alpha_bar[0] == 1
    assert torch.all(s.betas[1:] > 0) and torch.all(s.betas[1:] < 1)
    assert torch.all(s.alpha_bar[1:] < s.alpha_bar[:-1])  # monotone: more noise at every step
    torch.testing.assert_close(s.alpha_bar, torch.cumprod(1 - s.betas, 0))
    torch.testing.assert_close(s.snr[1:], s.alpha_bar[1:] / (1 - s.alpha_bar[1:]))
    torch.testing.assert_close(s.log_snr[1:], torch.log(s.snr[1:]))


def test_linear_matches_the_course():
    b = make_betas("linear", 500, 1e-4, 0.02)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    assert b[250].item() == pytest.approx(1e-4 + 250 / 499 * (0.02 - 1e-4))


def test_cosine_closed_form():
    T, s = 1000, 0.008
    sched = NoiseSchedule.create("cosine", T)
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for t in (1, 10, 500, 900):
        assert sched.alpha_bar[t].item() == pytest.approx(f(t) / f(0), rel=1e-9)


@pytest.mark.parametrize("ours,theirs", [("linear", "linear"), ("cosine", "squaredcos_cap_v2"),
                                         ("sigmoid", "sigmoid"), ("quadratic", "scaled_linear")])
@pytest.mark.parametrize("T", [50, 500, 1000])
def test_alpha_bar_matches_diffusers(ours, theirs, T):
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=theirs, beta_start=1e-4, beta_end=0.02)
    ab = NoiseSchedule.create(ours, T, 1e-4, 0.02).alpha_bar[1:]
    torch.testing.assert_close(ab.float(), ref.alphas_cumprod.float(), rtol=1e-5, atol=1e-7)


def test_q_sample_moments():
    sched = NoiseSchedule.create("linear", 100)
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1, 1, 1), 0.7, dtype=torch.float64)
    t = torch.full((20000,), 40)
    xt = sched.q_sample(x0, t, torch.randn(x0.shape, generator=g, dtype=torch.float64))
    ab = sched.alpha_bar[40].item()
    assert xt.mean().item() == pytest.approx(0.7 * math.sqrt(ab), abs=0.02)
    assert xt.var().item() == pytest.approx(1 - ab, rel=0.03)


def test_posterior_matches_bayes_rule():
    """μ̃ and β̃ against an independent derivation: product of the Gaussians q(x_t|x_{t-1}) q(x_{t-1}|x_0)."""
    sched = NoiseSchedule.create("cosine", 100)
    g = torch.Generator().manual_seed(1)
    x0, xt = torch.randn(5, 1, 2, 2, generator=g, dtype=torch.float64), torch.randn(5, 1, 2, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([2, 10, 50, 90, 100])
    mean, var = sched.q_posterior(x0, xt, t)
    a, b = sched.alphas[t].view(-1, 1, 1, 1), sched.betas[t].view(-1, 1, 1, 1)
    ab_prev = sched.alpha_bar[t - 1].view(-1, 1, 1, 1)
    precision = a / b + 1 / (1 - ab_prev)
    torch.testing.assert_close(var, 1 / precision)
    torch.testing.assert_close(mean, (a.sqrt() / b * xt + ab_prev.sqrt() / (1 - ab_prev) * x0) / precision)


def test_predict_x0_inverts_q_sample():
    sched = NoiseSchedule.create("linear", 300)
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.rand(4, 1, 28, 28, generator=g) * 2 - 1, torch.randn(4, 1, 28, 28, generator=g)
    t = torch.tensor([1, 100, 200, 300])
    torch.testing.assert_close(sched.predict_x0(sched.q_sample(x0, t, eps), t, eps), x0, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("bad", [dict(name="nope"), dict(num_train_steps=0), dict(beta_start=0.02, beta_end=0.01)])
def test_bad_arguments_are_rejected(bad):
    with pytest.raises(ValueError):
        NoiseSchedule.create(**{"name": "linear", "num_train_steps": 10, **bad})
