"""Every named endpoint with its defaults, one at a time, as a new user's first call would find it:

    nice -n 10 python -m benchmarks.bench_endpoints                  # starts the app itself; about 2 minutes
    nice -n 10 python -m benchmarks.bench_endpoints --app-args=--no-bf16

Each endpoint is called once through the app's public HTTP API with nothing but its defaults (every parameter
has one, pictures included), by a light client that fetches every file the answer names, all in one session as
a page's calls are (so /show_frame, called last, shows a frame of the session's reverse process). Bar: each answers within 60 s. Also: the app is ready (HTTP 200 on /) within 5 s of
`python app.py`, the best of three warm starts. The CPU's model and flags go beside the figures. Writes
benchmarks/results/endpoints.json and exits 1 if a bar is missed.
"""
from __future__ import annotations

import argparse
import sys

from devtools.bench import Report, cpu_flags, cpu_line, machine
from devtools.class_client import Student, api_parameters
from devtools.servers import free_port, start_app, stop

ENDPOINT_BAR_S = 60.0
READY_BAR_S = 5.0
STARTS = 3
AFTER = {"show_frame"}  # endpoints of a page's session state, called last (after /reverse_process made a run)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--app-args", nargs="*", default=[], help="extra arguments for app.py, after = (e.g. --app-args=--no-bf16)")
    args = p.parse_args()
    report = Report("endpoints")
    report.figure("cpu", {"model": machine().get("cpu_model"), "flags": cpu_flags(), "app_args": args.app_args},
                  cpu_line())
    starts = []
    for _ in range(STARTS):
        process, ready_s = start_app(free_port(), args=tuple(args.app_args))
        stop(process)
        starts.append(ready_s)
    report.figure("ready_s", starts, f"python app.py until HTTP 200: {', '.join(f'{s:.2f}' for s in starts)} s")
    report.bar("ready_s_best", min(starts), READY_BAR_S, "s", "app ready after python app.py (best of 3 warm starts)")

    port = free_port()
    process, _ = start_app(port, args=tuple(args.app_args))
    url = f"http://127.0.0.1:{port}/"
    try:
        student = Student(url, "192.0.2.1", session="bench-endpoints")  # one page: /show_frame sees its last run
        names = sorted(api_parameters(url), key=lambda name: name in AFTER)
        for name in names:
            result = student.call(name)
            report.figure(name, {k: result[k] for k in ("done", "ok", "error", "files")},
                          f"/{name}: {'ok' if result['ok'] else 'FAILED ' + result['error']} in {result['done']:.2f} s")
            report.bar(f"{name}_s", result["done"] if result["ok"] else None, ENDPOINT_BAR_S, "s",
                       f"/{name} with its defaults")
    finally:
        stop(process)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
