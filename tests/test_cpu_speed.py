"""The app measures this CPU at start (diffusion/cpu_speed.py) and chooses from the measurement: the network's
dtype, lanes and tick size, and how many runs the Lab's slow measurement makes by default."""

import pytest
import torch

from diffusion.cpu_speed import CpuChoice, bf16_kernels, measure_cpu, usable_cores
from ui.lab import default_recognisability_seeds, seeds_note

def choice(core_gflops: float, bf16_gflops: float | None = None, cores: int = 2) -> CpuChoice:
    return CpuChoice("Test CPU", ("avx2",), cores, 0.18, core_gflops, bf16_gflops)


def test_the_measurement_times_both_dtypes_where_bf16_has_kernels_and_keeps_the_faster():
    from diffusion import load_pipeline
    model = load_pipeline(bf16=False).model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    measured = measure_cpu(model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the model is left as it was
    assert next(model.parameters()).dtype == torch.float32
    assert measured.fp32_gflops > 1 and measured.cores == usable_cores() == measured.lanes
    assert 0.18 < measured.gflop < 0.19  # the shipped network: 0.183 GFLOP per sample and evaluation
    assert (measured.bf16_gflops is None) == (not bf16_kernels())
    assert measured.bf16 == (measured.bf16_gflops is not None and measured.bf16_gflops > measured.fp32_gflops)
    line = measured.line()
    assert line.startswith("CPU: ") and ("bfloat16" if measured.bf16 else "float32") in line.split("network in ")[1]


def test_bfloat16_is_kept_only_where_it_is_faster():
    assert choice(60, 100).bf16 and not choice(60, 50).bf16 and not choice(60, None).bf16
    assert choice(60, 100).gflops == 200 and choice(60, 50).gflops == 120


def test_lanes_and_ticks_follow_the_cores():
    assert (choice(60, cores=2).lanes, choice(60, cores=2).tick_rows) == (2, 80)
    assert (choice(60, cores=8).lanes, choice(60, cores=8).tick_rows) == (8, 320)


def test_work_and_seconds_agree():
    fast = choice(90)  # 180 GFLOP/s in all
    assert fast.seconds(1000) == pytest.approx(1000 * 0.18 / 180)
    assert fast.runs_within(40, 5000) == int(40 * 180 / (5000 * 0.18))


def test_the_lab_makes_fewer_runs_on_a_slower_cpu_and_says_so():
    avx2, zen4, amx = choice(34.5), choice(102), choice(450)
    seeds = [default_recognisability_seeds(c) for c in (avx2, zen4, amx)]
    assert seeds == sorted(seeds) and seeds[0] >= 1 and seeds[-1] == 20
    assert default_recognisability_seeds(choice(0.01)) == 1  # never none
    assert default_recognisability_seeds(None) == 20         # a GPU: the course's setting
    assert f"{seeds[0]} run(s) per digit" in seeds_note(avx2, seeds[0]) and "the course's 20" in seeds_note(avx2, seeds[0])
    assert "the course's 20" not in seeds_note(amx, 20)


def test_the_classroom_sizes_its_server_from_the_measurement(classroom):
    assert classroom.cpu is not None
    assert classroom.server.network.lanes == classroom.cpu.lanes
    assert classroom.server.max_tick_rows == classroom.cpu.tick_rows
    dtype = next(classroom.pipe.model.parameters()).dtype
    assert dtype == (torch.bfloat16 if classroom.cpu.bf16 else torch.float32)


def test_the_app_logs_its_choice_in_one_line(tmp_path):
    from devtools.servers import free_port, start_app, stop
    log_path = tmp_path / "app.log"
    with log_path.open("w") as log:
        process, _ = start_app(free_port(), log=log)
        stop(process)
    lines = [line for line in log_path.read_text().splitlines() if line.startswith("CPU: ")]
    assert len(lines) == 1 and "network in" in lines[0] and "lane(s)" in lines[0]


def test_no_bf16_on_the_command_line_wins_over_the_measurement(tmp_path):
    from devtools.servers import free_port, start_app, stop
    log_path = tmp_path / "app.log"
    with log_path.open("w") as log:
        process, _ = start_app(free_port(), log=log, args=("--no-bf16",))
        stop(process)
    [line] = [line for line in log_path.read_text().splitlines() if line.startswith("CPU: ")]
    if bf16_kernels() and "network in bfloat16" in line:
        assert line.endswith("bfloat16 off as asked")


def test_the_flop_count_is_torchs_plus_attention():
    """torch's FlopCounterMode counts the convolutions and linear layers; its CPU attention kernel goes uncounted,
    so the count here adds 4·L²·C for each of the two 7×7 attention blocks (L = 49 positions, C = 96 channels)."""
    from torch.utils.flop_counter import FlopCounterMode

    from diffusion import load_pipeline
    from diffusion.cpu_speed import evaluation_gflop
    model = load_pipeline(bf16=False).model
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, 28, 28), torch.full((1,), 250), torch.zeros(1, dtype=torch.long))
    attention = 2 * 4 * 49**2 * model.config.channels[-1]
    assert evaluation_gflop(model) * 1e9 == pytest.approx(counter.get_total_flops() + attention, rel=1e-9)
