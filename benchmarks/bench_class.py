"""A whole class on one 2-core Space: the network server's bars, measured against `python app.py`.

    nice -n 10 python -m benchmarks.bench_class          # starts the app itself; about 3 minutes

Each student is its own HTTP client, calling the app's public API (POST /gradio_api/call/<name>, then
reading the event stream, as gradio_client does), all released at the same moment, each with its own
digit and seed. Bars (issue 12, and issue 11's fairness bar):
    30 × /reverse_process at the defaults        all finish; first frame p95 ≤ 1.5 s; finished p95 ≤ 3 s
    30 × /reverse_process, ddpm, 500 steps       all finish; finished p95 ≤ 20 s (the compute floor is printed)
    30 × /generate of a 10-digit grid            p95 ≤ 3 s
    mixed: 10 ddpm-500 + 20 default animations + 30 grids     the default animations finish with p95 ≤ 5 s
    one user alone                               grid ≤ 0.2 s, first frame ≤ 0.1 s (as before: 0.1 s, 70 ms)
    memory                                       the app's RSS after all this within 100 MB of its start
    fairness: 4 clients looping maximum-size requests, 10 users' /generate p95 ≤ 3× its unloaded value
Writes benchmarks/results/class.json and exits 1 if a bar is missed.
"""
from __future__ import annotations

import argparse
import functools
import itertools
import re
import sys
import threading
import time
from pathlib import Path

import httpx

from devtools.bench import Report, percentile, seconds
from devtools.servers import free_port, start_app, stop
from diffusion.requests import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS
from diffusion.server import TRIM_AFTER_IDLE_S

SEEDS = itertools.count(20_000)
SETTLE_S = TRIM_AFTER_IDLE_S + 1.0  # before each memory measurement: the network server trims its heap once
                                    # it has been idle TRIM_AFTER_IDLE_S
SCENARIOS = ("alone", "animations", "grids", "ddpm", "mixed", "fairness")  # every request a seed never used before: no cached results


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


class Student:
    """One student's HTTP client (its own connection; an address of its own through X-Forwarded-For, as
    a Space's proxy would set it, so the per-client limits see distinct students)."""

    def __init__(self, url: str, address: str):
        self.url = url
        # idle connections are dropped after 1 s: uvicorn closes them after 5 s, httpx's default is also 5 s,
        # and a POST sent on a connection just as the server closes it fails ("Server disconnected")
        self.http = httpx.Client(timeout=600, headers={"x-forwarded-for": address},
                                 limits=httpx.Limits(keepalive_expiry=1.0))

    def call(self, api_name: str, values: dict | None = None, **more) -> dict:
        """Run an endpoint; returns {'first': s to the first streamed output, 'done': s to the end, 'ok': bool}."""
        start = time.perf_counter()
        values = {**(values or {}), **more}
        posted = self.http.post(f"{self.url}gradio_api/call/{api_name}", json={"data": self.data(api_name, values)})
        posted.raise_for_status()
        first, ok, error = None, False, ""
        with self.http.stream("GET", f"{self.url}gradio_api/call/{api_name}/{posted.json()['event_id']}") as s:
            event = None
            for line in s.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                    if event in ("generating", "complete") and first is None:
                        first = time.perf_counter() - start
                    ok = event == "complete"
                elif line.startswith("data: ") and event == "error":
                    error = line[6:200]
        return {"first": first, "done": time.perf_counter() - start, "ok": ok, "error": error}

    def data(self, api_name: str, values: dict) -> list:
        """The endpoint's parameters in the app's order: these values, else the benchmark's defaults, else the
        app's own (read once from /gradio_api/info, so a new parameter with a default needs no change here)."""
        merged = {**self.DEFAULTS, **({"digit": "3"} if api_name == "reverse_process" else {}), **values}
        return [merged.get(name, default) for name, default in api_parameters(self.url)[api_name]]

    DEFAULTS = {"digit": "all", "samples_per_digit": 1, "guidance": DEFAULT_GUIDANCE, "sampler": DEFAULT_SAMPLER,
                "steps": DEFAULT_STEPS, "seed": 0, "quality_prompts_text": ""}


@functools.cache
def api_parameters(url: str) -> dict[str, list[tuple[str, object]]]:
    """{endpoint: [(parameter name, its default), ...]} as the app describes its API."""
    info = httpx.get(f"{url}gradio_api/info").json()["named_endpoints"]
    return {name.strip("/"): [(p["parameter_name"], p.get("parameter_default")) for p in e["parameters"]]
            for name, e in info.items()}


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
    errors = sorted({r["error"] for r in results if not r["ok"]})
    return text + (f"; errors: {errors[:3]}" if errors else "")


def animation(digit: int, **values) -> tuple:
    return "reverse_process", {"digit": str(digit), "seed": next(SEEDS), **values}


def grid() -> tuple:
    return "generate", {"seed": next(SEEDS)}


def compute_floor(users: int, digits: list[int] | None, **settings) -> float:
    """Seconds for the network server alone (no HTTP, no scoring, no frames) to run `users` requests at once:
    each of `digits` (None: one digit each, as an animation asks), with these sampler settings."""
    from diffusion import load_pipeline
    from diffusion.server import NetworkServer

    pipe = load_pipeline()
    server = NetworkServer(pipe.model, pipe.schedule)

    def run_all() -> float:
        requests = [pipe.check_request(digits or [u % 10], seed=next(SEEDS), **settings) for u in range(users)]
        return seconds(lambda: server.run(requests))

    if len(digits or []) > 1:
        run_all()  # a short burst: once first, so its batch sizes' kernels are ready (as in the warmed-up app)
    floor_s = run_all()
    server.close()
    return floor_s


def fairness(url: str, report: Report, users: int, abusers: int, seconds: float) -> None:
    """10 users' /generate alone, then again while `abusers` clients loop maximum-size requests."""
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=30)
    p.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS,
                   help="which to run (default: all; the memory bar is checked only after all of them)")
    p.add_argument("--app-args", nargs="*", default=[], help="extra arguments for app.py (e.g. --device cuda)")
    args = p.parse_args()
    report = Report("class")
    port = free_port()
    process, _ = start_app(port, args=tuple(args.app_args))
    url = f"http://127.0.0.1:{port}/"
    students = [Student(url, f"192.0.2.{i + 1}") for i in range(args.users)]
    try:
        students[0].call("generate", seed=next(SEEDS))  # warm-up, not measured: it also starts loading CLIP,
        students[0].call("reverse_process", seed=next(SEEDS))  # which the class arrives after (as in bench_app)
        wait_for_clip(students[0])
        time.sleep(SETTLE_S)  # as before the last measurement: the warm-up's freed memory goes back first
        rss_start = report.figure("rss_start_mb", rss_mb(process.pid))

        run = set(args.scenarios)
        if "alone" in run:
            one_user_alone(students[0], report)
        if "animations" in run:
            results = together([(s, *animation(i % 10)) for i, s in enumerate(students)])
            report.figure("animations_defaults", results, describe(results, f"{args.users} animations at the defaults"))
            report.bar("animations_first_p95", p95(results, "first"), 1.5, "s",
                       f"{args.users} simultaneous animations: first frame p95")
            report.bar("animations_done_p95", p95(results, "done"), 3.0, "s",
                       f"{args.users} simultaneous animations: finished p95")
        if "grids" in run:
            results = together([(s, *grid()) for s in students])
            report.figure("grids", results, describe(results, f"{args.users} grids"))
            floor = compute_floor(args.users, list(range(10)), guidance=DEFAULT_GUIDANCE, sampler=DEFAULT_SAMPLER,
                                  num_inference_steps=DEFAULT_STEPS)
            report.figure("grids_compute_floor_s", floor, f"    compute floor (the network server alone, no HTTP, "
                                                          f"no scores, in this process): {floor:.2f} s")
            report.bar("grids_p95", p95(results, "done"), 3.0, "s", f"{args.users} simultaneous 10-digit grids: p95")
        ddpm = {"sampler": "ddpm", "steps": 500}
        if "ddpm" in run:
            results = together([(s, *animation(i % 10, **ddpm)) for i, s in enumerate(students)])
            report.figure("animations_ddpm500", results, describe(results, f"{args.users} ddpm-500 animations"))
            floor = compute_floor(args.users, None, sampler="ddpm", num_inference_steps=500)
            report.figure("ddpm500_compute_floor_s", floor, f"    compute floor (the network server alone, no HTTP, "
                                                            f"no frames, in this process): {floor:.1f} s")
            report.bar("ddpm500_done_p95", p95(results, "done"), 20.0, "s",
                       f"{args.users} simultaneous ddpm-500 animations: finished p95")
        if "mixed" in run:
            mixed = ([(students[i], *animation(i, **ddpm)) for i in range(10)]
                     + [(students[10 + i], *animation(i % 10)) for i in range(20)]
                     + [(Student(url, f"192.0.2.{100 + i}"), *grid()) for i in range(30)])
            results = together(mixed)
            report.figure("mixed", {"ddpm": results[:10], "defaults": results[10:30], "grids": results[30:]},
                          "\n".join(describe(part, name) for part, name in ((results[:10], "mixed: 10 ddpm-500"),
                                                                            (results[10:30], "mixed: 20 defaults"),
                                                                            (results[30:], "mixed: 30 grids"))))
            report.bar("mixed_defaults_done_p95", p95(results[10:30], "done"), 5.0, "s",
                       "mixed load: the 20 default animations finished p95")
        if "fairness" in run:
            fairness(url, report, users=10, abusers=4, seconds=3.0)
        if run == set(SCENARIOS):
            time.sleep(SETTLE_S)  # the last responses are written; the server gives freed memory back
            rss_end = report.figure("rss_end_mb", rss_mb(process.pid))
            report.bar("rss_growth_mb", rss_end - rss_start, 100.0, "MB",
                       "the app's RSS after all this, over its start")
    finally:
        stop(process)
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


def one_user_alone(student: "Student", report: Report) -> None:
    alone = [student.call(*grid()) for _ in range(5)]
    report.figure("alone_grid", alone, describe(alone, "one user alone, a 10-digit grid"))
    report.bar("alone_grid_median", sorted(r["done"] for r in alone)[2], 0.2, "s", "one user alone: grid (median)")
    alone = [student.call(*animation(i)) for i in range(5)]
    report.figure("alone_animation", alone, describe(alone, "one user alone, an animation"))
    report.bar("alone_first_frame_median", sorted(r["first"] for r in alone)[2], 0.1, "s",
               "one user alone: first frame (median)")


if __name__ == "__main__":
    sys.exit(main())
