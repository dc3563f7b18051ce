"""Speed of the Training tab, measured against `python app.py`:  python -m benchmarks.bench_training

Through gradio_client, as a student moving the sliders (round trips: the request, the work, the PNG):
  * every snapshot shown for the first time: its network loaded and digits 0…9 drawn at the app's defaults
    (two network passes a step: the snapshots have no guidance head). Bar: the slowest ≤ 1 s.
  * every snapshot again with a new seed (network loaded, digits drawn anew) and a third time (cached).
  * /noise_prediction: a network's first visit (its loss-against-t curve: 750 network inputs) and a new t
    (one network input; the curve cached). Bar: a new t, median ≤ 0.25 s.
Writes benchmarks/results/training.json; exits 1 if a bar is missed.
"""
from __future__ import annotations

import statistics
import sys

from gradio_client import Client

from devtools.bench import Report, seconds
from devtools.servers import free_port, start_app, stop
from diffusion.training_history import list_snapshots

SNAPSHOT_BAR_S = 1.0
NOISE_PREDICTION_BAR_S = 0.25


def main() -> int:
    report = Report("training")
    snapshots = list_snapshots()
    port = free_port()
    server, _ = start_app(port)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)

        def show(index: int, seed: int) -> float:
            return seconds(lambda: client.predict(snapshot=index, seed=seed, api_name="/training_snapshots"))

        def explain(t: int, snapshot: str) -> float:
            return seconds(lambda: client.predict(digit_index=5, t=t, seed=0, snapshot=snapshot,
                                                api_name="/noise_prediction"))

        first = [show(i, 1) for i in range(len(snapshots))]
        new_seed = [show(i, 2) for i in range(len(snapshots))]
        cached = [show(i, 2) for i in range(len(snapshots))]
        for name, times in (("first", first), ("new_seed", new_seed), ("cached", cached)):
            report.figure(f"snapshot_{name}_seconds", times, f"snapshot shown, {name.replace('_', ' ')}: "
                          + ", ".join(f"{s.step}: {t:.2f} s" for s, t in zip(snapshots, times)))
        curve_first = [explain(100, key) for key in ["final"] + [str(i) for i in range(len(snapshots))]]
        new_t = [explain(t, "final") for t in range(110, 510, 20)]
        report.figure("noise_prediction_first_visit_seconds", curve_first, "/noise_prediction, a network's first "
                      f"visit (its loss curve measured): median {statistics.median(curve_first):.2f} s, "
                      f"slowest {max(curve_first):.2f} s")
        report.figure("noise_prediction_new_t_seconds", new_t, f"/noise_prediction at a new t: median "
                      f"{statistics.median(new_t) * 1000:.0f} ms, slowest {max(new_t) * 1000:.0f} ms")
        report.bar("snapshot_first_max", max(first), SNAPSHOT_BAR_S, "s",
                   "Training tab: a snapshot shown for the first time (slowest of all snapshots)")
        report.bar("noise_prediction_new_t_median", statistics.median(new_t), NOISE_PREDICTION_BAR_S, "s",
                   "Training tab: /noise_prediction at a new t (median)")
    finally:
        stop(server)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
