"""Digit classifiers: the trusted one scores finished samples; the noise-aware one reads x_t.

Train:  python -m diffusion.classifier --data-dir ../shared/data                 (checkpoints/classifier.*)
        python -m diffusion.classifier --data-dir ../shared/data --noise-aware   (checkpoints/noise_classifier.*)

A small VGG-style CNN: two conv blocks (28×28 and 14×14), a 128-wide penultimate layer whose
activations are the *features* used for the Fréchet distance, and a linear read-out.
Input x: [B,1,28,28] in [-1,1] (the diffusion model's convention).

The noise-aware variant also takes the time step t of the shipped U-Net's schedule and is trained on
forward-noised digits x_t = √ᾱ_t·x_0 + √(1-ᾱ_t)·ε, so it answers "which digit is in this *noisy*
image?" and says "I can't tell" (≈ uniform) on pure noise, where a clean-image classifier guesses
wildly. It sees the noise level √(1-ᾱ_t) as a second input channel. Half its training images are clipped
to [-1,1] as the app shows them, so it reads the app's 8-bit frames as well as the sampler's raw x_t
(whose gradient classifier guidance follows).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoints import (DEFAULT_CLASSIFIER, DEFAULT_NOISE_CLASSIFIER, DEFAULT_UNET, load_module, read_config,
                          save_checkpoint)
from .data import load_mnist, to_model_range
from .schedules import NoiseSchedule

FEATURE_DIM = 128
CLEAN_FRACTION = 0.3    # share of noise-aware training images at t = 0, so clean digits stay as accurate
CLIPPED_FRACTION = 0.5  # share of noisy training images clipped to [-1,1], as the app's 8-bit frames are


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DigitClassifier(nn.Module):
    """logits = model(x); x: [B,1,28,28] in [-1,1] -> [B,10]."""

    def __init__(self, width: int = 32, feature_dim: int = FEATURE_DIM, dropout: float = 0.3, in_channels: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(in_channels, width), _conv_bn(width, width), nn.MaxPool2d(2),              # 28 -> 14
            _conv_bn(width, 2 * width), _conv_bn(2 * width, 2 * width), nn.MaxPool2d(2),  # 14 -> 7
            nn.Flatten(), nn.Dropout(dropout),
            nn.Linear(2 * width * 7 * 7, feature_dim), nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(dropout)
        self.readout = nn.Linear(feature_dim, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer activations [B,128] (used for the Fréchet distance)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.dropout(self.features(x)))

    @torch.inference_mode()
    def predict_proba(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Class probabilities [B,10] for x: [B,1,28,28] in [-1,1] (eval mode, batched)."""
        self.eval()
        device = next(self.parameters()).device
        return torch.cat([F.softmax(self(chunk.to(device)), dim=1).cpu() for chunk in x.split(batch_size)])


class NoiseAwareClassifier(nn.Module):
    """logits = model(x_t, t); x_t: [B,1,28,28] (a forward-noised digit), t: [B] ints in 0..T -> [B,10].

    t = 0 means a clean digit. `schedule` is the diffusion model's, so t means the same here as there.
    """

    def __init__(self, schedule: NoiseSchedule, width: int = 32, feature_dim: int = FEATURE_DIM, dropout: float = 0.3):
        super().__init__()
        self.schedule = schedule
        self.classifier = DigitClassifier(width, feature_dim, dropout, in_channels=2)
        self.register_buffer("noise_std", (1.0 - schedule.alpha_bar).sqrt().float(), persistent=False)  # [T+1]

    def _with_noise_level(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        level = self.noise_std[torch.as_tensor(t, device=x.device).long()].reshape(-1, 1, 1, 1)
        return torch.cat([x, level.expand(x.shape[0], 1, *x.shape[2:])], dim=1)

    def features(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(self._with_noise_level(x, t))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.classifier(self._with_noise_level(x, t))

    @torch.inference_mode()
    def predict_proba(self, x: torch.Tensor, t, batch_size: int = 1000) -> torch.Tensor:
        """Probabilities [B,10] that x_t ([B,1,28,28]) was noised from each digit; t: int or [B] ints in 0..T."""
        self.eval()
        t = torch.as_tensor(t).long().expand(x.shape[0]) if torch.as_tensor(t).dim() == 0 else torch.as_tensor(t).long()
        device = self.noise_std.device
        return torch.cat([F.softmax(self(xc.to(device), tc.to(device)), dim=1).cpu()
                          for xc, tc in zip(x.split(batch_size), t.split(batch_size))])


def load_classifier(stem: str | Path = DEFAULT_CLASSIFIER) -> DigitClassifier:
    """The shipped classifier (or another checkpoint stem), in eval mode on the CPU."""
    model, _ = load_module(stem, lambda cfg: DigitClassifier(**cfg["architecture"]), kind="digit-classifier")
    return model


def load_noise_classifier(stem: str | Path = DEFAULT_NOISE_CLASSIFIER) -> NoiseAwareClassifier:
    """The shipped noise-aware classifier (or another checkpoint stem), in eval mode on the CPU."""
    model, _ = load_module(stem, lambda cfg: NoiseAwareClassifier(NoiseSchedule.from_config(cfg["schedule"]),
                                                                  **cfg["architecture"]),
                           kind="noise-aware-digit-classifier")
    return model


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random small rotations (±10°), scalings (±10%) and shifts (±2 px) of a batch in [-1,1]."""
    B = x.shape[0]
    angle = (torch.rand(B, generator=gen) - 0.5) * (20 * torch.pi / 180)
    scale = 1 + (torch.rand(B, generator=gen) - 0.5) * 0.2
    shift = (torch.rand(B, 2, generator=gen) - 0.5) * (4 / 14)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x + 1, grid, align_corners=False, padding_mode="zeros") - 1  # pad with background


def _noised(x0: torch.Tensor, schedule: NoiseSchedule, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, t) for a batch x0 [B,1,28,28]: t = 0 for a CLEAN_FRACTION of rows, else uniform in 1..T; a
    CLIPPED_FRACTION of the rows clipped to [-1,1]."""
    B, T = x0.shape[0], schedule.num_train_steps
    t = torch.randint(1, T + 1, (B,), generator=gen)
    t[torch.rand(B, generator=gen) < CLEAN_FRACTION] = 0
    x_t = schedule.q_sample(x0, t, torch.randn(x0.shape, generator=gen))
    clipped = (torch.rand(B, generator=gen) < CLIPPED_FRACTION).reshape(B, 1, 1, 1)
    return torch.where(clipped, x_t.clamp(-1, 1), x_t), t


@torch.inference_mode()
def accuracy(model: DigitClassifier | NoiseAwareClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy on clean digits x [N,1,28,28] in [-1,1] (t = 0 for the noise-aware classifier)."""
    probs = model.predict_proba(x, 0) if isinstance(model, NoiseAwareClassifier) else model.predict_proba(x)
    return (probs.argmax(1) == y).float().mean().item()


@torch.inference_mode()
def pure_noise_top_probability(model: NoiseAwareClassifier, n: int = 10_000, seed: int = 0) -> float:
    """Mean top-class probability on n pure-noise images x_T ~ N(0, I) at t = T (1.0 = certain, 0.1 = uniform)."""
    x = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    return model.predict_proba(x, model.schedule.num_train_steps).max(1).values.mean().item()


def train_classifier(x: torch.Tensor, y: torch.Tensor, epochs: int = 6, batch_size: int = 128, lr: float = 3e-3,
                     seed: int = 0, schedule: NoiseSchedule | None = None, x_test: torch.Tensor | None = None,
                     y_test: torch.Tensor | None = None) -> tuple[DigitClassifier | NoiseAwareClassifier, float | None]:
    """Train a fresh DigitClassifier (a NoiseAwareClassifier on `schedule`'s x_t when given) with the trusted
    recipe: AdamW (weight decay 5e-4), one-cycle learning rate peaking at lr, label smoothing 0.05, every batch
    randomly rotated, scaled and shifted (`_augment`). x: float [N,1,28,28] in [-1,1]; y: int64 [N] in 0..9.
    With x_test, y_test (same conventions) it prints the clean test accuracy after every epoch.
    Returns (model in eval mode, last test accuracy in [0,1] or None without a test set); same seed, same model."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = NoiseAwareClassifier(schedule) if schedule else DigitClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    steps_per_epoch = (len(x) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    t0, acc = time.time(), None
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for idx in tqdm(perm.split(batch_size), desc=f"epoch {epoch + 1}/{epochs}", leave=False):
            xb = _augment(x[idx], gen)
            logits = model(*_noised(xb, schedule, gen)) if schedule else model(xb)
            loss = F.cross_entropy(logits, y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if x_test is not None:
            acc = accuracy(model, x_test, y_test)
            noise_top = f", pure-noise top probability {pure_noise_top_probability(model):.3f}" if schedule else ""
            print(f"epoch {epoch + 1}: clean test accuracy {acc:.4%}{noise_top} ({time.time() - t0:.0f} s)", flush=True)
    return model.eval(), acc


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Train the digit classifier on MNIST.")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--noise-aware", action="store_true",
                   help="train on forward-noised digits x_t with the U-Net's schedule (see --unet)")
    p.add_argument("--unet", default=str(DEFAULT_UNET), help="checkpoint whose schedule --noise-aware uses")
    p.add_argument("--out", default=None, help="checkpoint stem (default: checkpoints/classifier or noise_classifier)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    x_train, y_train = load_mnist(args.data_dir, train=True)
    x_test, y_test = load_mnist(args.data_dir, train=False)
    x_train, x_test = to_model_range(x_train), to_model_range(x_test)
    schedule = NoiseSchedule.from_config(read_config(args.unet)["schedule"]) if args.noise_aware else None
    out = args.out or (DEFAULT_NOISE_CLASSIFIER if schedule else DEFAULT_CLASSIFIER)
    t0 = time.time()
    model, acc = train_classifier(x_train, y_train, args.epochs, args.batch_size, args.lr, args.seed, schedule,
                                  x_test, y_test)
    config = {"kind": "digit-classifier", "architecture": {"width": 32, "feature_dim": FEATURE_DIM},
              "training": {"epochs": args.epochs, "data": "MNIST train (60,000), augmented",
                           "seconds": round(time.time() - t0, 1)},
              "test_accuracy": round(acc, 5)}
    if schedule:
        config.update(kind="noise-aware-digit-classifier", schedule=schedule.to_config(),
                      pure_noise_top_probability=round(pure_noise_top_probability(model), 4))
        config["training"].update(noised=f"t = 0 for {CLEAN_FRACTION:.0%}, else uniform in 1..T; "
                                         f"{CLIPPED_FRACTION:.0%} clipped to [-1,1]", unet=Path(args.unet).name)
    save_checkpoint(out, model.state_dict(), config)
    print(f"saved {out}.safetensors / .json: MNIST test accuracy {acc:.4%}")


if __name__ == "__main__":
    main()
