"""Training: one step on synthetic data, resuming, and a 2-process DDP smoke run on gloo."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from devtools.servers import free_port
from diffusion.data import synthetic_digits, to_model_range
from diffusion.model import build_unet
from diffusion.schedules import NoiseSchedule
from diffusion.train import EMA, diffusion_loss

REPO = Path(__file__).resolve().parent.parent
TINY = ["--channels", "8", "16", "16", "--attention-heads", "2", "--embedding-dim", "32", "--num-train-steps", "50"]


def test_one_training_step_changes_weights_and_ema(tiny_unet_config):
    torch.manual_seed(0)
    model, sched = build_unet(tiny_unet_config), NoiseSchedule.from_config(tiny_unet_config["schedule"])
    images, labels = synthetic_digits(16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ema = EMA(model, decay=0.99)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss = diffusion_loss(model, sched, to_model_range(images), labels, label_dropout=0.1,
                          generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    opt.step()
    ema.update(model)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "the optimiser step changed no weight"
    k = changed[0]
    assert not torch.equal(ema.shadow[k], before[k].float()) and not torch.equal(ema.shadow[k], model.state_dict()[k])


def test_a_few_steps_reduce_the_loss(tiny_unet_config):
    torch.manual_seed(0)
    model, sched = build_unet(tiny_unet_config), NoiseSchedule.from_config(tiny_unet_config["schedule"])
    x, y = to_model_range(synthetic_digits(64)[0]), synthetic_digits(64)[1]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    eval_loss = lambda: diffusion_loss(model, sched, x, y, 0.0, torch.Generator().manual_seed(9)).item()  # noqa: E731
    start = eval_loss()
    for _ in range(60):
        loss = diffusion_loss(model, sched, x, y, 0.1, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert eval_loss() < 0.8 * start


def _run(args, tmp_path, **env):
    out = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_cli_trains_writes_logs_and_resumes(tmp_path):
    stem = tmp_path / "unet"
    base = [sys.executable, "-m", "diffusion.train", "--synthetic", "64", "--batch-size", "16", "--quiet",
            "--out", str(stem), *TINY]
    _run(base + ["--epochs", "1"], tmp_path)
    assert json.loads((tmp_path / "unet.json").read_text())["training"]["epochs"] == 1
    logs = tmp_path / "unet_logs"
    assert (logs / "loss.png").stat().st_size > 0 and (logs / "samples_epoch_001.png").stat().st_size > 0
    out = _run(base + ["--epochs", "2", "--resume"], tmp_path)
    assert "resumed" in out
    cfg = json.loads((tmp_path / "unet.json").read_text())
    assert cfg["training"]["epochs"] == 2 and cfg["training"]["steps"] == 8  # 4 steps per epoch, twice
    rows = (logs / "loss.csv").read_text().splitlines()
    assert rows[0] == "epoch,step,loss" and len(rows) >= 3


def test_ddp_two_cpu_processes(tmp_path):
    """torchrun with 2 processes on the gloo backend: gradients are averaged, rank 0 writes."""
    stem = tmp_path / "unet"
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
          "-m", "diffusion.train", "--synthetic", "64", "--batch-size", "8", "--epochs", "1", "--quiet",
          "--device", "cpu", "--out", str(stem), *TINY], tmp_path)
    cfg = json.loads((tmp_path / "unet.json").read_text())
    assert cfg["training"]["processes"] == 2
    assert cfg["training"]["steps"] == 4  # 64 images / 2 ranks / batch 8
    assert cfg["training"]["batch_size"] == 16


def test_learning_rate_warms_up_then_decays_to_the_final_rate():
    from diffusion.train import learning_rate
    lrs = [learning_rate(step, 1000, 1e-3, 2e-5, 100) for step in range(1100)]
    assert lrs[0] == pytest.approx(1e-5) and lrs[99] == pytest.approx(1e-3)
    assert lrs[550] == pytest.approx((1e-3 + 2e-5) / 2, rel=1e-3)  # half-way through the decay
    assert all(a >= b for a, b in zip(lrs[99:], lrs[100:]))
    assert lrs[1000] == lrs[1099] == pytest.approx(2e-5)


def test_distillation_fits_the_teachers_two_predictions(tiny_unet_config):
    """Guidance distillation on one fixed batch: the loss falls, and the new guidance head learns."""
    from diffusion.model import add_guidance_head
    from diffusion.train import distillation_loss
    torch.manual_seed(0)
    teacher = build_unet(tiny_unet_config)
    for p in teacher.parameters():  # a random teacher whose label matters (zero-initialised layers would hide it)
        torch.nn.init.normal_(p, std=0.2)
    teacher.eval().requires_grad_(False)
    student, sched = add_guidance_head(teacher), NoiseSchedule.from_config(tiny_unet_config["schedule"])
    images, labels = synthetic_digits(32)
    loss_on_the_batch = lambda: distillation_loss(student, teacher, sched, to_model_range(images), labels, 0.1,  # noqa: E731
                                                  torch.Generator().manual_seed(9))
    start = loss_on_the_batch().item()
    assert start > 0  # the student starts with a zero guidance direction
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    for _ in range(60):
        loss = loss_on_the_batch()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss_on_the_batch().item() < 0.8 * start
    assert student.head[-1].weight[1:].abs().sum() > 0  # the guidance head's channel is no longer zero


def test_cli_distils_a_teacher_into_a_guidance_head(tmp_path):
    base = [sys.executable, "-m", "diffusion.train", "--synthetic", "64", "--batch-size", "16", "--quiet", *TINY]
    _run(base + ["--epochs", "1", "--out", str(tmp_path / "teacher")], tmp_path)
    _run(base + ["--epochs", "1", "--out", str(tmp_path / "student"), "--teacher", str(tmp_path / "teacher"),
                 "--lr", "1e-4"], tmp_path)
    cfg = json.loads((tmp_path / "student.json").read_text())
    assert cfg["architecture"]["guidance_head"] is True
    assert cfg["training"]["distilled_from"]["training"]["epochs"] == 1
    from diffusion.pipeline import load_pipeline
    pipe = load_pipeline(tmp_path / "student", bf16=False)
    assert pipe.network_evaluations(num_inference_steps=10, guidance=1.0) == 10  # one pass per guided step
    assert load_pipeline(tmp_path / "teacher", bf16=False).network_evaluations(num_inference_steps=10, guidance=1.0) == 20
    assert pipe.generate([3, 7], num_inference_steps=3, seed=0).shape == (2, 28, 28)
