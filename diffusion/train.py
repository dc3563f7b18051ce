"""Train the class-conditional U-Net on MNIST:  python -m diffusion.train --data-dir ../shared/data

Each step: pick images x_0 and labels c, a random time step t ~ U{1..T} and noise ε ~ N(0,I);
make x_t = √ᾱ_t·x_0 + √(1-ᾱ_t)·ε; drop the label with probability p (context mask) so the same
network also learns ε(x,∅); minimise ‖ε − ε̂(x_t, t, c)‖².

Guidance distillation (`--teacher checkpoints/unet_teacher`): the student is a copy of the teacher
with a guidance head (see `model.py`) and learns, on the same x_t, the teacher's ε(x,c) and its
guidance direction ε(x,c) − ε(x,∅). Guided sampling with the student costs one pass per step.

A few-step student (`--teacher checkpoints/unet --student-steps 6 --out checkpoints/student`): a copy of
the shipped model learns to take one step where it takes several (see `student.py`).

Writes (all under --out, default checkpoints/unet):
    unet.safetensors/.json                the EMA weights + config: what the app ships
    unet.train_state.safetensors/.json    raw weights and step, and
    unet.train_state.optimizer.*          the optimiser's moments: for --resume (with the EMA weights
                                          above; each file stays under 10 MB)
    <log dir>/loss.csv, loss.png          the training loss, and the loss of the EMA weights on a fixed
                                          set of training and of held-out (test) images after every epoch
    <log dir>/samples_epoch_NNN.png       a sample grid after every epoch
    <log dir>/snapshots/step_NNNNNN.*     16-bit EMA weights at --snapshot-steps (training over time)
Multi-GPU (or multi-process CPU):  torchrun --nproc_per_node N -m diffusion.train …
"""
from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoints import checkpoint_paths, load_module, read_config, read_tensors, save_checkpoint
from .loss_logs import append_csv, plot_losses
from .data import load_mnist, save_grid, synthetic_digits, to_model_range
from .model import UNetConfig, add_guidance_head, bf16_is_fast, build_unet, count_parameters
from .sampling import conditional_and_unconditional_eps, has_guidance_head, sample
from .schedules import SCHEDULE_NAMES, NoiseSchedule
from .student import StudentPlan, student_loss

DEFAULTS = UNetConfig()  # one source of truth for the architecture's defaults
FIXED_LOSS_IMAGES = 2000  # images in the fixed training and held-out sets whose loss is logged per epoch


def noisy_batch(schedule: NoiseSchedule, x0: torch.Tensor, label_dropout: float,
                generator: torch.Generator | None = None):
    """A training batch of the forward process: (x_t, t, ε, context_mask).

    x0: [B,1,28,28] in [-1,1]. t: [B] ~ U{1..T}; ε: [B,1,28,28] ~ N(0,I); x_t = √ᾱ_t·x_0 + √(1-ᾱ_t)·ε;
    context_mask: [B] bool, True (drop the label) with probability `label_dropout`.
    """
    B, device = x0.shape[0], x0.device
    t = torch.randint(1, schedule.num_train_steps + 1, (B,), generator=generator).to(device)
    noise = torch.randn(x0.shape, generator=generator).to(device)
    context_mask = (torch.rand(B, generator=generator) < label_dropout).to(device)
    return schedule.q_sample(x0, t, noise), t, noise, context_mask


def diffusion_loss(model: torch.nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, labels: torch.Tensor,
                   label_dropout: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The simple DDPM loss E‖ε − ε̂(x_t,t,c)‖² with labels dropped at rate `label_dropout`.

    x0: [B,1,28,28] in [-1,1]; labels: [B] digits. Returns a scalar.
    """
    x_t, t, noise, context_mask = noisy_batch(schedule, x0, label_dropout, generator)
    return F.mse_loss(model(x_t, t, labels, context_mask).float(), noise)


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


@torch.inference_mode()
def fixed_loss(model: torch.nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, labels: torch.Tensor,
               seed: int = 0, batch_size: int = 500) -> float:
    """The diffusion loss on fixed (t, ε) draws, labels kept: comparable from epoch to epoch and between
    networks. x0: [N,1,28,28] in [-1,1] on the model's device; labels: [N]."""
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    for xs, ys in zip(x0.split(batch_size), labels.split(batch_size)):
        total += diffusion_loss(model, schedule, xs, ys, 0.0, generator).item() * len(xs)
    return total / len(x0)


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


def learning_rate(step: int, total_steps: int, peak: float, final: float, warmup_steps: int) -> float:
    """Linear warm-up to `peak`, then a cosine decay to `final` at `total_steps` (the last epoch).
    Small steps at the end settle the weights; EMA then averages a calmer trajectory."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return final + 0.5 * (peak - final) * (1 + math.cos(math.pi * progress))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data", help="MNIST root (here: ../shared/data); downloads if absent")
    p.add_argument("--synthetic", type=int, default=0, metavar="N", help="train on N synthetic images (tests)")
    p.add_argument("--out", default="checkpoints/unet", help="checkpoint stem to write")
    p.add_argument("--log-dir", default=None, help="loss curve and sample grids (default: <out>_logs)")
    p.add_argument("--resume", action="store_true", help="continue from <out>.train_state if it exists")
    p.add_argument("--teacher", help="distil this checkpoint into a student with a guidance head (its "
                                     "architecture and schedule win over the options below)")
    p.add_argument("--student-steps", type=int, default=0, metavar="S",
                   help="with --teacher (one with a guidance head): distil an S-step student (student.py)")
    p.add_argument("--teacher-substeps", type=int, default=StudentPlan.teacher_substeps,
                   help="the teacher's steps for each of the student's")
    p.add_argument("--student-guidance", type=float, nargs=2, default=list(StudentPlan.guidance_range),
                   metavar=("LO", "HI"), help="each training row's w is drawn from [LO, HI]")
    p.add_argument("--epochs", type=int, default=15, help="train until this many epochs are done in total")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many optimiser steps (0 = no limit)")
    p.add_argument("--batch-size", type=int, default=128, help="per process")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (after warm-up)")
    p.add_argument("--min-lr", type=float, default=2e-5, help="learning rate at the end of --epochs (cosine decay)")
    p.add_argument("--warmup-steps", type=int, default=500)
    p.add_argument("--label-dropout", type=float, default=0.1)
    p.add_argument("--ema-decay", type=float, default=0.9995)
    p.add_argument("--channels", type=int, nargs="+", default=list(DEFAULTS.channels))
    p.add_argument("--attention-heads", type=int, default=DEFAULTS.attention_heads, help="0 = no attention")
    p.add_argument("--embedding-dim", type=int, default=DEFAULTS.embedding_dim)
    p.add_argument("--no-skip-connections", action="store_true", help="ablation: the up path gets no encoder features")
    p.add_argument("--no-time-embedding", action="store_true", help="ablation: the network is not told t")
    p.add_argument("--schedule", choices=SCHEDULE_NAMES, default="cosine")
    p.add_argument("--num-train-steps", type=int, default=500, help="T, the forward process's number of steps")
    p.add_argument("--snapshot-steps", type=int, nargs="*", default=[],
                   help="optimiser steps after which 16-bit EMA weights are kept (training over time)")
    p.add_argument("--sample-guidance", type=float, default=1.0, help="w for the per-epoch sample grid")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-amp", action="store_true",
                   help="no bf16 autocast (on by default on a GPU or a CPU with bf16 kernels)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def new_config(args: argparse.Namespace, world: int, device: torch.device) -> dict:
    """The checkpoint config of a fresh run (architecture, schedule, training settings)."""
    architecture = UNetConfig(channels=tuple(args.channels), attention_heads=args.attention_heads,
                              embedding_dim=args.embedding_dim, skip_connections=not args.no_skip_connections,
                              time_embedding=not args.no_time_embedding)
    return {
        "kind": "diffusion-unet",
        "architecture": architecture.to_dict(),
        "schedule": NoiseSchedule.create(args.schedule, args.num_train_steps).to_config(),
        "training": {"batch_size": args.batch_size * world, "lr": args.lr, "min_lr": args.min_lr,
                     "lr_decay_epochs": args.epochs, "label_dropout": args.label_dropout,
                     "ema_decay": args.ema_decay, "seed": args.seed,
                     "data": f"synthetic({args.synthetic})" if args.synthetic else "MNIST train (60,000)",
                     "epochs": 0, "steps": 0, "seconds": 0.0, "device": str(device), "processes": world},
    }


@dataclass
class Run:
    """Everything a training run holds between steps."""

    args: argparse.Namespace
    config: dict
    schedule: NoiseSchedule
    model: torch.nn.Module
    ema: EMA
    opt: torch.optim.Optimizer
    teacher: torch.nn.Module | None
    device: torch.device
    state_stem: Path
    log_dir: Path

    @property
    def training(self) -> dict:
        return self.config["training"]


def start_run(args: argparse.Namespace, world: int, device: torch.device) -> Run:
    """A fresh run, a distillation run, or (--resume) the saved run continued."""
    config = new_config(args, world, device)
    teacher = None
    if args.teacher:
        teacher, teacher_config = load_module(args.teacher, build_unet, kind="diffusion-unet")
        teacher = teacher.to(device).eval().requires_grad_(False)
        config["architecture"] = {**teacher_config["architecture"], "guidance_head": True}
        config["schedule"] = teacher_config["schedule"]
        config["training"]["distilled_from"] = {"checkpoint": Path(args.teacher).name,
                                                "training": teacher_config["training"]}
        if args.student_steps:
            if not has_guidance_head(teacher):
                raise SystemExit(f"--student-steps needs a teacher with a guidance head; {args.teacher} has none")
            plan = StudentPlan(args.student_steps, args.teacher_substeps, tuple(args.student_guidance))
            config["training"]["student"] = plan.to_dict()
            config["sampling"] = {"sampler": plan.to_dict()["sampler"], "steps": plan.steps}
    state_stem = Path(str(args.out) + ".train_state")
    resume = args.resume and checkpoint_paths(state_stem)[0].is_file()
    if resume:  # the saved run's architecture and schedule win over the command line
        saved = read_config(state_stem)
        config["architecture"], config["schedule"] = saved["architecture"], saved["schedule"]
        config["training"].update({k: saved["training"][k] for k in ("epochs", "steps", "seconds", "student")
                                   if k in saved["training"]})
        if "sampling" in saved:
            config["sampling"] = saved["sampling"]
    if teacher is not None and not resume:  # the student starts as the teacher (plus a guidance head if it has none)
        model = build_unet(config)
        model.load_state_dict((teacher if has_guidance_head(teacher) else add_guidance_head(teacher)).state_dict())
    else:
        model = build_unet(config)
    model = model.to(device)
    ema = EMA(model, args.ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    if resume:
        tensors = read_train_state(state_stem)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        ema.shadow = {k: v.to(device) for k, v in read_tensors(args.out).items()}  # the shipped weights are the EMA
        ema.num_updates = config["training"]["steps"]
        _restore_optimizer(opt, tensors, saved["optimizer_param_groups"])
    return Run(args, config, NoiseSchedule.from_config(config["schedule"]), model, ema, opt, teacher, device,
               state_stem, Path(args.log_dir or str(args.out) + "_logs"))


def main(argv=None) -> None:
    args = parse_args(argv)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and args.teacher:
        raise SystemExit("--teacher runs in one process (the student's guidance head bypasses DDP)")
    if distributed:
        dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if args.device == "cuda" and distributed
                          else args.device)
    torch.manual_seed(args.seed + rank)
    run = start_run(args, world, device)
    images, labels = synthetic_digits(args.synthetic, args.seed) if args.synthetic else load_mnist(args.data_dir)
    heldout = (synthetic_digits(min(args.synthetic, FIXED_LOSS_IMAGES), args.seed + 1) if args.synthetic
               else load_mnist(args.data_dir, train=False))
    data = (to_model_range(images), labels)
    fixed_sets = {"train": (to_model_range(images[:FIXED_LOSS_IMAGES]).to(device), labels[:FIXED_LOSS_IMAGES].to(device)),
                  "heldout": (to_model_range(heldout[0][:FIXED_LOSS_IMAGES]).to(device),
                              heldout[1][:FIXED_LOSS_IMAGES].to(device))}
    use_amp = bf16_is_fast(device) and not args.no_amp
    if rank == 0:
        run.log_dir.mkdir(parents=True, exist_ok=True)
        print(f"U-Net {count_parameters(run.model) / 1e6:.2f} M parameters"
              f"{f', distilled from {args.teacher}' if run.teacher is not None else ''}, {len(images)} images, "
              f"{world} process(es) on {device}{' with bf16 autocast' if use_amp else ''}, "
              f"schedule {run.schedule.name} T={run.schedule.num_train_steps}"
              + (f"; resumed from {run.state_stem} at epoch {run.training['epochs']}, step {run.training['steps']}"
                 if run.training["steps"] else ""))
    ddp_model = torch.nn.parallel.DistributedDataParallel(run.model) if distributed else run.model
    gen = torch.Generator().manual_seed(args.seed * 1000 + rank + run.training["steps"])
    t_start, seconds_before = time.time(), run.training["seconds"]
    while run.training["epochs"] < args.epochs and not (args.max_steps and run.training["steps"] >= args.max_steps):
        losses = train_epoch(run, ddp_model, data, gen, rank, world, use_amp, fixed_sets)
        run.training["epochs"] += 1
        run.training["seconds"] = round(seconds_before + time.time() - t_start, 1)
        if rank == 0:
            fixed = {name: fixed_loss(ema_network(run), run.schedule, *xy) for name, xy in fixed_sets.items()}
            run.training.update({f"{name}_loss": round(v, 5) for name, v in fixed.items()})
            save_run(run)
            log_epoch(run, losses, fixed)
            print(f"epoch {run.training['epochs']}: loss {sum(losses) / max(len(losses), 1):.4f}, EMA loss on "
                  f"training images {fixed['train']:.4f}, held-out {fixed['heldout']:.4f}, step "
                  f"{run.training['steps']}, {run.training['seconds'] / 60:.1f} min total", flush=True)
    if distributed:
        dist.destroy_process_group()


def train_epoch(run: Run, ddp_model, data, gen, rank: int, world: int, use_amp: bool, fixed_sets: dict) -> list[float]:
    """One pass over the data (this process's share); returns the loss of every step."""
    args, x_all, y_all = run.args, *data
    epoch = run.training["epochs"]
    perm = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(args.seed + epoch))[rank::world]
    batches = perm.split(args.batch_size)
    bar = tqdm(batches, desc=f"epoch {epoch + 1}/{args.epochs}", disable=rank != 0 or args.quiet, leave=False)
    losses = []
    for idx in bar:
        for g in run.opt.param_groups:
            g["lr"] = learning_rate(run.training["steps"], args.epochs * len(batches), args.lr, args.min_lr,
                                    args.warmup_steps)
        with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=use_amp):
            x0, y = x_all[idx].to(run.device), y_all[idx].to(run.device)
            if run.teacher is None:
                loss = diffusion_loss(ddp_model, run.schedule, x0, y, args.label_dropout, gen)
            elif "student" in run.training:
                plan = run.training["student"]
                loss = student_loss(run.model, run.teacher, run.schedule, x0, y,
                                    StudentPlan(plan["steps"], plan["teacher_substeps"], tuple(plan["guidance_range"])),
                                    gen)
            else:
                loss = distillation_loss(run.model, run.teacher, run.schedule, x0, y, args.label_dropout, gen)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), 1.0)
        run.opt.step()
        run.ema.update(run.model)
        run.training["steps"] += 1
        losses.append(loss.item())
        if len(losses) % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / 20:.4f}")
        if rank == 0 and run.training["steps"] in args.snapshot_steps:
            save_snapshot(run, epoch + len(losses) / len(batches), losses, fixed_sets)
        if args.max_steps and run.training["steps"] >= args.max_steps:
            break
    return losses


def ema_network(run: Run) -> torch.nn.Module:
    """The EMA weights as a network in eval mode."""
    model = build_unet(run.config).to(run.device)
    model.load_state_dict(run.ema.shadow)
    return model.eval()


def save_snapshot(run: Run, epochs: float, losses: list[float], fixed_sets: dict) -> None:
    """16-bit EMA weights and their losses at this step: <log dir>/snapshots/step_NNNNNN.*"""
    fixed = {f"{name}_loss": round(fixed_loss(ema_network(run), run.schedule, *xy), 5) for name, xy in fixed_sets.items()}
    recent = losses[-50:]
    config = {**run.config, "kind": "diffusion-unet",
              "training": {**run.training, "epochs_exact": round(epochs, 3),
                           "recent_training_loss": round(sum(recent) / len(recent), 5), **fixed}}
    save_checkpoint(run.log_dir / "snapshots" / f"step_{run.training['steps']:06d}",
                    {k: v.to(torch.float16) for k, v in run.ema.shadow.items()}, config)


def optimizer_stem(state_stem: Path) -> Path:
    """Where a run's optimiser moments go: beside its raw weights, a file of their own, so that each file stays
    under 10 MB (a Hugging Face Space, and this repository, take no larger plain files)."""
    return Path(str(state_stem) + ".optimizer")


def save_run(run: Run) -> None:
    """The EMA weights (what the app loads), and what --resume needs: the raw weights, and the optimiser."""
    save_checkpoint(run.args.out, run.ema.shadow, run.config)
    optim_tensors, groups = _flatten_optimizer(run.opt)
    save_checkpoint(optimizer_stem(run.state_stem), optim_tensors, {"kind": "diffusion-train-state-optimizer"})
    save_checkpoint(run.state_stem, {f"model.{k}": v for k, v in run.model.state_dict().items()},
                    {**run.config, "kind": "diffusion-train-state", "optimizer_param_groups": groups})


def read_train_state(state_stem: Path) -> dict[str, torch.Tensor]:
    """The raw weights (model.*) and optimiser moments (optim.*) of a saved run; older runs kept both in one file."""
    tensors = read_tensors(state_stem)
    if checkpoint_paths(optimizer_stem(state_stem))[0].is_file():
        tensors.update(read_tensors(optimizer_stem(state_stem)))
    return tensors


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


def log_epoch(run: Run, losses: list[float], fixed: dict[str, float]) -> None:
    """Append the epoch's losses to loss.csv and fixed_loss.csv, redraw loss.png, save a sample grid."""
    epoch, step = run.training["epochs"], run.training["steps"]
    loss_log, fixed_log = run.log_dir / "loss.csv", run.log_dir / "fixed_loss.csv"
    rows = [[epoch, step - len(losses) + i + len(losses[i:i + 10]), f"{sum(losses[i:i + 10]) / len(losses[i:i + 10]):.5f}"]
            for i in range(0, len(losses), 10)]  # one row per 10 steps keeps the file small
    append_csv(loss_log, ["epoch", "step", "loss"], rows)
    append_csv(fixed_log, ["epoch", "step", "train_loss", "heldout_loss"],
                [[epoch, step, f"{fixed['train']:.5f}", f"{fixed['heldout']:.5f}"]])
    plot_losses(loss_log, fixed_log, run.log_dir / "loss.png")
    sampling = run.config.get("sampling", {"sampler": "dpm++2m", "steps": 10})  # a student's own, or the usual
    x = sample(ema_network(run), run.schedule, torch.arange(10).repeat(4), guidance=run.args.sample_guidance,
               sampler=sampling["sampler"], num_inference_steps=sampling["steps"],
               generator=torch.Generator().manual_seed(0))
    save_grid(x, run.log_dir / f"samples_epoch_{epoch:03d}.png", nrow=10)


if __name__ == "__main__":
    main()
