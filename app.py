"""MNIST Diffusion Classroom: the Gradio app.

    python app.py          # then open http://127.0.0.1:7860
    python app.py --host 0.0.0.0 --port 8080 --clip-pretrained /path/to/open_clip_model.safetensors

Host and port also come from GRADIO_SERVER_NAME and GRADIO_SERVER_PORT (or PORT), as on a
Hugging Face Space. Four tabs: Generate (samples with the classifier's and CLIP's scores, and a
guidance sweep), Reverse process (denoising, frame by frame), Forward noising (x_t under any beta
schedule) and How it works. The diffusion maths all lives in the engine (`diffusion/`); this
file only wires the user interface to it.

Every action is an API endpoint whose parameters all have defaults (see the README):
    /generate  /guidance_sweep  /clip_status                 (Generate tab)
    /reverse_process  /show_frame                            (Reverse process tab)
    /shipped_digit  /load_image  /load_drawing  /forward_noising  /noise_at_t   (Forward noising tab)
"""
from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no network call at start
os.environ.setdefault("MPLBACKEND", "Agg")  # plots are drawn off-screen

import argparse  # noqa: E402
import base64  # noqa: E402
import functools  # noqa: E402
import hashlib  # noqa: E402
import html  # noqa: E402
import io  # noqa: E402
import math  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from PIL import Image, UnidentifiedImageError  # noqa: E402

from diffusion import pipeline as engine  # noqa: E402  (DEFAULT_GUIDANCE/SAMPLER/STEPS are read from here)
from diffusion.batching import BatchingSampler, SampleRequest, request_steps, seeded_request  # noqa: E402
from diffusion.classifier import DEFAULT_CLASSIFIER, load_classifier  # noqa: E402
from diffusion.checkpoints import read_config  # noqa: E402
from diffusion.data import SHIPPED_DIGITS, grid_image, to_model_range, to_uint8  # noqa: E402
from diffusion.model import count_parameters  # noqa: E402
from diffusion.sampling import EVERY_STEP, SAMPLERS  # noqa: E402
from diffusion.schedules import SCHEDULE_NAMES, NoiseSchedule  # noqa: E402
from diffusion.scoring import (DEFAULT_QUALITY_PROMPTS, ClassifierScores, ClipScores, ClipUnavailable,  # noqa: E402
                               LazyClip, agreement, classifier_scores)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# --- Limits: they bound the work one request can cause on a 2-core machine (the UI states them) ------
MAX_SAMPLES = 100          # samples per request
MAX_STEPS = 100            # steps for ddim and dpm++2m; ddpm may use every step of the model, up to T
MAX_WORK = 5_000           # samples × steps per request (× the number of w values in a sweep)
MAX_GUIDANCE = 8.0
MAX_SWEEP_VALUES = 8
MAX_SEED = 2**32 - 1
MAX_PROMPTS, MAX_PROMPT_CHARS = 8, 200
MAX_FORWARD_T = 1000
MAX_IMAGE_PIXELS = 5000 * 5000  # uploads, once decoded
MAX_FILE_SIZE = "10mb"          # uploads, as sent (gradio refuses bigger files)
QUEUE_SIZE = 256                # requests waiting at once; more get "queue full"
SAMPLING_CONCURRENCY = 40       # /generate and /guidance_sweep mostly wait on the shared BatchingSampler
ANIMATION_CONCURRENCY = 2       # /reverse_process runs the network itself, one step per frame
LIGHT_CONCURRENCY = 4           # forward noising, loading x₀: milliseconds each
INSTANT = {"preprocess": False, "queue": False}  # sliders (/noise_at_t, /show_frame): under 1 ms of work each,
                                                 # so they skip the queue: one HTTP round trip instead of three

# --- Display -------------------------------------------------------------------------------------------
SAMPLE_SCALE = 4   # 28 px -> 112 px in galleries
GRID_SCALE = 2     # the downloadable grid of samples
FRAME_SCALE = 8    # 28 px -> 224 px for x_t, x̂0 and x_0
GIF_SCALE, GIF_MAX_FRAMES, GIF_FRAME_MS, GIF_LAST_FRAME_MS = 4, 100, 80, 1500
MAX_STREAMED_FRAMES = 100  # frames sent while the reverse process runs (a 500-step ddpm run sends every 5th)
STRIP_FRAMES = 8
CLIP_BUSY = ("CLIP skipped this time: {why}, and on a 2-core machine CLIP would hold them up. It scores "
             "samples again as soon as the app is not busy.")
RECOGNISABLE = 0.5  # the classifier's probability for the asked digit at which we call it recognisable
ALL_DIGITS = "all"
DEFAULT_SWEEP = "0, 0.5, 1, 2, 4, 8"
DEFAULT_REVERSE_DIGIT = "3"
CSS = """
.pixels img { image-rendering: pixelated; }
.sample-cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr)); gap: 8px; }
.sample-card { display: flex; gap: 10px; align-items: center; padding: 6px; font-size: 13px; line-height: 1.35;
               border: 1px solid var(--border-color-primary); border-radius: 8px; }
.sample-card img { width: 84px; height: 84px; flex: none; image-rendering: pixelated; }
.sample-card .miss { color: #c2410c; font-weight: 600; }
"""
THEME = gr.themes.Soft(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])  # no web fonts
LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]
WORK_FOLDER = tempfile.TemporaryDirectory(prefix="mnist-diffusion-app-")  # GIFs and plots; removed at exit


# ======================================================================================================
# Input checks: every endpoint receives raw JSON values (preprocess=False) and checks them here, so a
# bad value from the browser or from gradio_client gets a message that names it.
# ======================================================================================================

def invalid(message: str) -> gr.Error:
    """The error for bad input: shown in the page (raised by gradio_client), no traceback logged."""
    return gr.Error(message, title="Invalid input", print_exception=False)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def whole_number(name: str, value, low: int, high: int) -> int:
    """`value` as an int in [low, high]; whole floats such as 10.0 (from sliders) are fine."""
    if not (is_number(value) and value == int(value) and low <= value <= high):
        raise invalid(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return int(value)


def real_number(name: str, value, low: float, high: float) -> float:
    """`value` as a finite float in [low, high]."""
    if not (is_number(value) and low <= value <= high):
        raise invalid(f"{name} must be a finite number from {low:g} to {high:g}, got {value!r}")
    return float(value)


def one_of(name: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise invalid(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def digit_set(value, allow_all: bool) -> list[int]:
    """'all' -> [0, …, 9]; a digit (7 or "7") -> [7]."""
    if allow_all and value == ALL_DIGITS:
        return list(range(10))
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 9):
        allowed = "a digit from 0 to 9" + (f" or '{ALL_DIGITS}'" if allow_all else "")
        raise invalid(f"digit must be {allowed}, got {value!r}")
    return [value]


def guidance_values(text) -> list[float]:
    """'0, 0.5, 2' -> [0.0, 0.5, 2.0]: 1 to MAX_SWEEP_VALUES values of w, each from 0 to MAX_GUIDANCE."""
    if not isinstance(text, str):
        raise invalid(f"guidance values must be text such as '{DEFAULT_SWEEP}', got {text!r}")
    words = text.replace(",", " ").split()
    if not 1 <= len(words) <= MAX_SWEEP_VALUES:
        raise invalid(f"give 1 to {MAX_SWEEP_VALUES} guidance values separated by commas, got {len(words)}")
    try:
        values = [float(word) for word in words]
    except ValueError:
        raise invalid(f"guidance values must be numbers separated by commas, got {text!r}") from None
    return [real_number("each guidance value w", w, 0, MAX_GUIDANCE) for w in values]


def quality_prompts(text) -> tuple[str, ...]:
    """CLIP quality prompts, one per line: at most MAX_PROMPTS lines of MAX_PROMPT_CHARS characters."""
    if not isinstance(text, str):
        raise invalid(f"quality prompts must be text, one prompt per line, got {text!r}")
    prompts = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(prompts) > MAX_PROMPTS or any(len(p) > MAX_PROMPT_CHARS for p in prompts):
        raise invalid(f"give at most {MAX_PROMPTS} quality prompts of at most {MAX_PROMPT_CHARS} characters each")
    return prompts


def uploaded_path(payload, what: str) -> str:
    """The server-side path of an uploaded file (gradio has already checked it is one of its uploads)."""
    if isinstance(payload, dict) and isinstance(payload.get("path"), str):
        return payload["path"]
    raise invalid(f"{what} must be an image file, got {payload!r}"[:300])


@dataclass(frozen=True)
class SamplingSettings:
    """A checked request: `digits` has one entry per sample (each asked digit repeated samples_per_digit times)."""

    digits: list[int]
    samples_per_digit: int
    guidance: float
    sampler: str
    steps: int
    seed: int

    def request(self, guidance: float | None = None) -> SampleRequest:
        """The engine request, its noise seeded by `seed` (so the same settings give the same images)."""
        return seeded_request(self.digits, guidance=self.guidance if guidance is None else guidance,
                              sampler=self.sampler, steps=self.steps, seed=self.seed,
                              guidance_interval=engine.DEFAULT_GUIDANCE_INTERVAL)


# ======================================================================================================
# Images and plots
# ======================================================================================================

def enlarge(images: np.ndarray, scale: int) -> np.ndarray:
    """uint8 [..., H, W] -> uint8 [..., H·scale, W·scale]: each pixel becomes a crisp scale×scale block."""
    return np.asarray(images).repeat(scale, axis=-2).repeat(scale, axis=-1)


def digit_from_file(path: str) -> np.ndarray:
    """Any image file -> uint8 [28,28], white ink on black like MNIST.

    Transparent parts become background; a light background is inverted; the picture is padded to a
    square and shrunk (area average) to 28×28. A 28k×28k enlargement from this app comes back exactly.
    """
    try:
        image = Image.open(path)
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise invalid(f"the image is {image.width}×{image.height} pixels; at most "
                          f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels, please")
        image.seek(0)
        image = _flatten_alpha(image.convert("RGBA")).convert("L")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, EOFError):
        raise invalid("that file is not an image this app can read (PNG, JPEG, GIF, WebP…)") from None
    pixels = np.asarray(image)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if border.mean() > 127:  # dark ink on a light background: make it MNIST's light ink on black
        pixels = 255 - pixels
    side = max(pixels.shape)
    square = np.zeros((side, side), np.uint8)
    top, left = (side - pixels.shape[0]) // 2, (side - pixels.shape[1]) // 2
    square[top:top + pixels.shape[0], left:left + pixels.shape[1]] = pixels
    return np.array(Image.fromarray(square).resize((28, 28), Image.BOX))


def _flatten_alpha(rgba: Image.Image) -> Image.Image:
    """Put an RGBA image on a background that contrasts with its visible ink (black for light ink)."""
    alpha = np.asarray(rgba.getchannel("A"))
    if alpha.min() == 255:
        return rgba.convert("RGB")
    visible = np.asarray(rgba.convert("L"))[alpha > 127]
    light_ink = visible.size > 0 and visible.mean() > 127
    background = Image.new("RGBA", rgba.size, (0, 0, 0, 255) if light_ink else (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def first_recognisable(confidences: list[float]) -> int | None:
    """Index of the first frame whose confidence reaches RECOGNISABLE, or None."""
    return next((i for i, p in enumerate(confidences) if p >= RECOGNISABLE), None)


@functools.lru_cache(maxsize=64)
def noise_schedule(name: str, num_steps: int, beta_start: float, beta_end: float) -> NoiseSchedule:
    """The engine's schedule (cached: the forward-noising slider asks for the same one many times)."""
    try:
        return NoiseSchedule.create(name, num_steps, beta_start, beta_end)
    except ValueError as e:
        raise invalid(str(e)) from None


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib figure (inches), drawn off-screen; matplotlib is imported on first use (faster start)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def schedule_plot(chosen: str, num_steps: int, beta_start: float, beta_end: float) -> str:
    """The schedules plot as a PNG file, drawn once per setting (every page load shows the default one)."""
    settings = repr((chosen, num_steps, beta_start, beta_end)).encode()
    path = Path(WORK_FOLDER.name) / f"schedules-{hashlib.sha1(settings).hexdigest()[:16]}.png"
    if not path.exists():
        drawing = path.with_suffix(f".{uuid.uuid4().hex[:8]}.tmp")
        schedule_figure(chosen, num_steps, beta_start, beta_end).savefig(drawing, dpi=100, format="png")
        drawing.replace(path)  # atomic: a request drawing the same plot at the same time reads a whole file
        _keep_newest(path.parent, "schedules-*.png", keep=64)
    return str(path)


def schedule_figure(chosen: str, num_steps: int, beta_start: float, beta_end: float) -> Figure:
    """ᾱ(t) and log-SNR(t) for every schedule (same T and β range), the chosen one drawn thick."""
    fig = new_figure(9, 3.2)
    ax_bar, ax_snr = fig.subplots(1, 2)
    t = np.arange(num_steps + 1)
    for name in SCHEDULE_NAMES:
        schedule = noise_schedule(name, num_steps, beta_start, beta_end)
        style = {"linewidth": 3.2, "alpha": 1.0} if name == chosen else {"linewidth": 1.3, "alpha": 0.55}
        label = name + (" (ignores the β range)" if name == "cosine" else "")
        ax_bar.plot(t, schedule.alpha_bar.numpy(), label=label, **style)
        ax_snr.plot(t[1:], schedule.log_snr[1:].numpy(), label=label, **style)
    ax_bar.set(xlabel="t", ylabel="ᾱ(t)", title="How much of x₀ survives: ᾱ(t)")
    ax_snr.set(xlabel="t", ylabel="log SNR(t)", title="log signal-to-noise ratio")
    ax_bar.legend(fontsize=8, loc="lower left")
    return fig


def sweep_figure(ws: list[float], grids: list[np.ndarray], captions: list[str]) -> Figure:
    """The guidance sweep: one row of samples per w (the same seed, so columns match), each row
    labelled with w and its scores. grids: uint8 [H,W] pictures of equal size."""
    height, width = grids[0].shape
    fig = new_figure(1.6 + width / 60, 0.3 + len(ws) * (height / 60 + 0.15))
    for ax, w, grid, caption in zip(np.atleast_1d(fig.subplots(len(ws), 1)), ws, grids, captions):
        ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_ylabel(f"w = {w:g}\n{caption}", rotation=0, ha="right", va="center", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


# ======================================================================================================
# Scores shown beside the samples
# ======================================================================================================

@dataclass
class Scores:
    """The classifier's scores, and CLIP's when CLIP is ready (else `clip_note` says why not)."""

    classifier: ClassifierScores
    clip: ClipScores | None
    clip_note: str = ""


def png_data_uri(image: np.ndarray) -> str:
    """uint8 [H,W] -> 'data:image/png;base64,…' (inline in HTML: no extra request per image)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def sample_cards(images: np.ndarray, digits: list[int], scores: Scores, indices) -> str:
    """HTML: each sample (of `indices`) with the classifier's and CLIP's scores right beside it."""
    c, k = scores.classifier, scores.clip
    cards = []
    for i in indices:
        d = digits[i]
        lines = [f"<b>#{i + 1}</b> · asked <b>{d}</b>",
                 _verdict("classifier", c.predicted_digit[i], d, c.confidence_requested[i])]
        if k is not None:
            lines.append(_verdict("CLIP", k.predicted_digit[i], d, k.prob_requested[i]))
            lines.append(f"CLIPScore {k.clip_score[i]:.0f}")
            if k.quality_prompts:
                best = int(k.quality_probs[i].argmax())
                lines.append(f"“{html.escape(k.quality_prompts[best])}” {k.quality_probs[i, best]:.0%}")
        cards.append(f'<div class="sample-card"><img src="{png_data_uri(images[i])}" alt="sample {i + 1}">'
                     f'<div>{"<br>".join(lines)}</div></div>')
    return f'<div class="sample-cards">{"".join(cards)}</div>'


def _verdict(judge: str, seen: int, asked: int, probability: float) -> str:
    seen_text = f"sees a {seen}" if seen == asked else f'<span class="miss">sees a {seen}</span>'
    return f"{judge}: {seen_text} · p({asked}) = {probability:.0%}"


def scores_table(digits: list[int], scores: Scores) -> pd.DataFrame:
    """One row per sample: the classifier's and (if ready) CLIP's digit and scores."""
    c = scores.classifier
    rounded = lambda values, places=3: np.asarray(values, dtype=np.float64).round(places)  # noqa: E731
    table = {"#": np.arange(1, len(digits) + 1), "asked": digits, "classifier digit": c.predicted_digit,
             "classifier p(asked)": rounded(c.confidence_requested)}
    if scores.clip is not None:
        k = scores.clip
        table.update({"CLIP digit": k.predicted_digit, "CLIP p(asked)": rounded(k.prob_requested),
                      "CLIPScore": rounded(k.clip_score, 1)})
        for j, prompt in enumerate(k.quality_prompts):
            table[f"CLIP p({prompt})"] = rounded(k.quality_probs[:, j])
    return pd.DataFrame(table)


def agreement_panel(images: np.ndarray, digits: list[int], scores: Scores) -> tuple[str, str]:
    """Markdown on how often CLIP's digit matches the classifier's, and HTML cards of the disagreements."""
    if scores.clip is None:
        return f"**No CLIP scores.** {scores.clip_note}  \nThe classifier's scores work without CLIP.", ""
    found = agreement(scores.clip, scores.classifier)
    text = (f"**CLIP's digit matches the classifier's on {len(digits) - len(found.disagree)} of {len(digits)} "
            f"samples ({found.rate:.0%}).** ")
    text += (f"They disagree on {len(found.disagree)}, shown below." if found.disagree
             else "They agree on every sample.")
    return text, sample_cards(images, digits, scores, found.disagree)


def clip_status_text(status: str) -> str:
    if status == "ready":
        return "**CLIP:** ready. Its zero-shot scores appear beside each sample."
    if status.startswith("unavailable"):
        return (f"**CLIP unavailable:** {status.removeprefix('unavailable: ')}  \n"
                f"Everything else works; samples are scored by the digit classifier alone.")
    return f"**CLIP:** {status}… (it loads in the background; the classifier's scores work meanwhile)"


# ======================================================================================================
# The reverse-process animation's frames
# ======================================================================================================

@dataclass
class ReverseRun:
    """Every frame of one run of the reverse process: frame 0 is x_T, then one frame per step.

    t holds each frame's time step (None for x_T: the sampler decides where it starts); x_t and x0
    hold uint8 [28,28] images (x0 of frame 0 is black: no prediction yet); the confidences are the
    classifier's probability for the asked digit.
    """

    digit: int
    num_train_steps: int
    num_steps: int
    t: list[int | None] = field(default_factory=list)
    x_t: list[np.ndarray] = field(default_factory=list)
    x0: list[np.ndarray] = field(default_factory=list)
    confidence_x_t: list[float] = field(default_factory=list)
    confidence_x0: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.t)


def time_label(run: ReverseRun, i: int) -> str:
    """'t = 277' for frame i, 'x_T' for the starting noise."""
    return "x_T" if run.t[i] is None else f"t = {run.t[i]}"


def frame_counter(run: ReverseRun, i: int) -> str:
    """'t = 277 / 500 · step 3 of 10 · …' for frame i."""
    if i == 0:
        return (f"### x_T, pure noise · step 0 of {run.num_steps}\n"
                f"The classifier gives it {run.confidence_x_t[0]:.0%} for a {run.digit}.")
    return (f"### t = {run.t[i]} / {run.num_train_steps} · step {i} of {run.num_steps}\n"
            f"The classifier is {run.confidence_x_t[i]:.0%} sure x_t is a {run.digit}, "
            f"and {run.confidence_x0[i]:.0%} sure the model's guess x̂₀ is.")


def recognition_summary(run: ReverseRun) -> str:
    parts = []
    for name, confidences in (("x_t", run.confidence_x_t), ("x̂₀", run.confidence_x0)):
        i = first_recognisable(confidences)
        parts.append(f"in {name} at step {i} ({time_label(run, i)})" if i is not None else f"never in {name}")
    return (f"The classifier first recognises the {run.digit} (p ≥ {RECOGNISABLE:.0%}) "
            f"{parts[0]}, and {parts[1]}. Drag the slider to scrub through the frames.")


def confidence_figure(run: ReverseRun) -> Figure:
    """The classifier's confidence in the asked digit for x_t and x̂0 at every step; the first
    recognisable step of each is marked."""
    fig = new_figure(7, 3.2)
    ax = fig.subplots()
    frames = np.arange(len(run))
    for name, confidences, start, color in (("x_t (the noisy image)", run.confidence_x_t, 0, "tab:blue"),
                                            ("x̂₀ (the model's guess)", run.confidence_x0, 1, "tab:orange")):
        ax.plot(frames[start:], confidences[start:], marker="o" if len(run) <= 60 else None,
                markersize=3, color=color, label=name)
        i = first_recognisable(confidences)
        if i is not None:
            ax.axvline(i, color=color, linestyle="--", linewidth=1)
            ax.annotate(f"recognisable: step {i}, {time_label(run, i)}", (i, RECOGNISABLE), color=color, fontsize=8,
                        xytext=(4, -14 if start else 6), textcoords="offset points")
    ax.axhline(RECOGNISABLE, color="gray", linestyle=":", linewidth=1)
    ticks = np.unique(np.linspace(0, len(run) - 1, min(len(run), 12)).round().astype(int))
    ax.set_xticks(ticks, [f"{i}\n{time_label(run, i).replace(' ', '')}" for i in ticks])
    ax.set(xlabel="step (t counts down from T to 0)", ylabel=f"p(it is a {run.digit})", ylim=(-0.02, 1.05),
           title=f"When does the classifier recognise the {run.digit}?")
    fig.legend(fontsize=8, loc="outside lower center", ncols=2)
    return fig


def write_gif(run: ReverseRun, folder: Path) -> Path:
    """The animation (x_t beside x̂0) as a looping GIF of at most GIF_MAX_FRAMES frames."""
    picks = np.unique(np.linspace(0, len(run) - 1, min(len(run), GIF_MAX_FRAMES)).round().astype(int))
    frames = [Image.fromarray(enlarge(grid_image(np.stack([run.x_t[i], run.x0[i]]), nrow=2), GIF_SCALE))
              for i in picks]
    path = folder / f"reverse-process-{run.digit}-{uuid.uuid4().hex[:8]}.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], loop=0,
                   duration=[GIF_FRAME_MS] * (len(frames) - 1) + [GIF_LAST_FRAME_MS])
    _keep_newest(folder, "*.gif", keep=200)
    return path


def _keep_newest(folder: Path, pattern: str, keep: int) -> None:
    """Delete all but the `keep` newest files matching `pattern` (bounds the disk a busy Space uses)."""
    def age(path: Path) -> float:
        try:
            return -path.stat().st_mtime
        except FileNotFoundError:  # another request just deleted it
            return 0.0

    for old in sorted(folder.glob(pattern), key=age)[keep:]:
        old.unlink(missing_ok=True)


# ======================================================================================================
# The endpoints
# ======================================================================================================

class Classroom:
    """The loaded models and one method per endpoint. Method parameter names are the API's names."""

    def __init__(self, pipe: engine.DigitDiffusion, classifier, clip: LazyClip, classifier_config: dict):
        self.pipe, self.classifier, self.clip, self.classifier_config = pipe, classifier, clip, classifier_config
        self.sampler = BatchingSampler(pipe.model, pipe.schedule)
        self._clip_lock = threading.Lock()  # one CLIP evaluation at a time: it is the heaviest network here
        self.gif_folder = Path(WORK_FOLDER.name)
        with np.load(SHIPPED_DIGITS) as f:
            self.shipped_images, self.shipped_labels, self.shipped_test_index = f["x"], f["y"], f["test_index"]

    # --- checks that need the model ------------------------------------------------------------------
    def max_steps(self, sampler: str) -> int:
        return self.pipe.num_train_steps if sampler == "ddpm" else min(MAX_STEPS, self.pipe.num_train_steps)

    def settings(self, digit, samples_per_digit, guidance, sampler, steps, seed, *, allow_all: bool = True,
                 sweep_size: int = 1) -> SamplingSettings:
        """Check a sampling request and bound its work; raises gr.Error naming the bad value."""
        asked = digit_set(digit, allow_all)
        per_digit = whole_number(f"samples per digit (at most {MAX_SAMPLES} samples in all)", samples_per_digit,
                                 1, MAX_SAMPLES // len(asked))
        guidance = real_number("guidance w", guidance, 0, MAX_GUIDANCE)
        sampler = one_of("sampler", sampler, SAMPLERS)
        steps = whole_number(f"steps for {sampler}", steps, 1, self.max_steps(sampler))
        seed = whole_number("seed", seed, 0, MAX_SEED)
        digits = [d for d in asked for _ in range(per_digit)]
        work = len(digits) * steps * sweep_size
        if work > MAX_WORK:
            sweep = f" × {sweep_size} values of w" if sweep_size > 1 else ""
            raise invalid(f"too much work for one request: {len(digits)} samples × {steps} steps{sweep} = "
                          f"{work:,} (at most {MAX_WORK:,}); ask for fewer samples or steps")
        try:
            self.pipe.check_request(digits, guidance, sampler, steps)
        except ValueError as e:
            raise invalid(str(e)) from None
        return SamplingSettings(digits, per_digit, guidance, sampler, steps, seed)

    def score(self, images: np.ndarray, digits: list[int], prompts: tuple[str, ...]) -> Scores:
        """The classifier's scores, plus CLIP's if it has loaded and the Space is not busy.

        CLIP never makes anyone wait: it costs about 0.05-0.1 s per image on 2 CPU cores (ViT-B-32),
        so when a class samples at once (other requests waiting for the network, or CLIP scoring
        another request) it is skipped, and the note says so."""
        classifier = classifier_scores(self.classifier, images, digits)
        try:
            scorer = self.clip.get()  # starts loading on first use; raises at once while loading
        except ClipUnavailable as e:
            return Scores(classifier, None, str(e))
        waiting = self.sampler.requests_in_progress()
        if waiting or not self._clip_lock.acquire(blocking=False):
            return Scores(classifier, None, CLIP_BUSY.format(
                why=f"{waiting} other request(s) are waiting for the network" if waiting
                else "it is scoring another request's samples"))
        try:
            return Scores(classifier, scorer.score(images, digits, prompts))
        finally:
            self._clip_lock.release()

    def confidence(self, images: np.ndarray, digits: list[int]) -> np.ndarray:
        """The classifier's probability that each image (uint8 [N,28,28]) is its asked digit: float [N]."""
        return classifier_scores(self.classifier, images, digits).confidence_requested

    # --- Generate tab --------------------------------------------------------------------------------
    def generate(self, digit, samples_per_digit, guidance, sampler, steps, seed, quality_prompts_text):
        """The samples with their scores beside them (HTML), all samples in one image (sample i at row i // 10,
        column i % 10 of a grid of 28×28 cells with 2-pixel gaps, enlarged ×2), the scores table, and the
        agreement panel (text, and the samples where CLIP and the classifier disagree)."""
        settings = self.settings(digit, samples_per_digit, guidance, sampler, steps, seed)
        prompts = quality_prompts(quality_prompts_text)
        [images] = self.sampler.run([settings.request()])
        scores = self.score(images, settings.digits, prompts)
        cards = sample_cards(images, settings.digits, scores, range(len(images)))
        agreement_text, disagreements = agreement_panel(images, settings.digits, scores)
        grid = enlarge(grid_image(images, nrow=10), GRID_SCALE)
        return cards, grid, scores_table(settings.digits, scores), agreement_text, disagreements

    def guidance_sweep(self, digit, samples_per_digit, guidance_values_text, sampler, steps, seed):
        """The same seed at several w, side by side (a figure), and a table of fidelity and diversity."""
        ws = guidance_values(guidance_values_text)
        settings = self.settings(digit, samples_per_digit, max(ws), sampler, steps, seed, sweep_size=len(ws))
        results = self.sampler.run([settings.request(guidance=w) for w in ws])
        rows, grids, captions = [], [], []
        for w, images in zip(ws, results):
            confidence = self.confidence(images, settings.digits)
            spread = pixel_diversity(images, settings.samples_per_digit)
            grids.append(grid_image(images, nrow=min(len(images), 20)))
            captions.append(f"classifier {confidence.mean():.0%}")
            rows.append(f"| {w:g} | {confidence.mean():.1%} | {(confidence >= RECOGNISABLE).mean():.0%} | "
                        + (f"{spread:.3f} |" if spread is not None else "– |"))
        table = ("| w | classifier's mean p(asked digit) | recognisable | diversity |\n|---|---|---|---|\n"
                 + "\n".join(rows) + "\n\n*Fidelity*: the classifier's confidence in the asked digit. *Diversity*: "
                 "how much samples of the same digit differ (mean per-pixel standard deviation, 0 = identical; "
                 "needs 2 or more samples per digit). Larger w usually buys fidelity with diversity.")
        return sweep_figure(ws, grids, captions), table

    def clip_status(self):
        """Whether CLIP is ready, loading or unavailable (and why). Starts loading it if nobody has."""
        self.clip.start()
        return clip_status_text(self.clip.status())

    def poll_clip_status(self):
        """For the page's timer: the status, and the timer switched off once CLIP is ready or unavailable."""
        text = self.clip_status()
        return text, gr.Timer(active=self.clip.status() in ("not loaded", "loading"))

    # --- Reverse process tab -------------------------------------------------------------------------
    def reverse_process(self, digit, guidance, sampler, steps, seed):
        """Stream the denoising of one digit: x_T, then after each step x_t, x̂0 and the step counter, one frame
        at a time as they come (at most MAX_STREAMED_FRAMES; all are kept for the slider); the last message
        adds the confidence plot, the GIF and the frame slider."""
        settings = self.settings(digit, 1, guidance, sampler, steps, seed, allow_all=False)
        request = settings.request()
        run = ReverseRun(settings.digits[0], self.pipe.num_train_steps, settings.steps)
        self.add_frame(run, None, to_uint8(request.x_T)[0], np.zeros((28, 28), np.uint8))
        yield *self.frame_outputs(run, 0), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        stride = math.ceil(settings.steps / MAX_STREAMED_FRAMES)  # long ddpm runs: every stride-th frame is sent
        for step in request_steps(self.pipe.model, self.pipe.schedule, request):
            self.add_frame(run, step.t, to_uint8(step.x)[0], to_uint8(step.x0)[0])
            if step.index % stride == 0 and step.index < step.total:  # the last frame comes with the results
                yield *self.frame_outputs(run, len(run) - 1), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        x_t, x0, counter = self.frame_outputs(run, len(run) - 1)
        scrubber = gr.Slider(minimum=0, maximum=len(run) - 1, value=len(run) - 1, step=1, interactive=True)
        yield (x_t, x0, counter + "\n\n" + recognition_summary(run), confidence_figure(run),
               str(write_gif(run, self.gif_folder)), scrubber, run)

    def add_frame(self, run: ReverseRun, t: int | None, x_t: np.ndarray, x0: np.ndarray) -> None:
        confidence_x_t, confidence_x0 = self.confidence(np.stack([x_t, x0]), [run.digit] * 2)
        run.t.append(t)
        run.x_t.append(x_t)
        run.x0.append(x0)
        run.confidence_x_t.append(float(confidence_x_t))
        run.confidence_x0.append(float(confidence_x0) if len(run) > 1 else 0.0)

    @staticmethod
    def frame_outputs(run: ReverseRun, i: int) -> tuple:
        return enlarge(run.x_t[i], FRAME_SCALE), enlarge(run.x0[i], FRAME_SCALE), frame_counter(run, i)

    def show_frame(self, frame, run: ReverseRun | None):
        """Frame `frame` of this session's last run (x_t, x̂0, counter)."""
        if not isinstance(run, ReverseRun):
            raise invalid("run the reverse process first: there are no frames to show yet")
        return self.frame_outputs(run, whole_number("frame", frame, 0, len(run) - 1))

    # --- Forward noising tab -------------------------------------------------------------------------
    def shipped_choices(self) -> list[tuple[str, int]]:
        return [(f"#{i}: a {y} (MNIST test image {k})", i)
                for i, (y, k) in enumerate(zip(self.shipped_labels, self.shipped_test_index))]

    def example_upload(self) -> np.ndarray:
        """The upload box's example (and /load_image's default): a shipped digit, dark on white, 5× larger."""
        return 255 - enlarge(self.shipped_images[20], 5)

    def shipped_digit(self, index):
        """x₀ = one of the real MNIST test digits shipped with the repo (index 0 … 29), enlarged."""
        i = whole_number("shipped digit index", index, 0, len(self.shipped_images) - 1)
        return enlarge(self.shipped_images[i], FRAME_SCALE)

    def load_image(self, image):
        """x₀ from an uploaded image: any size, light or dark background, shrunk to 28×28, enlarged."""
        return enlarge(digit_from_file(uploaded_path(image, "image")), FRAME_SCALE)

    def load_drawing(self, drawing):
        """x₀ from the sketchpad (its composite picture), shrunk to 28×28, enlarged."""
        composite = drawing.get("composite") if isinstance(drawing, dict) else None
        return enlarge(digit_from_file(uploaded_path(composite, "drawing")), FRAME_SCALE)

    def forward_noising(self, image, schedule, beta_start, beta_end, num_steps, t, seed):
        """x_t at the chosen t (with ᾱ_t), a strip of x_t at evenly spaced t, and the schedules plot."""
        x0, sched, t, noise = self.forward_inputs(image, schedule, beta_start, beta_end, num_steps, t, seed)
        strip_t = np.linspace(0, sched.num_steps, STRIP_FRAMES).round().astype(int)
        strip = to_uint8(sched.q_sample(x0.expand(len(strip_t), -1, -1, -1), torch.from_numpy(strip_t),
                                        noise.expand(len(strip_t), -1, -1, -1)))
        x_t, formula = self.noisy(x0, sched, t, noise)
        return (x_t, formula, [(enlarge(img, SAMPLE_SCALE), f"t = {s}") for img, s in zip(strip, strip_t)],
                schedule_plot(sched.name, sched.num_steps, sched.beta_start, sched.beta_end))

    def noise_at_t(self, image, schedule, beta_start, beta_end, num_steps, t, seed):
        """Only x_t at the chosen t, with ᾱ_t: what the t slider asks for (fast)."""
        return self.noisy(*self.forward_inputs(image, schedule, beta_start, beta_end, num_steps, t, seed))

    def forward_inputs(self, image, schedule, beta_start, beta_end, num_steps, t, seed):
        """Checked inputs: x₀ float [1,1,28,28] in [-1,1], the schedule, t, and the noise ε [1,1,28,28]."""
        x0 = to_model_range(digit_from_file(uploaded_path(image, "x₀")))
        name = one_of("schedule", schedule, SCHEDULE_NAMES)
        beta_start = real_number("β start", beta_start, 0, 1)
        beta_end = real_number("β end", beta_end, 0, 1)
        sched = noise_schedule(name, whole_number("T", num_steps, 1, MAX_FORWARD_T), beta_start, beta_end)
        t = whole_number(f"t (with T = {sched.num_steps})", t, 0, sched.num_steps)
        generator = torch.Generator().manual_seed(whole_number("seed", seed, 0, MAX_SEED))
        return x0, sched, t, torch.randn((1, 1, 28, 28), generator=generator)

    @staticmethod
    def noisy(x0: torch.Tensor, sched: NoiseSchedule, t: int, noise: torch.Tensor) -> tuple[np.ndarray, str]:
        x_t = to_uint8(sched.q_sample(x0, torch.tensor([t]), noise))[0]
        alpha_bar = sched.alpha_bar[t].item()
        formula = (f"**t = {t}:** ᾱ_t = {alpha_bar:.4f}, so x_t = {math.sqrt(alpha_bar):.3f}·x₀ + "
                   f"{math.sqrt(1 - alpha_bar):.3f}·ε  (ε is fixed by the seed, so moving t fades x₀ into "
                   f"the same noise)")
        return enlarge(x_t, FRAME_SCALE), formula

    def fit_steps_slider(self, sampler, steps):
        """Set the steps slider's maximum for the chosen sampler (UI only)."""
        high = self.max_steps(sampler if sampler in SAMPLERS else engine.DEFAULT_SAMPLER)
        return gr.Slider(maximum=high, value=min(steps, high) if is_number(steps) else engine.DEFAULT_STEPS)

    @staticmethod
    def fit_samples_slider(digit, samples):
        """'all ten' allows 10 samples per digit, a single digit 100 (UI only)."""
        high = MAX_SAMPLES // 10 if digit == ALL_DIGITS else MAX_SAMPLES
        return gr.Slider(maximum=high, value=min(samples, high) if is_number(samples) else 1)

    def fit_t_slider(self, num_steps, t):
        """Keep the t slider inside 0 … T when T changes (UI only)."""
        num_steps = num_steps if is_number(num_steps) and 1 <= num_steps <= MAX_FORWARD_T else MAX_FORWARD_T
        value = min(t, num_steps) if is_number(t) else num_steps // 2
        return gr.Slider(maximum=int(num_steps), value=int(value))


def pixel_diversity(images: np.ndarray, samples_per_digit: int) -> float | None:
    """Mean per-pixel standard deviation (pixels in 0..1) across the samples of each digit; None if
    there is one sample per digit. images: uint8 [D·S,28,28], digit-major (S samples per digit)."""
    if samples_per_digit < 2:
        return None
    per_digit = (images.astype(np.float32) / 255).reshape(-1, samples_per_digit, 28 * 28)
    return float(per_digit.std(axis=1).mean())


# ======================================================================================================
# The page
# ======================================================================================================

@dataclass
class SamplingControls:
    digit: gr.Radio
    guidance: gr.Slider
    sampler: gr.Dropdown
    steps: gr.Slider
    seed: gr.Number
    dice: gr.Button


def sampling_controls(classroom: Classroom, digit_choices: list, default_digit: str) -> SamplingControls:
    """Digit, w, sampler, steps and seed (with a 🎲 button), defaulting to the engine's evaluated defaults."""
    sampler = engine.DEFAULT_SAMPLER
    digit = gr.Radio(digit_choices, value=default_digit, label="Digit")
    guidance = gr.Slider(0, MAX_GUIDANCE, value=engine.DEFAULT_GUIDANCE, step=0.1, label="Guidance scale w",
                         info="0 = no guidance; larger = more like the digit, less varied")
    sampler_menu = gr.Dropdown(list(SAMPLERS), value=sampler, label="Sampler",
                               info="ddpm: the course's sampler (fresh noise every step, many steps); "
                                    "ddim, dpm++2m: deterministic, few steps; dpm++2m-sde: few steps "
                                    "with fresh noise, the most varied, realistic digits")
    steps = gr.Slider(1, classroom.max_steps(sampler), value=engine.DEFAULT_STEPS, step=1, label="Steps",
                      info=f"network evaluations: up to {MAX_STEPS} (ddim, dpm++2m, dpm++2m-sde) or "
                           f"T = {classroom.pipe.num_train_steps} (ddpm)")
    with gr.Row():
        seed = gr.Number(0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed", scale=3,
                         info="same seed + same settings = same images")
        dice = gr.Button("🎲 Random seed", scale=1)
    sampler_menu.change(classroom.fit_steps_slider, [sampler_menu, steps], steps, api_visibility="private",
                        queue=False)
    return SamplingControls(digit, guidance, sampler_menu, steps, seed, dice)


RANDOM_SEED_JS = f"() => Math.floor(Math.random() * {MAX_SEED})"


def generate_tab(classroom: Classroom) -> gr.Markdown:
    """The Generate tab; returns its CLIP status line (the page's timer updates it)."""
    gr.Markdown(f"Ask the model for digits. Each sample is scored by a trusted digit classifier and, when it "
                f"is available, by CLIP. Limits per request: {MAX_SAMPLES} samples, samples × steps ≤ {MAX_WORK:,}.")
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            digit_choices = [("all ten", ALL_DIGITS)] + [(str(d), str(d)) for d in range(10)]
            c = sampling_controls(classroom, digit_choices, ALL_DIGITS)
            samples = gr.Slider(1, MAX_SAMPLES // 10, value=1, step=1, label="Samples per digit",
                                info=f"at most {MAX_SAMPLES} samples in all")
            generate_button = gr.Button("Generate", variant="primary")
            with gr.Accordion("CLIP quality prompts (one per line)", open=False):
                prompts = gr.Textbox("\n".join(DEFAULT_QUALITY_PROMPTS), lines=3, show_label=False,
                                     max_lines=MAX_PROMPTS)
            with gr.Accordion("Guidance sweep: the same seed at several w", open=True):
                sweep_values = gr.Textbox(DEFAULT_SWEEP, label=f"Values of w (up to {MAX_SWEEP_VALUES})")
                sweep_button = gr.Button("Run guidance sweep")
        with gr.Column(scale=2):
            clip_status = gr.Markdown(clip_status_text(classroom.clip.status()), elem_id="clip-status")
            cards = gr.HTML(label="Samples and their scores", elem_id="sample-cards")
            with gr.Accordion("Where CLIP and the classifier disagree", open=True):
                agreement_text = gr.Markdown(elem_id="agreement")
                disagreements = gr.HTML(elem_id="disagreements")
            with gr.Accordion("Scores table", open=False):
                table = gr.Dataframe(show_label=False, elem_id="scores", max_height=400)
            with gr.Accordion("All samples in one image (to download)", open=False):
                grid = gr.Image(show_label=False, format="png", interactive=False, elem_classes="pixels",
                                elem_id="samples-grid")
            sweep_plot = gr.Plot(label="Guidance sweep", show_label=False, format="png", elem_id="sweep-plot")
            sweep_table = gr.Markdown(elem_id="sweep-table")

    c.digit.change(classroom.fit_samples_slider, [c.digit, samples], samples, api_visibility="private", queue=False)
    inputs = [c.digit, samples, c.guidance, c.sampler, c.steps, c.seed, prompts]
    outputs = [cards, grid, table, agreement_text, disagreements]
    sampling = {"concurrency_id": "sampling", "concurrency_limit": SAMPLING_CONCURRENCY, "preprocess": False}
    generate_button.click(classroom.generate, inputs, outputs, api_name="generate", **sampling)
    c.dice.click(None, js=RANDOM_SEED_JS, outputs=c.seed, api_visibility="private").then(
        classroom.generate, inputs, outputs, api_visibility="private", **sampling)
    sweep_button.click(classroom.guidance_sweep, [c.digit, samples, sweep_values, c.sampler, c.steps, c.seed],
                       [sweep_plot, sweep_table], api_name="guidance_sweep", **sampling)
    return clip_status


def reverse_tab(classroom: Classroom) -> None:
    gr.Markdown("Watch the model turn pure noise x_T into a digit. Left: x_t, what the sampler holds at step t. "
                "Right: x̂₀, the network's current guess of the clean digit. At what point can you first "
                "recognise the digit?")
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            c = sampling_controls(classroom, [str(d) for d in range(10)], DEFAULT_REVERSE_DIGIT)
            run_button = gr.Button("Run the reverse process", variant="primary")
        with gr.Column(scale=2):
            counter = gr.Markdown("### t = – / –", elem_id="step-counter")
            with gr.Row():
                x_t = gr.Image(label="x_t (noisy image)", format="png", height=240, interactive=False,
                               elem_classes="pixels", elem_id="x-t")
                x0 = gr.Image(label="x̂₀ (model's guess of the clean digit)", format="png", height=240,
                              interactive=False, elem_classes="pixels", elem_id="x0-hat")
            scrubber = gr.Slider(0, 1, value=0, step=1, label="Frame (scrub after a run)", interactive=False,
                                 elem_id="scrubber")
            plot = gr.Plot(label="Classifier confidence across steps", show_label=False, format="png",
                           elem_id="confidence-plot")
            gif = gr.File(label="Download the animation (GIF)", elem_id="gif")
    run_state = gr.State(None)
    inputs = [c.digit, c.guidance, c.sampler, c.steps, c.seed]
    outputs = [x_t, x0, counter, plot, gif, scrubber, run_state]
    animation = {"concurrency_id": "animation", "concurrency_limit": ANIMATION_CONCURRENCY, "preprocess": False,
                 "show_progress": "minimal"}
    run_button.click(classroom.reverse_process, inputs, outputs, api_name="reverse_process", **animation)
    c.dice.click(None, js=RANDOM_SEED_JS, outputs=c.seed, api_visibility="private").then(
        classroom.reverse_process, inputs, outputs, api_visibility="private", **animation)
    scrubber.input(classroom.show_frame, [scrubber, run_state], [x_t, x0, counter], api_name="show_frame",
                   trigger_mode="always_last", show_progress="hidden", **INSTANT)


def forward_tab(classroom: Classroom) -> dict:
    """The Forward noising tab; returns the forward-noising event's arguments (the page load runs it too)."""
    gr.Markdown("Forward diffusion adds Gaussian noise: $x_t = \\sqrt{\\bar\\alpha_t}\\,x_0 + "
                "\\sqrt{1-\\bar\\alpha_t}\\,\\varepsilon$. Pick a real MNIST test digit, upload an image or draw "
                "one, then choose the β schedule and move t.", latex_delimiters=LATEX)
    model_schedule = classroom.pipe.schedule
    with gr.Row():
        with gr.Column(scale=2):
            shipped = gr.Dropdown(classroom.shipped_choices(), value=0, label="A real MNIST test digit")
            with gr.Row():
                upload = gr.Image(classroom.example_upload(), label="…or upload an image (any size; dark ink on "
                                  "white is inverted)", type="filepath", sources=["upload", "clipboard"],
                                  format="png", height=200, elem_id="upload")
                with gr.Column():
                    sketch = gr.Sketchpad(value=np.zeros((280, 280, 3), np.uint8), canvas_size=(280, 280),
                                          fixed_canvas=True, label="…or draw one (white on black)", format="png",
                                          brush=gr.Brush(default_size=22, colors=["#ffffff"], color_mode="fixed"),
                                          layers=False, elem_id="sketch")
                    use_drawing = gr.Button("Use my drawing")
        x0 = gr.Image(classroom.shipped_digit(0), label="x₀ (28×28)", type="filepath", format="png", height=240,
                      interactive=False, elem_classes="pixels", elem_id="x0", scale=1)
    with gr.Row():
        schedule = gr.Radio(list(SCHEDULE_NAMES), value=model_schedule.name, label="β schedule")
        beta_start = gr.Number(model_schedule.beta_start, label="β start", step=1e-4, minimum=0, maximum=1)
        beta_end = gr.Number(model_schedule.beta_end, label="β end", step=1e-3, minimum=0, maximum=1)
        num_steps = gr.Slider(1, MAX_FORWARD_T, value=model_schedule.num_steps, step=1, label="T (steps)")
        seed = gr.Number(0, precision=0, minimum=0, maximum=MAX_SEED, label="Noise seed")
    t = gr.Slider(0, model_schedule.num_steps, value=model_schedule.num_steps // 4, step=1, label="t",
                  elem_id="t-slider")
    with gr.Row():
        with gr.Column(scale=1):
            x_t = gr.Image(label="x_t", format="png", height=240, interactive=False, elem_classes="pixels",
                           elem_id="forward-x-t")
            formula = gr.Markdown(elem_id="forward-formula")
        plot = gr.Image(label="ᾱ(t) and log-SNR for every schedule (matplotlib)", show_label=False, format="png",
                        interactive=False, elem_id="schedule-plot", scale=2)
    strip = gr.Gallery(label="x_t at evenly spaced t", columns=STRIP_FRAMES, height=170, format="png",
                       object_fit="contain",
                       elem_classes="pixels", elem_id="strip")

    light = {"preprocess": False, "concurrency_id": "light", "concurrency_limit": LIGHT_CONCURRENCY}
    shipped.input(classroom.shipped_digit, shipped, x0, api_name="shipped_digit", **light)
    upload.upload(classroom.load_image, upload, x0, api_name="load_image", **light)
    use_drawing.click(classroom.load_drawing, sketch, x0, api_name="load_drawing", **light)
    settings = [x0, schedule, beta_start, beta_end, num_steps, t, seed]
    forward = {"fn": classroom.forward_noising, "inputs": settings, "outputs": [x_t, formula, strip, plot], **light}
    x0.change(api_name="forward_noising", **forward)
    for control in (schedule, beta_start, beta_end, seed):
        control.change(api_visibility="private", **forward)
    num_steps.release(classroom.fit_t_slider, [num_steps, t], t, api_visibility="private", queue=False).then(
        api_visibility="private", **forward)
    t.input(classroom.noise_at_t, settings, [x_t, formula], api_name="noise_at_t", trigger_mode="always_last",
            show_progress="hidden", **INSTANT)
    return forward


def guidance_interval_text() -> str:
    """Where the default guidance applies, if not at every step."""
    lo, hi = engine.DEFAULT_GUIDANCE_INTERVAL
    if (lo, hi) == EVERY_STEP:
        return ""
    return (f", applied only while {lo:g} ≤ t/T ≤ {hi:g} (the digit's identity is settled at large t; "
            f"guiding the fine detail at small t only makes digits more alike, and skipping it saves "
            f"a network evaluation per step)")


def guidance_head_markdown(architecture: dict) -> str:
    """How the shipped network guides in one pass, if it has a guidance head."""
    if not architecture.get("guidance_head"):
        return ""
    return """
**This app's network does it in one pass.** Its last layer has a second output channel, the *guidance
head*, which predicts the guidance direction $\\varepsilon(x_t, c) - \\varepsilon(x_t, \\varnothing)$ directly, so
$$\\varepsilon = \\varepsilon(x_t, c) + w\\,\\big(\\varepsilon(x_t, c) - \\varepsilon(x_t, \\varnothing)\\big),$$
the same formula rearranged, costs one evaluation per step for any $w$: half the work, which is what lets a
whole classroom sample at once on two CPU cores. It was *distilled*: a copy of an ordinary network (the
teacher) learned to output the teacher's $\\varepsilon(x_t, c)$ and the teacher's difference of its two predictions.
"""


def how_it_works_markdown(classroom: Classroom) -> str:
    """The explanations, with the shipped model's real numbers read from its checkpoint config."""
    cfg, sched = classroom.pipe.config, classroom.pipe.schedule
    arch, training = cfg["architecture"], cfg.get("training", {})
    beta = "" if sched.name == "cosine" else f", β from {sched.beta_start:g} to {sched.beta_end:g}"
    trained = (f"Training so far: {training.get('epochs', '?')} epoch(s), {training.get('steps', '?'):,} optimiser "
               f"steps of batch {training.get('batch_size', '?')}, labels dropped with probability "
               f"{training.get('label_dropout', '?')}, on {training.get('data', 'MNIST')}."
               if isinstance(training.get("steps"), int) else "")
    teacher = training.get("distilled_from", {}).get("training", {})
    if teacher:
        trained = (f"It was first trained for {teacher.get('epochs', '?')} epoch(s) as an ordinary network (the "
                   f"*teacher*), then distilled for {training.get('epochs', '?')} epoch(s) into this one, which "
                   f"also has a guidance head (see *Classifier-free guidance* below).")
    accuracy = classroom.classifier_config.get("test_accuracy")
    classifier_accuracy = f" ({accuracy:.2%} accurate on the MNIST test set)" if accuracy else ""
    return f"""
## The model in this app
A class-conditional U-Net with **{count_parameters(classroom.pipe.model):,} parameters**, trained with
**T = {sched.num_steps}** noise steps on a **{sched.name}** schedule{beta}. {trained}
Channels per level {arch['channels']}, self-attention with {arch['attention_heads']} heads at 7×7,
embedding width {arch['embedding_dim']}. The app's defaults: sampler **{engine.DEFAULT_SAMPLER}**,
**{engine.DEFAULT_STEPS} steps**, guidance **w = {engine.DEFAULT_GUIDANCE:g}**{guidance_interval_text()}.
The scores come from a separate digit classifier{classifier_accuracy}.

## Forward diffusion
Each forward step adds a little Gaussian noise: $q(x_t \\mid x_{{t-1}}) = \\mathcal{{N}}(\\sqrt{{1-\\beta_t}}\\,x_{{t-1}}, \\beta_t I)$.
Steps compose, so we can jump straight from a clean digit $x_0$ to any $t$:
$$x_t = \\sqrt{{\\bar\\alpha_t}}\\,x_0 + \\sqrt{{1-\\bar\\alpha_t}}\\,\\varepsilon, \\qquad \\bar\\alpha_t = \\prod_{{s\\le t}} (1-\\beta_s), \\quad \\varepsilon \\sim \\mathcal{{N}}(0, I).$$
$\\bar\\alpha_t$ is how much of the digit survives; the schedule (the β's) decides how fast it fades.
Training picks a random $t$, makes $x_t$ this way and teaches the network to tell which noise $\\varepsilon$ was added.

## The U-Net and its skip connections
```
x_t 28×28 ─ down 28×28 ─ down 14×14 ─ down 7×7 + attention
               │             │             │
               └─(concat)──► up 28×28 ◄── up 14×14 ◄── up 7×7 + attention ─► ε̂ 28×28
```
The network squeezes the image down to 7×7 to see the whole digit at once, then expands it again.
**Skip connections** hand each upward level the features of the matching downward level, so fine detail
(the edges of strokes) does not have to survive the trip through 7×7.

## The time embedding
One network denoises every $t$, so it must be told how noisy its input is: $t$ becomes a vector of sines
and cosines of different frequencies (like a transformer's positions), then a small MLP; every residual
block receives it as a per-channel scale and shift.

## Class conditioning
The digit label, as a one-hot vector through a linear layer, is added to the time embedding. During
training the label is sometimes dropped (the *context mask* zeroes the one-hot vector), so the same
network learns both $\\varepsilon(x_t, c)$ for a digit $c$ and $\\varepsilon(x_t, \\varnothing)$ for "any digit".

## Classifier-free guidance
At sampling time both predictions are mixed with the guidance scale $w$:
$$\\varepsilon = (1+w)\\,\\varepsilon(x_t, c) - w\\,\\varepsilon(x_t, \\varnothing).$$
$w = 0$ is the plain conditional model; larger $w$ pushes further away from "any digit" towards "this
digit": samples become cleaner and more typical (fidelity) but more alike (less diversity). Try the
guidance sweep on the Generate tab. Guidance costs two network evaluations per step instead of one.
{guidance_head_markdown(arch)}

## Sampling
The reverse process starts from pure noise $x_T$ and, step by step, uses the predicted noise to move
towards a clean digit; the network's current guess of the clean digit is
$\\hat x_0 = (x_t - \\sqrt{{1-\\bar\\alpha_t}}\\,\\varepsilon) / \\sqrt{{\\bar\\alpha_t}}$. **ddpm** adds fresh noise at every
step (it needs many steps); **ddim** (with η = 0) and **dpm++2m** are deterministic and need far fewer.
**dpm++2m-sde** is the same fast solver with fresh noise at every step: the noise washes out small
errors of the network that a deterministic run carries to the end, so its digits vary as much as real
handwriting does (measured: a much lower Fréchet distance to real test digits at the same steps).
"""


def build_app(classroom: Classroom) -> gr.Blocks:
    """The four tabs wired to `classroom`'s endpoints."""
    with gr.Blocks(title="MNIST Diffusion Classroom", delete_cache=(1800, 3600)) as demo:
        gr.Markdown("# MNIST Diffusion Classroom\nA class-conditional diffusion model (DDPM) drawing handwritten "
                    "digits, step by step.")
        with gr.Tab("Generate", id="generate"):
            clip_status = generate_tab(classroom)
        with gr.Tab("Reverse process", id="reverse"):
            reverse_tab(classroom)
        with gr.Tab("Forward noising", id="forward"):
            forward = forward_tab(classroom)
        with gr.Tab("How it works", id="how"):
            gr.Markdown(how_it_works_markdown(classroom), latex_delimiters=LATEX)
        timer = gr.Timer(2.0, active=True)
        timer.tick(classroom.poll_clip_status, None, [clip_status, timer], api_visibility="private", queue=False)
        demo.load(classroom.clip_status, None, clip_status, api_name="clip_status", queue=False)
        demo.load(api_visibility="private", **forward)
    return demo


# ======================================================================================================
# Start
# ======================================================================================================

def load_classroom(unet: str, classifier: str, clip_model: str | None, clip_pretrained: str | None) -> Classroom:
    """Load the checkpoints (CLIP only later, in the background, when first needed)."""
    pipe = engine.load_pipeline(unet)
    return Classroom(pipe, load_classifier(classifier), LazyClip(clip_model, clip_pretrained), read_config(classifier))


def server_address(host: str | None, port: int | None) -> tuple[str, int]:
    """--host/--port, else $GRADIO_SERVER_NAME and $GRADIO_SERVER_PORT or $PORT (a Space sets them),
    else 127.0.0.1:7860."""
    host = host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    port = port or int(os.environ.get("GRADIO_SERVER_PORT") or os.environ.get("PORT") or 7860)
    return host, port


def launch(demo: gr.Blocks, host: str, port: int, **kwargs):
    """Queue with limits (sized for 2 vCPUs) and serve. Returns what gr.Blocks.launch returns."""
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=2)
    # run_history=False: gradio's run history re-reads and re-writes up to 100 past runs in the browser's
    # localStorage on every event, so each slider move got slower as a lesson went on (measured: 45 ms
    # round trips became 100 ms after ten reverse-process runs). The app has its own frame slider.
    return demo.launch(server_name=host, server_port=port, theme=THEME, css=CSS, max_file_size=MAX_FILE_SIZE,
                       max_threads=SAMPLING_CONCURRENCY + 24, state_session_capacity=1000, ssr_mode=False,
                       show_error=True, run_history=False, **kwargs)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="MNIST Diffusion Classroom (Gradio app)")
    p.add_argument("--host", help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: $GRADIO_SERVER_PORT, $PORT or 7860)")
    p.add_argument("--unet", default=os.environ.get("DIFFUSION_UNET", str(engine.DEFAULT_UNET)),
                   help="diffusion checkpoint stem (default: $DIFFUSION_UNET or checkpoints/unet)")
    p.add_argument("--classifier", default=os.environ.get("DIFFUSION_CLASSIFIER", str(DEFAULT_CLASSIFIER)),
                   help="classifier checkpoint stem (default: $DIFFUSION_CLASSIFIER or checkpoints/classifier)")
    p.add_argument("--clip-model", help="open_clip architecture (default: $DIFFUSION_CLIP_MODEL or ViT-B-32)")
    p.add_argument("--clip-pretrained", help="pretrained tag or local weights file "
                                             "(default: $DIFFUSION_CLIP_PRETRAINED or laion2b_s34b_b79k)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    classroom = load_classroom(args.unet, args.classifier, args.clip_model, args.clip_pretrained)
    launch(build_app(classroom), *server_address(args.host, args.port))


if __name__ == "__main__":
    main()
