"""The Training tab: how the loss fell and the samples improved while the network learned (the reference
run's snapshots), and what the loss means: one real digit's true noise ε beside the network's guess ε̂.
Endpoints: /training_snapshots, /noise_prediction. The numbers all come from `diffusion.training_history`."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import gradio as gr
import numpy as np
import pandas as pd
import torch

from diffusion.data import grid_image, to_model_range
from diffusion.training_history import (NOISE_RANGE, SNAPSHOT_DIR, image_to_uint8, list_snapshots, load_snapshot,
                                        loss_by_t, loss_history, noise_prediction, noise_to_uint8, read_evaluation)

from .classroom import Classroom, ResultCache
from .rendering import BLUE, GREEN, ORANGE, enlarge, swatch
from .settings import (DEFAULT_NOISE_T, LOSS_BY_T_POINTS, MAX_SEED, NOISE_IMAGE_SCALE, SNAPSHOT_CACHE,
                       SNAPSHOT_GRID_CACHE, SNAPSHOT_GRID_SCALE, TRAINING_CONCURRENCY)
from .validation import checked_whole_number, invalid

FINAL = "final"  # the app's own network, in /noise_prediction's snapshot parameter
NOISE_LABEL = f"(black −{NOISE_RANGE:g} … white +{NOISE_RANGE:g})"
# Plot colours, named in the page's own text (a plot's legend would be too small to read on a projector)
TRAINING, HELD_OUT = "training loss", "held-out loss"               # the loss curves' series
CHOSEN, APP, CHOSEN_T = "chosen network", "the app's network", "your t"  # the loss-against-t plot's series


class TrainingTab:
    """Handlers (their parameter names are the API's) and the layout of the Training tab."""

    def __init__(self, classroom: Classroom):
        self.classroom = classroom
        self.snapshots = list_snapshots()
        self.evaluation = read_evaluation()  # {} when evaluation.json is missing: "not evaluated"
        self.x0s = to_model_range(classroom.shipped_images)
        self.labels = torch.as_tensor(classroom.shipped_labels)
        # The tab's network work runs on one thread of its own with one torch thread: the other core stays with
        # the network server, and a busy machine cannot make torch's two threads wait for each other.
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="training",
                                         initializer=torch.set_num_threads, initargs=(1,))
        self.network = ResultCache(SNAPSHOT_CACHE).memoised(lambda i: load_snapshot(self.snapshots[i]))
        self.grid = ResultCache(SNAPSHOT_GRID_CACHE).memoised(self.draw_grid)
        self.curve = ResultCache(SNAPSHOT_CACHE + 1).memoised(self.measure_loss_by_t)

    # --- samples along the way ---------------------------------------------------------------------------
    def draw_grid(self, index: int, seed: int) -> np.ndarray:
        """Digits 0…9 from snapshot `index` at the app's defaults: uint8 [62,152], 2 rows of 5."""
        return grid_image(self.network(index).generate(list(range(10)), seed=seed), nrow=5)

    def training_snapshots(self, snapshot=0, seed=0, request: gr.Request = None):
        """Digits 0…9 drawn by snapshot `snapshot` (0 = the earliest … the end of training) with the same seed
        for every snapshot, at the app's default sampler, steps and w; and the classifier's verdict on 500."""
        if not self.snapshots:
            raise invalid(f"this app has no training snapshots ({SNAPSHOT_DIR} is empty)")
        index = checked_whole_number("snapshot", snapshot, 0, len(self.snapshots) - 1)
        seed = checked_whole_number("seed", seed, 0, MAX_SEED)
        with self.classroom.view_slots.slot(request):
            grid = self.worker.submit(self.grid, index, seed).result()
        return enlarge(grid, SNAPSHOT_GRID_SCALE), self.snapshot_caption(index)

    def snapshot_caption(self, index: int) -> str:
        s = self.snapshots[index]
        text = (f"### Snapshot {index}: step {s.step}, epoch {s.epoch:.2f}\n"
                f"Loss on 2,000 held-out digits: **{s.heldout_loss:.4f}**. ")
        scores = self.evaluation.get("snapshots", {}).get(s.step)
        if scores is None:
            return text + ("Classifier accuracy and Fréchet distance: *not evaluated* (run "
                           "`python -m diffusion.training_history --data-dir <MNIST folder>`).")
        return text + (f"Of {scores['samples']} samples, the classifier read **{scores['accuracy']:.1%}** as the "
                       f"digit asked for; Fréchet distance **{scores['fd']:.2f}** (real digits: "
                       f"{self.evaluation['floor']['fd']:.2f}; lower = closer to real handwriting).")

    def evaluation_table(self) -> str:
        """Every snapshot's held-out loss, accuracy and FD as a markdown table (the app's network last)."""
        rows = ["| snapshot | step | epoch | held-out loss | accuracy | Fréchet distance |",
                "|---|---|---|---|---|---|"]
        for i, s in enumerate(self.snapshots):
            e = self.evaluation.get("snapshots", {}).get(s.step)
            scores = f"{e['accuracy']:.1%} | {e['fd']:.2f}" if e else "not evaluated | not evaluated"
            rows.append(f"| {i} | {s.step} | {s.epoch:.2f} | {s.heldout_loss:.4f} | {scores} |")
        final = self.evaluation.get("final")
        if final:
            rows.append(f"| the app's network | | teacher {final['teacher_epochs']} + {final['distillation_epochs']} "
                        f"distilled | | {final['accuracy']:.1%} | {final['fd']:.2f} |")
        return "\n".join(rows)

    # --- what the loss means -----------------------------------------------------------------------------
    def chosen_network(self, snapshot) -> str | int:
        """'final' (the app's network) or a snapshot index, from a number or its digits as text."""
        if snapshot == FINAL:
            return FINAL
        if isinstance(snapshot, str) and snapshot.isascii() and snapshot.isdigit() and len(snapshot) <= 3:
            snapshot = int(snapshot)
        return checked_whole_number(f"snapshot ('{FINAL}' or a snapshot number)", snapshot, 0,
                                    len(self.snapshots) - 1)

    def pipe(self, key: str | int):
        return self.classroom.pipe if key == FINAL else self.network(key)

    def measure_loss_by_t(self, key: str | int) -> pd.DataFrame:
        """Rows (t, loss, curve): the mean loss of the 30 shipped digits at LOSS_BY_T_POINTS time steps."""
        pipe = self.pipe(key)
        ts = np.unique(np.linspace(1, pipe.num_train_steps, LOSS_BY_T_POINTS).round().astype(int))
        losses = loss_by_t(pipe.model, pipe.schedule, self.x0s, self.labels, ts, seed=0)
        return pd.DataFrame({"t": ts, "loss": losses})

    def network_name(self, key: str | int) -> str:
        return "the app's network" if key == FINAL else f"snapshot {key} (step {self.snapshots[key].step})"

    def noise_prediction(self, digit_index=0, t=DEFAULT_NOISE_T, seed=0, snapshot=FINAL):
        """One training example: real digit `digit_index` (0…29, the shipped MNIST test digits) noised to
        time step t with noise from `seed`; the network (`snapshot`: 'final', the app's own, or a snapshot
        number) predicts the noise. Returns x₀, x_t, ε, ε̂, ε̂ − ε, the loss as text, and loss against t."""
        if isinstance(digit_index, str) and digit_index.isascii() and digit_index.isdigit() and len(digit_index) <= 3:
            digit_index = int(digit_index)
        index = checked_whole_number("digit index", digit_index, 0, len(self.x0s) - 1)
        key = self.chosen_network(snapshot)
        T = self.classroom.pipe.num_train_steps  # the snapshots' T too (the same schedule)
        t = checked_whole_number(f"t (1 to T = {T})", t, 1, T)
        seed = checked_whole_number("seed", seed, 0, MAX_SEED)
        return self.worker.submit(self.explain_loss, index, t, seed, key).result()

    def explain_loss(self, index: int, t: int, seed: int, key: str | int) -> tuple:
        pipe = self.pipe(key)
        label = int(self.labels[index])
        r = noise_prediction(pipe.model, pipe.schedule, self.x0s[index], label, t, seed)
        curves = [self.curve(key).assign(curve=CHOSEN)]
        if key != FINAL:  # the app's network beside it, for comparison
            curves.append(self.curve(FINAL).assign(curve=APP))
        top = 1.05 * max(c["loss"].max() for c in curves)
        curves.append(pd.DataFrame({"t": [t, t], "loss": [0.0, top], "curve": CHOSEN_T}))
        text = (f"### The loss of this example: mean((ε̂ − ε)²) = **{r.mse:.4f}**\n"
                f"**Network:** {self.network_name(key)}. It saw x_t = {r.signal:.3f}·x₀ + {r.noise_scale:.3f}·ε "
                f"(a {label} at t = {t}) and guessed the noise ε̂. The loss is the mean over the 784 pixels of "
                f"(ε̂ − ε)². Guessing ε̂ = 0 would score mean(ε²) = {r.baseline:.3f}; training lowers the loss "
                f"averaged over many digits, t and ε.\n\n**The plot below:** {swatch(BLUE, self.network_name(key))}"
                + (f" · {swatch(GREEN, APP)}" if key != FINAL else "") + f" · {swatch(ORANGE, f'your t = {t}')}")
        pictures = [enlarge(image_to_uint8(x), NOISE_IMAGE_SCALE) for x in (r.x0, r.x_t)]
        pictures += [enlarge(noise_to_uint8(e), NOISE_IMAGE_SCALE) for e in (r.eps, r.eps_hat, r.error)]
        return (*pictures, text, pd.concat(curves, ignore_index=True))

    def network_choices(self) -> list[tuple[str, str]]:
        return [("the app's network (final)", FINAL)] + [
            (f"snapshot {i}: step {s.step} (epoch {s.epoch:.2f})", str(i)) for i, s in enumerate(self.snapshots)]

    # --- the page ----------------------------------------------------------------------------------------
    def loss_table(self) -> pd.DataFrame:
        """Rows (step, loss, curve) of the reference run's training loss (smoothed) and held-out loss."""
        h = loss_history()
        return pd.concat([pd.DataFrame({"step": h.steps, "loss": h.smoothed, "curve": TRAINING}),
                          pd.DataFrame({"step": h.heldout_steps, "loss": h.heldout, "curve": HELD_OUT})],
                         ignore_index=True)

    def layout(self) -> None:
        """Build the tab inside the current gr.Tab."""
        gr.Markdown("## How did the network learn?\nTraining shows the network a real digit x₀ noised to a random "
                    "time step t, x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε, and asks it for the noise ε. Its **loss** is the mean "
                    "of (ε̂ − ε)² over the pixels: 1 means it knows nothing (guessing ε̂ = 0 scores mean(ε²) ≈ 1), "
                    "0 would be perfect. Below: the reference training run (5 epochs of 469 steps, 128 digits each, "
                    "the app's network size).")
        gr.Markdown(f"{swatch(BLUE, TRAINING)}: the mean of 10 steps' batches, smoothed over 50 steps (each batch "
                    f"has other digits, t and ε, so it jumps about) · {swatch(ORANGE, HELD_OUT)}: the network's loss "
                    "on 2,000 test digits it never trained on")
        losses = self.loss_table()
        plot = {"x": "step", "y": "loss", "color": "curve", "height": 320, "x_title": "training step",
                "y_title": "loss = mean((ε̂ − ε)²)", "elem_classes": "projector-plot", "colors_in_legend": [],
                "color_map": {TRAINING: BLUE, HELD_OUT: ORANGE}}
        with gr.Row():
            gr.LinePlot(losses, title="The whole run", y_lim=[0, 1.05], elem_id="loss-curve", **plot)
            gr.LinePlot(losses[losses["step"] >= 200], title="Zoomed in: after the first 200 steps",
                        elem_id="loss-curve-zoom", **plot)
        gr.Markdown("## Samples along the way\nMove the slider: the same seed and digits 0…9 from each snapshot, "
                    "drawn with the app's default sampler, steps and w.")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                last = max(len(self.snapshots) - 1, 0)
                epochs = " · ".join(f"{i}: epoch {s.epoch:.2f}" for i, s in enumerate(self.snapshots))
                snapshot = gr.Slider(0, max(last, 1), value=0, step=1, label="Snapshot (0 = earliest)", info=epochs,
                                     interactive=bool(self.snapshots), elem_id="snapshot-slider")
                grid_seed = gr.Number(0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
                caption = gr.Markdown(elem_id="snapshot-caption")
            grid = gr.Image(label="Digits 0…9 drawn by this snapshot", format="png", height=260, interactive=False,
                            elem_classes="pixels", elem_id="snapshot-grid", scale=2)
        with gr.Accordion("Every snapshot's numbers", open=False):
            gr.Markdown(self.evaluation_table())
        gr.Markdown("## What the loss means\nPick a real digit and a time step t: the network sees x_t and guesses "
                    f"the noise ε̂. ε, ε̂ and their difference ε̂ − ε share one grey scale: black −{NOISE_RANGE:g}, "
                    f"grey 0, white +{NOISE_RANGE:g} (99.7 % of the noise lies within ±3).")
        with gr.Row():
            digit = gr.Dropdown([(f"#{i}: a {y}", i) for i, y in enumerate(self.classroom.shipped_labels)], value=0,
                                label="A real MNIST test digit")
            t = gr.Slider(1, self.classroom.pipe.num_train_steps, value=DEFAULT_NOISE_T, step=1, label="t",
                          elem_id="noise-t")
            noise_seed = gr.Number(0, precision=0, minimum=0, maximum=MAX_SEED, label="Noise seed")
            network = gr.Dropdown(self.network_choices(), value=FINAL, label="Network")
        image = {"format": "png", "height": 270, "interactive": False, "elem_classes": "pixels", "min_width": 250}
        with gr.Row():
            outputs = [gr.Image(label="x₀, the real digit", elem_id="noise-x0", **image),
                       gr.Image(label="x_t, what the network sees", elem_id="noise-x-t", **image)]
            loss_text = gr.Markdown(elem_id="noise-loss")
        with gr.Row():
            outputs += [gr.Image(label=f"ε: true noise {NOISE_LABEL}", elem_id="noise-eps", **image),
                        gr.Image(label=f"ε̂: its guess {NOISE_LABEL}", elem_id="noise-eps-hat", **image),
                        gr.Image(label=f"ε̂ − ε: error {NOISE_LABEL}", elem_id="noise-error", **image)]
        outputs.append(loss_text)
        outputs.append(gr.LinePlot(x="t", y="loss", color="curve", height=320, x_title="time step t",
                                   y_title="mean loss of 30 real digits", elem_classes="projector-plot",
                                   title="Which noise levels are hardest?", elem_id="loss-by-t", colors_in_legend=[],
                                   color_map={CHOSEN: BLUE, APP: GREEN, CHOSEN_T: ORANGE}))
        common = {"preprocess": False, "concurrency_id": "training", "concurrency_limit": TRAINING_CONCURRENCY,
                  "trigger_mode": "always_last"}
        # no triggers: on page load, and whenever an input changes
        gr.on(None, self.training_snapshots, [snapshot, grid_seed], [grid, caption], api_name="training_snapshots",
              show_progress="minimal", **common)
        gr.on(None, self.noise_prediction, [digit, t, noise_seed, network], outputs, api_name="noise_prediction",
              show_progress="hidden", **common)
