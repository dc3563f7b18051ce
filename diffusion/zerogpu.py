"""Sampling on a free Hugging Face ZeroGPU Space, and on the CPU whenever no GPU comes.

How ZeroGPU runs code (the `spaces` package): only functions decorated with `@spaces.GPU(duration=…)` see a
GPU, each call in a forked worker process that holds a slice of a GPU for that call; the models are put on
"cuda" once at start (placeholders until a call moves the real weights); and before a call runs, the
visitor's daily quota is checked against the *requested* duration, and a call that asks for more than is
left is refused with a gradio error titled "ZeroGPU quota exceeded" (or "… illegal duration", "… pending
credits exceeded"). Off a ZeroGPU Space the decorator does nothing.

So here each request runs whole inside ONE decorated call (all its steps: a call per step would pay the fork
each time), asking for a duration estimated from its work (`gpu_seconds`), and streams its steps back as
they come. `GpuSampling` gives the app the network server's interface (submit, run, streams,
requests_in_progress, close), so no tab knows where its samples were made. When a call is refused, the same
request runs on the CPU's network server instead (same seed, same images up to float rounding), and
`on_cpu_fallback` is told, so the page can say so; nothing the student asked for is lost.
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from typing import Callable, Iterator

import numpy as np
import torch

from .data import to_uint8
from .editing import prepare_run
from .requests import SamplingRequest
from .sampling import SamplerStep
from .schedules import NoiseSchedule

try:  # on a ZeroGPU Space `spaces` must be imported before CUDA is touched; elsewhere its decorator is a no-op
    import spaces
except ImportError:  # the app still runs without it (a plain CPU or CUDA machine)
    spaces = None

REFUSALS = ("ZeroGPU quota exceeded", "ZeroGPU illegal duration", "ZeroGPU pending credits exceeded")
CPU_FALLBACK_NOTE = "No GPU this time ({why}): this ran on the CPU instead, with the same seed and settings."

# The duration a call asks for. Not measured on a ZeroGPU Space (none can be reached from where this was
# written): a call's fixed cost (the fork, the weights onto the GPU, the first kernels) and a rate of batched
# network steps a second that a GPU slice beats by far for this 1M-parameter network, with room to spare.
# Asking for too much costs nothing but the chance to run when the quota left is smaller than the ask.
GPU_CALL_SECONDS = 8.0
GPU_STEPS_PER_SECOND = 100.0     # one step of a batch of up to GPU_BATCH_ROWS samples
GPU_BATCH_ROWS = 256
MAX_GPU_SECONDS = 120


def on_zerogpu() -> bool:
    """Whether this process runs on a ZeroGPU Space (where `spaces` sets SPACES_ZERO_GPU)."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true")


def gpu_seconds(requests: list[SamplingRequest], schedule: NoiseSchedule) -> int:
    """The GPU seconds to ask for to run these requests one after another in one call (see above)."""
    steps = sum(len(prepare_run(r, schedule, torch.Generator().manual_seed(0))[0].timesteps)
                * math.ceil(r.num_samples / GPU_BATCH_ROWS) for r in requests)
    return min(MAX_GPU_SECONDS, math.ceil(GPU_CALL_SECONDS + steps / GPU_STEPS_PER_SECOND))


def refused(error: BaseException) -> str | None:
    """ZeroGPU's reason, if `error` is its refusal to start a call (a gradio error, known by its title), else None."""
    text = f"{getattr(error, 'title', '') or ''} {error}"
    return next((reason for reason in REFUSALS if reason in text), None)


class _GpuState:
    """What the decorated functions read in the forked worker: the GPU pipeline, set at start (a fork copies it)."""

    pipe = None


_GPU = _GpuState()


def _duration(requests: list[SamplingRequest], stream: bool = False) -> int:
    return gpu_seconds(requests, _GPU.pipe.schedule)


def _gpu(function):
    """`spaces.GPU(duration=…)` where `spaces` is installed, else the function itself."""
    return spaces.GPU(duration=_duration)(function) if spaces is not None else function


@_gpu
def run_on_gpu(requests: list[SamplingRequest], stream: bool = False) -> Iterator[SamplerStep | np.ndarray]:
    """Inside one GPU call: with stream, every step of the one request (step 0, x_T, first), moved to the CPU
    to cross back; else each request's final samples, uint8 [N,28,28], in order."""
    pipe = _GPU.pipe
    for request in requests:
        last = None
        for step in pipe.run(request, include_start=stream):
            if stream:
                yield SamplerStep(step.index, step.total, step.t, step.x.cpu(), None if step.x0 is None else step.x0.cpu())
            last = step
        if not stream:
            yield to_uint8(last.x.cpu())


class GpuRunHandle:
    """A request running on the GPU (or, refused, on the CPU): `steps()`, `step_batches()`, `result()`, as the
    network server's `RunHandle`."""

    def __init__(self, sampling: "GpuSampling", request: SamplingRequest, stream: bool):
        self._sampling, self._request, self._stream = sampling, request, stream

    def steps(self) -> Iterator[SamplerStep]:
        with self._sampling.counting(stream=True):
            yield from self._sampling.with_fallback(
                lambda: run_on_gpu([self._request], stream=True),
                lambda: self._sampling.cpu_server.submit(self._request, stream=True).steps())

    def step_batches(self, min_interval: float | Callable[[], float] = 0.0):
        """Lists of the steps that came, at most one list per min_interval seconds (a number, or a function)."""
        batch, last = [], -math.inf
        for step in self.steps():
            batch.append(step)
            interval = min_interval() if callable(min_interval) else min_interval
            if time.monotonic() - last >= interval:
                yield batch
                batch, last = [], time.monotonic()
        if batch:
            yield batch

    def result(self, timeout: float | None = None) -> np.ndarray:
        return self._sampling.run([self._request])[0]


class GpuSampling:
    """The network server's interface over ZeroGPU calls, with the CPU's network server behind it.

    gpu_pipe: the pipeline on "cuda" (put there at start); cpu_server: a `NetworkServer` on the CPU, for
    refused calls; on_cpu_fallback(note): told in the requesting thread when a request falls back."""

    def __init__(self, gpu_pipe, cpu_server, on_cpu_fallback: Callable[[str], None] = lambda note: None):
        _GPU.pipe = gpu_pipe
        self.cpu_server, self.on_cpu_fallback = cpu_server, on_cpu_fallback
        self.device = cpu_server.device  # where callers put tensors they hand in (the CPU)
        self._lock = threading.Lock()
        self._running = self._streams = 0

    def submit(self, request: SamplingRequest, stream: bool = False, keep_history: bool = True) -> GpuRunHandle:
        return GpuRunHandle(self, request, stream)

    def run(self, requests: list[SamplingRequest]) -> list[np.ndarray]:
        """Each request's final samples, uint8 [N_i,28,28]: all of them in one GPU call."""
        with self.counting(stream=False):
            return list(self.with_fallback(lambda: run_on_gpu(list(requests)),
                                           lambda: iter(self.cpu_server.run(list(requests)))))

    def with_fallback(self, on_gpu: Callable[[], Iterator], on_cpu: Callable[[], Iterator]) -> Iterator:
        """What on_gpu() yields; if ZeroGPU refuses the call before it yields anything, what on_cpu() yields (the
        CPU server counts that request as its own: it is no longer counted here)."""
        produced = False
        try:
            for item in on_gpu():
                produced = True
                yield item
        except Exception as error:  # noqa: BLE001 — only a refusal is handled; anything else goes on up
            why = refused(error)
            if why is None or produced:
                raise
            self.on_cpu_fallback(CPU_FALLBACK_NOTE.format(why=why))
            with self._lock:
                self._running -= 1
            try:
                yield from on_cpu()
            finally:
                with self._lock:
                    self._running += 1  # counting() takes it off again when the request is over

    @contextlib.contextmanager
    def counting(self, stream: bool):
        """Count a request (and a stream) as running while the block runs."""
        with self._lock:
            self._running, self._streams = self._running + 1, self._streams + stream
        try:
            yield
        finally:
            with self._lock:
                self._running, self._streams = self._running - 1, self._streams - stream

    def streams(self) -> int:
        """Animations being followed right now (the reverse-process tab paces its frames by this)."""
        with self._lock:
            return self._streams

    def requests_in_progress(self) -> int:
        with self._lock:
            return self._running + self.cpu_server.requests_in_progress()

    def close(self) -> None:
        self.cpu_server.close()
