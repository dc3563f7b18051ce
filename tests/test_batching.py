"""Request batching: shared batches give each request the images it would get alone (stochastic
samplers included: each request keeps its own noise), and the worker survives a failing batch."""
import threading
import time

import numpy as np
import pytest
import torch

from diffusion.batching import BatchingSampler, SampleRequest, plan_batches, request_steps, sample_together
from diffusion.batching import seeded_request as engine_request
from diffusion.requests import check_sampling_request
from conftest import TINY_T
from diffusion.pipeline import DigitDiffusion


@pytest.fixture(scope="module")
def pipe(tiny_random_pipe) -> DigitDiffusion:
    return tiny_random_pipe


def seeded_request(digits, *, steps, **settings) -> SampleRequest:
    """The engine's request for these samples (as the app makes it), seeded by `seed`."""
    return engine_request(check_sampling_request(list(digits), steps=steps, num_train_steps=TINY_T, **settings))


def assert_same_images(a: np.ndarray, b: np.ndarray) -> None:
    """Equal uint8 images, allowing a rounding difference of 1 grey level (batch size changes float sums)."""
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


@pytest.mark.parametrize("sampler,steps", [("dpm++2m", 6), ("ddim", 5), ("ddpm", 8)])
def test_a_seeded_request_reproduces_generate(pipe, sampler, steps):
    digits = [0, 3, 3, 9]
    request = seeded_request(digits, guidance=1.5, sampler=sampler, steps=steps, seed=11)
    [images] = sample_together(pipe.model, pipe.schedule, [request])
    assert_same_images(images, pipe.generate(digits, guidance=1.5, sampler=sampler, num_inference_steps=steps, seed=11))


def test_requests_sharing_a_batch_get_what_they_get_alone(pipe):
    settings = [([1, 2], 0.0, 3), ([7], 2.5, 4), ([5, 5, 5], 1.0, 3)]  # different digits, w and seeds
    requests = [seeded_request(d, guidance=w, sampler="dpm++2m", steps=6, seed=s) for d, w, s in settings]
    together = sample_together(pipe.model, pipe.schedule, requests)
    for (digits, w, seed), images in zip(settings, together):
        assert_same_images(images, pipe.generate(digits, guidance=w, sampler="dpm++2m", num_inference_steps=6, seed=seed))


def test_different_guidance_gives_different_images(pipe):
    """Guards the test above: with the same seed, w really changes the samples of this model."""
    a, b = (sample_together(pipe.model, pipe.schedule,
                            [seeded_request([4], guidance=w, sampler="dpm++2m", steps=6, seed=0)])[0]
            for w in (0.0, 4.0))
    assert np.abs(a.astype(int) - b.astype(int)).max() > 1


@pytest.mark.parametrize("sampler,eta", [("ddpm", 0.0), ("dpm++2m-sde", 0.0), ("ddim", 1.0)])
def test_stochastic_requests_sharing_a_batch_get_what_they_get_alone(pipe, sampler, eta):
    settings = [([1, 2], 1.0, 3), ([7], 2.5, 4), ([5, 5, 5], 0.0, 8)]
    requests = [seeded_request(d, guidance=w, sampler=sampler, steps=5, seed=s, eta=eta) for d, w, s in settings]
    together = sample_together(pipe.model, pipe.schedule, requests)
    for (digits, w, seed), images in zip(settings, together):
        assert_same_images(images, pipe.generate(digits, guidance=w, sampler=sampler, num_inference_steps=5, seed=seed, eta=eta))


def test_stochastic_samplers_really_draw_noise_after_x_T(pipe):
    """Guards the test above: two requests with the same x_T but different step noise differ."""
    a, b = (seeded_request([4], guidance=1.0, sampler="dpm++2m-sde", steps=5, seed=0) for _ in range(2))
    b.generator.manual_seed(99)  # same x_T (already drawn), other per-step noise
    images_a, images_b = sample_together(pipe.model, pipe.schedule, [a, b])
    assert np.abs(images_a.astype(int) - images_b.astype(int)).max() > 1


def test_a_guidance_interval_is_kept_in_shared_batches(pipe):
    interval = (0.3, 1.0)
    requests = [seeded_request([d], guidance=2.0, sampler="dpm++2m", steps=6, seed=d, guidance_interval=interval)
                for d in (2, 6)]
    for d, images in zip((2, 6), sample_together(pipe.model, pipe.schedule, requests)):
        expected = pipe.generate([d], guidance=2.0, sampler="dpm++2m", num_inference_steps=6, seed=d, guidance_interval=interval)
        assert_same_images(images, expected)
        everywhere = pipe.generate([d], guidance=2.0, sampler="dpm++2m", num_inference_steps=6, seed=d)
        assert np.abs(images.astype(int) - everywhere.astype(int)).max() > 1  # the interval changed something
    mixed = [requests[0], seeded_request([1], guidance=2.0, sampler="dpm++2m", steps=6, seed=0)]
    assert plan_batches(mixed, max_samples=100) == [[0], [1]]


def test_plan_batches_groups_by_sampler_and_steps_and_caps_the_size():
    def request(n, sampler="dpm++2m", steps=10):
        return SampleRequest(torch.zeros(n, dtype=torch.long), torch.zeros(n), torch.zeros(n, 1, 28, 28),
                             sampler, steps)

    requests = [request(4), request(4, steps=20), request(4), request(8, "ddpm"), request(3), request(10)]
    assert plan_batches(requests, max_samples=12) == [[0, 2, 4], [1], [3], [5]]
    assert plan_batches(requests, max_samples=100) == [[0, 2, 4, 5], [1], [3]]
    assert plan_batches([request(50), request(1)], max_samples=20) == [[0], [1]]


def test_the_worker_batches_waiting_requests_and_serves_many_threads(pipe):
    sampler = BatchingSampler(pipe.model, pipe.schedule, max_batch_samples=100)
    requests = [seeded_request([d], guidance=1.0, sampler="dpm++2m", steps=4, seed=d) for d in range(6)]
    results = sampler.run(requests)  # queued together: one shared batch
    assert list(sampler.batch_sizes) == [6]
    for d, images in enumerate(results):
        assert_same_images(images, pipe.generate([d], guidance=1.0, sampler="dpm++2m", num_inference_steps=4, seed=d))

    outputs = {}

    def ask(seed):
        outputs[seed] = sampler.run([seeded_request([seed % 10], guidance=0.5, sampler="dpm++2m",
                                                    steps=4, seed=seed)])[0]

    threads = [threading.Thread(target=ask, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outputs) == list(range(8))
    for seed, images in outputs.items():
        assert_same_images(images, pipe.generate([seed % 10], guidance=0.5, sampler="dpm++2m", num_inference_steps=4, seed=seed))
    assert sum(list(sampler.batch_sizes)[1:]) == 8


def test_identical_requests_are_computed_once_and_kept(pipe):
    sampler = BatchingSampler(pipe.model, pipe.schedule, cache_size=2)
    same = [seeded_request([3, 8], guidance=1.0, sampler="dpm++2m", steps=4, seed=5) for _ in range(4)]
    results = sampler.run(same)  # four identical requests at once: one computation
    assert list(sampler.batch_sizes) == [1]
    for images in results[1:]:
        np.testing.assert_array_equal(images, results[0])
    results[0][:] = 0  # every caller gets its own copy
    [again] = sampler.run([seeded_request([3, 8], guidance=1.0, sampler="dpm++2m", steps=4, seed=5)])
    assert list(sampler.batch_sizes) == [1]  # served from the kept results
    assert_same_images(again, pipe.generate([3, 8], guidance=1.0, sampler="dpm++2m", num_inference_steps=4, seed=5))
    for seed in (6, 7):  # two more results push the oldest out of a cache of 2
        sampler.run([seeded_request([3, 8], guidance=1.0, sampler="dpm++2m", steps=4, seed=seed)])
    sampler.run([seeded_request([3, 8], guidance=1.0, sampler="dpm++2m", steps=4, seed=5)])
    assert list(sampler.batch_sizes) == [1, 1, 1, 1]
    different = [seeded_request([3, 8], guidance=w, sampler="dpm++2m", steps=4, seed=5) for w in (1.0, 2.0)]
    sampler.run(different)
    assert list(sampler.batch_sizes)[-1] == 1  # w = 1 is kept; only w = 2 is new


def test_a_failing_batch_reports_its_error_and_the_worker_keeps_serving(pipe):
    sampler = BatchingSampler(pipe.model, pipe.schedule)
    bad = seeded_request([1], guidance=1.0, sampler="dpm++2m", steps=3, seed=0)
    bad.labels = torch.tensor([12])  # not a digit: the network's one-hot encoding fails
    with pytest.raises(RuntimeError):
        sampler.run([bad])
    with pytest.raises(RuntimeError):  # a failure is not kept: the same request is tried again
        sampler.run([bad])
    assert list(sampler.batch_sizes) == [1, 1]
    good = seeded_request([2], guidance=1.0, sampler="dpm++2m", steps=3, seed=0)
    [images] = sampler.run([good])
    assert_same_images(images, pipe.generate([2], guidance=1.0, sampler="dpm++2m", num_inference_steps=3, seed=0))


def test_request_steps_can_be_resumed_from_any_thread(pipe):
    """A web server resumes a streaming generator from changing worker threads; every step still works
    (torch's inference mode is per thread) and the steps equal the engine's own loop."""
    request = seeded_request([6], guidance=0.0, sampler="ddpm", steps=5, seed=2)  # w = 0: x goes straight into a conv
    steps = request_steps(pipe.model, pipe.schedule, request)
    collected = []

    def advance():
        collected.append(next(steps))

    for _ in range(5):
        worker = threading.Thread(target=advance)
        worker.start()
        worker.join(timeout=60)
    assert [s.index for s in collected] == [1, 2, 3, 4, 5]
    expected = list(pipe.denoising_steps([6], guidance=0.0, sampler="ddpm", num_inference_steps=5, seed=2))
    for got, want in zip(collected, expected):
        torch.testing.assert_close(got.x, want.x)
        torch.testing.assert_close(got.x0, want.x0)
    assert next(steps, None) is None


def test_request_steps_reports_errors_and_stops_when_closed(pipe):
    bad = seeded_request([1], guidance=1.0, sampler="dpm++2m", steps=3, seed=0)
    bad.labels = torch.tensor([12])
    with pytest.raises(RuntimeError):
        list(request_steps(pipe.model, pipe.schedule, bad))

    calls = []

    class Counted(torch.nn.Module):  # the network, counting its evaluations
        def __init__(self):
            super().__init__()
            self.net = pipe.model

        def forward(self, *args):
            calls.append(1)
            return self.net(*args)

    long_run = seeded_request([1], guidance=0.0, sampler="ddpm", steps=40, seed=0)
    steps = request_steps(Counted(), pipe.schedule, long_run)
    assert next(steps).index == 1
    steps.close()  # the loop's thread sees the stop flag after its current step
    time.sleep(0.5)  # time for many more steps, had it not stopped
    assert len(calls) <= 3, f"the loop ran on after close(): {len(calls)} of 40 network evaluations"


def test_requests_in_progress_counts_requests_until_they_are_done(pipe):
    release = threading.Event()

    class Held(torch.nn.Module):  # the network, held back until the test lets it go
        def __init__(self):
            super().__init__()
            self.net = pipe.model

        def forward(self, *args):
            release.wait(timeout=30)
            return self.net(*args)

    sampler = BatchingSampler(Held(), pipe.schedule)
    assert sampler.requests_in_progress() == 0
    requests = [seeded_request([d], guidance=1.0, sampler="dpm++2m", steps=2, seed=d) for d in (1, 2)]
    threads = [threading.Thread(target=sampler.run, args=([r],)) for r in requests]
    for t in threads:
        t.start()
    deadline = threading.Event()
    while sampler.requests_in_progress() < 2 and not deadline.wait(0.01):
        pass
    assert sampler.requests_in_progress() == 2
    release.set()
    for t in threads:
        t.join(timeout=30)
    assert sampler.requests_in_progress() == 0
