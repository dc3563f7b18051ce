"""A whole class on one 2-core Space: the network server's bars, measured against `python app.py`.

    nice -n 10 python -m benchmarks.bench_class                 # starts the app itself; about 4 minutes
    nice -n 10 python -m benchmarks.bench_class --app-args=--no-bf16     # as on a CPU without bf16

Each student is a light HTTP client of its own (devtools/class_client.py): it calls the app's public API
(POST /gradio_api/call/<name>, then reads the event stream) and fetches every file each update names, as a
browser does. All are released at the same moment, each with its own digit and seed. Bars:
    every file fetched whole, and no exception in the app's log      0 failed fetches, 0 exceptions
    30 × /reverse_process at the defaults        all finish; first frame p95 ≤ 1.5 s; finished p95 ≤ 3 s;
                                                 every student shown at least 8 of the 12 frames
    30 × /reverse_process, ddpm, 500 steps       finished p95 ≤ 20 s where bf16 is fast, else ≤ 2× the FLOP floor
    30 × /generate of a 10-digit grid            p95 ≤ 3 s where bf16 is fast, else ≤ 2× the FLOP floor
    mixed: 10 ddpm-500 + 20 default animations + 30 grids     the default animations finish with p95 ≤ 5 s
    one user alone                               grid ≤ 0.2 s, first frame ≤ 0.1 s
    memory                                       the app's RSS after all this within 100 MB of its start
    fairness: 4 clients looping maximum-size requests, 10 users' /generate p95 ≤ 3× its unloaded value
Beside each scenario it prints the same sampling work in this process (the network server alone, the app's
dtype: the in-process time) and the served p95's ratio to it, and the FLOP floor: the scenario's network
FLOPs at this CPU's float32 matrix-multiply rate, measured in the same run. The CPU's model and flags go
beside the figures. Writes benchmarks/results/class.json (class_no_bf16.json with --no-bf16) and exits 1 if a
bar is missed.
"""
from __future__ import annotations

import argparse
import itertools
import re
import sys
import threading
import time
from pathlib import Path


from devtools.bench import (PARTIAL as PARTIAL_LOGS, Report, cpu_flags, cpu_line, matmul_gflops, network_gflop,
                            percentile, seconds)
from devtools.class_client import Student, exceptions_in_log
from devtools.servers import free_port, start_app, stop
from diffusion.model import bf16_is_fast
from diffusion.requests import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS
from diffusion.server import TRIM_AFTER_IDLE_S

SEEDS = itertools.count(20_000)
SETTLE_S = TRIM_AFTER_IDLE_S + 1.0  # before each memory measurement: the network server trims its heap once
                                    # it has been idle TRIM_AFTER_IDLE_S
SCENARIOS = ("alone", "animations", "grids", "ddpm", "mixed", "fairness")  # every request a seed never used before: no cached results


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


def together(jobs: list) -> list[dict]:
    """Run (student, api_name, values) jobs released at the same moment; their results in order."""
    barrier = threading.Barrier(len(jobs))
    results: list = [None] * len(jobs)

    def one(i, student, api_name, values):
        barrier.wait()
        try:
            results[i] = student.call(api_name, values)
        except Exception as e:  # counted as a failure
            results[i] = {"first": None, "done": None, "ok": False, "error": f"{type(e).__name__}: {e}"}

    threads = [threading.Thread(target=one, args=(i, *job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def p95(results: list[dict], key: str) -> float | None:
    values = [r[key] for r in results if r["ok"] and r[key] is not None]
    return percentile(values, 95) if len(values) == len(results) else None


def describe(results: list[dict], name: str) -> str:
    ok = [r for r in results if r["ok"]]
    text = f"{name}: {len(ok)}/{len(results)} finished"
    for key in ("first", "done"):
        values = [r[key] for r in ok if r[key] is not None]
        if values:
            text += f"; {key} p50 {percentile(values, 50):.2f} s, p95 {percentile(values, 95):.2f} s"
    text += f"; {sum(r.get('files', 0) for r in results)} files fetched"
    failed = [f for r in results for f in r.get("failed_fetches", [])]
    if failed:
        text += f", {len(failed)} FAILED ({failed[:2]})"
    errors = sorted({r["error"] for r in results if not r["ok"]})
    return text + (f"; errors: {errors[:3]}" if errors else "")


def animation(digit: int, **values) -> tuple:
    return "reverse_process", {"digit": str(digit), "seed": next(SEEDS), **values}


def grid() -> tuple:
    """A 10-digit grid at the app's defaults, scored by the classifier alone (no quality prompts for CLIP)."""
    return "generate", {"digit": "all", "samples_per_digit": 1, "seed": next(SEEDS), "quality_prompts_text": ""}


class Yardsticks:
    """What a scenario's served time is set against, in this process: the same sampling work through the
    network server alone (no HTTP, no scores, no frames; the app's dtype), and the FLOP floor (the work's
    network FLOPs at this CPU's float32 matrix-multiply rate, measured once per run)."""

    def __init__(self, bf16: bool | None):
        from diffusion import load_pipeline
        from diffusion.server import NetworkServer

        self.pipe = load_pipeline(bf16=bf16)
        self.server = NetworkServer(self.pipe.model, self.pipe.schedule)
        self.gflop_per_evaluation = network_gflop(self.pipe.model)
        self.fp32_gflops = matmul_gflops()

    def in_process(self, users: int, digits: list[int] | None, **settings) -> float:
        """Seconds for the network server to run `users` requests at once: each of `digits` (None: one digit
        each, as an animation asks), with these sampler settings."""
        def run_all(**overrides) -> float:
            requests = [self.pipe.check_request(digits or [u % 10], seed=next(SEEDS), **{**settings, **overrides})
                        for u in range(users)]
            return seconds(lambda: self.server.run(requests))

        # two steps first, so the ticks' batch sizes have their kernels ready (as in the warmed-up app): the same
        # batches as the measured run, without doing its work twice (a whole ddpm-500 class took 21 s)
        run_all(num_inference_steps=min(2, settings["num_inference_steps"]))
        return run_all()

    def flop_floor(self, samples: int, steps: int) -> float:
        """Seconds this CPU needs for samples × steps network evaluations at its float32 matmul rate."""
        return samples * steps * self.gflop_per_evaluation / self.fp32_gflops

    def close(self) -> None:
        self.server.close()


def set_against(report: Report, key: str, results: list[dict], yardsticks: Yardsticks, users: int,
                samples_each: int, steps: int, digits: list[int] | None, **settings) -> tuple[float | None, float]:
    """Print the served p95 beside the in-process time of the same work, their ratio, and the FLOP floor;
    returns (served p95, FLOP floor)."""
    served = p95(results, "done")
    inside = yardsticks.in_process(users, digits, num_inference_steps=steps, **settings)
    floor = yardsticks.flop_floor(users * samples_each, steps)
    ratio = served / inside if served else None
    report.figure(f"{key}_in_process_s", inside)
    report.figure(f"{key}_flop_floor_s", floor)
    report.figure(f"{key}_served_over_in_process", ratio,
                  f"    the same work in this process (network server alone, no HTTP, no scores, no frames): "
                  f"{inside:.2f} s; served p95 / in-process = {f'{ratio:.2f}x' if ratio else '—'}; FLOP floor "
                  f"{floor:.2f} s ({users * samples_each * steps} evaluations x {yardsticks.gflop_per_evaluation:.3f} "
                  f"GFLOP at {yardsticks.fp32_gflops:.0f} GFLOP/s fp32)")
    return served, floor


def frames_shown(results: list[dict]) -> list[int]:
    """The denoising steps each animation showed while it ran: its updates, less x_T (step 0)."""
    return [r["updates"] - 1 for r in results]


def fairness(url: str, report: Report, users: int, abusers: int, seconds: float) -> list[dict]:
    """10 users' /generate alone, then again while `abusers` clients loop maximum-size requests; returns the
    users' results."""
    normal = [Student(url, f"198.51.100.{i + 1}") for i in range(users)]
    unloaded = together([(s, *grid()) for s in normal])
    report.figure("fairness_unloaded", unloaded, describe(unloaded, f"{users} users' grids, nobody else"))
    stop_abuse = threading.Event()
    heavy = {"digit": "3", "samples_per_digit": 100, "sampler": "ddim", "steps": 50}

    def abuse(student):
        while not stop_abuse.is_set():
            student.call("generate", **heavy, seed=next(SEEDS))

    abusive = [threading.Thread(target=abuse, args=(Student(url, f"203.0.113.{i + 1}"),)) for i in range(abusers)
               for _ in range(2)]  # each abusive client keeps two requests going (its limit)
    for t in abusive:
        t.start()
    time.sleep(seconds)  # the abusive load is up
    loaded = together([(s, *grid()) for s in normal])
    stop_abuse.set()
    for t in abusive:
        t.join()
    report.figure("fairness_loaded", loaded, describe(loaded, f"{users} users' grids while {abusers} clients loop "
                                                                f"100-sample × 50-step requests"))
    base, under_load = p95(unloaded, "done"), p95(loaded, "done")
    report.bar("fairness_ratio", under_load / base if base and under_load else None, 3.0, "×",
               f"{users} users' /generate p95 under {abusers} abusive clients, over its unloaded value")
    return unloaded + loaded


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=30)
    p.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS,
                   help="which to run (default: all; the memory bar is checked only after all of them)")
    p.add_argument("--app-args", nargs="*", default=[], help="extra arguments for app.py, after = (e.g. --app-args=--no-bf16)")
    args = p.parse_args()
    bf16 = False if "--no-bf16" in args.app_args else True if "--bf16" in args.app_args else None
    report = Report("class_no_bf16" if bf16 is False else "class")  # the two runs' results side by side
    bf16_used = bf16 if bf16 is not None else bf16_is_fast()
    report.figure("cpu", {"flags": cpu_flags(), "bf16_used": bf16_used, "app_args": args.app_args},
                  f"{cpu_line()}; the network in {'bfloat16' if bf16_used else 'float32'}")
    yardsticks = Yardsticks(bf16)
    report.figure("fp32_matmul_gflops", yardsticks.fp32_gflops,
                  f"float32 matrix multiply: {yardsticks.fp32_gflops:.0f} GFLOP/s; one network evaluation "
                  f"{yardsticks.gflop_per_evaluation:.3f} GFLOP")
    port = free_port()
    log_path = PARTIAL_LOGS / f"bench_class-app-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("w")
    process, _ = start_app(port, args=tuple(args.app_args), log=log)
    url = f"http://127.0.0.1:{port}/"
    students = [Student(url, f"192.0.2.{i + 1}") for i in range(args.users)]
    everything: list[dict] = []
    try:
        everything.append(students[0].call(*grid()))  # warm-up, not measured: it also starts loading CLIP,
        everything.append(students[0].call(*animation(3)))  # which the class arrives after (as in bench_app)
        wait_for_clip(students[0])
        time.sleep(SETTLE_S)  # as before the last measurement: the warm-up's freed memory goes back first
        rss_start = report.figure("rss_start_mb", rss_mb(process.pid))

        run = set(args.scenarios)
        if "alone" in run:
            everything += one_user_alone(students[0], report)
        if "animations" in run:
            results = together([(s, *animation(i % 10)) for i, s in enumerate(students)])
            everything += results
            report.figure("animations_defaults", results, describe(results, f"{args.users} animations at the defaults"))
            set_against(report, "animations", results, yardsticks, args.users, 1, DEFAULT_STEPS, None,
                        guidance=DEFAULT_GUIDANCE, sampler=DEFAULT_SAMPLER)
            shown = frames_shown(results)
            report.figure("animations_steps_shown", shown, f"    steps shown while running: min {min(shown)}, "
                                                           f"median {percentile(shown, 50):.0f} of {DEFAULT_STEPS}")
            report.bar("animations_first_p95", p95(results, "first"), 1.5, "s",
                       f"{args.users} simultaneous animations: first frame p95")
            report.bar("animations_done_p95", p95(results, "done"), 3.0, "s",
                       f"{args.users} simultaneous animations: finished p95")
            report.bar("animations_steps_shown_min", min(shown), 8, "steps", f"{args.users} simultaneous "
                       f"animations: the fewest of the {DEFAULT_STEPS} steps a student saw", at_least=True)
        if "grids" in run:
            results = together([(s, *grid()) for s in students])
            everything += results
            report.figure("grids", results, describe(results, f"{args.users} grids"))
            served, floor = set_against(report, "grids", results, yardsticks, args.users, 10, DEFAULT_STEPS,
                                        list(range(10)), guidance=DEFAULT_GUIDANCE, sampler=DEFAULT_SAMPLER)
            if bf16_used:
                report.bar("grids_p95", served, 3.0, "s", f"{args.users} simultaneous 10-digit grids: p95")
            else:
                report.bar("grids_p95_over_flop_floor", served / floor if served else None, 2.0, "x",
                           f"{args.users} simultaneous 10-digit grids: p95 over the fp32 FLOP floor")
        ddpm = {"sampler": "ddpm", "steps": 500}
        if "ddpm" in run:
            results = together([(s, *animation(i % 10, **ddpm)) for i, s in enumerate(students)])
            everything += results
            report.figure("animations_ddpm500", results, describe(results, f"{args.users} ddpm-500 animations"))
            served, floor = set_against(report, "ddpm500", results, yardsticks, args.users, 1, 500, None,
                                        sampler="ddpm")
            if bf16_used:
                report.bar("ddpm500_done_p95", served, 20.0, "s",
                           f"{args.users} simultaneous ddpm-500 animations: finished p95")
            else:
                report.bar("ddpm500_done_p95_over_flop_floor", served / floor if served else None, 2.0, "x",
                           f"{args.users} simultaneous ddpm-500 animations: finished p95 over the fp32 FLOP floor")
        if "mixed" in run:
            mixed = ([(students[i], *animation(i, **ddpm)) for i in range(10)]
                     + [(students[10 + i], *animation(i % 10)) for i in range(20)]
                     + [(Student(url, f"192.0.2.{100 + i}"), *grid()) for i in range(30)])
            results = together(mixed)
            everything += results
            report.figure("mixed", {"ddpm": results[:10], "defaults": results[10:30], "grids": results[30:]},
                          "\n".join(describe(part, name) for part, name in ((results[:10], "mixed: 10 ddpm-500"),
                                                                            (results[10:30], "mixed: 20 defaults"),
                                                                            (results[30:], "mixed: 30 grids"))))
            report.bar("mixed_defaults_done_p95", p95(results[10:30], "done"), 5.0, "s",
                       "mixed load: the 20 default animations finished p95")
        if "fairness" in run:
            everything += fairness(url, report, users=10, abusers=4, seconds=3.0)
        if run == set(SCENARIOS):
            time.sleep(SETTLE_S)  # the last responses are written; the server gives freed memory back
            rss_end = report.figure("rss_end_mb", rss_mb(process.pid))
            report.bar("rss_growth_mb", rss_end - rss_start, 100.0, "MB",
                       "the app's RSS after all this, over its start")
    finally:
        stop(process)
        log.close()
        yardsticks.close()
    failed = [f for r in everything for f in r.get("failed_fetches", [])]
    report.figure("files_fetched", sum(r.get("files", 0) for r in everything))
    report.bar("failed_fetches", len(failed), 0, "fetches", f"files that did not arrive whole, of "
               f"{report.figures['files_fetched']} fetched" + (f" (first: {failed[0]})" if failed else ""))
    exceptions = exceptions_in_log(log_path.read_text())
    report.bar("app_log_exceptions", len(exceptions), 0, "lines", "exceptions in the app's log"
               + (f" (first: {exceptions[0][:200]})" if exceptions else ""))
    return report.finish(partial=set(args.scenarios) != set(SCENARIOS))


def wait_for_clip(student: "Student", timeout: float = 120.0) -> None:
    """Until CLIP has loaded or given up (its loading starts with the first request, in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        posted = student.http.post(f"{student.url}gradio_api/call/clip_status", json={"data": []})
        with student.http.stream("GET", f"{student.url}gradio_api/call/clip_status/{posted.json()['event_id']}") as s:
            text = "".join(s.iter_text())
        if "loading" not in text and "not loaded" not in text:
            return
        time.sleep(0.5)


def one_user_alone(student: "Student", report: Report) -> list[dict]:
    grids = alone = [student.call(*grid()) for _ in range(5)]
    report.figure("alone_grid", alone, describe(alone, "one user alone, a 10-digit grid"))
    report.bar("alone_grid_median", sorted(r["done"] for r in alone)[2], 0.2, "s", "one user alone: grid (median)")
    alone = [student.call(*animation(i)) for i in range(5)]
    report.figure("alone_animation", alone, describe(alone, "one user alone, an animation"))
    report.bar("alone_first_frame_median", sorted(r["first"] for r in alone)[2], 0.1, "s",
               "one user alone: first frame (median)")
    return grids + alone


if __name__ == "__main__":
    sys.exit(main())
