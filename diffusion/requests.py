"""What one sampling request may ask for: the defaults, the limits, and the one check.

Every caller (the Python API, the command lines, the app's endpoints, the server) checks a request
here, so a bad value gets the same message everywhere, naming the value and what is allowed.

The defaults are the app's defaults, picked from `python -m diffusion.evaluate` (see
`checkpoints/evaluation.md`): the fewest network evaluations that pass the quality bar. At 12 steps
both w = 0.5 and w = 0.6 pass with the default seed; w = 0.6 because with a second seed (--seed 99)
its worst digit stays at 98.5 % where w = 0.5 drops to 97.5 %.
"""
from __future__ import annotations

import dataclasses
import math
import reprlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .sampling import EVERY_STEP, SAMPLERS

DEFAULT_SAMPLER = "dpm++2m-sde"
DEFAULT_STEPS = 12
DEFAULT_GUIDANCE = 0.6
DEFAULT_GUIDANCE_INTERVAL = EVERY_STEP

MAX_GUIDANCE = 8.0        # beyond this digits only get harsher
# The course's guidance runs from w = -2 to 2. Below 0 it steers *away* from the label: at w = -1,
# ε = (1+w)·ε(x,c) − w·ε(x,∅) is exactly ε(x,∅), an unconditional sample; below -1 the digit is avoided.
MIN_GUIDANCE = -2.0
MAX_FEW_STEPS = 100       # ddim, dpm++2m, dpm++2m-sde gain nothing beyond; ddpm may use every step, up to T
MAX_SEED = 2**32 - 1
MAX_SAMPLES_PER_CALL = 10_000  # the Python API (evaluation draws 2,000 in batches)
# A web request's bounds, on a 2-core machine: the app passes these to `check_sampling_request`.
MAX_SAMPLES = 100         # samples per request
MAX_WORK = 5_000          # samples × steps per request (× the number of w values in a sweep)
MAX_RESAMPLE = 10         # inpainting: RePaint's resamplings per step
MAX_CLASSIFIER_SCALE = 20.0  # classifier guidance's strength; beyond this the gradient only adds artefacts
# Ways to steer toward the asked digit (the Generate tab's choice; benchmarks/bench_guides.py compares them):
#   classifier-free  ε = (1+w)·ε(x,c) − w·ε(x,∅) alone (the course's; the default)
#   classifier       plus the noise-aware classifier's gradient (Dhariwal & Nichol 2021), at DEFAULT_CLASSIFIER_SCALE
#   best-of-N        draw N candidates per sample and keep the one the noise-aware classifier is surest of
#   clip             plus CLIP's pull of x̂_0 toward its prompt for digit k (only when CLIP is loaded; CLIP runs
#                    on the CPU, about 0.3 s per image and step, so at most MAX_CLIP_GUIDED samples)
GUIDES = ("classifier-free", "classifier", "best-of-4", "clip")
DEFAULT_GUIDE = "classifier-free"
DEFAULT_CLASSIFIER_SCALE = 2.0
BEST_OF = 4
CLIP_GUIDANCE_SCALE = 50.0  # not tuned: CLIP's real weights cannot be had where this was built
MAX_CLIP_GUIDED = 10
INPAINT_SAMPLERS = ("ddpm", "ddim")  # one-step samplers: a RePaint resampling re-takes a step, which a multistep
                                     # solver's memory of the previous step would not allow


@dataclass(frozen=True)
class SamplingRequest:
    """A checked request. digits: one entry per sample (each asked digit repeated samples_per_digit
    times, digit-major); the same request always gives the same images."""

    digits: tuple[int, ...]
    samples_per_digit: int
    guidance: float
    sampler: str
    num_inference_steps: int
    seed: int
    eta: float = 0.0
    guidance_interval: tuple[float, float] = DEFAULT_GUIDANCE_INTERVAL
    # Editing (see editing.py): start from this digit (uint8 28×28, as 784 bytes) noised to strength s ...
    init_image: bytes | None = None
    strength: float = 1.0
    # ... and, inpainting, regenerate only where keep_mask (784 bytes) is 0, with RePaint's resamplings
    keep_mask: bytes | None = None
    resample: int = 1
    # Classifier guidance by the noise-aware classifier's gradient, on top of w (0 = none)
    classifier_scale: float = 0.0

    @property
    def num_samples(self) -> int:
        return len(self.digits)

    def with_guidance(self, guidance: float) -> "SamplingRequest":
        return dataclasses.replace(self, guidance=guidance)


def max_inference_steps(sampler: str, num_train_steps: int) -> int:
    """The most steps a request may use with this sampler: T for ddpm, else min(MAX_FEW_STEPS, T)."""
    return num_train_steps if sampler == "ddpm" else min(MAX_FEW_STEPS, num_train_steps)


MAX_EXACT_INT = 2**53  # beyond this an int is no sensible request value (and float() of a huge int overflows)


def is_number(value) -> bool:
    """A finite int or float (not a bool, not NaN or ±∞, not an int too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return abs(value) <= MAX_EXACT_INT if isinstance(value, int) else math.isfinite(value)


def whole_number(name: str, value, low: int, high: int) -> int:
    """`value` as an int in [low, high]; whole floats such as 10.0 (from sliders) are fine. ValueError if not."""
    if not (is_number(value) and value == int(value) and low <= value <= high):
        raise ValueError(f"{name} must be a whole number from {low} to {high}, got {short_repr(value)}")
    return int(value)


def real_number(name: str, value, low: float, high: float) -> float:
    """`value` as a finite float in [low, high]. ValueError if not."""
    if not (is_number(value) and low <= value <= high):
        raise ValueError(f"{name} must be a finite number from {low:g} to {high:g}, got {short_repr(value)}")
    return float(value)


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 2, 60, 60, 40
_SHORT.maxlist = _SHORT.maxtuple = 6
_SHORT.maxdict = 4


def short_repr(value) -> str:
    """repr(value), cut short at every level: an error message never echoes a whole (possibly huge) input."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_EXACT_INT:
        return f"an integer of {value.bit_length()} bits"  # str() of a huge int is slow, and Python limits it
    return _SHORT.repr(value)


def check_sampling_request(digits: Sequence[int], *, samples_per_digit=1, guidance=DEFAULT_GUIDANCE,
                           sampler=DEFAULT_SAMPLER, steps=DEFAULT_STEPS, seed=0, num_train_steps: int,
                           eta=0.0, guidance_interval=DEFAULT_GUIDANCE_INTERVAL,
                           max_samples: int = MAX_SAMPLES_PER_CALL, max_work: int | None = None,
                           sweep_size: int = 1, classifier_scale=0.0) -> SamplingRequest:
    """Check a request and bound its work; raises ValueError with a message meant for the user.

    digits: the asked digits (0..9); samples_per_digit: samples of each; steps: network evaluations;
    num_train_steps: T of the model; max_samples / max_work: bounds on samples and on
    samples × steps × sweep_size (None: no bound on work).
    """
    if isinstance(digits, (str, bytes)) or not isinstance(digits, Sequence) or not digits:
        raise ValueError(f"digits must be a non-empty list of digits from 0 to 9, got {short_repr(digits)}")
    asked = [whole_number("each digit", d, 0, 9) for d in digits]
    per_digit = whole_number(f"samples per digit (at most {max_samples} samples in all)", samples_per_digit,
                             1, max(1, max_samples // len(asked)))
    if len(asked) * per_digit > max_samples:
        raise ValueError(f"at most {max_samples} samples per call, got {len(asked) * per_digit}")
    guidance = real_number("guidance w", guidance, MIN_GUIDANCE, MAX_GUIDANCE)
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {short_repr(sampler)}")
    steps = whole_number(f"steps for {sampler}", steps, 1, max_inference_steps(sampler, num_train_steps))
    seed = whole_number("seed", seed, 0, MAX_SEED)
    eta = real_number("eta", eta, 0, 1)
    try:
        lo, hi = (float(v) for v in guidance_interval)
    except (TypeError, ValueError):
        lo, hi = math.nan, math.nan
    if not 0 <= lo <= hi <= 1:
        raise ValueError(f"guidance_interval must be (lo, hi) with 0 ≤ lo ≤ hi ≤ 1, got {short_repr(guidance_interval)}")
    classifier_scale = real_number("classifier guidance scale", classifier_scale, 0, MAX_CLASSIFIER_SCALE)
    samples = tuple(d for d in asked for _ in range(per_digit))
    return _bounded(SamplingRequest(samples, per_digit, guidance, sampler, steps, seed, eta, (lo, hi),
                                    classifier_scale=classifier_scale), max_work, sweep_size)


def _bounded(request: SamplingRequest, max_work: int | None, sweep_size: int = 1) -> SamplingRequest:
    """The request, if its network evaluations (samples × steps × resamplings × sweep) fit in max_work."""
    samples, steps = request.num_samples, request.num_inference_steps
    work = samples * steps * request.resample * sweep_size
    if max_work is not None and work > max_work:
        sweep = f" × {sweep_size} values of w" if sweep_size > 1 else ""
        sweep += f" × {request.resample} resamplings" if request.resample > 1 else ""
        raise ValueError(f"too much work for one request: {samples} samples × {steps} steps{sweep} = "
                         f"{work:,} (at most {max_work:,}); ask for fewer samples or steps")
    return request


def edit_start_t(strength: float, num_train_steps: int) -> int | None:
    """Where an edit starts: t = round(strength·T), at least 1; None for strength 1 (pure noise, as generating)."""
    return None if strength >= 1 else max(1, round(strength * num_train_steps))


def check_edit_request(request: SamplingRequest, image, *, strength, keep_mask=None, resample=1,
                       num_train_steps: int, max_work: int | None = None) -> SamplingRequest:
    """Make a checked sampling request an edit of `image`; raises ValueError with a message meant for the user.

    image: uint8 [28,28] (MNIST's form: light ink on black); strength: 0..1, how much noise to add first
    (t = strength·T); keep_mask: None (SDEdit: re-imagine the whole digit) or [28,28] of 0/1 or bools,
    1 = keep the pixel, 0 = regenerate it (inpainting); resample: RePaint's resamplings per step.
    The steps are capped at the start t (a weak edit takes few steps).
    """
    image = np.asarray(image)
    if image.shape != (28, 28) or image.dtype != np.uint8:
        raise ValueError(f"the image must be 28×28 uint8 pixels, got {image.dtype} {list(image.shape)}")
    strength = real_number("strength s", strength, 0, 1)
    start_t = edit_start_t(strength, num_train_steps)
    steps = request.num_inference_steps if start_t is None else min(request.num_inference_steps, start_t)
    mask_bytes = None
    if keep_mask is not None:
        keep = np.asarray(keep_mask)
        if keep.shape != (28, 28) or not (keep.dtype == bool or np.isin(keep, (0, 1)).all()):
            raise ValueError(f"the mask must be 28×28 values of 0 (regenerate) or 1 (keep), got {keep.dtype} "
                             f"{list(keep.shape)}")
        if keep.all():
            raise ValueError("the mask is empty: mark the part of the digit to regenerate")
        if request.sampler not in INPAINT_SAMPLERS:
            raise ValueError(f"inpainting needs a one-step sampler ({' or '.join(INPAINT_SAMPLERS)}), "
                             f"got {short_repr(request.sampler)}")
        mask_bytes = keep.astype(np.uint8).tobytes()
        resample = whole_number("resamplings per step", resample, 1, MAX_RESAMPLE)
    else:
        resample = 1
    edit = dataclasses.replace(request, num_inference_steps=steps, init_image=image.tobytes(), strength=strength,
                               keep_mask=mask_bytes, resample=resample)
    return _bounded(edit, max_work)
