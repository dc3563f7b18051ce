"""MNIST as tensors, and the few real test digits shipped with the repo.

Images are handled in two conventions:
    uint8 [N,28,28], 0 = background, 255 = ink      (MNIST's files, .npz outputs, the app)
    float [N,1,28,28] in [-1,1]                      (what the networks see)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

SHIPPED_DIGITS = Path(__file__).parent / "assets" / "mnist_test_digits.npz"


def load_mnist(data_dir: str | Path, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST through torchvision (downloads into data_dir if the files are not there).

    Returns images uint8 [N,28,28] and labels int64 [N] (N = 60,000 train / 10,000 test).
    """
    from torchvision.datasets import MNIST

    ds = MNIST(root=str(data_dir), train=train, download=True)
    return ds.data.clone(), ds.targets.clone().long()


def to_model_range(images_uint8: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 [N,28,28] (0..255) -> float32 [N,1,28,28] in [-1,1]."""
    # np.array copies: an image decoded from a file can be read-only, which torch warns about
    x = torch.as_tensor(np.array(images_uint8) if not torch.is_tensor(images_uint8) else images_uint8)
    return (x.float() / 127.5 - 1.0).reshape(-1, 1, 28, 28)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float [N,1,28,28] in [-1,1] -> uint8 numpy [N,28,28] (0 = background, 255 = ink)."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round()
    return x.to(torch.uint8).reshape(-1, 28, 28).numpy()


def load_shipped_digits() -> tuple[np.ndarray, np.ndarray]:
    """Real MNIST *test-set* digits that ship in the repo (3 per class; MNIST is CC BY-SA 3.0,
    by Yann LeCun, Corinna Cortes and Christopher J.C. Burges). Returns uint8 [N,28,28], int64 [N]."""
    with np.load(SHIPPED_DIGITS) as f:
        return f["x"], f["y"].astype(np.int64)


def shipped_test_index() -> np.ndarray:
    """Where each shipped digit sits in the MNIST test set: int64 [N], in the order of `load_shipped_digits`."""
    with np.load(SHIPPED_DIGITS) as f:
        return f["test_index"].astype(np.int64)


def synthetic_digits(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Tiny stand-in data for tests: class c is a bright bar at row 2c+4. uint8 [n,28,28], int64 [n]."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    for i, c in enumerate(labels.tolist()):
        images[i, 2 * c + 4: 2 * c + 6, 4:24] = 255
    return images, labels


def grid_image(images: torch.Tensor | np.ndarray, nrow: int = 10, pad: int = 2) -> np.ndarray:
    """Tile images into one uint8 picture [H,W]. images: float [N,1,28,28] in [-1,1] or uint8 [N,28,28]."""
    imgs = to_uint8(images) if torch.is_tensor(images) and images.is_floating_point() else np.asarray(images)
    imgs = imgs.reshape(-1, 28, 28)
    n = len(imgs)
    rows = (n + nrow - 1) // nrow
    grid = np.zeros((rows * (28 + pad) + pad, min(n, nrow) * (28 + pad) + pad), dtype=np.uint8)
    for i, img in enumerate(imgs):
        r, c = divmod(i, nrow)
        grid[pad + r * (28 + pad): pad + r * (28 + pad) + 28, pad + c * (28 + pad): pad + c * (28 + pad) + 28] = img
    return grid


def save_grid(images: torch.Tensor | np.ndarray, path: str | Path, nrow: int = 10, scale: int = 2) -> None:
    """Save a tiled grid of digits as a PNG (white ink on black, each pixel `scale`× enlarged)."""
    from PIL import Image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(grid_image(images, nrow))
    img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(path)
