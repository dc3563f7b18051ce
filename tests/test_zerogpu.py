"""ZeroGPU (diffusion/zerogpu.py): each request in one GPU call, and the CPU's network server when ZeroGPU refuses.

Off a ZeroGPU Space the real `spaces` decorator does nothing, so the "GPU" calls here run on the CPU; a
stand-in raises ZeroGPU's refusals (gradio errors titled as `spaces` titles them) to prove the fallback."""
import time

import gradio as gr
import numpy as np
import pytest
import spaces

from diffusion import zerogpu
from diffusion.server import NetworkServer
from diffusion.zerogpu import GpuSampling, gpu_seconds, refused


@pytest.fixture
def sampling(tiny_random_pipe):
    notes = []
    gpu = GpuSampling(tiny_random_pipe, NetworkServer(tiny_random_pipe.model, tiny_random_pipe.schedule),
                      on_cpu_fallback=notes.append)
    yield gpu, notes
    gpu.close()


def test_the_real_spaces_decorator_does_nothing_off_a_zerogpu_space(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert not zerogpu.on_zerogpu()
    assert spaces.GPU(duration=lambda n: 5)(lambda n: n + 1)(1) == 2
    assert zerogpu.spaces is spaces  # the app's calls go through the real decorator


def test_a_request_on_the_gpu_gives_the_cpu_servers_images(sampling, tiny_random_pipe):
    gpu, notes = sampling
    requests = [tiny_random_pipe.check_request([3, 7], num_inference_steps=4, seed=s) for s in (1, 2)]
    on_gpu = gpu.run(requests)
    on_cpu = gpu.cpu_server.run(requests)
    for a, b in zip(on_gpu, on_cpu):
        assert a.shape == (2, 28, 28) and np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert notes == []


def test_a_streamed_request_starts_with_x_T_and_matches_the_server(sampling, tiny_random_pipe):
    gpu, _ = sampling
    request = tiny_random_pipe.check_request([5], num_inference_steps=6, seed=3)
    steps = list(gpu.submit(request, stream=True).steps())
    served = list(gpu.cpu_server.submit(request, stream=True).steps())
    assert [s.index for s in steps] == [s.index for s in served] == list(range(7))
    assert steps[0].x0 is None and steps[0].t == served[0].t
    for a, b in zip(steps, served):
        assert float((a.x - b.x).abs().max()) < 1e-3
    batches = list(gpu.submit(request, stream=True).step_batches(60.0))
    assert [s.index for s in batches[0]] == [0] and sum(len(b) for b in batches) == 7  # the rest come at the end


def _refusing(title):
    def refuse(*args, **kwargs):
        raise gr.Error("You have exceeded your GPU quota (60s requested vs. 12s left).", title=title)
        yield  # a generator, like the decorated function
    return refuse


@pytest.mark.parametrize("title", zerogpu.REFUSALS)
def test_a_refused_call_runs_on_the_cpu_and_says_so(sampling, tiny_random_pipe, monkeypatch, title):
    gpu, notes = sampling
    request = tiny_random_pipe.check_request([1, 2, 3], num_inference_steps=4, seed=9)
    expected = gpu.cpu_server.run([request])[0]
    monkeypatch.setattr(zerogpu, "run_on_gpu", _refusing(title))
    [images] = gpu.run([request])
    assert np.array_equal(images, expected)  # nothing lost: the same request, answered on the CPU
    steps = list(gpu.submit(request, stream=True).steps())
    assert steps[0].index == 0 and steps[-1].index == 4
    assert len(notes) == 2 and all(title in note and "CPU" in note for note in notes)


def test_any_other_error_is_not_hidden(sampling, tiny_random_pipe, monkeypatch):
    gpu, notes = sampling

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
        yield
    monkeypatch.setattr(zerogpu, "run_on_gpu", broken)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        gpu.run([tiny_random_pipe.check_request([1], num_inference_steps=2)])
    assert notes == []


def test_refusals_are_known_by_their_title():
    assert refused(gr.Error("60s requested vs. 12s left", title="ZeroGPU quota exceeded")) == "ZeroGPU quota exceeded"
    assert refused(gr.Error("no", title="ZeroGPU illegal duration")) == "ZeroGPU illegal duration"
    assert refused(gr.Error("the digit must be 0-9")) is None
    assert refused(ValueError("ZeroGPU quota exceeded")) == "ZeroGPU quota exceeded"


def test_the_duration_asked_grows_with_the_work_and_is_bounded(tiny_random_pipe):
    pipe = tiny_random_pipe
    few = gpu_seconds([pipe.check_request([3], num_inference_steps=4)], pipe.schedule)
    many = gpu_seconds([pipe.check_request([3], sampler="ddpm", num_inference_steps=50)] * 40, pipe.schedule)
    assert zerogpu.GPU_CALL_SECONDS <= few < many <= zerogpu.MAX_GPU_SECONDS
    assert gpu_seconds([pipe.check_request([3], sampler="ddpm", num_inference_steps=50)] * 10_000,
                       pipe.schedule) == zerogpu.MAX_GPU_SECONDS


def test_the_classroom_sends_sampling_to_the_gpu_and_keeps_its_own_calls_on_the_cpu(classroom_parts):
    """A Classroom given a GPU pipeline (here a second CPU copy) samples through GpuSampling with the same images."""
    import ui
    pipe, classifier, noise = classroom_parts
    plain = ui.Classroom(pipe, classifier, ui.classroom.LazyClip(None, "/nonexistent"), {}, noise)
    on_gpu = ui.Classroom(pipe, classifier, ui.classroom.LazyClip(None, "/nonexistent"), {}, noise, gpu_pipe=pipe)
    try:
        assert isinstance(on_gpu.server, GpuSampling) and on_gpu.pipe is pipe
        request = pipe.check_request(list(range(10)), seed=4)
        assert np.abs(on_gpu.sample_with_guide(request, "classifier-free").astype(int)
                      - plain.sample_with_guide(request, "classifier-free").astype(int)).max() <= 1
    finally:
        plain.close()
        on_gpu.close()


@pytest.fixture(scope="module")
def classroom_parts():
    from diffusion import load_pipeline
    from diffusion.classifier import load_classifier, load_noise_classifier
    return load_pipeline(), load_classifier(), load_noise_classifier()


def test_devices_are_checked_with_a_clear_error_and_auto_falls_back_to_the_cpu(monkeypatch):
    import torch
    from diffusion import devices
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: False)
    assert devices.resolve_device("auto") == torch.device("cpu")
    for name, words in (("cuda", "no CUDA GPU"), ("cuda:1", "no CUDA GPU"), ("mps", "no Apple GPU"),
                        ("tpu", "use cpu, cuda"), ("gpu please", "use cpu, cuda")):
        with pytest.raises(ValueError, match=words):
            devices.resolve_device(name)
    monkeypatch.setattr(devices, "mps_available", lambda: True)
    assert devices.resolve_device("auto") == torch.device("mps")
    assert devices.resolve_device("MPS") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.resolve_device("auto") == torch.device("cuda")


def test_bf16_is_chosen_only_where_it_can_be_fast():
    from diffusion.model import bf16_is_fast
    assert bf16_is_fast("cuda") is True
    assert bf16_is_fast("mps") is False


def test_the_app_refuses_a_missing_device_with_one_line(tmp_path):
    import subprocess
    import sys
    from devtools.servers import ROOT
    out = subprocess.run([sys.executable, "app.py", "--device", "mps", "--port", "1"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    if out.returncode == 0:
        pytest.skip("this machine has an Apple GPU")
    assert out.stderr.strip().splitlines()[-1].startswith("app.py: --device mps: PyTorch sees no Apple GPU")
    assert "Traceback" not in out.stderr


def test_a_request_is_counted_once_where_it_runs(sampling, tiny_random_pipe, monkeypatch):
    """While a request runs on the GPU it counts as one in progress; fallen back, the CPU server counts it."""
    gpu, _ = sampling
    request = tiny_random_pipe.check_request([2], num_inference_steps=4, seed=1)
    steps = gpu.submit(request, stream=True).steps()
    next(steps)
    assert gpu.requests_in_progress() == 1 and gpu.streams() == 1
    steps.close()
    monkeypatch.setattr(zerogpu, "run_on_gpu", _refusing("ZeroGPU quota exceeded"))
    steps = gpu.submit(request, stream=True).steps()
    next(steps)
    assert gpu.requests_in_progress() == 1 and gpu.streams() == 1
    steps.close()
    assert gpu.streams() == 0
    for _ in range(200):  # the CPU server drops a run nobody follows at its next tick
        if gpu.requests_in_progress() == 0:
            break
        time.sleep(0.01)
    assert gpu.requests_in_progress() == 0
