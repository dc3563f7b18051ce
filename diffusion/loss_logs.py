"""A training run's loss logs: loss.csv (the training loss, one row per 10 steps), fixed_loss.csv (the EMA
network's loss on fixed training and held-out images after every epoch), and loss.png drawn from them.

Written by `train.py` as it trains; read by the Training and Architecture tabs, the ablations and the training
history, none of which needs the training script itself.
"""
from __future__ import annotations

import csv
from pathlib import Path


def append_csv(path: Path, header: list[str], rows: list[list]) -> None:
    """Append rows to a CSV file, writing the header first when the file is new."""
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(header)
        writer.writerows(rows)


def read_loss_logs(log_dir: Path) -> tuple[list[dict], list[dict]]:
    """(loss.csv rows, fixed_loss.csv rows) of a run's log folder as dicts of floats; missing files give []."""
    def read(path: Path) -> list[dict]:
        if not path.is_file():
            return []
        with path.open() as f:
            return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]

    return read(Path(log_dir) / "loss.csv"), read(Path(log_dir) / "fixed_loss.csv")


def plot_losses(loss_csv: Path, fixed_csv: Path, png_path: Path) -> None:
    from matplotlib.figure import Figure

    steps_rows, fixed_rows = read_loss_logs(loss_csv.parent)
    steps = [r["step"] for r in steps_rows]
    loss = [r["loss"] for r in steps_rows]
    k = max(1, len(loss) // 50)
    smooth = [sum(loss[max(0, i - k):i + 1]) / len(loss[max(0, i - k):i + 1]) for i in range(len(loss))]
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.subplots()
    ax.plot(steps, loss, alpha=0.3, label="training loss (10-step mean)")
    ax.plot(steps, smooth, label="smoothed")
    if fixed_rows:
        ax.plot([r["step"] for r in fixed_rows], [r["train_loss"] for r in fixed_rows], "o-", label="EMA, training images")
        ax.plot([r["step"] for r in fixed_rows], [r["heldout_loss"] for r in fixed_rows], "s--", label="EMA, held-out images")
    ax.set(xlabel="optimiser step", ylabel="MSE(ε, ε̂)", yscale="log", title="Diffusion training loss")
    ax.legend()
    fig.savefig(png_path, dpi=100)
