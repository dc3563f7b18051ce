"""The few-step student's training (student.py): its steps, the teacher's target, the loss, the command line."""
import json
import sys

import pytest
import torch

from diffusion.data import synthetic_digits, to_model_range
from diffusion.model import add_guidance_head, build_unet
from diffusion.sampling import make_sampler, span_timesteps
from diffusion.schedules import NoiseSchedule
from diffusion.student import StudentPlan, student_loss, student_spans, teacher_transition, x0_target
from test_training import TINY, _run


@pytest.fixture(scope="module")
def guided_teacher():
    """A tiny random teacher with a guidance head whose every weight matters, and its cosine schedule."""
    from conftest import tiny_config
    config = tiny_config("cosine")
    torch.manual_seed(0)
    teacher = build_unet(config)
    for p in teacher.parameters():
        torch.nn.init.normal_(p, std=0.2)
    teacher = add_guidance_head(teacher)
    with torch.no_grad():
        teacher.head[-1].weight[1:].normal_(std=0.2)
    return teacher.eval().requires_grad_(False), NoiseSchedule.from_config(config["schedule"])


def test_span_timesteps_split_a_span_evenly_and_refuse_impossible_ones():
    assert span_timesteps((480, 384), 2) == [480, 432]
    assert span_timesteps((5, 0), 5) == [5, 4, 3, 2, 1]
    with pytest.raises(ValueError, match="distinct steps"):
        span_timesteps((5, 3), 3)
    with pytest.raises(ValueError):
        span_timesteps((3, 5), 1)


def test_student_spans_are_the_ddim_samplers_steps_ending_at_the_clean_image(guided_teacher):
    _, schedule = guided_teacher
    spans = student_spans(schedule, 6)
    ddim = make_sampler("ddim", schedule, 6)
    assert [t for t, _ in spans] == ddim.timesteps
    assert [s for _, s in spans] == ddim.timesteps[1:] + [0]


def test_a_sampler_over_a_span_stops_at_its_end(guided_teacher):
    _, schedule = guided_teacher
    solver = make_sampler("dpm++2m-sde", schedule, 3, span=(30, 12))
    x, g = torch.randn(2, 1, 28, 28), torch.Generator().manual_seed(0)
    times = []
    for t in solver.timesteps:
        out = solver.step(torch.randn(2, 1, 28, 28), t, x, g)
        x = out.x
        times.append(out.t)
    assert solver.timesteps == [30, 24, 18] and times == [24, 18, 12]


def test_the_teacher_transition_is_its_sampler_run_over_the_span(guided_teacher):
    from diffusion.sampling import guided_eps
    teacher, schedule = guided_teacher
    x_t, labels, w = torch.randn(3, 1, 28, 28), torch.tensor([1, 4, 9]), torch.tensor([0.0, 0.5, 2.0])
    got = teacher_transition(teacher, schedule, x_t, (40, 20), labels, w, 4)
    solver, x = make_sampler("dpm++2m", schedule, 4, span=(40, 20)), x_t
    for t in solver.timesteps:
        x = solver.step(guided_eps(teacher, x, torch.full((3,), t), labels, w), t, x).x
    torch.testing.assert_close(got, x)
    torch.testing.assert_close(teacher_transition(teacher, schedule, x_t, (40, 20), labels, w, 4), got)  # no noise


def test_the_target_makes_one_ddim_step_land_where_the_teacher_landed(guided_teacher):
    teacher, schedule = guided_teacher
    x_t, labels, w = torch.randn(2, 1, 28, 28), torch.tensor([3, 8]), torch.full((2,), 0.6)
    x_s = teacher_transition(teacher, schedule, x_t, (45, 30), labels, w, 3)
    x0 = x0_target(schedule, x_t, x_s, 45, 30)
    eps = (x_t - schedule.scales(45)[0] * x0) / schedule.scales(45)[1]  # the ε that goes with that x̂_0
    step = make_sampler("ddim", schedule, 1, span=(45, 30), clip_x0=False).step(eps, 45, x_t)
    torch.testing.assert_close(step.x, x_s, atol=1e-4, rtol=1e-4)


def test_the_last_span_gives_the_teachers_clean_image(guided_teacher):
    teacher, schedule = guided_teacher
    x_t = torch.randn(4, 1, 28, 28)
    labels, w = torch.tensor([0, 1, 2, 3]), torch.zeros(4)
    got = teacher_transition(teacher, schedule, x_t, (1, 0), labels, w, 4)
    solver = make_sampler("dpm++2m", schedule, 1, span=(1, 0))
    expected = solver.step(teacher(x_t, torch.ones(4, dtype=torch.long), labels), 1, x_t).x
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(x0_target(schedule, x_t, got, 1, 0), got)


def test_a_student_that_is_its_teacher_is_off_and_training_brings_it_closer(guided_teacher):
    """The student starts as the teacher; one step of its own misses the teacher's four, and a few optimiser
    steps on a fixed batch and span shrink the miss."""
    teacher, schedule = guided_teacher
    student = build_unet({"architecture": teacher.config.to_dict()})
    student.load_state_dict(teacher.state_dict())
    images, labels = synthetic_digits(32)
    x0, plan = to_model_range(images), StudentPlan(steps=3, teacher_substeps=4, guidance_range=(0.0, 2.0))
    loss_on_the_batch = lambda: student_loss(student, teacher, schedule, x0, labels, plan,  # noqa: E731
                                             torch.Generator().manual_seed(5))
    start = loss_on_the_batch()
    assert torch.isfinite(start) and start.item() > 0
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    for _ in range(40):
        loss = loss_on_the_batch()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss_on_the_batch().item() < 0.8 * start.item()


def test_cli_distils_a_few_step_student_and_resumes(tmp_path):
    base = [sys.executable, "-m", "diffusion.train", "--synthetic", "64", "--batch-size", "16", "--quiet", *TINY]
    _run(base + ["--epochs", "1", "--out", str(tmp_path / "teacher")], tmp_path)
    _run(base + ["--epochs", "1", "--out", str(tmp_path / "guided"), "--teacher", str(tmp_path / "teacher")], tmp_path)
    student = base + ["--out", str(tmp_path / "student"), "--teacher", str(tmp_path / "guided"),
                      "--student-steps", "4", "--teacher-substeps", "2", "--lr", "1e-4"]
    _run(student + ["--epochs", "1"], tmp_path)
    out = _run(student + ["--epochs", "2", "--resume", "--student-steps", "5"], tmp_path)
    assert "resumed" in out
    cfg = json.loads((tmp_path / "student.json").read_text())
    assert cfg["training"]["steps"] == 8 and cfg["training"]["epochs"] == 2
    assert cfg["training"]["student"]["steps"] == 4  # the saved plan wins over the command line on --resume
    assert cfg["sampling"] == {"sampler": "ddim", "steps": 4}
    assert (tmp_path / "student_logs" / "samples_epoch_002.png").stat().st_size > 0
    from diffusion.pipeline import load_pipeline
    pipe = load_pipeline(tmp_path / "student", bf16=False)
    assert pipe.generate([3, 7], sampler="ddim", num_inference_steps=4, seed=0).shape == (2, 28, 28)


def test_a_student_needs_a_teacher_with_a_guidance_head(tmp_path):
    base = [sys.executable, "-m", "diffusion.train", "--synthetic", "64", "--batch-size", "16", "--quiet", *TINY]
    _run(base + ["--epochs", "1", "--out", str(tmp_path / "teacher")], tmp_path)
    import subprocess
    out = subprocess.run(base + ["--epochs", "1", "--out", str(tmp_path / "student"), "--teacher",
                                 str(tmp_path / "teacher"), "--student-steps", "4"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "guidance head" in out.stderr
    assert not (tmp_path / "student.json").exists()
