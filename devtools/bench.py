"""Benchmark reports: figures and bars, written to JSON with the machine's details; a missed bar makes
the benchmark exit non-zero. The README's figures are filled in from these files
(`python -m devtools.readme`)."""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from diffusion.cpu_speed import cpu_model_and_flags

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
PARTIAL = Path(__file__).resolve().parent.parent / "test-artifacts"  # runs of only some parts land here


def seconds(call) -> float:
    """Wall-clock seconds that call() takes."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between order statistics."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def summary(values: list[float], unit: str = "s", scale: float = 1.0) -> str:
    v = [x * scale for x in values]
    return (f"median {statistics.median(v):.3g} {unit}, p95 {percentile(v, 95):.3g} {unit}, "
            f"min {min(v):.3g}, max {max(v):.3g} (n = {len(v)})")


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, TypeError):
        return None


def cpu_flags() -> list[str]:
    """Which of the flags the network's speed depends on this CPU has (`diffusion.cpu_speed.CPU_FLAGS`)."""
    return cpu_model_and_flags()[1]


def cpu_line() -> str:
    """'CPU: <model>, <n> cores, flags <…>': what each benchmark prints beside its figures."""
    info = machine()
    return f"CPU: {info.get('cpu_model', '?')}, {info['cpus']} cores, flags {' '.join(info['cpu_flags']) or 'none'}"


def matmul_gflops(dtype=None, size: int = 2048, rounds: int = 3, min_seconds: float = 0.5) -> float:
    """This CPU's matrix-multiply rate in GFLOP/s (2·n³ per n×n product) at torch's thread count, float32 by
    default: the yardstick that every network figure is divided by (`network_gflop` / this = the floor).
    The best of a few rounds: what the CPU can do, not what a moment of other work left it."""
    import torch

    dtype = dtype or torch.float32
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    rates = []
    for _ in range(rounds):
        count, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < min_seconds:
            a @ b
            count += 1
        rates.append(2 * size**3 * count / elapsed / 1e9)
    return max(rates)


def network_gflop(model) -> float:
    """GFLOP of one network evaluation of one sample (`diffusion.cpu_speed.evaluation_gflop`)."""
    from diffusion.cpu_speed import evaluation_gflop

    return evaluation_gflop(model)


def machine() -> dict:
    """What the figures depend on: CPUs, their model and flags, memory, load, Python and torch."""
    model, flags = cpu_model_and_flags()
    info = {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
            "python": platform.python_version(), "platform": platform.platform(), "cpu_model": model,
            "cpu_flags": flags}
    try:
        info["memory_gib"] = round(int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                                            if line.startswith("MemTotal"))) / 2**20, 1)
    except (OSError, StopIteration):
        pass
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                    cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    return info


@dataclass
class Report:
    """One benchmark's figures and bars. `bar` records a measured value against its limit and prints it;
    `finish` writes benchmarks/results/<name>.json and returns the exit code (1 if a bar was missed)."""

    name: str
    figures: dict = field(default_factory=dict)
    bars: list = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def figure(self, key: str, value, text: str | None = None):
        self.figures[key] = value
        if text:
            print(text, flush=True)
        return value

    def bar(self, key: str, measured: float | None, limit: float, unit: str, what: str, at_least: bool = False) -> bool:
        """Check measured ≤ limit (≥ with at_least); None counts as missed (nothing was measured)."""
        met = measured is not None and (measured >= limit if at_least else measured <= limit)
        self.bars.append({"key": key, "what": what, "measured": measured, "limit": limit, "unit": unit,
                          "at_least": at_least, "met": met})
        shown = "—" if measured is None else f"{measured:.3g} {unit}"
        print(f"BAR {'met   ' if met else 'MISSED'} {what}: {shown} ({'≥' if at_least else '≤'} {limit:g} {unit})",
              flush=True)
        return met

    def finish(self, partial: bool = False) -> int:
        """Write the report (a partial run, one that skipped parts, goes to test-artifacts/: the README's
        figures come from complete runs only); returns the exit code."""
        out = (PARTIAL if partial else RESULTS) / f"{self.name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        report = {"benchmark": self.name, "date": time.strftime("%Y-%m-%d", time.gmtime(self.started)),
                  "seconds": round(time.time() - self.started, 1), "machine": machine(),
                  "bars": self.bars, "figures": self.figures}
        out.write_text(json.dumps(report, indent=2, default=float) + "\n")
        missed = [b["what"] for b in self.bars if not b["met"]]
        print(f"wrote {out}; " + (f"{len(missed)} bar(s) missed: {'; '.join(missed)}" if missed
                                  else f"all {len(self.bars)} bar(s) met"), flush=True)
        return 1 if missed else 0
