"""Measure the app's bars and print the figures.

    nice -n 10 python benchmarks/bench_app.py            # starts `python app.py` itself
    python benchmarks/bench_app.py --url http://127.0.0.1:7860/ --skip-startup   # an app already running

Bars (on a 2-core machine):
    start-up         `python app.py` serves HTTP within 8 s (warm disk: one unmeasured start first)
    first frame      click "Run the reverse process" -> first animation frame shown in the browser ≤ 0.5 s
    slider           forward-noising t slider -> new x_t shown in the browser ≤ 100 ms
    30 users         30 concurrent gradio_client users each asking for a 10-digit grid: all succeed, p95 ≤ 10 s
The browser figures use Debian's chromium through playwright; gradio_client figures are printed beside them.
"""
from __future__ import annotations

import argparse
import itertools
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from gradio_client import Client, handle_file

ROOT = Path(__file__).resolve().parent.parent
FRESH_SEEDS = itertools.count(10_000, 1)  # every measured request gets a seed never used before (no cached results)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between order statistics."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def summary(values: list[float], unit: str = "s", scale: float = 1.0) -> str:
    v = [x * scale for x in values]
    return (f"median {statistics.median(v):.3g} {unit}, p95 {percentile(v, 95):.3g} {unit}, "
            f"min {min(v):.3g}, max {max(v):.3g} (n = {len(v)})")


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, TypeError):
        return None


# --- start-up ---------------------------------------------------------------------------------------------

def start_app(port: int, extra_env: dict | None = None) -> tuple[subprocess.Popen, float]:
    """Start `python app.py` on `port`; returns (process, seconds until it answered HTTP 200 on /)."""
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", **(extra_env or {})}
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return process, time.perf_counter() - start
        except httpx.TransportError:
            pass
        time.sleep(0.02)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


def bench_startup(runs: int) -> None:
    stop(start_app(free_port())[0])  # warm the disk cache
    times = []
    for _ in range(runs):
        process, seconds = start_app(free_port())
        times.append(seconds)
        stop(process)
    print(f"start-up (python app.py -> HTTP 200): {summary(times)}   bar: ≤ 8 s")


# --- the browser ------------------------------------------------------------------------------------------

# Both measure in the page: from the user's action to the new image having loaded; null after 30 s.
CLICK_TO_FIRST_FRAME_JS = """async () => {
    const img = () => document.querySelector('#x-t img');
    const old = img() ? img().src : null;
    const start = performance.now();
    [...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Run the reverse process').click();
    while (performance.now() - start < 30000) {
        const i = img();
        if (i && i.src !== old && i.complete && i.naturalWidth > 0) return performance.now() - start;
        await new Promise(r => requestAnimationFrame(r));
    }
    return null;
}"""

SLIDER_ROUND_TRIP_JS = """async (value) => {
    const img = () => document.querySelector('#forward-x-t img');
    const old = img().src;
    const slider = document.querySelector('#t-slider input[type=range]');
    const start = performance.now();
    slider.value = value;
    slider.dispatchEvent(new Event('input', {bubbles: true}));
    while (performance.now() - start < 30000) {
        const i = img();
        if (i.src !== old && i.complete && i.naturalWidth > 0) return performance.now() - start;
        await new Promise(r => requestAnimationFrame(r));
    }
    return null;
}"""


def browser_summary(milliseconds: list[float | None]) -> str:
    """Summary of in-page timings; None = no new image within 30 s (counted, left out of the figures)."""
    seen = [ms / 1000 for ms in milliseconds if ms is not None]
    missed = len(milliseconds) - len(seen)
    return summary(seen, "ms", 1000) + (f", {missed} without a new image within 30 s" if missed else "")


def bench_browser(url: str, repeats: int) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.wait_for_selector("#clip-status")
        page.get_by_role("tab", name="Reverse process").click()
        first_frames = []
        for _ in range(repeats + 1):
            first_frames.append(page.evaluate(CLICK_TO_FIRST_FRAME_JS))
            page.wait_for_function(
                "() => document.querySelector('#step-counter').innerText.includes('first recognises')", timeout=120_000)
            time.sleep(0.5)  # let the page settle: a click while the last run is still pending would be ignored
        print(f"browser: click -> first animation frame shown: {browser_summary(first_frames[1:])}   bar: ≤ 500 ms")
        page.get_by_role("tab", name="Forward noising").click()
        page.wait_for_function("() => ['#forward-x-t img', '#schedule-plot img', '#strip img'].every(s => "
                               "{ const i = document.querySelector(s); return i && i.complete && i.naturalWidth > 0; })",
                               timeout=120_000)
        first = page.evaluate(SLIDER_ROUND_TRIP_JS, 20)
        time.sleep(1.0)  # the tab's first rendering is over; from here on, a student moving the slider
        trips = []
        for i in range(repeats * 2):
            trips.append(page.evaluate(SLIDER_ROUND_TRIP_JS, 43 + 23 * i))
            time.sleep(0.1)
        print(f"browser: forward-noising t slider -> new x_t shown: {browser_summary(trips)}   bar: ≤ 100 ms\n"
              f"    (the first move, right after the tab opened: "
              f"{'no new image within 30 s' if first is None else f'{first:.0f} ms'})")
        browser.close()


# --- gradio_client ----------------------------------------------------------------------------------------

def bench_client_latency(url: str, repeats: int, app_pid: int | None) -> None:
    client = Client(url, verbose=False)
    firsts = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        job = client.submit(digit=str(i % 10), seed=next(FRESH_SEEDS), api_name="/reverse_process")
        while not job.outputs():
            time.sleep(0.002)
        firsts.append(time.perf_counter() - start)
        job.result()
    print(f"gradio_client: /reverse_process submit -> first frame received: {summary(firsts[1:], 'ms', 1000)}")
    x0 = client.predict(index=3, api_name="/shipped_digit")  # uploaded once below, like the page's x₀
    client.predict(image=handle_file(x0), t=1, api_name="/noise_at_t")
    trips, cpu_before = [], cpu_seconds(app_pid)
    for i in range(repeats * 2):
        start = time.perf_counter()
        client.predict(image=handle_file(x0), t=10 + 17 * i, api_name="/noise_at_t")
        trips.append(time.perf_counter() - start)
    cpu = cpu_seconds(app_pid)
    per_call = f"; the app's CPU time per call: {(cpu - cpu_before) / len(trips) * 1000:.0f} ms" if cpu else ""
    print(f"gradio_client: /noise_at_t round trip (uploads x₀ each call): {summary(trips, 'ms', 1000)}{per_call}")


def wait_for_clip(client: Client, timeout: float = 300.0) -> None:
    """The first /generate starts loading CLIP in the background; a class arrives after that has
    settled (ready, or unavailable as on a machine without its weights), so wait for it."""
    start = time.perf_counter()
    while "loading" in (status := client.predict(api_name="/clip_status")) and time.perf_counter() - start < timeout:
        time.sleep(0.5)
    print(f"    (CLIP settled {time.perf_counter() - start:.1f} s after the warm-up request: "
          f"{status.split(':')[0].strip('*')})")


def bench_concurrent_users(url: str, users: int, same_seed: bool, app_pid: int | None, download: bool,
                           clip_wait: bool = True) -> None:
    """Each user: its own gradio_client, /generate of the ten digits. With download=False the clients
    do not fetch the gallery's image files (the cards already hold the images inline)."""
    clients = [Client(url, verbose=False, **({} if download else {"download_files": False})) for _ in range(users)]
    clients[0].predict(digit="all", seed=next(FRESH_SEEDS), api_name="/generate")  # warm-up, not measured
    if clip_wait:
        wait_for_clip(clients[0])
    seeds = [next(FRESH_SEEDS)] * users if same_seed else [next(FRESH_SEEDS) for _ in range(users)]
    barrier = threading.Barrier(users)
    latencies, errors = [None] * users, []

    def user(i: int) -> None:
        barrier.wait()
        start = time.perf_counter()
        try:
            cards = clients[i].predict(digit="all", seed=seeds[i], api_name="/generate")[0]
            assert cards.count("<img") == 10
            latencies[i] = time.perf_counter() - start
        except Exception as e:  # counted as a failure
            errors.append(f"user {i}: {type(e).__name__}: {e}")

    cpu_before = cpu_seconds(app_pid)
    start = time.perf_counter()
    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    done = [x for x in latencies if x is not None]
    seeds = ("all the same seed" if same_seed else "a different seed each") + (
        "" if download else ", gallery files not downloaded")
    print(f"{users} concurrent users, /generate of a 10-digit grid ({seeds}): {len(done)}/{users} succeeded; "
          f"p50 {percentile(done, 50):.2f} s, p95 {percentile(done, 95):.2f} s, max {max(done):.2f} s, "
          f"all done after {wall:.2f} s   bar: all succeed, p95 ≤ 10 s")
    cpu_after = cpu_seconds(app_pid)
    if cpu_before is not None and cpu_after is not None:
        used = cpu_after - cpu_before
        print(f"    the app used {used:.1f} CPU-seconds for them: on an otherwise idle 2-core machine the last one "
              f"cannot finish before ≈ {used / 2:.1f} s")
    for e in errors:
        print("   ", e)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="an app that is already running (default: start python app.py)")
    p.add_argument("--app-pid", type=int, help="with --url: the app's process id, to report its CPU time")
    p.add_argument("--skip-startup", action="store_true")
    p.add_argument("--skip-browser", action="store_true")
    p.add_argument("--skip-clients", action="store_true", help="skip the gradio_client figures and the 30 users")
    p.add_argument("--startup-runs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--users", type=int, default=30)
    p.add_argument("--same-seed", action="store_true", help="also run the 30 users with one shared seed")
    p.add_argument("--no-download", action="store_true", help="also run the users without downloading files")
    p.add_argument("--cold-clip", action="store_true", help="the users arrive right after the first request, "
                                                            "while CLIP is still loading in the background")
    args = p.parse_args()

    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} "
          f"(other processes inflate these figures)")
    if not args.skip_startup:
        bench_startup(args.startup_runs)
    process, url = None, args.url
    if url is None:
        port = free_port()
        process, _ = start_app(port)
        url = f"http://127.0.0.1:{port}/"
    try:
        if not args.skip_browser:
            bench_browser(url, args.repeats)
        app_pid = process.pid if process is not None else args.app_pid
        if args.skip_clients:
            return
        bench_client_latency(url, args.repeats, app_pid)
        for same_seed in (False, True) if args.same_seed else (False,):
            for download in (True, False) if args.no_download else (True,):
                bench_concurrent_users(url, args.users, same_seed, app_pid, download, clip_wait=not args.cold_clip)
    finally:
        if process is not None:
            stop(process)


if __name__ == "__main__":
    main()
