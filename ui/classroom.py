"""What every tab shares: the loaded models, the shared network batcher, the scores, and a folder
for the files the app writes (removed when the app stops, SIGTERM included)."""
from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import queue
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from concurrent.futures import Future
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import gradio as gr

import numpy as np
import torch

from diffusion.checkpoints import load_module, read_config
from diffusion.cpu_speed import CpuChoice, measure_cpu
from diffusion.devices import resolve_device
from diffusion.model import build_unet
from diffusion.classifier import DEFAULT_NOISE_CLASSIFIER, load_classifier, load_noise_classifier
from diffusion.data import load_shipped_digits, shipped_test_index, to_uint8
from diffusion.pipeline import DigitDiffusion, load_pipeline
from diffusion.requests import (BEST_OF, CLIP_GUIDANCE_SCALE, DEFAULT_CLASSIFIER_SCALE, MAX_CLIP_GUIDED,
                               SamplingRequest, check_sampling_request, max_inference_steps)
from diffusion.scoring import (DIGIT_PROMPTS, ClassifierScores, ClipScores, ClipUnavailable, LazyClip, best_of_n,
                               classifier_scores, noisy_image_scores)
from diffusion.server import NetworkServer
from diffusion.zerogpu import GpuSampling, on_zerogpu

from .settings import (CLASSIFIER_CHUNK_ROWS, HANDLER_NICENESS, MAX_CHUNKED_CLASSIFIER_ROWS, MAX_IN_FLIGHT_PER_CLIENT,
                       MAX_RUN_STORE_BYTES, MAX_SAMPLES, MAX_WORK)
from .validation import digit_set, invalid, user_errors

CLIP_BUSY = ("CLIP skipped this time: {why}, and on a 2-core machine CLIP would hold them up. It scores "
             "samples again as soon as the app is not busy.")


@dataclass
class Scores:
    """The classifier's scores, and CLIP's when CLIP is ready (else `clip_note` says why not)."""

    classifier: ClassifierScores
    clip: ClipScores | None
    clip_note: str = ""


class ClassifierJob(NamedTuple):
    """One request waiting for the ClassifierThread: x [B,1,28,28], t [B] ints (None for a clean-image
    classifier), and where its probabilities [B,10] go."""
    classifier: torch.nn.Module
    x: torch.Tensor
    t: torch.Tensor | None
    result: Future


class ClassifierThread:
    """The classifiers' one thread, shared by every tab (one torch thread: the other core is the network
    server's; one set of torch's per-thread buffers, not one per handler thread). What waits while it is busy
    is run together: every waiting request to the same classifier is one forward pass (thirty animations'
    frames: one pass, not thirty), each request getting its own rows back."""

    def __init__(self):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="classifier", daemon=True)
        self._thread.start()

    def probabilities(self, classifier, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """classifier.predict_proba(x) (or (x, t) for a noise-aware classifier, t: [B] ints) on this thread,
        batched with the other requests waiting for the same classifier: [B,10]."""
        job = ClassifierJob(classifier, x, None if t is None else torch.as_tensor(t).long().expand(len(x)), Future())
        self._jobs.put(job)
        return job.result.result()

    def close(self) -> None:
        self._jobs.put(None)

    def _work(self) -> None:
        torch.set_num_threads(1)
        while (job := self._jobs.get()) is not None:
            waiting = [job]
            with contextlib.suppress(queue.Empty):
                while (more := self._jobs.get_nowait()) is not None:
                    waiting.append(more)
                self._jobs.put(None)  # close() came while these waited: stop once they are done
            for classifier in {id(j.classifier): j.classifier for j in waiting}.values():
                self._run([j for j in waiting if j.classifier is classifier])

    @staticmethod
    def _run(jobs: list[ClassifierJob]) -> None:
        """One forward pass for these jobs (same classifier); a failing batch is retried job by job, so one bad
        request fails alone."""
        try:
            x = torch.cat([j.x for j in jobs])
            t = None if jobs[0].t is None else torch.cat([j.t for j in jobs])
            # in chunks of a few sizes, the last padded: torch keeps kernels and buffers for every batch shape it
            # meets, and batches of any size held 35 MB more after a class's runs (benchmarks/bench_class). A
            # small batch is padded only to the next power of two: padded to a whole chunk, one animation frame's
            # score cost 16 rows, and a class's frames cost the classifiers more than the network's own work
            rows = len(x)
            chunk = (MAX_CHUNKED_CLASSIFIER_ROWS if rows > MAX_CHUNKED_CLASSIFIER_ROWS  # the Lab's: a shape of its own
                     else CLASSIFIER_CHUNK_ROWS if rows > CLASSIFIER_CHUNK_ROWS
                     else 1 << (rows - 1).bit_length())  # 1, 2, 4, 8 or 16
            if rows <= MAX_CHUNKED_CLASSIFIER_ROWS and (padding := -rows % chunk):
                x = torch.cat([x, x.new_zeros(padding, *x.shape[1:])])
                t = None if t is None else torch.cat([t, t.new_zeros(padding)])
            classifier = jobs[0].classifier
            probs = (classifier.predict_proba(x, batch_size=chunk) if t is None else
                     classifier.predict_proba(x, t, batch_size=chunk))[:rows]
            for j, p in zip(jobs, probs.split([len(j.x) for j in jobs])):
                j.result.set_result(p)
        except Exception as error:
            if len(jobs) == 1:
                jobs[0].result.set_exception(error)
            else:
                for j in jobs:
                    ClassifierThread._run([j])


class OnClassifierThread:
    """A classifier whose predict_proba runs on the ClassifierThread, batched with others' requests: what
    `diffusion.scoring`'s functions are given, so their checks run in the caller's thread."""

    def __init__(self, thread: ClassifierThread, classifier):
        self.thread, self.classifier = thread, classifier
        self.schedule = getattr(classifier, "schedule", None)  # a noise-aware classifier's (its t range)

    def predict_proba(self, x: torch.Tensor, t=None) -> torch.Tensor:
        return self.thread.probabilities(self.classifier, x, t)


def yield_to_the_network() -> None:
    """Lower this handler thread's scheduling priority (Linux: per-thread niceness; raising it needs no
    privileges), so that on a busy 2-core machine the network server's thread, which every request is
    waiting on, is not preempted by frame encoding. Elsewhere it does nothing."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HANDLER_NICENESS)
    except (AttributeError, OSError):
        pass


def client_key(request: gr.Request | None) -> str:
    """Who a request comes from, for fairness between clients.

    Behind a proxy (a Space: the peer is a private address that sets X-Forwarded-For) it is the address the
    proxy saw, the last entry of X-Forwarded-For (a client can write the earlier ones itself); from this
    machine without a proxy (python app.py) every browser session counts as its own client; else the peer."""
    if request is None or request.client is None:
        return "local"
    peer = request.client.host
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    forwarded = [a.strip() for a in request.headers.get("x-forwarded-for", "").split(",") if a.strip()]
    if forwarded and (address.is_private or address.is_loopback):
        return forwarded[-1]
    if address.is_loopback:
        return f"session {request.session_hash}"
    return peer


class ClientSlots:
    """At most `limit` requests of one client running at once; one more gets a clear error at once
    (it is not queued), so no single client can fill the queue and take the class's CPU."""

    def __init__(self, limit: int, what: str):
        self.limit, self.what = limit, what
        self._running: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def slot(self, request: gr.Request | None):
        key = client_key(request)
        with self._lock:
            if self._running[key] >= self.limit:
                raise invalid(f"you already have {self._running[key]} {self.what} running; wait for one to "
                              f"finish, then try again")
            self._running[key] += 1
        try:
            yield
        finally:
            with self._lock:
                self._running[key] -= 1
                if not self._running[key]:
                    del self._running[key]

    def running(self) -> int:
        with self._lock:
            return sum(self._running.values())


class RunStore:
    """The last reverse-process runs, by id, within a memory budget (least recently used first out).

    A page's session holds only the id of its last run: sessions are many (each API call opens one),
    so what they hold must be small, and the frames live here, bounded in bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._runs: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, run) -> str:
        """Keep `run` (anything with .nbytes); returns its id."""
        run_id = uuid.uuid4().hex
        with self._lock:
            self._runs[run_id] = run
            while sum(r.nbytes for r in self._runs.values()) > self.max_bytes and len(self._runs) > 1:
                self._runs.popitem(last=False)
        return run_id

    def get(self, run_id):
        """The run, or None if it was never here or has made room for newer ones."""
        with self._lock:
            run = self._runs.get(run_id) if isinstance(run_id, str) else None
            if run is not None:
                self._runs.move_to_end(run_id)
            return run


class ResultCache:
    """The last few experiment results by their settings: a class pressing the same button shares one run
    (those who ask while it runs wait for it, and the next ones get it at once)."""

    def __init__(self, size: int):
        self.size, self._items, self._running, self._lock = size, OrderedDict(), {}, threading.Lock()

    def get_or_compute(self, key, compute):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            running = self._running.get(key)
            if running is None:
                self._running[key] = Future()
        if running is not None:
            return running.result()
        try:
            value = compute()
        except BaseException as error:
            with self._lock:
                self._running.pop(key).set_exception(error)
            raise
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            self._running.pop(key).set_result(value)
        return value

    def memoised(self, compute):
        """compute(*key), cached here by key: a function with compute's arguments."""
        return lambda *key: self.get_or_compute(key, lambda: compute(*key))


class Classroom:
    """The loaded models and the services the tabs share."""

    def __init__(self, pipe: DigitDiffusion, classifier, clip: LazyClip, classifier_config: dict, noise_classifier,
                 gpu_pipe: DigitDiffusion | None = None, cpu: CpuChoice | None = None):
        self.pipe, self.classifier, self.clip, self.classifier_config = pipe, classifier, clip, classifier_config
        self.noise_classifier = noise_classifier  # reads noisy x_t: says when a digit becomes recognisable
        self.cpu = cpu  # what this CPU was measured to do (None: not measured, e.g. the network on a GPU)
        # every sampling request shares it; the noise-aware classifier steers requests with classifier guidance
        sizes = {} if cpu is None else {"lanes": cpu.lanes, "max_tick_rows": cpu.tick_rows}
        self.server = NetworkServer(pipe.model, pipe.schedule, warm_up=True, judge=noise_classifier, **sizes)
        if gpu_pipe is not None:  # a ZeroGPU Space: each request on a GPU, the CPU's server when none comes
            self.server = GpuSampling(gpu_pipe, self.server, on_cpu_fallback=gr.Warning)
        self._clip_lock = threading.Lock()  # one CLIP evaluation at a time: it is the heaviest network here
        self.work_folder = Path(tempfile.mkdtemp(prefix="mnist-diffusion-app-"))  # GIFs and plots
        self.shipped_images, self.shipped_labels = load_shipped_digits()
        self.shipped_test_index = shipped_test_index()
        # The classifiers run on one thread of their own for every tab, batching what waits (ClassifierThread)
        self.scorer = ClassifierThread()
        self.batched_classifier = OnClassifierThread(self.scorer, classifier)
        self.batched_noise_classifier = OnClassifierThread(self.scorer, noise_classifier)
        self.runs = RunStore(MAX_RUN_STORE_BYTES)
        self.sampling_slots = ClientSlots(MAX_IN_FLIGHT_PER_CLIENT, "sampling requests")
        self.image_slots = ClientSlots(MAX_IN_FLIGHT_PER_CLIENT, "image requests")
        # what a page draws by itself when it opens (the Training and Architecture views): apart from the
        # sampling slots, so a student who clicks at once is not told they already have two requests running
        self.view_slots = ClientSlots(MAX_IN_FLIGHT_PER_CLIENT, "views being drawn")

    def close(self) -> None:
        """Stop the network server and remove the work folder (the app calls this when it stops)."""
        self.server.close()
        self.scorer.close()
        shutil.rmtree(self.work_folder, ignore_errors=True)

    # --- sampling requests ---------------------------------------------------------------------------
    def max_steps(self, sampler: str) -> int:
        return max_inference_steps(sampler, self.pipe.num_train_steps)

    def sampling_request(self, digit, samples_per_digit, guidance, sampler, steps, seed, *,
                         allow_all: bool = True, sweep_size: int = 1, max_samples: int = MAX_SAMPLES,
                         max_work: int = MAX_WORK, classifier_scale=0.0) -> SamplingRequest:
        """Check a request from a page (digit may be 'all') and bound its work; raises gr.Error naming the bad value."""
        asked = digit_set(digit, allow_all)
        with user_errors():
            return check_sampling_request(asked, samples_per_digit=samples_per_digit, guidance=guidance,
                                          sampler=sampler, steps=steps, seed=seed,
                                          num_train_steps=self.pipe.num_train_steps, max_samples=max_samples,
                                          max_work=max_work, sweep_size=sweep_size,
                                          classifier_scale=classifier_scale)

    def sample_with_guide(self, checked: SamplingRequest, guide: str) -> np.ndarray:
        """The request's samples, uint8 [N,28,28], steered by `guide` (one of GUIDES, see diffusion.requests):
        classifier-free alone, plus classifier guidance, or the best of BEST_OF candidates by the noise-aware
        classifier (a different network from the trusted classifier that scores them)."""
        if guide == "classifier":
            return self.server.run([dataclasses.replace(checked, classifier_scale=DEFAULT_CLASSIFIER_SCALE)])[0]
        if guide == "clip":
            return self.clip_guided(checked)
        if guide.startswith("best-of"):
            candidates = dataclasses.replace(checked, digits=tuple(d for d in checked.digits for _ in range(BEST_OF)))
            [images] = self.server.run([candidates])
            sureness = self.noisy_image_scores(images, [0] * len(images), candidates.digits).confidence_requested
            return best_of_n(images, sureness, BEST_OF)
        return self.server.run([checked])[0]

    def clip_guided(self, checked: SamplingRequest) -> np.ndarray:
        """Samples steered by CLIP toward its prompt for each asked digit, on x̂_0, through the Python pipeline on this
        thread (CLIP's work per step is far heavier than the U-Net's, so it does not hold up the shared server),
        one request at a time. Raises gr.Error when CLIP is not loaded or the request is too large."""
        if checked.num_samples > MAX_CLIP_GUIDED:
            raise invalid(f"CLIP guidance is slow on a CPU: at most {MAX_CLIP_GUIDED} samples, got {checked.num_samples}")
        try:
            scorer = self.clip.get()
        except ClipUnavailable as e:
            raise invalid(f"CLIP guidance needs CLIP, which is not available: {e}") from None
        with self._clip_lock:
            score = scorer.prompt_similarity([DIGIT_PROMPTS[d] for d in checked.digits])
            *_, last = self.pipe.run(checked, x0_score=score, x0_scale=CLIP_GUIDANCE_SCALE)
        return to_uint8(last.x)

    # --- scores ----------------------------------------------------------------------------------------
    def score(self, images: np.ndarray, digits, prompts: tuple[str, ...]) -> Scores:
        """The classifier's scores, plus CLIP's if it has loaded and the Space is not busy.

        CLIP never makes anyone wait: it costs about 0.05-0.1 s per image on 2 CPU cores (ViT-B-32),
        so when a class samples at once (other requests waiting for the network, or CLIP scoring
        another request) it is skipped, and the note says so."""
        classifier = self.classifier_scores(images, digits)
        try:
            scorer = self.clip.get()  # starts loading on first use; raises at once while loading
        except ClipUnavailable as e:
            return Scores(classifier, None, str(e))
        waiting = self.server.requests_in_progress()
        if waiting or not self._clip_lock.acquire(blocking=False):
            return Scores(classifier, None, CLIP_BUSY.format(
                why=f"{waiting} other request(s) are waiting for the network" if waiting
                else "it is scoring another request's samples"))
        try:
            return Scores(classifier, scorer.score(images, digits, prompts))
        finally:
            self._clip_lock.release()

    def confidence(self, images: np.ndarray, digits) -> np.ndarray:
        """The classifier's probability that each image (uint8 [N,28,28]) is its asked digit: float [N]."""
        return self.classifier_scores(images, digits).confidence_requested

    def classifier_scores(self, images: np.ndarray, digits) -> ClassifierScores:
        """`diffusion.scoring.classifier_scores`, its forward pass on the classifier's thread."""
        return classifier_scores(self.batched_classifier, images, digits)

    def noisy_image_scores(self, images: np.ndarray, t, digits) -> ClassifierScores:
        """The noise-aware classifier's scores of x_t images (uint8 [N,28,28]) at time steps t ([N] ints in
        0..T; T for pure noise x_T), its forward pass on the classifier's thread (`diffusion.scoring.noisy_image_scores`)."""
        return noisy_image_scores(self.batched_noise_classifier, images, t, digits)

    def noisy_probabilities(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The noise-aware classifier's probabilities [B,10] for x_t [B,1,28,28] (float) at time steps t [B],
        on the classifier's thread (the judge `diffusion.recognisability` asks)."""
        return self.batched_noise_classifier.predict_proba(x, t)


def load_classroom(unet: str, classifier: str, clip_model: str | None, clip_pretrained: str | None, *,
                   device: str = "cpu", bf16: bool | None = None,
                   noise_classifier: str = str(DEFAULT_NOISE_CLASSIFIER)) -> Classroom:
    """Load the checkpoints (CLIP only later, in the background, when first needed)."""
    zerogpu = on_zerogpu()  # the tabs' own network calls stay on the CPU; sampling requests go to the GPU
    device = "cpu" if zerogpu else str(resolve_device(device))
    cpu = None
    if device == "cpu":  # time the network on this CPU and choose its dtype, lanes and tick size from that
        cpu = measure_cpu(load_module(unet, build_unet, kind="diffusion-unet")[0])
        bf16 = cpu.bf16 if bf16 is None else bf16
        print(cpu.line() + ("" if bf16 == cpu.bf16 else f"; bfloat16 {'on' if bf16 else 'off'} as asked"), flush=True)
    pipe = load_pipeline(unet, bf16=bf16, device=device)
    noise_aware = load_noise_classifier(noise_classifier)
    if noise_aware.schedule.to_config() != pipe.schedule.to_config():
        raise ValueError(f"the noise-aware classifier {noise_classifier} was trained for another noise schedule "
                         f"({noise_aware.schedule.to_config()}) than the diffusion model's ({pipe.schedule.to_config()})")
    pipe.judge = noise_aware  # the Python API's edits and classifier guidance match the server's
    gpu_pipe = None
    if zerogpu:  # put on "cuda" at start, as ZeroGPU asks (the real weights move in each GPU call)
        gpu_pipe = load_pipeline(unet, device="cuda", judge=load_noise_classifier(noise_classifier).to("cuda"))
    return Classroom(pipe, load_classifier(classifier), LazyClip(clip_model, clip_pretrained), read_config(classifier),
                     noise_aware, gpu_pipe, cpu)
