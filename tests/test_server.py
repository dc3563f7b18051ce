"""The network server: runs of any sampler and step count share one network pass per tick; a request gets
the same frames and images alone or in a crowd; runs join mid-way and leave; cancellation frees the run;
a failing request leaves the others intact; short runs are not starved by long ones."""
import threading
import time

import numpy as np
import pytest
import torch

from conftest import TINY_T
from diffusion.requests import check_sampling_request
from diffusion.sampling import SAMPLERS
from diffusion.batched_network import BATCH_SIZES, padded_size, warm_up_sizes
from diffusion.requests import MAX_SAMPLES
from diffusion import server as server_module
from diffusion.server import MAX_TICK_ROWS, STARVE_TICKS, NetworkServer, RunCancelled, choose_runs, history_bytes


def request(digits, **settings):
    settings.setdefault("steps", 6)
    settings.setdefault("guidance", 1.5)
    return check_sampling_request(list(digits), num_train_steps=TINY_T, **settings)


@pytest.fixture
def server(tiny_random_pipe):
    server = NetworkServer(tiny_random_pipe.model, tiny_random_pipe.schedule, lanes=2)  # as on a 2-core Space
    yield server
    server.close()


def assert_same_images(a: np.ndarray, b: np.ndarray) -> None:
    """Equal uint8 images, allowing a rounding difference of 1 grey level (batch size changes float sums)."""
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


class Gate(torch.nn.Module):
    """The network, held at each call until the test opens the gate; counts its calls and batch sizes."""

    def __init__(self, net, open_=True, together: int = 1):
        super().__init__()
        self.net, self.calls, self.threads = net, [], set()
        self.gate = threading.Event()
        if open_:
            self.gate.set()
        self.together = threading.Barrier(together, timeout=30)  # calls wait until this many are running

    def forward(self, x, *args):
        self.gate.wait(timeout=30)
        self.together.wait()
        self.calls.append(len(x))
        self.threads.add(threading.current_thread().name)
        return self.net(x, *args)

    def __getattr__(self, name):
        if name == "config":
            return self.net.config
        return super().__getattr__(name)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_alone_or_in_a_crowd_every_sampler_gives_the_same_images_and_frames(tiny_random_pipe, server, sampler):
    pipe = tiny_random_pipe
    mine = request([0, 3, 9], sampler=sampler, steps=7, seed=11, eta=0.5)
    alone = pipe.generate(list(mine.digits), guidance=1.5, sampler=sampler, num_inference_steps=7, seed=11, eta=0.5)
    frames_alone = [s.x for s in pipe.denoising_steps(list(mine.digits), guidance=1.5, sampler=sampler,
                                                      num_inference_steps=7, seed=11, eta=0.5)]
    crowd = [request([d], sampler=s, steps=n, seed=d, guidance=w)
             for d, s, n, w in [(1, "ddpm", 30, 0.0), (2, "dpm++2m", 4, 3.0), (5, "ddim", 9, 1.0), (8, sampler, 7, 2.0)]]
    handles = [server.submit(r) for r in crowd[:2]]
    streamed = server.submit(mine, stream=True)
    handles += [server.submit(r) for r in crowd[2:]]
    steps = list(streamed.steps())
    assert_same_images(streamed.result(), alone)
    assert [s.index for s in steps] == list(range(8)) and steps[0].x0 is None
    for ours, theirs in zip(steps[1:], frames_alone):
        torch.testing.assert_close(ours.x, theirs, atol=2e-3, rtol=0)
    for r, h in zip(crowd, handles):  # and each of the others got its own result too
        assert_same_images(h.result(), pipe.generate(list(r.digits), guidance=r.guidance, sampler=r.sampler,
                                                     num_inference_steps=r.num_inference_steps, seed=r.seed))
    assert max(server.tick_sizes) > 3  # runs of different samplers, steps and t shared ticks


def test_runs_join_mid_way_and_leave_between_ticks(tiny_random_pipe):
    gate = Gate(tiny_random_pipe.model, open_=False)
    server = NetworkServer(gate, tiny_random_pipe.schedule)
    try:
        long = server.submit(request([4], sampler="ddpm", steps=40, seed=0), stream=True)
        steps = long.steps()
        gate.gate.set()
        for _ in range(10):
            next(steps)  # the long run is a quarter done …
        short = server.submit(request([7], steps=3, seed=1))  # … when a short one joins
        images = short.result(timeout=30)
        assert next(steps).index < 40  # the short one finished while the long one was still running
        assert_same_images(images, tiny_random_pipe.generate([7], guidance=1.5, num_inference_steps=3, seed=1))
        assert len([s for s in steps]) > 0 and long.result().shape == (1, 28, 28)
    finally:
        server.close()


def test_identical_requests_are_computed_once_and_late_listeners_get_every_step(tiny_random_pipe):
    gate = Gate(tiny_random_pipe.model, open_=False)
    server = NetworkServer(gate, tiny_random_pipe.schedule)
    try:
        same = request([3, 8], steps=5, seed=5)
        first = server.submit(same, stream=True)
        gate.gate.set()
        first_steps = first.steps()
        next(first_steps), next(first_steps), next(first_steps)
        late = server.submit(same, stream=True)  # joins the running one
        late_steps = list(late.steps())
        assert [s.index for s in late_steps] == list(range(6))
        rest = list(first_steps)
        assert rest[-1].x is late_steps[-1].x  # the very same tensors: one run
        # 5 steps of 2 samples, once: 5 ticks, 20 rows through the network (doubled for guidance: no guidance
        # head), in as many calls as the server has lanes
        assert list(server.tick_sizes) == [2] * 5 and sum(gate.calls) == 4 * 5
        calls = len(gate.calls)
        again = server.submit(same).result()  # finished: from the cache, no network call
        assert len(gate.calls) == calls and again.shape == (2, 28, 28)
        assert [s.index for s in server.submit(same, stream=True).steps()] == list(range(6))
    finally:
        server.close()


def test_finished_animations_are_kept_within_a_memory_budget(tiny_random_pipe, monkeypatch):
    """The newest finished animations whose steps fit in HISTORY_CACHE_BYTES are replayed without the network;
    older ones are computed again (the newest is always kept, even alone over the budget)."""
    gate = Gate(tiny_random_pipe.model)
    server = NetworkServer(gate, tiny_random_pipe.schedule)
    try:
        animations = [request([d], steps=5, seed=d) for d in range(4)]
        frames = [list(server.submit(a, stream=True).steps()) for a in animations[:1]]
        one = history_bytes(frames[0])
        assert one == 2 * 6 * 28 * 28 * 4  # x and x̂₀ of x_T and 5 steps, float32
        monkeypatch.setattr(server_module, "HISTORY_CACHE_BYTES", 2.5 * one)
        frames += [list(server.submit(a, stream=True).steps()) for a in animations[1:]]

        def replayed(animation, expected) -> bool:
            calls = len(gate.calls)
            steps = list(server.submit(animation, stream=True).steps())
            for step, before in zip(steps, expected, strict=True):
                assert step.index == before.index and torch.equal(step.x, before.x)
            return len(gate.calls) == calls

        assert replayed(animations[3], frames[3]) and replayed(animations[2], frames[2])
        assert not replayed(animations[0], frames[0])  # dropped: computed again, the same frames
        monkeypatch.setattr(server_module, "HISTORY_CACHE_BYTES", 1)
        list(server.submit(request([5], steps=5, seed=5), stream=True).steps())
        assert replayed(request([5], steps=5, seed=5), server._histories[next(reversed(server._histories))])
        assert len(server._histories) == 1
    finally:
        server.close()


def test_a_kept_history_is_two_blocks_of_memory_with_the_same_frames(tiny_random_pipe, server):
    """A streamed run that keeps its history writes each step into two tensors of its own, [steps+1,N,1,28,28];
    the frames are the ones a run without history streams."""
    same = request([2, 7], steps=5, seed=11)
    kept = list(server.submit(same, stream=True).steps())
    plain = list(server.submit(same, stream=True, keep_history=False).steps())
    assert len({step.x.untyped_storage().data_ptr() for step in kept}) == 1
    assert len({step.x0.untyped_storage().data_ptr() for step in kept[1:]}) == 1
    assert kept[0].x0 is None and kept[0].x.untyped_storage().nbytes() == 6 * 2 * 28 * 28 * 4
    for a, b in zip(kept, plain, strict=True):
        assert a.index == b.index and a.t == b.t and torch.equal(a.x, b.x)
        assert (a.x0 is None and b.x0 is None) or torch.equal(a.x0, b.x0)


def test_a_stream_without_history_keeps_no_steps_and_gives_the_same_frames(tiny_random_pipe, server):
    """A many-sample experiment follows its steps without the server keeping them (and is not shared)."""
    same = request([3, 8, 1], steps=5, seed=2)
    kept = list(server.submit(same, stream=True).steps())
    light = server.submit(same, stream=True, keep_history=False)
    steps = list(light.steps())
    assert [s.index for s in steps] == list(range(6))
    for a, b in zip(kept, steps):
        assert torch.allclose(a.x, b.x, atol=1e-5)
    run = light._run
    assert not run.keep_history and len(run.history) <= 1  # only x_T, never the steps
    assert not any(r.keep_history is False for r in server._active.values())  # it left when it finished
    assert_same_images(light.result(), server.submit(same).result())


def test_closing_a_stream_cancels_its_run_and_frees_the_server(tiny_random_pipe):
    gate = Gate(tiny_random_pipe.model)
    server = NetworkServer(gate, tiny_random_pipe.schedule)
    try:
        handle = server.submit(request([1], sampler="ddpm", steps=50, guidance=0.0), stream=True)
        steps = handle.steps()
        next(steps), next(steps)
        steps.close()  # a closed tab
        deadline = time.monotonic() + 10
        while server.requests_in_progress() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.requests_in_progress() == 0
        calls = len(gate.calls)
        time.sleep(0.3)
        assert len(gate.calls) == calls < 50  # no more work for it
        with pytest.raises(RunCancelled):
            handle.result(timeout=5)
        assert server.submit(request([2], steps=3)).result(timeout=30).shape == (1, 28, 28)
    finally:
        server.close()


def test_a_failing_request_leaves_the_others_intact(tiny_random_pipe, server):
    good = [server.submit(request([d], steps=4, seed=d)) for d in (1, 2)]
    bad = request([3], steps=4)
    object.__setattr__(bad, "digits", (12,))  # past the checks: a label the network cannot embed
    failing = server.submit(bad)
    with pytest.raises(RuntimeError):
        failing.result(timeout=30)
    for d, handle in zip((1, 2), good):
        assert_same_images(handle.result(timeout=30),
                           tiny_random_pipe.generate([d], guidance=1.5, num_inference_steps=4, seed=d))
    assert server.submit(request([4], steps=4)).result(timeout=30).shape == (1, 28, 28)


def test_short_runs_finish_first_and_long_ones_are_not_starved(tiny_random_pipe):
    gate = Gate(tiny_random_pipe.model, open_=False)
    server = NetworkServer(gate, tiny_random_pipe.schedule, max_tick_rows=8)
    try:
        long = [server.submit(request([d], sampler="ddpm", steps=TINY_T, seed=d)) for d in range(4)]
        short = [server.submit(request([d] * 2, steps=5, seed=d)) for d in range(6)]
        gate.gate.set()
        for h in short + long:
            h.result(timeout=60)
        order = [key for key in server.finish_order]
        short_done = max(order.index(key) for key in order if key[3] == 5)
        long_first = min(order.index(key) for key in order if key[3] == TINY_T)
        assert short_done < long_first  # every 5-step run finished before any 50-step run
        assert max(server.tick_sizes) <= 8
    finally:
        server.close()


def test_choose_runs_serves_the_least_remaining_work_and_never_starves_a_run():
    class R:
        def __init__(self, rows, remaining, last, arrival):
            self.rows, self.remaining_work, self.last_served, self.arrival = rows, remaining, last, arrival

    big, small, old, newer, mid = R(10, 5000, 99, 0), R(2, 20, 99, 1), R(3, 1500, 90, 2), R(2, 20, 99, 3), R(4, 80, 99, 4)
    assert choose_runs([big, small, old, newer, mid], tick=100, max_rows=8) == [small, newer, mid]
    starved = R(10, 5000, 100 - STARVE_TICKS, 5)  # not served for STARVE_TICKS ticks: joins, past the budget
    assert choose_runs([big, small, starved, newer, mid], tick=100, max_rows=8) == [small, newer, mid, starved]
    assert choose_runs([big], tick=100, max_rows=8) == [big]  # a run larger than a tick still runs


def test_the_server_warms_up_every_batch_size_a_tick_can_have(tiny_random_pipe):
    """Before serving, every padded size of a tick of up to MAX_TICK_ROWS plus one starving run of
    MAX_SAMPLES, once each, smallest first; then the requests."""
    sizes = warm_up_sizes(MAX_TICK_ROWS + MAX_SAMPLES)
    assert MAX_TICK_ROWS + MAX_SAMPLES == 180 and sizes == [*BATCH_SIZES, 256]  # every size, and twice the largest
    gate = Gate(tiny_random_pipe.model)
    server = NetworkServer(gate, tiny_random_pipe.schedule, warm_up=True, lanes=1)
    try:
        server.submit(request([4], steps=2, guidance=0.0)).result(timeout=120)
        # (rows doubled for guidance: the tiny network has no guidance head; the request has w = 0)
        assert gate.calls[:len(sizes)] == [2 * size for size in sizes] and gate.calls[len(sizes):] == [1, 1]
    finally:
        server.close()


def test_ticks_are_padded_to_few_batch_sizes_and_never_by_more_than_a_third():
    assert [padded_size(n) for n in (1, 3, 10, 11, 80, 81, 128, 129, 300)] == [1, 4, 10, 12, 80, 96, 128, 256, 384]
    for rows in range(9, 129):
        assert rows <= padded_size(rows) < 4 / 3 * rows
    assert padded_size(MAX_TICK_ROWS) == MAX_TICK_ROWS  # a full tick is not padded


def test_a_tick_is_cut_into_lanes_evaluated_side_by_side_with_the_same_images(tiny_random_pipe):
    requests = [request([d, (d + 1) % 10], seed=d, steps=5) for d in range(5)]  # one tick of 10 rows, 5 times
    images, gates = {}, {}
    for lanes in (1, 3):
        gates[lanes] = Gate(tiny_random_pipe.model, together=lanes)  # three lanes must run at the same time
        server = NetworkServer(gates[lanes], tiny_random_pipe.schedule, lanes=lanes)
        try:
            images[lanes] = server.run(requests)
            assert list(server.tick_sizes) == [10] * 5
        finally:
            server.close()
    # each lane's rows go through the network doubled (no guidance head): 10 rows as 4 + 4 + 2
    assert gates[1].calls == [20] * 5 and sorted(gates[3].calls) == sorted([8, 8, 4] * 5)
    assert len(gates[3].threads) == 3 and all(name.startswith("network-lane") for name in gates[3].threads)
    for one_lane, three_lanes in zip(images[1], images[3]):
        assert_same_images(one_lane, three_lanes)


def test_the_heap_is_trimmed_once_after_a_burst_when_the_network_has_been_idle_a_while(tiny_random_pipe, monkeypatch):
    import diffusion.server

    trims = []
    monkeypatch.setattr(diffusion.server, "release_free_memory", lambda: trims.append(time.monotonic()))
    monkeypatch.setattr(diffusion.server, "TRIM_AFTER_IDLE_S", 0.3)
    server = NetworkServer(tiny_random_pipe.model, tiny_random_pipe.schedule)
    try:
        server.run([request([1]), request([2], seed=3)])
        finished = time.monotonic()
        assert trims == []  # not as the last run ends: its frames are still being drawn and sent
        deadline = finished + 10
        while not trims and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(trims) == 1 and trims[0] - finished >= 0.25
        time.sleep(0.5)
        assert len(trims) == 1  # once per burst, not every 0.3 s
    finally:
        server.close()
