"""One network for every sampling request: iteration-level ("continuous") batching.

A web app on a 2-core CPU receives many requests at once (thirty students pressing "Run the reverse
process" together), each with its own sampler, step count, digit, guidance and seed. Running each in
a thread of its own makes them fight over the two cores; waiting to start them together makes the
late ones wait for the early ones. `NetworkServer` owns one worker thread that, every *tick*:

    1. picks runs that are waiting for the network (see `choose_runs`: the runs closest to finishing
       first, but none left out for more than STARVE_TICKS ticks), up to MAX_TICK_ROWS samples;
    2. evaluates all their ε in ONE batched forward pass (the network takes a t, a label and a w per
       sample, so runs at different t, with different samplers and digits, share it); on a CPU the batch
       is cut into one part per core, evaluated side by side (`batched_network.BatchedNetwork`);
    3. lets each run's own sampler take its `step` (sampling.py) and tells whoever is listening.

Runs join and leave between ticks, so nobody waits for anybody else to finish; a 500-step ddpm run
and a 12-step grid advance side by side, and the grid is done after 12 ticks.

Reproducibility: a run's x_T and its per-step noise come from its own
`torch.Generator().manual_seed(seed)`, drawn as `DigitDiffusion.run` draws them, so a request gives the
same frames and images alone or in a crowd (up to float rounding: batch sizes change the order of
float sums). Identical requests (same digits, w, sampler, steps, seed, eta, interval) are computed
once: a request identical to a running one listens to it (and gets the steps it missed), and the last
results are kept.

    >>> server = NetworkServer(pipe.model, pipe.schedule)
    >>> images = server.submit(pipe.check_request([3, 7], seed=1)).result()   # uint8 [2,28,28]
    >>> for step in server.submit(request, stream=True).steps(): ...          # every x_t and x̂_0
"""
from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .data import to_uint8
from .batched_network import BatchedNetwork
from .requests import MAX_SAMPLES, SamplingRequest
from .editing import prepare_run
from .heap import fix_malloc_thresholds, release_free_memory
from .sampling import Sampler, SamplerStep, classifier_guided_eps, is_guided_step
from .schedules import NoiseSchedule

# A tick of up to 80 samples (two lanes of 40, see batched_network.py; about 45 ms on the 2-core machine) was
# the fastest: 30 grids took 2.29 / 2.03-2.14 / 2.48 / 2.23-2.37 / 2.64 s with ticks of up to 64 / 80 / 96 / 128 /
# 256 samples (bf16, 2 lanes, the network server alone, medians of 4); 30 ddpm-500 animations (ticks of 30) do not
# depend on it.
MAX_TICK_ROWS = 80
STARVE_TICKS = 32           # a run not served for this many ticks joins the next tick, whatever its size
RESULT_CACHE_SIZE = 64      # finished results kept for identical requests (≤ 100 × 784 bytes each)
# Finished animations kept, with every step, for identical animation requests that come after the run is over
# (those that come while it runs join it). A ddpm-500 animation's steps take 3.1 MB, a 12-step one's 80 KB.
HISTORY_CACHE_BYTES = 4 * 2**20
# The heap is trimmed once the network has been idle this long after a burst: by then the runs' frames have
# been drawn and their pages sent, and what those freed goes back too (trimming as the last run finished left
# 80-105 MB of freed memory with the app: measured after 30 animations, then trimmed by hand).
TRIM_AFTER_IDLE_S = 2.0


class RunCancelled(Exception):
    """The run stopped because nobody was listening any more."""


class Mailbox:
    """Where the worker leaves a run's steps for one listener. Unlike a queue, putting does not hand the
    interpreter to the listener's thread: the listener looks when it is ready (see `RunHandle.step_batches`),
    so thirty animations do not interrupt the worker thirty times a tick."""

    def __init__(self):
        self._items: list = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.closed = threading.Event()  # the run is over (its last item is in)

    def put(self, item) -> None:
        with self._lock:
            self._items.append(item)
        if item is None or isinstance(item, BaseException):
            self.closed.set()
        self._ready.set()

    def take_all(self) -> list:
        """Every item left so far, in order (waits for at least one)."""
        self._ready.wait()
        with self._lock:
            items, self._items = self._items, []
            self._ready.clear()
        return items


@dataclass(eq=False)
class Run:
    """One request's state between ticks. x: [N,1,28,28] the current x_t; sampler: its own, with its state."""

    key: tuple
    labels: torch.Tensor
    guidance: float
    guidance_interval: tuple[float, float]
    classifier_scale: float
    sampler: Sampler
    x: torch.Tensor
    generator: torch.Generator
    arrival: int
    stream: bool
    keep_history: bool = True  # a streamed run keeps its steps for late listeners and the cache
    steps_done: int = 0
    last_served: int = 0
    history: list[SamplerStep] = field(default_factory=list)
    # A run that keeps its history writes every step's x and x̂₀ into these, [steps+1,N,1,28,28] each, and its
    # history holds views of them: two blocks of memory, not a thousand small tensors spread through the
    # worker's heap (30 ddpm-500 animations hold 94 MB of steps while they run)
    step_x: torch.Tensor | None = None
    step_x0: torch.Tensor | None = None
    listeners: list[Mailbox] = field(default_factory=list)
    result: Future = field(default_factory=Future)
    waiters: int = 0        # callers of .result() that have not been answered
    cancelled: bool = False

    @property
    def rows(self) -> int:
        return len(self.labels)

    @property
    def slot(self) -> tuple:
        """Its key among the active runs: identical requests share a run, except runs that keep no history."""
        return (self.key, self.stream) if self.keep_history else (self.key, "unshared", self.arrival)

    @property
    def total(self) -> int:
        return len(self.sampler.timesteps)

    @property
    def remaining_work(self) -> int:
        return self.rows * (self.total - self.steps_done)


def choose_runs(runs: list[Run], tick: int, max_rows: int = MAX_TICK_ROWS) -> list[Run]:
    """The runs served this tick: the least remaining work first (a 12-step grid never waits behind a
    500-step run, nor behind another client's 100-sample request), then arrival order, as many as fit in
    max_rows samples (one run is always served, even if larger); and then one run that has not been served
    for STARVE_TICKS ticks, if any, even past max_rows, so that every run keeps moving."""
    order = sorted(runs, key=lambda r: (r.remaining_work, r.arrival))
    chosen, rows = [], 0
    for run in order:
        if rows + run.rows <= max_rows or not chosen:
            chosen.append(run)
            rows += run.rows
    starving = [r for r in runs if tick - r.last_served >= STARVE_TICKS and r not in chosen]
    if starving:
        chosen.append(min(starving, key=lambda r: (r.last_served, r.arrival)))
    return chosen


class RunHandle:
    """A caller's view of a run: `steps()` (every step, from the first), `result()` (the final images)."""

    def __init__(self, server: "NetworkServer", run: Run, listener: Mailbox | None):
        self._server, self._run, self._listener = server, run, listener

    def result(self, timeout: float | None = None) -> np.ndarray:
        """The samples as uint8 [N,28,28] (a copy: callers may change it)."""
        try:
            return self._run.result.result(timeout).copy()
        finally:
            self._server._release_waiter(self._run)

    def steps(self):
        """Yield every `SamplerStep` of the run in order (those before joining first), starting with step 0:
        x_T itself (x0 None, t the sampler's first time step). Closing this
        generator early stops the run at its next tick, unless someone else is listening."""
        for batch in self.step_batches():
            yield from batch

    def step_batches(self, min_interval: float | Callable[[], float] = 0.0):
        """Like `steps`, but yields lists: every step that has arrived since the last list (at least one),
        at most one list per `min_interval` seconds (a number, or a function asked each time). An animation
        shows the newest of each list and keeps the rest; between lists its thread sleeps, so it costs the
        worker nothing."""
        if self._listener is None:
            raise ValueError("submit(..., stream=True) to follow the steps")
        try:
            done = False
            while not done:
                started = time.monotonic()
                batch = self._listener.take_all()
                for item in batch:
                    if isinstance(item, BaseException):
                        raise item
                done = batch[-1] is None
                steps = [item for item in batch if item is not None]
                if steps:
                    yield steps
                interval = min_interval() if callable(min_interval) else min_interval
                if not done and interval:  # sleep, but not past the end of the run
                    self._listener.closed.wait(max(0.0, started + interval - time.monotonic()))
        finally:
            self.close()

    def close(self) -> None:
        """Stop listening; a run nobody listens to or waits for stops at its next tick."""
        if self._listener is not None:
            self._server._unlisten(self._run, self._listener)
            self._listener = None


class NetworkServer:
    """The worker thread and its runs (see the module docstring). Thread-safe; `close()` stops it."""

    def __init__(self, model: torch.nn.Module, schedule: NoiseSchedule, max_tick_rows: int = MAX_TICK_ROWS,
                 warm_up: bool = False, judge: torch.nn.Module | None = None, lanes: int | None = None):
        fix_malloc_thresholds()  # for the handler threads' heaps, and the network's tensors (see heap.py)
        self.network = BatchedNetwork(model, lanes)  # lanes: default one per core on a CPU
        self.schedule, self.max_tick_rows = schedule, max_tick_rows
        self.judge = judge  # the noise-aware classifier, for requests with classifier guidance
        self.device = self.network.device
        self.tick_sizes: deque[int] = deque(maxlen=10_000)  # samples evaluated per tick (tests, benchmarks)
        self.finish_order: deque[tuple] = deque(maxlen=1000)  # keys of finished runs, in order
        self._lock = threading.Condition()
        self._active: dict[tuple, Run] = {}
        self._finished: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._histories: OrderedDict[tuple, list[SamplerStep]] = OrderedDict()
        self._arrivals = itertools.count()
        self._tick = 0
        self._closed = False
        self._finished_since_trim = False
        self._warm = warm_up
        self._worker = threading.Thread(target=self._work, name="network-server", daemon=True)
        self._worker.start()

    # --- the callers' side ----------------------------------------------------------------------------
    def submit(self, request: SamplingRequest, stream: bool = False, keep_history: bool = True) -> RunHandle:
        """Start (or join an identical) run for a checked request. stream: follow every step.
        keep_history=False (with stream): the steps go to this caller alone and are not kept, for a run of
        many samples (200 samples × 500 steps of history would take 630 MB); such a run is never shared."""
        with self._lock:
            return self._submit(request, stream, keep_history or not stream)

    def _submit(self, request: SamplingRequest, stream: bool, keep_history: bool = True) -> RunHandle:
        """(lock held) See `submit`."""
        key = request_key(request)
        if self._closed:
            raise RuntimeError("the network server is closed")
        if request.classifier_scale and self.judge is None:
            raise ValueError("classifier guidance needs a noise-aware classifier, and this server has none")
        cached = self._from_cache(key, stream) if keep_history else None
        if cached is not None:
            return cached
        run = self._active.get((key, stream)) if keep_history else None  # a streamed run keeps its history
        if run is None or run.cancelled:
            run = self._new_run(key, request, stream, keep_history)
            self._active[run.slot] = run
            self._lock.notify()
        run.waiters += 1
        listener = None
        if stream:
            listener = Mailbox()
            for step in run.history:
                listener.put(step)
            run.listeners.append(listener)
        return RunHandle(self, run, listener)

    def run(self, requests: list[SamplingRequest]) -> list[np.ndarray]:
        """The final samples of each request, uint8 [N_i,28,28]; the requests start together, side by side."""
        with self._lock:
            handles = [self._submit(r, stream=False) for r in requests]
        return [h.result() for h in handles]

    def streams(self) -> int:
        """How many listeners follow runs step by step right now (animations being watched)."""
        with self._lock:
            return sum(len(r.listeners) for r in self._active.values())

    def requests_in_progress(self) -> int:
        """How many distinct runs are waiting for the network right now."""
        with self._lock:
            return len(self._active)

    def close(self) -> None:
        """Stop the worker (runs still going end with RunCancelled) and wait for it."""
        with self._lock:
            self._closed = True
            self._lock.notify()
        if threading.current_thread() is not self._worker:
            self._worker.join(timeout=30)
        self.network.close()

    # --- bookkeeping (with the lock held) -----------------------------------------------------------
    def _new_run(self, key: tuple, request: SamplingRequest, stream: bool, keep_history: bool = True) -> Run:
        generator = torch.Generator().manual_seed(request.seed)
        sampler, x_T = prepare_run(request, self.schedule, generator, self.device)
        run = Run(key=key, labels=torch.tensor(request.digits, dtype=torch.long, device=self.device),
                  guidance=request.guidance, guidance_interval=request.guidance_interval,
                  classifier_scale=request.classifier_scale, sampler=sampler,
                  x=x_T, generator=generator, arrival=next(self._arrivals), stream=stream,
                  keep_history=keep_history, last_served=self._tick)
        if stream and keep_history:
            run.step_x, run.step_x0 = (x_T.new_empty((run.total + 1, *x_T.shape)) for _ in range(2))
            run.step_x[0] = x_T
        if stream:  # step 0: x_T itself, so a listener's first frame is the starting noise
            run.history.append(SamplerStep(index=0, total=run.total, t=sampler.timesteps[0],
                                           x=x_T if run.step_x is None else run.step_x[0], x0=None))
        return run

    def _from_cache(self, key: tuple, stream: bool) -> RunHandle | None:
        if stream and key in self._histories:
            self._histories.move_to_end(key)
            history = self._histories[key]
        elif not stream and key in self._finished:
            history = None
        else:
            return None
        self._finished.move_to_end(key)
        run = Run(key=key, labels=torch.empty(0), guidance=0.0, guidance_interval=(0.0, 1.0), classifier_scale=0.0,
                  sampler=None,
                  x=torch.empty(0), generator=None, arrival=-1, stream=stream)
        run.result.set_result(self._finished[key])
        listener = None
        if history is not None:
            listener = Mailbox()
            for step in history:
                listener.put(step)
            listener.put(None)
        return RunHandle(self, run, listener)

    def _release_waiter(self, run: Run) -> None:
        with self._lock:
            run.waiters = max(0, run.waiters - 1)

    def _unlisten(self, run: Run, listener: Mailbox) -> None:
        with self._lock:
            if listener in run.listeners:
                run.listeners.remove(listener)
                run.waiters = max(0, run.waiters - 1)
            if run.stream and not run.listeners and run.waiters == 0 and not run.result.done():
                run.cancelled = True  # the worker drops it at its next tick

    # --- the worker -------------------------------------------------------------------------------------
    def _work(self) -> None:
        with torch.inference_mode():  # one thread, never handed over: inference mode for good
            if self._warm:
                # the largest tick the app makes: a full one, and one starving run of the most samples a
                # request may ask (kernels for a batch size first met during a class stayed in the middle of
                # the heap: malloc's memory in use after the class benchmark was 16 MB higher)
                self.network.warm_up(self.max_tick_rows + MAX_SAMPLES)
            while True:
                with self._lock:
                    while not self._active and not self._closed:
                        if not self._finished_since_trim:
                            self._lock.wait()
                        elif not self._lock.wait(timeout=TRIM_AFTER_IDLE_S):  # a burst is over and its
                            release_free_memory()  # frames are drawn and sent: give its freed memory back
                            self._finished_since_trim = False
                    if self._closed:
                        self._fail(list(self._active.values()), RunCancelled("the network server closed"))
                        return
                    for run in [r for r in self._active.values() if r.cancelled]:
                        self._fail([run], RunCancelled("nobody is listening"))
                    self._tick += 1
                    runs = choose_runs(list(self._active.values()), self._tick, self.max_tick_rows)
                if runs:
                    self._step(runs)

    def _step(self, runs: list[Run]) -> None:
        """One tick: one batched evaluation of the runs' ε, then each run's own sampler step."""
        try:
            eps = self._evaluate(runs)
        except Exception:  # one bad run must not break the others: find it by evaluating each alone
            eps = []
            for run in runs:
                try:
                    eps.extend(self._evaluate([run]))
                except Exception as error:  # the requester sees it; the others go on
                    with self._lock:
                        self._fail([run], error)
                    eps.append(None)
        self.tick_sizes.append(sum(r.rows for r, e in zip(runs, eps) if e is not None))
        stepped = []
        for run, run_eps in zip(runs, eps):
            if run_eps is None:
                continue
            try:
                t = run.sampler.timesteps[run.steps_done]
                out = run.sampler.step(run_eps, t, run.x, run.generator)
            except Exception as error:
                with self._lock:
                    self._fail([run], error)
                continue
            run.x, run.steps_done, run.last_served = out.x, run.steps_done + 1, self._tick
            x, x0 = out.x, out.x0
            if run.step_x is not None:
                x = run.step_x[run.steps_done].copy_(out.x)
                x0 = None if out.x0 is None else run.step_x0[run.steps_done].copy_(out.x0)
            stepped.append((run, SamplerStep(index=run.steps_done, total=run.total, t=out.t, x=x, x0=x0)))
        with self._lock:  # listeners hear of the tick once it is over
            for run, step in stepped:
                if run.stream and run.keep_history:
                    run.history.append(step)
                for listener in run.listeners:
                    listener.put(step)
                if run.steps_done == run.total:
                    self._finish(run)

    def _evaluate(self, runs: list[Run]) -> list[torch.Tensor]:
        """The guided ε of every run, from one forward pass over all their samples; one [N_i,1,28,28] each."""
        T = self.schedule.num_train_steps
        ts, ws = [], []
        for run in runs:
            t = run.sampler.timesteps[run.steps_done]
            ts.append(torch.full((run.rows,), t, dtype=torch.long, device=self.device))
            guided = is_guided_step(t, T, run.guidance_interval)
            ws.append(torch.full((run.rows,), run.guidance if guided else 0.0, device=self.device))
        eps = self.network.guided_eps(torch.cat([r.x for r in runs]), torch.cat(ts),
                                      torch.cat([r.labels for r in runs]), torch.cat(ws))
        eps = list(eps.split([r.rows for r in runs]))
        steered = [i for i, run in enumerate(runs) if run.classifier_scale]
        if steered:  # classifier guidance: the judge's gradient for all those runs' rows in one pass
            scales = torch.cat([torch.full((runs[i].rows,), runs[i].classifier_scale, device=self.device)
                                for i in steered])
            new = classifier_guided_eps(torch.cat([eps[i] for i in steered]), torch.cat([runs[i].x for i in steered]),
                                        torch.cat([ts[i] for i in steered]), torch.cat([runs[i].labels for i in steered]),
                                        self.judge, scales, self.schedule)
            for i, part in zip(steered, new.split([runs[i].rows for i in steered])):
                eps[i] = part
        return eps

    def _finish(self, run: Run) -> None:
        """(lock held) The run's final images to its result, its listeners and the caches."""
        images = to_uint8(run.x.clamp(-1, 1))
        self._active.pop(run.slot, None)
        self._finished[run.key] = images
        while len(self._finished) > RESULT_CACHE_SIZE:
            self._finished.popitem(last=False)
        if run.stream and run.keep_history:  # the cache keeps the steps (views of step_x, step_x0)
            self._histories[run.key], run.history = run.history, []
            while (len(self._histories) > 1
                   and sum(map(history_bytes, self._histories.values())) > HISTORY_CACHE_BYTES):
                self._histories.popitem(last=False)
        self.finish_order.append(run.key)
        self._finished_since_trim = True
        for listener in run.listeners:
            listener.put(None)
        run.result.set_result(images)

    def _fail(self, runs: list[Run], error: BaseException) -> None:
        """(lock held) End runs with an error their callers see."""
        for run in runs:
            if self._active.get(run.slot) is run:
                del self._active[run.slot]
            for listener in run.listeners:
                listener.put(error)
            if not run.result.done():
                run.result.set_exception(error)


def history_bytes(history: list[SamplerStep]) -> int:
    """Memory a finished run's history takes: x and x̂₀ of every step."""
    return 2 * len(history) * history[0].x.nbytes


def request_key(request: SamplingRequest) -> tuple:
    """What fixes a request's result: equal keys give equal images (every field but samples_per_digit, which
    `digits` already spells out)."""
    return tuple(getattr(request, f.name) for f in dataclasses.fields(request) if f.name != "samples_per_digit")
