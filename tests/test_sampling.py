"""Guidance and the samplers: exactness on toy data, reproducibility, and the course's DDPM loop."""
import math

import pytest
import torch

from diffusion.model import build_unet
from diffusion.sampling import SAMPLERS, Sampler, guided_eps, make_sampler, sample, sample_steps, timestep_sequence
from diffusion.schedules import NoiseSchedule


class GaussianOracle(torch.nn.Module):
    """The exact ε-predictor when the data is N(m_c, s²·I) for class c (m_c = 0.1·c), and N(0, s²) unconditionally.

    For such data E[ε | x_t] = √(1-ᾱ)·(x_t − √ᾱ·m) / (ᾱ·s² + 1 − ᾱ), so a correct sampler must
    return samples with mean m and standard deviation s.
    """

    def __init__(self, schedule, s):
        super().__init__()
        self.schedule, self.s = schedule, s
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, t, label, context_mask=None):
        ab = self.schedule.alpha_bar[t].float().view(-1, 1, 1, 1)
        m = 0.1 * label.float().view(-1, 1, 1, 1)
        if context_mask is not None:
            m = m * (~context_mask).float().view(-1, 1, 1, 1)
        return (1 - ab).sqrt() * (x - ab.sqrt() * m) / (ab * self.s**2 + 1 - ab)


def test_ddpm_recovers_the_data_distribution():
    # ancestral DDPM with the posterior variance β̃ under-disperses by O(1/T) (about 3% in std at T = 200)
    sched = NoiseSchedule.create("cosine", 1000)
    oracle = GaussianOracle(sched, s=0.25)
    x = sample(oracle, sched, torch.full((2000,), 1), sampler="ddpm", num_inference_steps=1000, clip_x0=False,
               generator=torch.Generator().manual_seed(0))
    assert x.mean().item() == pytest.approx(0.1, abs=0.015)
    assert x.std().item() == pytest.approx(0.25, rel=0.03)


def test_the_sde_solver_converges_to_the_data_distribution():
    """SDE-DPM-Solver++(2M) samples the reverse SDE: with the exact ε its samples approach N(m, s²)
    as the steps grow (on this low-variance toy it over-disperses at few steps: std 0.35 at 25)."""
    sched = NoiseSchedule.create("cosine", 1000)
    oracle = GaussianOracle(sched, s=0.25)
    stds = []
    for steps in (25, 100, 400):
        x = sample(oracle, sched, torch.full((2000,), 1), sampler="dpm++2m-sde", num_inference_steps=steps, clip_x0=False,
                   start_alpha_bar=0.0, generator=torch.Generator().manual_seed(0))
        assert x.mean().item() == pytest.approx(0.1, abs=0.01)
        stds.append(x.std().item())
    assert abs(stds[0] - 0.25) > abs(stds[1] - 0.25) > abs(stds[2] - 0.25)
    assert stds[2] == pytest.approx(0.25, rel=0.015)


def _ode_error(sampler, steps, sched, oracle, x_T):
    """Mean per-pixel error against the exact solution of the probability-flow ODE for Gaussian data:
    x_0 = m + s·(x_T − √ᾱ_T·m)/√(ᾱ_T·s² + 1 − ᾱ_T)."""
    labels = torch.full((len(x_T),), 1)
    x = sample(oracle, sched, labels, sampler=sampler, num_inference_steps=steps, clip_x0=False, start_alpha_bar=0.0, x_T=x_T)
    ab = sched.alpha_bar[-1].item()
    exact = 0.1 + oracle.s * (x_T - ab**0.5 * 0.1) / (ab * oracle.s**2 + 1 - ab) ** 0.5
    return (x - exact.clamp(-1, 1)).abs().mean().item()  # `sample` returns images clamped to [-1,1]


@pytest.mark.parametrize("sampler,order", [("ddim", 1), ("dpm++2m", 2)])
def test_deterministic_samplers_converge_to_the_exact_ode_solution_at_their_order(sampler, order):
    sched = NoiseSchedule.create("cosine", 400)
    oracle = GaussianOracle(sched, s=0.25)
    x_T = torch.randn((200, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    err_50, err_100, err_200 = (_ode_error(sampler, n, sched, oracle, x_T) for n in (50, 100, 200))
    assert err_200 < err_100 < err_50
    # halving the step size divides the error by about 2**order
    assert err_50 / err_100 > 0.75 * 2**order and err_100 / err_200 > 0.75 * 2**order
    assert err_200 < (0.005 if order == 1 else 0.001)


def test_ddpm_with_all_steps_is_the_course_loop(tiny_unet_config):
    """Our DDPM (steps = T, no clipping) against a direct transcription of Ho et al.'s Algorithm 2."""
    torch.manual_seed(0)
    model = build_unet(tiny_unet_config).eval()
    for p in model.parameters():  # non-trivial weights
        torch.nn.init.normal_(p, std=0.05)
    sched = NoiseSchedule.from_config(tiny_unet_config["schedule"])
    labels, w = torch.tensor([1, 7]), 2.0
    ours = sample(model, sched, labels, guidance=w, sampler="ddpm", num_inference_steps=sched.num_train_steps, clip_x0=False,
                  generator=torch.Generator().manual_seed(3))

    g = torch.Generator().manual_seed(3)
    x = torch.randn((2, 1, 28, 28), generator=g)
    with torch.no_grad():
        for t in range(sched.num_train_steps, 0, -1):
            tt = torch.full((2,), t)
            eps_c = model(x, tt, labels)
            eps_u = model(x, tt, labels, torch.ones(2, dtype=torch.bool))
            eps = (1 + w) * eps_c - w * eps_u
            a, b, ab = sched.alphas[t].item(), sched.betas[t].item(), sched.alpha_bar[t].item()
            x = (x - b / math.sqrt(1 - ab) * eps) / math.sqrt(a)
            if t > 1:
                x = x + sched.posterior_variance[t].sqrt().item() * torch.randn(x.shape, generator=g)
    torch.testing.assert_close(ours, x.clamp(-1, 1), atol=1e-4, rtol=1e-4)


def test_guidance_zero_is_the_conditional_prediction(tiny_unet_config):
    model = build_unet(tiny_unet_config).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x, t, y = torch.randn(3, 1, 28, 28), torch.tensor([3, 9, 27]), torch.tensor([0, 4, 8])
    with torch.no_grad():
        torch.testing.assert_close(guided_eps(model, x, t, y, 0.0), model(x, t, y))
        eps_c, eps_u = model(x, t, y), model(x, t, y, torch.ones(3, dtype=torch.bool))
        torch.testing.assert_close(guided_eps(model, x, t, y, 1.5), 2.5 * eps_c - 1.5 * eps_u, atol=1e-5, rtol=1e-5)
        per_sample = guided_eps(model, x, t, y, torch.tensor([0.0, 1.5, 3.0]))
        torch.testing.assert_close(per_sample[1], (2.5 * eps_c - 1.5 * eps_u)[1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(per_sample[0], eps_c[0], atol=1e-5, rtol=1e-5)


def test_a_guidance_head_guides_in_one_pass(tiny_unet_config):
    from diffusion.model import add_guidance_head
    model = add_guidance_head(build_unet(tiny_unet_config)).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    passes = []  # rows entering the U-Net's first layer, per pass
    model.stem.register_forward_pre_hook(lambda module, args: passes.append(len(args[0])))
    x, t, y = torch.randn(3, 1, 28, 28), torch.tensor([3, 9, 27]), torch.tensor([0, 4, 8])
    w = torch.tensor([0.0, 1.5, 3.0])
    with torch.no_grad():
        eps_c, direction = model.eps_and_direction(x, t, y)
        passes.clear()
        guided = guided_eps(model, x, t, y, w)
    assert passes == [3], "one pass over the 3 samples (without the head: one doubled batch of 6)"
    torch.testing.assert_close(guided, eps_c + w.reshape(-1, 1, 1, 1) * direction)
    assert (direction.abs() > 0).any()


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_same_seed_same_samples(tiny_unet_config, sampler):
    model = build_unet(tiny_unet_config).eval()
    sched = NoiseSchedule.from_config(tiny_unet_config["schedule"])
    run = lambda seed: sample(model, sched, torch.arange(4), guidance=1.0, sampler=sampler, num_inference_steps=5, eta=1.0,  # noqa: E731
                              generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(run(0), run(0), atol=0, rtol=0)
    assert not torch.equal(run(0), run(1))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_the_loop_yields_every_step(tiny_unet_config, sampler):
    model = build_unet(tiny_unet_config).eval()
    sched = NoiseSchedule.from_config(tiny_unet_config["schedule"])
    steps = list(sample_steps(model, sched, torch.tensor([2, 3]), sampler=sampler, num_inference_steps=6,
                              generator=torch.Generator().manual_seed(0)))
    assert [s.index for s in steps] == list(range(1, 7)) and all(s.total == 6 for s in steps)
    ts = [s.t for s in steps]
    assert ts == sorted(ts, reverse=True) and ts[-1] == 0 and ts[0] < sched.num_train_steps
    for s in steps:
        assert s.x.shape == s.x0.shape == (2, 1, 28, 28)
        assert s.x0.abs().max() <= 1 and torch.isfinite(s.x).all()


def test_timestep_sequence():
    cosine = NoiseSchedule.create("cosine", 500)
    ts = timestep_sequence(cosine, 10)
    assert len(ts) == 10 and ts[-1] == 1 and ts == sorted(ts, reverse=True)
    # few-step samplers start where ᾱ is not vanishingly small (ᾱ_500 ≈ 1e-8 for the cosine schedule)
    assert cosine.alpha_bar[ts[0]] >= 4e-3 > cosine.alpha_bar[ts[0] + 1]
    assert timestep_sequence(cosine, 500) == list(range(500, 0, -1))  # all T steps: the course's loop
    linear = NoiseSchedule.create("linear", 50)  # ᾱ_T ≈ 0.6: nothing to skip
    assert timestep_sequence(linear, 5) == [50, 38, 26, 13, 1]
    for bad in (0, 51, 2.5, True):
        with pytest.raises(ValueError):
            timestep_sequence(linear, bad)


def test_the_loop_can_be_resumed_from_another_thread(tiny_unet_config):
    """Web servers resume generators on worker threads; inference mode must not leak across them."""
    import threading

    model = build_unet(tiny_unet_config).eval()
    sched = NoiseSchedule.from_config(tiny_unet_config["schedule"])
    steps = sample_steps(model, sched, torch.tensor([1, 2]), guidance=0.0, num_inference_steps=4,
                         generator=torch.Generator().manual_seed(0))
    first = next(steps)
    results = []
    thread = threading.Thread(target=lambda: results.extend(steps))
    thread.start()
    thread.join()
    assert first.index == 1 and [s.index for s in results] == [2, 3, 4]
    assert all(not s.x.requires_grad for s in results)


@pytest.mark.parametrize("name", SAMPLERS)
def test_the_loop_written_by_hand_with_the_public_step_is_sample_steps(tiny_random_pipe, name):
    """The README's few lines: make a sampler, call its step at each of its time steps."""
    pipe, labels = tiny_random_pipe, torch.tensor([3, 7])
    expected = sample(pipe.model, pipe.schedule, labels, guidance=2.0, sampler=name, num_inference_steps=8, eta=0.5,
                      generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    sampler = make_sampler(name, pipe.schedule, num_inference_steps=8, eta=0.5)
    x = torch.randn(2, 1, 28, 28, generator=generator)
    with torch.inference_mode():
        for t in sampler.timesteps:
            eps = guided_eps(pipe.model, x, torch.full((2,), t), labels, guidance=2.0)
            x = sampler.step(eps, t, x, generator).x
    torch.testing.assert_close(x.clamp(-1, 1), expected)
    assert sampler.timesteps == timestep_sequence(pipe.schedule, 8) and isinstance(sampler, Sampler)


def test_ddpm_step_is_the_schedules_posterior(tiny_random_pipe):
    """With noise switched off (a generator of zeros is not possible, so compare means): DDPM's step with
    s = 0 returns exactly q_posterior's mean, and its randomness has exactly q_posterior's variance."""
    schedule = tiny_random_pipe.schedule
    sampler = make_sampler("ddpm", schedule, num_inference_steps=schedule.num_train_steps, clip_x0=False)
    x, eps = torch.randn(4000, 1, 2, 2, dtype=torch.float64), torch.randn(4000, 1, 2, 2, dtype=torch.float64)
    t = 20
    x0 = schedule.predict_x0(x, t, eps)
    mean, variance = schedule.q_posterior(x0, x, t)
    out = sampler.step(eps, t, x, torch.Generator().manual_seed(1))
    assert out.t == t - 1
    torch.testing.assert_close(out.x0, x0)
    residual = (out.x - mean) / variance.sqrt()
    assert abs(residual.mean().item()) < 0.03 and abs(residual.std().item() - 1) < 0.03
