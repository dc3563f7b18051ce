"""The network as the network server calls it: the guided ε of a batch of any size, fast on this machine.

Two things make one batched evaluation cheaper than calling the U-Net directly:

* Few batch sizes. The frozen network keeps compiled kernels for every batch size it sees (measured: 5.6 MB
  each, so 128 sizes would hold 720 MB), so a batch is padded with rows of zeros to the next of BATCH_SIZES
  (at most a third more rows above 8; a 10-digit grid is not padded; batches of more rows than the last are
  padded to a multiple of it).
* Lanes. On a CPU the batch is cut into one part per core, each run by a thread of its own on ONE of torch's
  threads, side by side, instead of the whole batch on all of torch's threads: the network's ~100 small ops
  each split across cores spend much of their time waiting for each other. Measured on the 2-core machine
  (bf16, the network server alone): 30 grids 2.83 → 2.08 s, 30 ddpm-500 animations 16.9 → 10.6 s, one
  10-digit grid 0.162 → 0.109 s (medians). A GPU takes the whole batch at once.

    >>> network = BatchedNetwork(pipe.model)
    >>> eps = network.guided_eps(x, t, labels, w)     # x: [B,1,28,28], t/labels/w: [B] -> ε [B,1,28,28]
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

from .model import ClassConditionalUNet, FrozenUNet
from .sampling import guided_eps

BATCH_SIZES = (1, 2, 4, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 112, 128)


def padded_size(rows: int) -> int:
    """The batch size a batch of `rows` samples is padded to (see BATCH_SIZES)."""
    for size in BATCH_SIZES:
        if rows <= size:
            return size
    return -(-rows // BATCH_SIZES[-1]) * BATCH_SIZES[-1]


def warm_up_sizes(max_rows: int) -> list[int]:
    """Every padded size of a batch of 1 to max_rows samples, in increasing order."""
    return sorted({padded_size(rows) for rows in range(1, max_rows + 1)})


class BatchedNetwork:
    """A diffusion U-Net (or any module `guided_eps` accepts), evaluated in padded batches, in lanes on a CPU.

    lanes: how many parts a batch is cut into (default: one per torch thread on a CPU, 1 on a GPU)."""

    def __init__(self, model: torch.nn.Module, lanes: int | None = None):
        # One TorchScript graph per forward, so the threads streaming frames cannot stall it (see FrozenUNet)
        self.model = FrozenUNet(model) if isinstance(model, ClassConditionalUNet) else model
        self.device = next(model.parameters()).device
        self.lanes = lanes or (torch.get_num_threads() if self.device.type == "cpu" else 1)
        self._pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="network-lane",
                                        initializer=torch.set_num_threads, initargs=(1,)) if self.lanes > 1 else None

    def guided_eps(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """`sampling.guided_eps` of [B] rows (x: [B,1,28,28]; t, labels, w: [B]), padded to one of BATCH_SIZES,
        cut into one part per lane, the parts evaluated side by side. Returns ε: [B,1,28,28]."""
        rows = len(x)
        size = padded_size(rows)
        if size > rows:
            x = torch.cat([x, x.new_zeros((size - rows, *x.shape[1:]))])
            t, labels, w = (torch.cat([v, v.new_full((size - rows,), fill)])
                            for v, fill in ((t, 1), (labels, 0), (w, 0.0)))
        if self._pool is None:
            return guided_eps(self.model, x, t, labels, w)[:rows]
        parts = zip(*(v.chunk(self.lanes) for v in (x, t, labels, w)))
        return torch.cat(list(self._pool.map(self._lane, parts)))[:rows]

    @torch.inference_mode()
    def _lane(self, part: tuple) -> torch.Tensor:
        """One lane's share of a batch (in a lane thread, on one torch thread): its rows' guided ε."""
        return guided_eps(self.model, *part)

    def warm_up(self, max_rows: int) -> None:
        """Evaluate every batch size a batch of up to max_rows samples is padded to, once, so no request pays
        for compiling kernels, and no kernels are compiled (and kept) in the middle of a busy heap."""
        for rows in warm_up_sizes(max_rows):
            t = torch.ones(rows, dtype=torch.long, device=self.device)
            self.guided_eps(torch.zeros((rows, 1, 28, 28), device=self.device), t, t * 0,
                            torch.ones(rows, device=self.device))

    def close(self) -> None:
        """Let the lane threads go (a batch being evaluated still finishes)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
