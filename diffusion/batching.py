"""Sharing network evaluations between sampling requests that arrive at the same time.

A web app on a 2-core CPU receives many small requests at once (thirty students clicking
"Generate" together). Running them one after another in separate threads makes them fight
over the two cores; running them as ONE batch costs about the same as the sum of their
sizes, but needs only one pass of the sampling loop. `BatchingSampler` owns one worker thread
that does this: every request that is waiting when the worker becomes free joins the next
batch. Inside a batch the requests' starting noises x_T are stacked along the batch axis,
and each sample keeps its own label and guidance w (`guided_eps` takes one w per sample).

Reproducibility: a request's x_T is drawn from its own `torch.Generator().manual_seed(seed)`
exactly as `DigitDiffusion.denoising_steps` draws it, so a request gives the same images
whether it ran alone or beside others (up to float rounding). Stochastic samplers (ddpm,
dpm++2m-sde, ddim with eta > 0) draw fresh noise at every step; in a shared batch each request's
rows still draw theirs from the request's own generator, in the same order as alone.

Identical requests (same digits, w, sampler, steps and seed: the request's `key`) are computed
once: a request identical to one still running shares its result, and the last results are
kept (a classroom where everyone clicks "Generate" with the default seed costs one batch).

    >>> sampler = BatchingSampler(pipe.model, pipe.schedule)
    >>> request = seeded_request(pipe.check_request([3, 3, 7], guidance=1.0, sampler="dpm++2m", num_inference_steps=10))
    >>> [images] = sampler.run([request])        # uint8 [3,28,28], same as pipe.generate(...)
"""
from __future__ import annotations

import queue
import threading
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from .data import to_uint8
from .requests import SamplingRequest
from .sampling import EVERY_STEP, SamplerStep, sample, sample_steps
from .schedules import NoiseSchedule

DEFAULT_MAX_BATCH_SAMPLES = 50  # samples per shared batch: larger batches are no faster per sample on a CPU,
                                # and smaller ones let the first requests finish earlier
DEFAULT_CACHE_SIZE = 256        # finished results kept for identical requests (≤ 100 × 784 bytes each)


@dataclass
class SampleRequest:
    """One request: N samples with their own labels, guidance and starting noise.

    labels: int64 [N] digits 0..9; guidance: float32 [N] w per sample; x_T: float32 [N,1,28,28];
    generator: the request's generator *after* drawing x_T (its per-step noise, for ddpm and ddim eta > 0);
    key: what fixes the result (equal keys give equal images), or None: such requests are never shared.
    """

    labels: torch.Tensor
    guidance: torch.Tensor
    x_T: torch.Tensor
    sampler: str
    num_inference_steps: int
    eta: float = 0.0
    generator: torch.Generator | None = None
    key: tuple | None = None
    guidance_interval: tuple[float, float] = EVERY_STEP

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    @property
    def batch_key(self) -> tuple:
        """Requests can share network evaluations only if they visit the same time steps."""
        return (self.sampler, self.num_inference_steps, self.eta, self.guidance_interval)


def seeded_request(request: SamplingRequest) -> SampleRequest:
    """The engine's form of a checked request: x_T drawn from `torch.Generator().manual_seed(seed)`,
    as `DigitDiffusion.run` draws it, so both give the same images."""
    generator = torch.Generator().manual_seed(request.seed)
    x_T = torch.randn((request.num_samples, 1, 28, 28), generator=generator)
    return SampleRequest(labels=torch.tensor(request.digits, dtype=torch.long),
                         guidance=torch.full((request.num_samples,), request.guidance),
                         x_T=x_T, sampler=request.sampler, num_inference_steps=request.num_inference_steps,
                         eta=request.eta, generator=generator, guidance_interval=request.guidance_interval,
                         key=(request.digits, request.guidance, request.sampler, request.num_inference_steps,
                              request.seed, request.eta, request.guidance_interval))


def request_steps(model: torch.nn.Module, schedule: NoiseSchedule, request: SampleRequest) -> Iterator[SamplerStep]:
    """Run one request on its own, yielding every step (for animations of the reverse process).

    The sampling loop runs in a thread of its own and hands each step over through a queue.
    torch's inference mode is a per-thread setting that `sample_steps` enters once, and a web
    server may resume a generator from a different worker thread at every step; in one thread
    the loop is always in inference mode. Closing this generator early stops the loop.
    """
    handover: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()

    def produce() -> None:
        try:
            for step in sample_steps(model, schedule, request.labels, guidance=request.guidance,
                                     sampler=request.sampler, num_inference_steps=request.num_inference_steps,
                                     eta=request.eta,
                                     generator=request.generator, x_T=request.x_T,
                                     guidance_interval=request.guidance_interval):
                handover.put(step)
                if stop.is_set():
                    break
            handover.put(None)
        except Exception as error:  # re-raised in the consumer's thread
            handover.put(error)

    threading.Thread(target=produce, name="request-steps", daemon=True).start()
    try:
        while (item := handover.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()


def sample_together(model: torch.nn.Module, schedule: NoiseSchedule,
                    requests: Sequence[SampleRequest]) -> list[np.ndarray]:
    """Run requests as one batch; returns each request's samples as uint8 [N_i,28,28].

    All requests must have the same `batch_key`. Each request's per-step noise (if its sampler
    draws any) comes from its own generator.
    """
    first = requests[0]
    if any(r.batch_key != first.batch_key for r in requests):
        raise ValueError("requests in one batch must use the same sampler, steps, eta and guidance interval")
    final = sample(model, schedule, torch.cat([r.labels for r in requests]),
                   guidance=torch.cat([r.guidance for r in requests]), sampler=first.sampler,
                   num_inference_steps=first.num_inference_steps, eta=first.eta, generator=[(r.generator, r.num_samples) for r in requests],
                   x_T=torch.cat([r.x_T for r in requests]), guidance_interval=first.guidance_interval)
    images = to_uint8(final)
    return np.split(images, np.cumsum([r.num_samples for r in requests])[:-1])


def plan_batches(requests: Sequence[SampleRequest], max_samples: int) -> list[list[int]]:
    """Group request indices into batches: requests with the same `batch_key`, in arrival order,
    at most `max_samples` samples per batch (a larger request gets a batch of its own).
    Batches run in the order of their first request."""
    batches: list[list[int]] = []
    open_batch: dict[tuple, list[int]] = {}  # batch_key -> the batch still accepting requests
    for i, request in enumerate(requests):
        batch = open_batch.get(request.batch_key)
        if batch is not None and sum(requests[j].num_samples for j in batch) + request.num_samples <= max_samples:
            batch.append(i)
            continue
        batch = [i]
        batches.append(batch)
        open_batch[request.batch_key] = batch
    return batches


class BatchingSampler:
    """One worker thread that runs all waiting requests as shared batches (see the module docstring).

    `run(requests)` may be called from many threads at once; it blocks until its requests are done.
    `batch_sizes` holds the number of requests in each of the last 1000 batches (for tests and benchmarks).
    """

    def __init__(self, model: torch.nn.Module, schedule: NoiseSchedule,
                 max_batch_samples: int = DEFAULT_MAX_BATCH_SAMPLES, cache_size: int = DEFAULT_CACHE_SIZE):
        self.model, self.schedule, self.max_batch_samples = model, schedule, max_batch_samples
        self.cache_size = cache_size
        self.batch_sizes: deque[int] = deque(maxlen=1000)
        self._waiting: queue.SimpleQueue = queue.SimpleQueue()  # lists of (request, future)
        self._lock = threading.Lock()  # guards the two dicts below and the worker's start
        self._running: dict[tuple, Future] = {}                    # key -> future of a request not yet done
        self._finished: OrderedDict[tuple, np.ndarray] = OrderedDict()  # key -> images, least recent first
        self._worker: threading.Thread | None = None

    def run(self, requests: Sequence[SampleRequest]) -> list[np.ndarray]:
        """Samples for each request, uint8 [N_i,28,28]; new requests are queued together."""
        futures, jobs = [], []
        with self._lock:
            for request in requests:
                future = self._known_future(request.key)
                if future is None:
                    future = Future()
                    jobs.append((request, future))
                    if request.key is not None:
                        self._running[request.key] = future
                futures.append(future)
            if jobs and self._worker is None:
                self._worker = threading.Thread(target=self._work, name="batching-sampler", daemon=True)
                self._worker.start()
        if jobs:
            self._waiting.put(jobs)
        return [future.result().copy() for future in futures]  # copies: callers may change their arrays

    def requests_in_progress(self) -> int:
        """How many distinct requests are waiting for the network or being computed right now."""
        with self._lock:
            return len(self._running)

    def _known_future(self, key: tuple | None) -> Future | None:
        """A future for an identical request that is running or finished, or None (call with the lock held)."""
        if key is None:
            return None
        if key in self._finished:
            self._finished.move_to_end(key)
            future = Future()
            future.set_result(self._finished[key])
            return future
        return self._running.get(key)

    def _take_waiting(self) -> list[tuple[SampleRequest, Future]]:
        """Block for the next job list, then take every other list already waiting."""
        jobs = list(self._waiting.get())
        while True:
            try:
                jobs.extend(self._waiting.get_nowait())
            except queue.Empty:
                return jobs

    def _work(self) -> None:
        while True:
            jobs = self._take_waiting()
            for batch in plan_batches([request for request, _ in jobs], self.max_batch_samples):
                self._run_batch([jobs[i] for i in batch])

    def _run_batch(self, jobs: list[tuple[SampleRequest, Future]]) -> None:
        self.batch_sizes.append(len(jobs))
        try:
            results = sample_together(self.model, self.schedule, [request for request, _ in jobs])
        except Exception as error:  # the requesters see it; the worker keeps serving
            results = [error] * len(jobs)
        with self._lock:
            for (request, _), images in zip(jobs, results):
                if request.key is not None:
                    self._running.pop(request.key, None)
                    if not isinstance(images, Exception):
                        self._finished[request.key] = images
            while len(self._finished) > self.cache_size:
                self._finished.popitem(last=False)
        for (_, future), images in zip(jobs, results):
            if isinstance(images, Exception):
                future.set_exception(images)
            else:
                future.set_result(images)
