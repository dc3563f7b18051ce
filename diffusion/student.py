"""A few-step student: one big step of its own for several small steps of the shipped model.

The shipped model samples with SDE-DPM-Solver++(2M) in 12 steps: each step follows the reverse SDE a
little way and adds fresh noise. The student takes S big steps instead (6 by default), each one a step of
the plain ancestral sampler (`ddpm`, the course's own step with the forward process's posterior):

    x_s = a·x̂_0 + b·x_t + √v·z          (a, b, v: `NoiseSchedule.posterior_coefficients(t, s)`)

Where the teacher would take K small steps from t to s, the student must put x_s where the teacher's K
steps put it *on average*. So it is trained (progressive distillation, Salimans & Ho 2022, for a stochastic
sampler) to give the x̂_0 whose step lands on that average:

    x̂_0 target = (E[teacher's x_s | x_t] − b·x_t) / a

A single run of the teacher gives x_s plus the noise it added on the way. That noise has mean zero and the
training follows it linearly through the run (`teacher_transition`), so subtracting it leaves an unbiased
and much less noisy estimate of the average. Then the student's own fresh noise √v·z stands for the
teacher's. Each row is guided at its own w in `guidance_range`: the student keeps the guidance head
(ε = ε(x,c) + w·direction, one network pass per step) and learns the teacher's guided steps at every w.

The loss weighs the x̂_0 error by max(SNR_t, 1) (Salimans & Ho's "truncated SNR"): where the image is
mostly noise (SNR < 1) it is the x̂_0 error itself, elsewhere the usual ε error.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .sampling import guided_eps, make_sampler, randn_like, timestep_sequence
from .schedules import NoiseSchedule

STUDENT_SAMPLER = "ddpm"          # the student's own step: the forward process's posterior, fresh noise each step
TEACHER_SAMPLER = "dpm++2m-sde"   # the shipped model's default sampler, whose steps the student learns to skip


@dataclass(frozen=True)
class StudentPlan:
    """How a student is distilled (stored in its checkpoint's config under training.student).

    steps: the student's network evaluations per sample; teacher_substeps: the teacher's steps for each of them
    (at most; fewer where the span is shorter); guidance_range: the w each training row is drawn from, uniformly."""

    steps: int = 6
    teacher_substeps: int = 2
    guidance_range: tuple[float, float] = (0.0, 2.0)

    def to_dict(self) -> dict:
        return {**asdict(self), "guidance_range": list(self.guidance_range), "sampler": STUDENT_SAMPLER,
                "teacher_sampler": TEACHER_SAMPLER}


def student_spans(schedule: NoiseSchedule, steps: int) -> list[tuple[int, int]]:
    """The student's steps as (t, s) pairs, e.g. [(480, 385), …, (1, 0)]: the ddpm sampler's time steps for
    `steps` steps (`sampling.timestep_sequence`), each to the next, the last to 0 (the clean image)."""
    ts = timestep_sequence(schedule, steps)
    return list(zip(ts, ts[1:] + [0]))


@torch.no_grad()
def teacher_transition(teacher: torch.nn.Module, schedule: NoiseSchedule, x_t: torch.Tensor, span: tuple[int, int],
                       labels: torch.Tensor, guidance: torch.Tensor, substeps: int,
                       generator: torch.Generator) -> torch.Tensor:
    """An unbiased estimate of E[x_s | x_t] under the teacher's sampler, from one run of it from t to s.

    x_t: [B,1,28,28] at time t = span[0]; labels: [B]; guidance: [B] w per row; substeps: the teacher's steps
    (at most s − t of them). Returns [B,1,28,28] at s = span[1] (at s = 0: the teacher's clean image).
    The run adds noise c·z at each step and carries what it already added by the step's factor on x; that
    sum has mean zero, and it is subtracted from the run's end point.
    """
    t, s = span
    solver = make_sampler(TEACHER_SAMPLER, schedule, min(substeps, t - s), span=span)
    x, added_noise = x_t, torch.zeros_like(x_t)
    B = x.shape[0]
    for step_t in solver.timesteps:
        eps = guided_eps(teacher, x, torch.full((B,), step_t, dtype=torch.long, device=x.device), labels, guidance)
        before = generator.get_state()
        out = solver.step(eps.float(), step_t, x.float(), generator)
        if out.t > 0:  # the same z the step drew, from the generator as it was before the step
            z = randn_like(x_t, torch.Generator(generator.device).set_state(before))
            keep_x, noise_scale = solver.coefficients(step_t, out.t)
            added_noise = keep_x * added_noise + noise_scale * z
        else:
            added_noise = torch.zeros_like(x_t)  # the last step returns x̂_0, which adds no noise
        x = out.x
    return x - added_noise


def student_loss(student: torch.nn.Module, teacher: torch.nn.Module, schedule: NoiseSchedule, x0: torch.Tensor,
                 labels: torch.Tensor, plan: StudentPlan, generator: torch.Generator) -> torch.Tensor:
    """max(SNR_t, 1)·‖x̂_0(student) − x̂_0 target‖² for one random student step (t, s), the same for the batch.

    x0: [B,1,28,28] real digits in [-1,1] (they give x_t by the forward process); labels: [B] digits.
    Returns a scalar. See the module docstring for the target.
    """
    B, device = x0.shape[0], x0.device
    spans = student_spans(schedule, plan.steps)
    t, s = spans[int(torch.randint(len(spans), (1,), generator=generator))]
    x_t = schedule.q_sample(x0, torch.full((B,), t), randn_like(x0, generator))
    lo, hi = plan.guidance_range
    w = (lo + (hi - lo) * torch.rand(B, generator=generator)).to(device)
    x_s = teacher_transition(teacher, schedule, x_t, (t, s), labels, w, plan.teacher_substeps, generator)
    coef_x0, coef_xt, _ = (c.item() for c in schedule.posterior_coefficients(t, s))
    target = (x_s.float() - coef_xt * x_t) / coef_x0
    eps_cond, direction = student.eps_and_direction(x_t, torch.full((B,), t, device=device), labels)
    eps = eps_cond.float() + w.reshape(-1, 1, 1, 1) * direction.float()
    prediction = schedule.predict_x0(x_t, torch.full((B,), t), eps)
    weight = max(schedule.snr[t].item(), 1.0)
    return weight * F.mse_loss(prediction, target)

