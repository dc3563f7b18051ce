"""Training over time: what the loss means, and how the samples improved while the network learned.

The reference training run (`checkpoints/ablations/reference`: 5 epochs of 469 optimiser steps, the
shipped network's size, no guidance head) kept 16-bit EMA weights at steps 25, 100, 235, 469, 938,
1407 and 2345 (`train.py --snapshot-steps`), each with its JSON config and its losses on 2,000 fixed
training and held-out images. This module lists and loads them, shows one training example's loss
(the true noise ε beside the network's ε̂), and measures the loss at every noise level t.

    python -m diffusion.training_history --data-dir ../shared/data

scores every snapshot's samples with the trusted classifier (`evaluate.py`: accuracy and Fréchet
distance) and writes `snapshots/evaluation.json`, which the app reads.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import evaluate
from .checkpoints import CHECKPOINT_DIR, read_config
from .classifier import DEFAULT_CLASSIFIER, load_classifier
from .data import load_mnist, to_model_range
from .pipeline import DEFAULT_UNET, DigitDiffusion, load_pipeline
from .requests import DEFAULT_GUIDANCE, DEFAULT_GUIDANCE_INTERVAL, DEFAULT_SAMPLER, DEFAULT_STEPS
from .sampling import guided_eps
from .schedules import NoiseSchedule
from .loss_logs import read_loss_logs

LOG_DIR = CHECKPOINT_DIR / "ablations" / "reference_logs"
SNAPSHOT_DIR = LOG_DIR / "snapshots"
EVALUATION = SNAPSHOT_DIR / "evaluation.json"
NOISE_RANGE = 3.0  # noise images map [-3, 3] to black … white (99.7 % of N(0,1) values lie inside)


@dataclass(frozen=True)
class Snapshot:
    """One saved moment of the reference run: its optimiser step, the epochs done (a float: 0.5 = half
    an epoch), its checkpoint stem, and the EMA network's loss on fixed training and held-out images."""

    step: int
    epoch: float
    path: Path
    train_loss: float
    heldout_loss: float


def list_snapshots(folder: Path = SNAPSHOT_DIR) -> list[Snapshot]:
    """Every snapshot in `folder` (step_NNNNNN.json + .safetensors), in training order; [] if none."""
    snapshots = []
    for config_path in sorted(Path(folder).glob("step_*.json")):
        training = read_config(config_path)["training"]
        snapshots.append(Snapshot(training["steps"], training["epochs_exact"], config_path.with_suffix(""),
                                  training["train_loss"], training["heldout_loss"]))
    return sorted(snapshots, key=lambda s: s.step)


def load_snapshot(snapshot: Snapshot, bf16: bool | None = None) -> DigitDiffusion:
    """A snapshot as a `DigitDiffusion` on the CPU (its 16-bit weights widened to float32, or bfloat16
    where that is fast). It has no guidance head: guided sampling takes two passes (`guided_eps`)."""
    return load_pipeline(snapshot.path, bf16=bf16)


# --- what the loss means ---------------------------------------------------------------------------------

@dataclass
class NoisePrediction:
    """One training example. Images are float [28,28]: x0, x_t in [-1,1] (x_t may stray a little beyond);
    eps (the true noise ε ~ N(0,I)), eps_hat (the network's ε̂) and error = ε̂ − ε, unbounded.
    mse = mean((ε̂ − ε)²), this example's training loss; baseline = mean(ε²), the loss of guessing ε̂ = 0;
    signal, noise_scale = √ᾱ_t, √(1-ᾱ_t): x_t = signal·x0 + noise_scale·ε."""

    t: int
    signal: float
    noise_scale: float
    x0: np.ndarray
    x_t: np.ndarray
    eps: np.ndarray
    eps_hat: np.ndarray
    error: np.ndarray
    mse: float
    baseline: float


@torch.inference_mode()
def example_losses(model: torch.nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, labels: torch.Tensor,
                   t: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The training loss of each example, as `train.diffusion_loss` computes it with the labels kept.

    x0, noise: [B,1,28,28] (x0 in [-1,1]); labels, t: [B] (t in 1..T).
    Returns (x_t [B,1,28,28], ε̂ [B,1,28,28] float32, loss [B] = mean over pixels of (ε̂ − ε)²)."""
    x_t = schedule.q_sample(x0, t, noise)
    eps_hat = guided_eps(model, x_t, t, labels, 0.0).float()  # w = 0: the plain conditional ε̂(x_t, t, c)
    return x_t, eps_hat, (eps_hat - noise).square().mean(dim=(1, 2, 3))


def noise_draw(seed: int, shape: tuple = (1, 1, 28, 28)) -> torch.Tensor:
    """ε ~ N(0,I) of `shape` from `seed`: the same seed always gives the same noise."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def noise_prediction(model: torch.nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, label: int, t: int,
                     seed: int = 0, noise: torch.Tensor | None = None) -> NoisePrediction:
    """Noise one real digit x0 ([1,1,28,28] or [28,28] in [-1,1], of digit `label`) to time step t (1..T)
    with ε drawn from `seed` (or the given `noise`, [1,1,28,28]), and ask the network for ε̂."""
    x0 = x0.reshape(1, 1, 28, 28).float()
    eps = noise_draw(seed) if noise is None else noise.reshape(1, 1, 28, 28).float()
    x_t, eps_hat, loss = example_losses(model, schedule, x0, torch.tensor([label]), torch.tensor([t]), eps)
    x0, x_t, eps, eps_hat = (image[0, 0].numpy() for image in (x0, x_t, eps, eps_hat))
    return NoisePrediction(t, *schedule.scales(t), x0, x_t, eps, eps_hat, eps_hat - eps, float(loss[0]),
                           float(np.mean(eps ** 2)))


def loss_by_t(model: torch.nn.Module, schedule: NoiseSchedule, x0s: torch.Tensor, labels: torch.Tensor,
              ts, seed: int = 0, batch_size: int = 500) -> np.ndarray:
    """The mean training loss over the digits x0s ([N,1,28,28] in [-1,1], labels [N]) at each time step
    in ts (ints in 1..T): float64 [len(ts)]. Each (digit, t) pair gets its own noise, drawn from `seed`;
    all pairs go through the network in batches of `batch_size`."""
    ts = torch.as_tensor(ts, dtype=torch.long)
    n = len(x0s)
    x0 = x0s.float().repeat(len(ts), 1, 1, 1)            # [len(ts)·N, 1, 28, 28]: every digit at every t
    t = ts.repeat_interleave(n)
    noise = noise_draw(seed, tuple(x0.shape))
    losses = torch.cat([example_losses(model, schedule, *batch)[2] for batch in
                        zip(x0.split(batch_size), labels.repeat(len(ts)).split(batch_size), t.split(batch_size),
                            noise.split(batch_size))])
    return losses.reshape(len(ts), n).double().mean(dim=1).numpy()


def noise_to_uint8(e: np.ndarray, limit: float = NOISE_RANGE) -> np.ndarray:
    """Noise values (float, any shape) to uint8 on a fixed scale: −limit -> 0 (black), 0 -> 128, +limit -> 255."""
    return np.round((np.clip(e, -limit, limit) + limit) / (2 * limit) * 255).astype(np.uint8)


def image_to_uint8(x: np.ndarray) -> np.ndarray:
    """Images in [-1,1] (float, any shape; clipped) to uint8, 0 = background, 255 = ink."""
    return np.round((np.clip(x, -1, 1) + 1) * 127.5).astype(np.uint8)


# --- the loss curves -------------------------------------------------------------------------------------

@dataclass
class LossHistory:
    """The reference run's losses against optimiser step. steps/training: the training loss (a mean of 10
    steps each, noisy: every batch has other images, t and ε); smoothed: its running mean over `window`
    rows; heldout_steps/heldout: the EMA network's loss on 2,000 fixed held-out images (snapshots and
    epoch ends)."""

    steps: np.ndarray
    training: np.ndarray
    smoothed: np.ndarray
    heldout_steps: np.ndarray
    heldout: np.ndarray


def loss_history(log_dir: Path = LOG_DIR, window: int = 5) -> LossHistory:
    """The reference run's loss logs (loss.csv, fixed_loss.csv) and its snapshots' held-out losses."""
    rows, fixed = read_loss_logs(log_dir)
    training = np.array([r["loss"] for r in rows])
    smoothed = np.array([training[max(0, i - window + 1):i + 1].mean() for i in range(len(training))])
    heldout = {int(r["step"]): r["heldout_loss"] for r in fixed}
    heldout.update({s.step: s.heldout_loss for s in list_snapshots(Path(log_dir) / "snapshots")})
    steps = sorted(heldout)
    return LossHistory(np.array([r["step"] for r in rows]), training, smoothed, np.array(steps),
                       np.array([heldout[s] for s in steps]))


def read_evaluation(path: Path = EVALUATION) -> dict:
    """evaluation.json as {"snapshots": {step: entry}, "final": entry or None, "floor": …}; {} if missing
    or unreadable (the app then says "not evaluated")."""
    try:
        report = json.loads(Path(path).read_text())
        return {**report, "snapshots": {int(e["step"]): e for e in report["snapshots"]}}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


# --- the evaluation command line -------------------------------------------------------------------------

def evaluate_network(pipe: DigitDiffusion, classifier, test_feats: torch.Tensor, train_x: torch.Tensor,
                     per_class: int, seed: int) -> dict:
    """Sample per_class of every digit at the app's defaults and score them (`evaluate.score_samples`)."""
    labels = torch.arange(10).repeat_interleave(per_class)
    settings = {"sampler": DEFAULT_SAMPLER, "steps": DEFAULT_STEPS, "guidance": DEFAULT_GUIDANCE,
                "guidance_interval": list(DEFAULT_GUIDANCE_INTERVAL), "seed": seed,
                "network_evals_per_sample": pipe.network_evaluations(DEFAULT_STEPS, DEFAULT_GUIDANCE),
                "network_dtype": str(next(pipe.model.parameters()).dtype).removeprefix("torch.")}
    t0 = time.perf_counter()
    x = to_model_range(pipe.generate_many(labels.tolist(), seed=seed, batch_size=100))
    seconds = time.perf_counter() - t0
    scores = evaluate.score_samples(x, labels, classifier, test_feats, train_x)
    return {"samples": len(labels), "settings": settings, "sampling_seconds": round(seconds, 1),
            **{k: scores[k] for k in ("accuracy", "worst_digit", "worst_digit_accuracy", "per_digit_accuracy",
                                      "mean_confidence", "fd", "nn_distance")}}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data", help="MNIST root (here: ../shared/data)")
    p.add_argument("--per-class", type=int, default=50, help="samples per digit and snapshot")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--classifier", default=str(DEFAULT_CLASSIFIER))
    p.add_argument("--out", default=str(EVALUATION))
    args = p.parse_args(argv)

    classifier = load_classifier(args.classifier)
    (train_images, train_y), (test_images, _) = load_mnist(args.data_dir), load_mnist(args.data_dir, train=False)
    train_x, test_x = to_model_range(train_images), to_model_range(test_images)
    test_feats = evaluate.classifier_features(classifier, test_x)
    floor_draws = [evaluate.frechet_distance(evaluate.classifier_features(
        classifier, train_x[evaluate.balanced_subset(train_y, args.per_class, seed)]), test_feats)
        for seed in range(args.seed, args.seed + evaluate.FLOOR_DRAWS)]
    report = {"what": f"{args.per_class} samples of every digit per network at the app's defaults, scored by "
                      "the trusted classifier (diffusion/evaluate.py); FD: Fréchet distance of its features to "
                      "the MNIST test set's; floor: the same for as many real training digits",
              "per_class": args.per_class, "seed": args.seed,
              "floor": {"fd": float(np.mean(floor_draws)), "fd_draws": floor_draws}, "snapshots": []}
    print(f"real-vs-real floor: FD {report['floor']['fd']:.3f}", flush=True)
    for snapshot in list_snapshots(Path(args.out).parent):
        scores = evaluate_network(load_snapshot(snapshot), classifier, test_feats, train_x, args.per_class, args.seed)
        entry = {"step": snapshot.step, "epoch": snapshot.epoch, **scores}
        report["snapshots"].append(entry)
        print(f"step {snapshot.step} (epoch {snapshot.epoch:g}): accuracy {entry['accuracy']:.1%}, "
              f"FD {entry['fd']:.2f}", flush=True)
    final = load_pipeline(DEFAULT_UNET)
    teacher = final.config["training"].get("distilled_from", {}).get("training", {})
    report["final"] = {"network": "the shipped network (checkpoints/unet)", "teacher_epochs": teacher.get("epochs"),
                       "distillation_epochs": final.config["training"]["epochs"],
                       **evaluate_network(final, classifier, test_feats, train_x, args.per_class, args.seed)}
    print(f"shipped network: accuracy {report['final']['accuracy']:.1%}, FD {report['final']['fd']:.2f}")
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
