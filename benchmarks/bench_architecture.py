"""Speed of the Architecture tab, measured against `python app.py`:  python -m benchmarks.bench_architecture

Through gradio_client, as a student opening the tab and changing the seed (round trips: the request, four
networks sampling 10 digits with two passes a guided step, the classifier, the two PNGs):
  * /compare_architectures with its defaults, the first time (nothing cached: every variant samples).
    Bar: ≤ 2 s.
  * the defaults with new seeds (nothing cached either: the same work with other noise). Bar: the slowest ≤ 2 s.
  * the defaults again (the comparison cached: what a class opening the page together gets).
Writes benchmarks/results/architecture.json; exits 1 if a bar is missed.
"""
from __future__ import annotations

import statistics
import sys
import time

from gradio_client import Client

from devtools.bench import Report, seconds
from devtools.servers import free_port, start_app, stop

BAR_S = 2.0
NEW_SEEDS = range(1, 9)


def main() -> int:
    report = Report("architecture")
    port = free_port()
    server, _ = start_app(port)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        time.sleep(5)  # the app warms its networks up in the background after it answers; let it finish

        def compare(**values) -> float:
            return seconds(lambda: client.predict(api_name="/compare_architectures", **values))

        first = compare()
        new_seeds = [compare(seed=seed) for seed in NEW_SEEDS]
        cached = [compare() for _ in range(5)]
        report.figure("defaults_first_seconds", first, f"/compare_architectures, defaults, first call: {first:.2f} s")
        report.figure("new_seed_seconds", new_seeds, "defaults with a new seed: "
                      + ", ".join(f"{t:.2f}" for t in new_seeds) + f" s (median {statistics.median(new_seeds):.2f} s)")
        report.figure("cached_seconds", cached, "defaults again (cached): median "
                      f"{statistics.median(cached) * 1000:.0f} ms")
        report.bar("defaults_first", first, BAR_S, "s", "Architecture tab: /compare_architectures at its defaults, "
                   "first call (4 networks sample)")
        report.bar("new_seed_max", max(new_seeds), BAR_S, "s", "Architecture tab: /compare_architectures at its "
                   f"defaults with {len(new_seeds)} new seeds (slowest)")
    finally:
        stop(server)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
