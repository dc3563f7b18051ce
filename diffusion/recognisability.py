"""When does a digit become recognisable during the reverse process?

The course asks students at what percentage of denoising they can first recognise the digit ("a zero at
step 277 of 500, but the three and the seven only at 221"), and whether that varies by digit. Here a
judge answers the same question for many runs at once: the *noise-aware* classifier
(`classifier.NoiseAwareClassifier`), which reads a noisy x_t together with its time step t. Unlike a
clean-image classifier, it says "I can't tell" (≈ 10 % for every digit) on pure noise x_T, so a digit
counts as recognisable only once its strokes are really there:

    recognisable at step s  <=>  p(asked digit | x_t at step s) ≥ RECOGNISABLE_PROBABILITY (the first such s)

Steps are counted as the sampler counts them: step 0 is x_T, step S (of S) the finished sample, so
"at X % of the process" means s / S. With ddpm over all T = 500 steps, step s is t = T − s.

    >>> steps = server.submit(pipe.check_request([3] * 20, sampler="ddpm", num_inference_steps=500),
    ...                       stream=True).steps()
    >>> result = measure_recognisability(steps, [3] * 20, noise_classifier.predict_proba, T=500)
    >>> result.per_digit()[0]["median_percent"]
"""
from __future__ import annotations

import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from .sampling import SamplerStep

RECOGNISABLE_PROBABILITY = 0.5  # p(asked digit | x_t) from which a digit counts as recognisable
SCORED_POINTS = 50              # frames per run scored at first; the frames before a crossing are then scored too

# probabilities(x_t: [B,1,28,28] float, t: [B] int64 in 0..T) -> [B,10] (e.g. NoiseAwareClassifier.predict_proba)
Probabilities = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def first_recognisable(probabilities: Sequence[float | None]) -> int | None:
    """Index of the first frame whose probability for the asked digit reaches RECOGNISABLE_PROBABILITY
    (frames not scored are None and skipped), or None if none does."""
    return next((i for i, p in enumerate(probabilities) if p is not None and p >= RECOGNISABLE_PROBABILITY), None)


def percent_of_process(step: int, num_inference_steps: int) -> float:
    """Step s of S as a percentage of the reverse process (0 = pure noise x_T, 100 = the finished sample)."""
    return 100.0 * step / num_inference_steps


@dataclass
class Recognisability:
    """Where each of N runs first became recognisable. digits: [N] the asked digits; first_step: [N] step
    0..S (-1: never); first_t: [N] that step's time step t (T for x_T, 0 for the finished sample; -1: never)."""

    digits: np.ndarray
    first_step: np.ndarray
    first_t: np.ndarray
    num_inference_steps: int
    num_train_steps: int

    @property
    def percent(self) -> np.ndarray:
        """[N] float: the first recognisable step as % of the process (NaN: never recognised)."""
        out = np.full(len(self.digits), math.nan)
        seen = self.first_step >= 0
        out[seen] = percent_of_process(self.first_step[seen], self.num_inference_steps)
        return out

    def per_digit(self) -> list[dict]:
        """One row per asked digit: runs, how many became recognisable, and the spread of where (% of the
        process: mean, standard deviation, min, median, max; and the median step and t)."""
        rows = []
        for digit in sorted(set(self.digits.tolist())):
            mine = self.digits == digit
            seen = mine & (self.first_step >= 0)
            percent = self.percent[seen]
            row = {"digit": digit, "runs": int(mine.sum()), "recognised": int(seen.sum())}
            if seen.any():
                row.update(mean_percent=float(percent.mean()), std_percent=float(percent.std()),
                           min_percent=float(percent.min()), median_percent=float(np.median(percent)),
                           max_percent=float(percent.max()), median_step=float(np.median(self.first_step[seen])),
                           median_t=float(np.median(self.first_t[seen])))
            rows.append(row)
        return rows


def run_experiment(server, requests: Sequence, probabilities: Probabilities, num_train_steps: int,
                   on_step: Callable[[], None] | None = None) -> Recognisability:
    """Run each checked request (e.g. one per digit) on a `NetworkServer` as a stream that keeps no history,
    and measure them side by side (`measure_many`). on_step: called after every step of every run (progress)."""
    def followed(request):
        steps = server.submit(request, stream=True, keep_history=False).steps()
        try:
            for step in steps:
                if on_step:
                    on_step()
                yield step
        finally:
            steps.close()  # stops the server's run once the measurement has what it needs

    return measure_many([(followed(r), r.digits) for r in requests], probabilities, num_train_steps)


def measure_many(runs: Sequence[tuple[Iterable[SamplerStep], Sequence[int]]], probabilities: Probabilities,
                 num_train_steps: int) -> Recognisability:
    """`measure_recognisability` of several runs at once (one thread each, so a server advances them side by
    side and each stops as soon as all its samples are recognised), as one result. runs: (steps, digits) pairs."""
    with ThreadPoolExecutor(max_workers=max(1, len(runs)), thread_name_prefix="recognisability") as pool:
        parts = list(pool.map(lambda run: measure_recognisability(run[0], run[1], probabilities, num_train_steps),
                              runs))
    return Recognisability(np.concatenate([p.digits for p in parts]), np.concatenate([p.first_step for p in parts]),
                           np.concatenate([p.first_t for p in parts]), parts[0].num_inference_steps, num_train_steps)


def measure_recognisability(steps: Iterable[SamplerStep], digits: Sequence[int], probabilities: Probabilities,
                            num_train_steps: int, scored_points: int = SCORED_POINTS) -> Recognisability:
    """Follow a batch of runs step by step (the `SamplerStep`s of a streamed request, step 0 = x_T first) and
    find, for each run, the first step at which its asked digit is recognisable.

    digits: [N] the asked digit of each row; probabilities: the judge (see `Probabilities`), given t = T for
    x_T. To keep the judge's work small, every stride-th frame is scored (about `scored_points` per run); when
    a run first crosses the threshold there, the frames since the last scored one are scored too, so the step
    found is the one every-frame scoring would find unless p crosses and falls back within a stride.
    Once every row has been recognised the rest of the run cannot change the answer, so it stops following
    the steps (closing `steps`, which stops a server's run).
    """
    digits_t = torch.as_tensor(list(digits)).long()
    n = len(digits_t)
    first_step = np.full(n, -1, dtype=np.int64)
    first_t = np.full(n, -1, dtype=np.int64)
    stride, total = 1, None
    recent: deque[tuple[int, int, torch.Tensor]] = deque()  # (step, t, x) not yet scored, oldest first

    def crossed(frames: list[tuple[int, int, torch.Tensor]], rows: torch.Tensor) -> torch.Tensor:
        """[len(frames), len(rows)] bool: whether each frame shows each row's digit recognisably."""
        x = torch.cat([frame[rows] for _, _, frame in frames])
        t = torch.cat([torch.full((len(rows),), ti, dtype=torch.long) for _, ti, _ in frames])
        p = probabilities(x, t).reshape(len(frames), len(rows), -1)
        return p.gather(2, digits_t[rows].reshape(1, -1, 1).expand(len(frames), -1, 1))[..., 0] >= RECOGNISABLE_PROBABILITY

    for step in steps:
        if total is None:
            total = step.total
            stride = max(1, math.ceil(total / scored_points))
        t = num_train_steps if step.index == 0 else step.t
        frame = (step.index, t, step.x.detach().float().cpu())
        if step.index % stride and step.index != total:
            recent.append(frame)
            continue
        waiting = torch.from_numpy(np.flatnonzero(first_step < 0))
        if len(waiting):
            hit = crossed([frame], waiting)[0]
            rows = waiting[hit]
            if len(rows) and recent:
                earlier = crossed(list(recent), rows)  # [frames, rows]
                for j, row in enumerate(rows.tolist()):
                    k = int(earlier[:, j].nonzero()[0]) if earlier[:, j].any() else None
                    first_step[row], first_t[row] = (recent[k][0], recent[k][1]) if k is not None else (frame[0], t)
            else:
                first_step[rows.numpy()], first_t[rows.numpy()] = frame[0], t
        recent.clear()
        if (first_step >= 0).all():
            break
    if hasattr(steps, "close"):
        steps.close()
    if total is None:
        raise ValueError("the run reported no steps")
    return Recognisability(np.asarray(list(digits)), first_step, first_t, total, num_train_steps)
