"""What this CPU does well, measured when the app starts, not assumed.

The app was first tuned on one machine (2 cores with AMX, where bfloat16 runs the network about twice as fast
as float32). Other CPUs differ: an AMD Zen 4 has bfloat16 kernels that gain about 1.6x at a class's batch
sizes; a CPU with AVX2 alone only emulates bfloat16, far slower. So at start the app times the network itself,
a batch of LANE_ROWS samples on one thread (as each of the network server's lanes runs it), in float32 and,
where oneDNN has bfloat16 kernels, in bfloat16, and keeps the faster. The rest follows from the measurement:
one lane per core, and how many runs the Lab's slow experiments make by default so they answer in time.

    >>> choice = measure_cpu(model)            # about 0.5 s
    >>> print(choice.line())
    CPU: AMD EPYC, 2 cores (avx2 avx512f avx512_bf16): network in bfloat16, 91 GFLOP/s a core (float32 56) ...
"""
from __future__ import annotations

import copy
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

LANE_ROWS = 20          # samples in the timed batch: about what each lane evaluates in a busy tick
TIMED_SECONDS = 0.12    # per dtype, after one warm-up pass
LANE_TICK_ROWS = 40     # a tick's samples per lane: 80 on 2 cores was the fastest tick on the AMX machine (server.py)
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")  # what the network's speed depends on


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's share), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def cpu_model_and_flags() -> tuple[str, list[str]]:
    """('AMD EPYC', ['avx2', ...]) from /proc/cpuinfo; ('unknown CPU', []) where it cannot be read."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown CPU", []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")
    flags = next((set(line.split(":", 1)[1].split()) for line in lines if line.startswith("flags")), set())
    return model, [f for f in CPU_FLAGS if f in flags]


def bf16_kernels() -> bool:
    """Whether oneDNN has bfloat16 kernels here (AVX512-BF16 or AMX); without them bfloat16 is emulated."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


@dataclass(frozen=True)
class CpuChoice:
    """The measurement and what was chosen from it. *_gflops: the network's speed on one core, in float32 and in
    bfloat16 (None where bfloat16 has no kernels); gflop: one network evaluation of one sample."""

    model: str
    flags: tuple[str, ...]
    cores: int
    gflop: float
    fp32_gflops: float
    bf16_gflops: float | None

    @property
    def bf16(self) -> bool:
        return self.bf16_gflops is not None and self.bf16_gflops > self.fp32_gflops

    @property
    def lanes(self) -> int:
        return self.cores

    @property
    def gflops(self) -> float:
        """The whole CPU's network speed in the chosen dtype (every core a lane)."""
        return self.cores * (self.bf16_gflops if self.bf16 else self.fp32_gflops)

    def seconds(self, evaluations: int) -> float:
        """Seconds the network needs for this many single-sample evaluations, all cores busy."""
        return evaluations * self.gflop / self.gflops

    def runs_within(self, seconds: float, evaluations_per_run: int) -> int:
        """How many runs of `evaluations_per_run` single-sample evaluations the network finishes within `seconds`."""
        return int(seconds * self.gflops / (evaluations_per_run * self.gflop))

    @property
    def tick_rows(self) -> int:
        """The network server's largest tick: LANE_TICK_ROWS samples a lane."""
        return LANE_TICK_ROWS * self.lanes

    def line(self) -> str:
        bf16 = "no bfloat16 kernels" if self.bf16_gflops is None else f"bfloat16 {self.bf16_gflops:.0f}"
        return (f"CPU: {self.model}, {self.cores} core(s) ({' '.join(self.flags) or 'no AVX2'}): network in "
                f"{'bfloat16' if self.bf16 else 'float32'} ({bf16}, float32 {self.fp32_gflops:.0f} GFLOP/s a core), "
                f"{self.lanes} lane(s), ticks of up to {self.tick_rows} samples")


def _network_gflops(model: torch.nn.Module, dtype: torch.dtype) -> float:
    """GFLOP/s of `model` in `dtype` on one thread at LANE_ROWS samples (in a thread of its own, so the caller's
    thread count is left alone)."""
    net = copy.deepcopy(model).to(dtype).eval()
    if dtype == torch.float32:
        net = net.to(memory_format=torch.channels_last)  # as load_pipeline stores a float32 network
    x = torch.randn(LANE_ROWS, 1, 28, 28, dtype=dtype)
    t = torch.full((LANE_ROWS,), 250)
    labels = torch.arange(LANE_ROWS) % 10
    result = []

    def run():
        torch.set_num_threads(1)
        with torch.inference_mode():
            net(x, t, labels)  # warm-up
            count, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < TIMED_SECONDS:
                net(x, t, labels)
                count += 1
        result.append(count * LANE_ROWS / elapsed)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return result[0] * evaluation_gflop(model)


def evaluation_gflop(model: torch.nn.Module) -> float:
    """GFLOP of one network evaluation of one sample: 2 per multiply-add of every convolution and linear layer,
    and of attention's two products (what torch's FlopCounterMode counts, without importing the compiler stack
    it needs, 1.8 s at start). t = T/2, label 0."""
    flops = []

    def count(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            flops.append(2 * output.numel() * module.in_channels // module.groups * module.kernel_size[0]
                         * module.kernel_size[1])
        elif isinstance(module, torch.nn.Linear):
            flops.append(2 * output.numel() * module.in_features)
        elif hasattr(module, "heads") and hasattr(module, "qkv"):  # self-attention: QKᵀ and its product with V
            B, C, H, W = inputs[0].shape
            flops.append(2 * 2 * B * (H * W) ** 2 * C)

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    try:
        with torch.inference_mode():
            model.float()(torch.zeros(1, 1, 28, 28), torch.full((1,), 250), torch.zeros(1, dtype=torch.long))
    finally:
        for hook in hooks:
            hook.remove()
    return sum(flops) / 1e9


def measure_cpu(model: torch.nn.Module) -> CpuChoice:
    """Time `model` (a float32 diffusion U-Net on the CPU; left unchanged) and choose (see the module docstring)."""
    model = copy.deepcopy(model).float().cpu()
    name, flags = cpu_model_and_flags()
    fp32 = _network_gflops(model, torch.float32)
    bf16 = _network_gflops(model, torch.bfloat16) if bf16_kernels() else None
    return CpuChoice(name, tuple(flags), usable_cores(), evaluation_gflop(model), fp32, bf16)
