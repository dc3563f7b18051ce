"""Train the class-conditional U-Net on MNIST:  python -m diffusion.train --data-dir ../shared/data

Each step: pick images x_0 and labels c, a random time step t ~ U{1..T} and noise ε ~ N(0,I);
make x_t = √ᾱ_t·x_0 + √(1-ᾱ_t)·ε; drop the label with probability p (context mask) so the same
network also learns ε(x,∅); minimise ‖ε − ε̂(x_t, t, c)‖².

Guidance distillation (`--teacher checkpoints/unet_teacher`): the student is a copy of the teacher
with a guidance head (see `model.py`) and learns, on the same x_t, the teacher's ε(x,c) and its
guidance direction ε(x,c) − ε(x,∅). Guided sampling with the student costs one pass per step.

Writes (all under --out, default checkpoints/unet):
    unet.safetensors/.json                the EMA weights + config: what the app ships
    unet.train_state.safetensors/.json    raw weights, optimiser moments, step: for --resume
                                          (with the EMA weights above; each file stays under 15 MB)
    <log dir>/loss.csv, loss.png          the loss curve
    <log dir>/samples_epoch_NNN.png       a sample grid after every epoch
Multi-GPU (or multi-process CPU):  torchrun --nproc_per_node N -m diffusion.train …
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoints import checkpoint_paths, load_module, read_config, read_tensors, save_checkpoint
from .data import load_mnist, save_grid, synthetic_digits, to_model_range
from .model import UNetConfig, add_guidance_head, bf16_is_fast, build_unet, count_parameters
from .sampling import conditional_and_unconditional_eps, sample
from .schedules import SCHEDULE_NAMES, NoiseSchedule


def noisy_batch(schedule: NoiseSchedule, x0: torch.Tensor, label_dropout: float,
                generator: torch.Generator | None = None):
    """A training batch of the forward process: (x_t, t, ε, context_mask).

    x0: [B,1,28,28] in [-1,1]. t: [B] ~ U{1..T}; ε: [B,1,28,28] ~ N(0,I); x_t = √ᾱ_t·x_0 + √(1-ᾱ_t)·ε;
    context_mask: [B] bool, True (drop the label) with probability `label_dropout`.
    """
    B, device = x0.shape[0], x0.device
    t = torch.randint(1, schedule.num_steps + 1, (B,), generator=generator).to(device)
    noise = torch.randn(x0.shape, generator=generator).to(device)
    context_mask = (torch.rand(B, generator=generator) < label_dropout).to(device)
    return schedule.q_sample(x0, t, noise), t, noise, context_mask


def diffusion_loss(model: torch.nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, labels: torch.Tensor,
                   label_dropout: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The simple DDPM loss E‖ε − ε̂(x_t,t,c)‖² with labels dropped at rate `label_dropout`.

    x0: [B,1,28,28] in [-1,1]; labels: [B] digits. Returns a scalar.
    """
    x_t, t, noise, context_mask = noisy_batch(schedule, x0, label_dropout, generator)
    return F.mse_loss(model(x_t, t, labels, context_mask), noise)


def distillation_loss(student: torch.nn.Module, teacher: torch.nn.Module, schedule: NoiseSchedule,
                      x0: torch.Tensor, labels: torch.Tensor, label_dropout: float,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """‖ε̂_s(x,c) − ε_T(x,c)‖² + ‖direction_s − (ε_T(x,c) − ε_T(x,∅))‖² on forward-process x_t.

    A masked row (probability `label_dropout`) learns ε_T(x,∅) and a direction of 0, so the
    student still answers the unconditional question. Returns a scalar.
    """
    x_t, t, _, context_mask = noisy_batch(schedule, x0, label_dropout, generator)
    with torch.no_grad():
        eps_cond, eps_uncond = (e.float() for e in conditional_and_unconditional_eps(teacher, x_t, t, labels,
                                                                                      context_mask))
    eps, direction = student.eps_and_direction(x_t, t, labels, context_mask)
    return F.mse_loss(eps.float(), eps_cond) + F.mse_loss(direction.float(), eps_cond - eps_uncond)


class EMA:
    """Exponential moving average of the weights, with the usual warm-up: decay = min(d, (1+n)/(10+n))."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.num_updates = 0
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for k, v in model.state_dict().items():
            self.shadow[k].mul_(d).add_(v.detach().float(), alpha=1 - d)


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    sd = opt.state_dict()
    tensors = {f"optim.{idx}.{key}": torch.as_tensor(val) for idx, st in sd["state"].items() for key, val in st.items()}
    return tensors, sd["param_groups"]


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list) -> None:
    state: dict[int, dict] = {}
    for name, val in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = val
    opt.load_state_dict({"state": state, "param_groups": groups})


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data", help="MNIST root (here: ../shared/data); downloads if absent")
    p.add_argument("--synthetic", type=int, default=0, metavar="N", help="train on N synthetic images (tests)")
    p.add_argument("--out", default="checkpoints/unet", help="checkpoint stem to write")
    p.add_argument("--log-dir", default=None, help="loss curve and sample grids (default: <out>_logs)")
    p.add_argument("--resume", action="store_true", help="continue from <out>.train_state if it exists")
    p.add_argument("--teacher", help="distil this checkpoint into a student with a guidance head (its "
                                     "architecture and schedule win over the options below)")
    p.add_argument("--epochs", type=int, default=15, help="train until this many epochs are done in total")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many optimiser steps (0 = no limit)")
    p.add_argument("--batch-size", type=int, default=128, help="per process")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (after warm-up)")
    p.add_argument("--min-lr", type=float, default=2e-5, help="learning rate at the end of --epochs (cosine decay)")
    p.add_argument("--warmup-steps", type=int, default=500)
    p.add_argument("--label-dropout", type=float, default=0.1)
    p.add_argument("--ema-decay", type=float, default=0.9995)
    p.add_argument("--channels", type=int, nargs="+", default=[24, 48, 96])
    p.add_argument("--attention-heads", type=int, default=4)
    p.add_argument("--embedding-dim", type=int, default=128)
    p.add_argument("--schedule", choices=SCHEDULE_NAMES, default="cosine")
    p.add_argument("--timesteps", type=int, default=500)
    p.add_argument("--sample-guidance", type=float, default=1.0, help="w for the per-epoch sample grid")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-amp", action="store_true", help="disable bf16 autocast (on by default on a GPU or a CPU with bf16 kernels)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if args.device == "cuda" and distributed
                          else args.device)
    is_main = rank == 0
    torch.manual_seed(args.seed + rank)

    state_stem = Path(str(args.out) + ".train_state")
    log_dir = Path(args.log_dir or str(args.out) + "_logs")
    config = {
        "kind": "diffusion-unet",
        "architecture": UNetConfig(channels=tuple(args.channels), attention_heads=args.attention_heads,
                                   embedding_dim=args.embedding_dim).to_dict(),
        "schedule": NoiseSchedule.create(args.schedule, args.timesteps).to_config(),
        "training": {"batch_size": args.batch_size * world, "lr": args.lr, "min_lr": args.min_lr,
                     "lr_decay_epochs": args.epochs, "label_dropout": args.label_dropout,
                     "ema_decay": args.ema_decay, "data": f"synthetic({args.synthetic})" if args.synthetic else "MNIST train (60,000)",
                     "epochs": 0, "steps": 0, "seconds": 0.0, "device": str(device), "processes": world},
    }
    teacher = None
    if args.teacher:
        if distributed:
            raise SystemExit("--teacher runs in one process (the student's guidance head bypasses DDP)")
        teacher, teacher_config = load_module(args.teacher, build_unet, kind="diffusion-unet")
        teacher = teacher.to(device).requires_grad_(False)
        config["architecture"] = {**teacher_config["architecture"], "guidance_head": True}
        config["schedule"] = teacher_config["schedule"]
        config["training"]["distilled_from"] = {"checkpoint": Path(args.teacher).name,
                                                "training": teacher_config["training"]}
    resume = args.resume and checkpoint_paths(state_stem)[0].is_file()
    if resume:  # the saved run's architecture and schedule win over the command line
        saved = read_config(state_stem)
        config["architecture"], config["schedule"] = saved["architecture"], saved["schedule"]
        config["training"].update({k: saved["training"][k] for k in ("epochs", "steps", "seconds")})

    schedule = NoiseSchedule.create(**config["schedule"])
    model = (add_guidance_head(teacher) if teacher is not None and not resume else build_unet(config)).to(device)
    ema = EMA(model, args.ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    if resume:
        tensors = read_tensors(state_stem)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        ema.shadow = {k: v.to(device) for k, v in read_tensors(args.out).items()}  # the shipped weights are the EMA
        ema.num_updates = config["training"]["steps"]
        _restore_optimizer(opt, tensors, saved["optimizer_param_groups"])
        if is_main:
            print(f"resumed from {state_stem} at epoch {config['training']['epochs']}, step {config['training']['steps']}")
    ddp_model = torch.nn.parallel.DistributedDataParallel(model) if distributed else model

    images, labels = synthetic_digits(args.synthetic, args.seed) if args.synthetic else load_mnist(args.data_dir)
    x_all, y_all = to_model_range(images), labels
    use_amp = bf16_is_fast(device) and not args.no_amp
    if is_main:
        print(f"U-Net {count_parameters(model) / 1e6:.2f} M parameters"
              f"{f', distilled from {args.teacher}' if teacher is not None else ''}, {len(x_all)} images, "
              f"{world} process(es) on {device}{' with bf16 autocast' if use_amp else ''}, "
              f"schedule {schedule.name} T={schedule.num_steps}")
        log_dir.mkdir(parents=True, exist_ok=True)

    step, epoch = config["training"]["steps"], config["training"]["epochs"]
    seconds_before, t_start = config["training"]["seconds"], time.time()
    gen = torch.Generator().manual_seed(args.seed * 1000 + rank + step)
    loss_log = log_dir / "loss.csv"
    while epoch < args.epochs and not (args.max_steps and step >= args.max_steps):
        perm = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(args.seed + epoch))[rank::world]
        batches = perm.split(args.batch_size)
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{args.epochs}", disable=not is_main or args.quiet, leave=False)
        losses = []
        for idx in bar:
            for g in opt.param_groups:
                g["lr"] = learning_rate(step, args.epochs * len(batches), args.lr, args.min_lr, args.warmup_steps)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                x0, y = x_all[idx].to(device), y_all[idx].to(device)
                loss = (diffusion_loss(ddp_model, schedule, x0, y, args.label_dropout, gen) if teacher is None else
                        distillation_loss(model, teacher, schedule, x0, y, args.label_dropout, gen))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            ema.update(model)
            step += 1
            losses.append(loss.item())
            if len(losses) % 20 == 0:
                bar.set_postfix(loss=f"{sum(losses[-20:]) / 20:.4f}")
            if args.max_steps and step >= args.max_steps:
                break
        epoch += 1
        if is_main:
            config["training"].update(epochs=epoch, steps=step,
                                      seconds=round(seconds_before + time.time() - t_start, 1))
            _save(args.out, state_stem, config, model, ema, opt)
            _log_epoch(loss_log, log_dir, epoch, step, losses, config, ema, schedule, args, device)
            print(f"epoch {epoch}: loss {sum(losses) / max(len(losses), 1):.4f}, step {step}, "
                  f"{config['training']['seconds'] / 60:.1f} min total", flush=True)
    if distributed:
        dist.destroy_process_group()


def learning_rate(step: int, total_steps: int, peak: float, final: float, warmup_steps: int) -> float:
    """Linear warm-up to `peak`, then a cosine decay to `final` at `total_steps` (the last epoch).
    Small steps at the end settle the weights; EMA then averages a calmer trajectory."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return final + 0.5 * (peak - final) * (1 + math.cos(math.pi * progress))


def _save(out, state_stem, config, model, ema, opt) -> None:
    save_checkpoint(out, ema.shadow, config)
    optim_tensors, groups = _flatten_optimizer(opt)
    tensors = {**{f"model.{k}": v for k, v in model.state_dict().items()}, **optim_tensors}
    save_checkpoint(state_stem, tensors, {**config, "kind": "diffusion-train-state", "optimizer_param_groups": groups})


def _log_epoch(loss_log, log_dir, epoch, step, losses, config, ema, schedule, args, device) -> None:
    new = not loss_log.exists()
    with loss_log.open("a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["epoch", "step", "loss"])
        first = step - len(losses) + 1
        for i in range(0, len(losses), 10):  # one row per 10 steps keeps the file small
            chunk = losses[i:i + 10]
            w.writerow([epoch, first + i + len(chunk) - 1, f"{sum(chunk) / len(chunk):.5f}"])
    _plot_loss(loss_log, log_dir / "loss.png")
    ema_model = build_unet(config).to(device)
    ema_model.load_state_dict(ema.shadow)
    labels = torch.arange(10).repeat(4)
    x = sample(ema_model.eval(), schedule, labels, guidance=args.sample_guidance, sampler="dpm++2m", steps=10,
               generator=torch.Generator().manual_seed(0))
    save_grid(x, log_dir / f"samples_epoch_{epoch:03d}.png", nrow=10)


def _plot_loss(csv_path: Path, png_path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]
    loss = [float(r["loss"]) for r in rows]
    k = max(1, len(loss) // 50)
    smooth = [sum(loss[max(0, i - k):i + 1]) / len(loss[max(0, i - k):i + 1]) for i in range(len(loss))]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, loss, alpha=0.3, label="loss (10-step mean)")
    ax.plot(steps, smooth, label="smoothed")
    ax.set(xlabel="optimiser step", ylabel="MSE(ε, ε̂)", yscale="log", title="Diffusion training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
