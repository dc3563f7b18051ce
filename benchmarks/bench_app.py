"""Measure the app's bars and print the figures.

    nice -n 10 python -m benchmarks.bench_app            # starts `python app.py` itself
    python -m benchmarks.bench_app --url http://127.0.0.1:7860/ --skip-startup   # an app already running

Bars (on a 2-core machine):
    start-up         `python app.py` serves HTTP within 8 s (warm disk: one unmeasured start first)
    first frame      click "Run the reverse process" -> first animation frame shown in the browser ≤ 0.5 s
    slider           forward-noising t slider -> new x_t shown in the browser ≤ 100 ms
    30 users         30 concurrent gradio_client users each asking for a 10-digit grid: all succeed, p95 ≤ 10 s
The browser figures use Debian's chromium through playwright; gradio_client figures are printed beside them.
Writes benchmarks/results/app.json and exits 1 if a bar is missed.
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import threading
import time

from gradio_client import Client, handle_file

from devtools.bench import Report, cpu_seconds, percentile, summary
from devtools.browser import launch_chromium
from devtools.servers import free_port, start_app, stop

FRESH_SEEDS = itertools.count(10_000, 1)  # every measured request gets a seed never used before (no cached results)
STARTUP_BAR_S, FIRST_FRAME_BAR_MS, SLIDER_BAR_MS, USERS_P95_BAR_S = 8.0, 500.0, 100.0, 10.0


def bench_startup(runs: int, report: Report) -> None:
    stop(start_app(free_port())[0])  # warm the disk cache
    times = []
    for _ in range(runs):
        process, seconds = start_app(free_port())
        times.append(seconds)
        stop(process)
    report.figure("startup_seconds", times, f"start-up (python app.py -> HTTP 200): {summary(times)}")
    report.bar("startup_seconds_median", statistics.median(times), STARTUP_BAR_S, "s", "start-up (median)")


# --- the browser ------------------------------------------------------------------------------------------

# Both measure in the page: from the user's action to the new image having loaded; null after 30 s.
CLICK_TO_FIRST_FRAME_JS = """async () => {
    const img = () => document.querySelector('#x-t img');
    const old = img() ? img().src : null;
    const start = performance.now();
    // the tab's 🎲 button: a new seed, then the run (the same seed again would show the same frames)
    [...document.querySelectorAll('button')].find(b => b.innerText.includes('Random seed') && b.offsetParent).click();
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


def seen_ms(milliseconds: list[float | None]) -> list[float]:
    return [ms for ms in milliseconds if ms is not None]


def browser_summary(milliseconds: list[float | None]) -> str:
    """Summary of in-page timings; None = no new image within 30 s (counted, left out of the figures)."""
    seen = [ms / 1000 for ms in milliseconds if ms is not None]
    missed = len(milliseconds) - len(seen)
    return summary(seen, "ms", 1000) + (f", {missed} without a new image within 30 s" if missed else "")


def bench_browser(url: str, repeats: int, report: Report) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
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
        report.figure("first_frame_ms", first_frames[1:],
                      f"browser: click -> first animation frame shown: {browser_summary(first_frames[1:])}")
        shown = seen_ms(first_frames[1:])
        report.bar("first_frame_ms_median", statistics.median(shown) if len(shown) == repeats else None,
                   FIRST_FRAME_BAR_MS, "ms", "click -> first animation frame in the browser (median)")
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
        report.figure("slider_ms", trips, f"browser: forward-noising t slider -> new x_t shown: {browser_summary(trips)}"
                      f"\n    (the first move, right after the tab opened: "
                      f"{'no new image within 30 s' if first is None else f'{first:.0f} ms'})")
        shown = seen_ms(trips)
        report.bar("slider_ms_median", statistics.median(shown) if len(shown) == len(trips) else None,
                   SLIDER_BAR_MS, "ms", "forward-noising slider round trip in the browser (median)")
        browser.close()


# --- gradio_client ----------------------------------------------------------------------------------------

def bench_client_latency(url: str, repeats: int, app_pid: int | None, report: Report) -> None:
    client = Client(url, verbose=False)
    firsts = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        job = client.submit(digit=str(i % 10), seed=next(FRESH_SEEDS), api_name="/reverse_process")
        while not job.outputs():
            time.sleep(0.002)
        firsts.append(time.perf_counter() - start)
        job.result()
    report.figure("client_first_frame_s", firsts[1:], "gradio_client: /reverse_process submit -> first frame "
                  f"received: {summary(firsts[1:], 'ms', 1000)}")
    x0 = client.predict(index=3, api_name="/shipped_digit")  # uploaded once below, like the page's x₀
    client.predict(image=handle_file(x0), t=1, api_name="/noise_at_t")
    trips, cpu_before = [], cpu_seconds(app_pid)
    for i in range(repeats * 2):
        start = time.perf_counter()
        client.predict(image=handle_file(x0), t=10 + 17 * i, api_name="/noise_at_t")
        trips.append(time.perf_counter() - start)
    cpu = cpu_seconds(app_pid)
    per_call = f"; the app's CPU time per call: {(cpu - cpu_before) / len(trips) * 1000:.0f} ms" if cpu else ""
    report.figure("client_noise_at_t_s", trips, "gradio_client: /noise_at_t round trip (uploads x₀ each call): "
                  f"{summary(trips, 'ms', 1000)}{per_call}")


def wait_for_clip(client: Client, timeout: float = 300.0) -> None:
    """The first /generate starts loading CLIP in the background; a class arrives after that has
    settled (ready, or unavailable as on a machine without its weights), so wait for it."""
    start = time.perf_counter()
    while "loading" in (status := client.predict(api_name="/clip_status")) and time.perf_counter() - start < timeout:
        time.sleep(0.5)
    print(f"    (CLIP settled {time.perf_counter() - start:.1f} s after the warm-up request: "
          f"{status.split(':')[0].strip('*')})")


def bench_concurrent_users(url: str, users: int, same_seed: bool, app_pid: int | None, download: bool,
                           report: Report, clip_wait: bool = True) -> None:
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
    key = f"users_{users}" + ("_same_seed" if same_seed else "") + ("" if download else "_no_download")
    report.figure(key, {"succeeded": len(done), "latencies_s": done, "wall_s": wall},
                  f"{users} concurrent users, /generate of a 10-digit grid ({seeds}): {len(done)}/{users} succeeded; "
                  f"p50 {percentile(done, 50):.2f} s, p95 {percentile(done, 95):.2f} s, max {max(done):.2f} s, "
                  f"all done after {wall:.2f} s")
    report.bar(f"{key}_p95", percentile(done, 95) if len(done) == users else None, USERS_P95_BAR_S, "s",
               f"{users} concurrent /generate grids, all succeed ({seeds}): p95")
    cpu_after = cpu_seconds(app_pid)
    if cpu_before is not None and cpu_after is not None:
        used = cpu_after - cpu_before
        print(f"    the app used {used:.1f} CPU-seconds for them: on an otherwise idle 2-core machine the last one "
              f"cannot finish before ≈ {used / 2:.1f} s")
    for e in errors:
        print("   ", e)


def main() -> int:
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

    report = Report("app")
    if not args.skip_startup:
        bench_startup(args.startup_runs, report)
    process, url = None, args.url
    if url is None:
        port = free_port()
        process, _ = start_app(port)
        url = f"http://127.0.0.1:{port}/"
    try:
        if not args.skip_browser:
            bench_browser(url, args.repeats, report)
        app_pid = process.pid if process is not None else args.app_pid
        if not args.skip_clients:
            bench_client_latency(url, args.repeats, app_pid, report)
            for same_seed in (False, True) if args.same_seed else (False,):
                for download in (True, False) if args.no_download else (True,):
                    bench_concurrent_users(url, args.users, same_seed, app_pid, download, report,
                                           clip_wait=not args.cold_clip)
    finally:
        if process is not None:
            stop(process)
    return report.finish(partial=args.skip_startup or args.skip_browser or args.skip_clients or bool(args.url))


if __name__ == "__main__":
    sys.exit(main())
