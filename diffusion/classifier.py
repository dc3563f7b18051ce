"""A trusted MNIST digit classifier: scores samples in the app and in evaluation.

Train:  python -m diffusion.classifier --data-dir ../shared/data   (writes checkpoints/classifier.*)

A small VGG-style CNN: two conv blocks (28×28 and 14×14), a 128-wide penultimate layer whose
activations are the *features* used for the Fréchet distance, and a linear read-out.
Input x: [B,1,28,28] in [-1,1] (the diffusion model's convention).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoints import CHECKPOINT_DIR, load_module, save_checkpoint
from .data import load_mnist, to_model_range

DEFAULT_CLASSIFIER = CHECKPOINT_DIR / "classifier"
FEATURE_DIM = 128


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DigitClassifier(nn.Module):
    """logits = model(x); x: [B,1,28,28] in [-1,1] -> [B,10]."""

    def __init__(self, width: int = 32, feature_dim: int = FEATURE_DIM, dropout: float = 0.3):
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(1, width), _conv_bn(width, width), nn.MaxPool2d(2),              # 28 -> 14
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


def load_classifier(stem: str | Path = DEFAULT_CLASSIFIER) -> DigitClassifier:
    """The shipped classifier (or another checkpoint stem), in eval mode on the CPU."""
    model, _ = load_module(stem, lambda cfg: DigitClassifier(**cfg["architecture"]), kind="digit-classifier")
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


@torch.inference_mode()
def accuracy(model: DigitClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    return (model.predict_proba(x).argmax(1) == y).float().mean().item()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Train the digit classifier on MNIST.")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--out", default=str(DEFAULT_CLASSIFIER))
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    x_train, y_train = load_mnist(args.data_dir, train=True)
    x_test, y_test = load_mnist(args.data_dir, train=False)
    x_train, x_test = to_model_range(x_train), to_model_range(x_test)
    model = DigitClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-4)
    steps_per_epoch = (len(x_train) + args.batch_size - 1) // args.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch)
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x_train), generator=gen)
        for idx in tqdm(perm.split(args.batch_size), desc=f"epoch {epoch + 1}/{args.epochs}", leave=False):
            loss = F.cross_entropy(model(_augment(x_train[idx], gen)), y_train[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = accuracy(model, x_test, y_test)
        print(f"epoch {epoch + 1}: test accuracy {acc:.4%} ({time.time() - t0:.0f} s)", flush=True)
    config = {"kind": "digit-classifier", "architecture": {"width": 32, "feature_dim": FEATURE_DIM},
              "training": {"epochs": args.epochs, "data": "MNIST train (60,000), augmented",
                           "seconds": round(time.time() - t0, 1)},
              "test_accuracy": round(acc, 5)}
    save_checkpoint(args.out, model.state_dict(), config)
    print(f"saved {args.out}.safetensors / .json: MNIST test accuracy {acc:.4%}")


if __name__ == "__main__":
    main()
