"""The Lab tab: experiments that answer the course's questions with this model's real numbers.

    When is a digit recognisable?   /recognisability   many runs per digit, judged by the noise-aware classifier
    The context mask                /conditioning      the same seed with and without its label; ε(x,c), ε(x,∅)
    Why gradual?                    /why_gradual       one seed after 1, 2, 5, 12, 50 and 500 ddpm steps
    Which digits are hardest?       /difficulty        accuracy, confidence and confusions per digit
    Limitations                                        what this model cannot do, with numbers

The experiments run on the classroom's shared network server; the maths is the engine's
(`diffusion.recognisability`, `diffusion.sampling.guidance_components`, `diffusion.evaluate`).
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import gradio as gr
import numpy as np
import pandas as pd
import torch

from diffusion.checkpoints import CHECKPOINT_DIR
from diffusion.data import to_uint8
from diffusion.evaluate import difficulty_by_digit
from diffusion.model import NUM_CLASSES, count_parameters
from diffusion.recognisability import RECOGNISABLE_PROBABILITY, run_experiment
from diffusion.requests import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS
from diffusion.sampling import SAMPLERS, guidance_components

from .classroom import Classroom, ResultCache, yield_to_the_network
from .rendering import enlarge, new_figure
from .settings import (ALL_DIGITS, EPS_IMAGE_RANGE, PROGRESS_INTERVAL_S, LAB_CONCURRENCY, LAB_FONT_PT, LAB_IMAGE_SCALE, LAB_RESULTS_KEPT,
                       MAX_DIFFICULTY_SAMPLES, MAX_GUIDANCE, MAX_RECOGNISABILITY_SEEDS, MAX_RECOGNISABILITY_WORK,
                       MAX_WORK, MIN_GUIDANCE, RECOGNISABILITY_BUDGET_S, RECOGNISABILITY_DEFAULTS, SAMPLING_CONCURRENCY, WHY_GRADUAL_STEPS)
from .validation import checked_whole_number

PIXELS = 28 * 28


def signed_image(values: torch.Tensor, limit: float) -> np.ndarray:
    """A signed map [1,28,28] (noise, or a difference) as uint8 [28,28]: -limit black, 0 grey, +limit white."""
    return ((values.float().clamp(-limit, limit) / limit + 1) * 127.5).round().to(torch.uint8).reshape(28, 28).numpy()


def big(image: np.ndarray) -> np.ndarray:
    """28×28 -> 280×280 crisp pixels (legible on a projector)."""
    return enlarge(image, LAB_IMAGE_SCALE)


def recognisability_figure(result, sampler: str) -> "object":
    """Each run's first recognisable point (% of the process) as a dot per digit, the median as a bar."""
    fig = new_figure(10, 4.6)
    ax = fig.subplots()
    percent = result.percent
    for row in result.per_digit():
        d = row["digit"]
        mine = percent[(result.digits == d) & ~np.isnan(percent)]
        jitter = (np.arange(len(mine)) % 5 - 2) * 0.06
        ax.plot(d + jitter, mine, "o", color="tab:blue", alpha=0.55, markersize=6)
        if len(mine):
            ax.plot([d - 0.3, d + 0.3], [np.median(mine)] * 2, color="tab:red", linewidth=3)
    ax.set_xticks(range(10))
    ax.set_xlim(-0.6, 9.6)
    ax.set_ylim(0, 100)
    ax.set_xlabel("digit", fontsize=LAB_FONT_PT)
    ax.set_ylabel("% of the reverse process", fontsize=LAB_FONT_PT)
    ax.set_title(f"When each run first becomes recognisable ({sampler}, {result.num_inference_steps} steps); "
                 f"red = median", fontsize=LAB_FONT_PT)
    ax.tick_params(labelsize=LAB_FONT_PT)
    ax.grid(alpha=0.3)
    return fig


def recognisability_table(result) -> pd.DataFrame:
    S, T = result.num_inference_steps, result.num_train_steps
    rows = []
    for r in result.per_digit():
        if not r["recognised"]:
            rows.append({"digit": r["digit"], "recognised": f"0 of {r['runs']}"})
            continue
        rows.append({"digit": r["digit"], "median": f"{r['median_percent']:.0f} %",
                     "mean ± sd": f"{r['mean_percent']:.0f} ± {r['std_percent']:.0f} %",
                     "earliest – latest": f"{r['min_percent']:.0f} – {r['max_percent']:.0f} %",
                     "median step": f"{r['median_step']:.0f} of {S}", "median t": f"{r['median_t']:.0f} of {T}",
                     "recognised": f"{r['recognised']} of {r['runs']}"})
    return pd.DataFrame(rows)


def confusion_figure(confusion: np.ndarray, judge: str) -> "object":
    """Rows: the digit asked for; columns: the digit the judge saw; counts in the cells."""
    fig = new_figure(6.4, 5.6)
    ax = fig.subplots()
    share = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(confusion):
        if n:
            ax.text(j, i, str(n), ha="center", va="center", fontsize=LAB_FONT_PT - 1,
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.tick_params(labelsize=LAB_FONT_PT)
    ax.set_xlabel(f"what the {judge} saw", fontsize=LAB_FONT_PT)
    ax.set_ylabel("digit asked for", fontsize=LAB_FONT_PT)
    ax.set_title(f"Confusion matrix ({judge})", fontsize=LAB_FONT_PT)
    return fig


def shipped_evaluation() -> dict | None:
    """The shipped evaluation's row for the app's defaults (2,000 samples), if it is there."""
    try:
        results = json.loads((CHECKPOINT_DIR / "evaluation.json").read_text())["results"]
    except (OSError, ValueError, KeyError):
        return None
    return next((r for r in results if (r["sampler"], r["steps"], r["guidance"]) ==
                 (DEFAULT_SAMPLER, DEFAULT_STEPS, DEFAULT_GUIDANCE)), None)


def training_data_text() -> str:
    """The Classification Accuracy Score of the shipped model (checkpoints/cas.json), as the page states it."""
    try:
        cas = json.loads((CHECKPOINT_DIR / "cas.json").read_text())
        results = {r["data"]: r for r in cas["results"]}
        generated, real, both = results["generated"], results["real"], results["real+generated"]
    except (OSError, ValueError, KeyError):
        return "Not measured yet: run `python -m diffusion.evaluate --cas 10000`."
    settings = cas["generation"]
    return (f"A real use of a diffusion model is making **training data**. Is it good enough? Train a fresh copy of "
            f"the digit classifier on generated digits only, then grade it on the 10,000 real MNIST test digits "
            f"(the *Classification Accuracy Score*, Ravuri & Vinyals 2019).\n\n"
            f"| trained on | images | accuracy on real test digits |\n|---|---|---|\n"
            f"| generated ({settings['sampler']}, {settings['steps']} steps, w = {settings['guidance']:g}) | "
            f"{generated['images']:,} | {generated['test_accuracy']:.2%} |\n"
            f"| real MNIST training digits | {real['images']:,} | {real['test_accuracy']:.2%} |\n"
            f"| both | {both['images']:,} | {both['test_accuracy']:.2%} |\n\n"
            f"Generated digits teach almost as much as real ones ({100 * (real['test_accuracy'] - generated['test_accuracy']):.2f} "
            f"points short), and adding them to real digits does not hurt.")


def default_recognisability_seeds(cpu) -> int:
    """Runs per digit that /recognisability makes by default: the course's 20 where this CPU's network does the
    ten digits' full ddpm runs within RECOGNISABILITY_BUDGET_S, fewer where it is slower (`cpu`: the app's
    `cpu_speed.CpuChoice`; None, a GPU: the course's)."""
    course = RECOGNISABILITY_DEFAULTS["seeds_per_digit"]
    if cpu is None:
        return course
    runs = cpu.runs_within(RECOGNISABILITY_BUDGET_S, NUM_CLASSES * RECOGNISABILITY_DEFAULTS["steps"])
    return max(1, min(course, runs))


def seeds_note(cpu, seeds: int) -> str:
    """One sentence: how many runs the measurement makes here by default, and what the course's setting costs."""
    course = RECOGNISABILITY_DEFAULTS["seeds_per_digit"]
    if cpu is None:
        return f"The default is the course's setting: ddpm, 500 steps, {course} runs per digit."
    evaluations = NUM_CLASSES * RECOGNISABILITY_DEFAULTS["steps"]
    text = (f"On this machine the default is {seeds} run(s) per digit (ddpm, 500 steps: about "
            f"{cpu.seconds(seeds * evaluations):.0f} s of network work at most)")
    if seeds < course:
        text += f"; the course's {course} would take about {cpu.seconds(course * evaluations):.0f} s"
    return text + "."


class LabTab:
    """Handlers (their parameter names are the API's) and the layout of the Lab tab."""

    def __init__(self, classroom: Classroom):
        self.classroom = classroom
        self.results = ResultCache(LAB_RESULTS_KEPT)
        self.default_seeds = default_recognisability_seeds(classroom.cpu)

    # --- When is a digit recognisable? ------------------------------------------------------------------
    def recognisability(self, digit=ALL_DIGITS, seeds_per_digit=RECOGNISABILITY_DEFAULTS["seeds_per_digit"],
                        sampler=RECOGNISABILITY_DEFAULTS["sampler"], steps=RECOGNISABILITY_DEFAULTS["steps"],
                        guidance=DEFAULT_GUIDANCE, seed=0, request: gr.Request = None, progress=gr.Progress()):
        """Run `seeds_per_digit` samples of each asked digit (one batch, different noise per sample) and find
        when each first becomes recognisable: a figure of every run, a table per digit, and a summary."""
        checked_whole_number("seeds per digit", seeds_per_digit, 1, MAX_RECOGNISABILITY_SEEDS)
        checked = self.classroom.sampling_request(digit, seeds_per_digit, guidance, sampler, steps, seed,
                                                  max_samples=10 * MAX_RECOGNISABILITY_SEEDS,
                                                  max_work=MAX_RECOGNISABILITY_WORK)
        # one run per digit: each stops as soon as all its samples are recognisable
        per_digit = [self.classroom.sampling_request(str(d), seeds_per_digit, guidance, sampler, steps, seed,
                                                     allow_all=False, max_samples=MAX_RECOGNISABILITY_SEEDS,
                                                     max_work=MAX_RECOGNISABILITY_WORK)
                     for d in sorted(set(checked.digits))]

        def measure():
            yield_to_the_network()
            done, most = [0], len(per_digit) * (checked.num_inference_steps + 1)
            with self.classroom.sampling_slots.slot(request), ThreadPoolExecutor(1) as waiter:
                future = waiter.submit(run_experiment, self.classroom.server, per_digit,
                                       self.classroom.noisy_probabilities, self.classroom.pipe.num_train_steps,
                                       lambda: done.__setitem__(0, done[0] + 1))
                while not future.done():  # the progress bar counts steps; runs that finish early skip the rest
                    progress(done[0] / most, desc="denoising and judging")
                    time.sleep(PROGRESS_INTERVAL_S)
                return future.result()

        result = self.results.get_or_compute(("recognisability", checked), measure)
        per_digit = [r for r in result.per_digit() if r["recognised"]]
        summary = (f"**{sum(r['recognised'] for r in result.per_digit())} of {len(result.digits)} runs** became "
                   f"recognisable (the noise-aware classifier's p(asked digit | x_t) ≥ {RECOGNISABLE_PROBABILITY:g}).")
        if per_digit:
            early = min(per_digit, key=lambda r: r["median_percent"])
            late = max(per_digit, key=lambda r: r["median_percent"])
            summary += (f" Earliest: the {early['digit']} (median {early['median_percent']:.0f} % of the process, "
                        f"step {early['median_step']:.0f} of {result.num_inference_steps}); latest: the "
                        f"{late['digit']} ({late['median_percent']:.0f} %, step {late['median_step']:.0f}). "
                        f"Compare with the step you saw yourself in the Reverse-process tab.")
        return recognisability_figure(result, checked.sampler), recognisability_table(result), summary

    # --- The context mask ---------------------------------------------------------------------------------
    def conditioning(self, digit=3, guidance=2.0, sampler=DEFAULT_SAMPLER, steps=DEFAULT_STEPS, seed=0,
                     shown_step=None, request: gr.Request = None):
        """The same seed sampled with the label (at w) and with no label (w = -1: ε(x,∅) alone), and what the
        network predicts at `shown_step` of the labelled run (default: half-way): x_t, ε(x,c), ε(x,∅) and the
        guidance direction ε(x,c) − ε(x,∅)."""
        labelled = self.classroom.sampling_request(digit, 1, guidance, sampler, steps, seed, allow_all=False)
        unlabelled = labelled.with_guidance(-1.0)
        S = labelled.num_inference_steps
        k = S // 2 if shown_step is None else checked_whole_number("shown step", shown_step, 0, S - 1)
        yield_to_the_network()
        with self.classroom.sampling_slots.slot(request):
            handle = self.classroom.server.submit(labelled, stream=True)
            other = self.classroom.server.submit(unlabelled)
            steps_of_run = list(handle.steps())
            without_label = other.result()
        at = steps_of_run[k]
        label = torch.tensor(labelled.digits)
        eps_c, eps_u, direction = guidance_components(self.classroom.pipe.model, at.x.to(self.classroom.server.device),
                                                      torch.tensor([at.t]), label.to(self.classroom.server.device))
        eps_c, eps_u, direction = eps_c.cpu(), eps_u.cpu(), direction.cpu()
        with_label = to_uint8(steps_of_run[-1].x)
        judged = self.classroom.classifier_scores(np.concatenate([with_label, without_label]), [label.item()] * 2)
        lo, hi = EPS_IMAGE_RANGE
        scale = max(float(direction.abs().max()), 1e-6)
        d = label.item()
        caption = (f"At step {k} of {S} (t = {at.t} of {self.classroom.pipe.num_train_steps}): "
                   f"‖ε(x,c)‖ = {eps_c.norm():.1f}, ‖ε(x,∅)‖ = {eps_u.norm():.1f}, ‖ε(x,c) − ε(x,∅)‖ = "
                   f"{direction.norm():.2f}. The label changes the prediction only a little, and w multiplies that "
                   f"little: ε = (1+w)·ε(x,c) − w·ε(x,∅) = ε(x,c) + w·(ε(x,c) − ε(x,∅)).\n\n"
                   f"With the label (w = {labelled.guidance:g}) the classifier sees a "
                   f"**{judged.predicted_digit[0]}** (p({d}) = {judged.confidence_requested[0]:.0%}); with no label "
                   f"(∅, the context mask on) a **{judged.predicted_digit[1]}** (p({d}) = "
                   f"{judged.confidence_requested[1]:.0%}): the same noise, a digit of the model's own choosing.")
        return (big(with_label[0]), big(without_label[0]), big(to_uint8(at.x)[0]),
                big(signed_image(eps_c, hi)), big(signed_image(eps_u, hi)), big(signed_image(direction, scale)),
                caption + f"\n\nε images: black = {lo:g}, grey = 0, white = {hi:g}; the direction: ±{scale:.2f}.")

    # --- Why gradual? --------------------------------------------------------------------------------------
    def why_gradual(self, digit=3, guidance=DEFAULT_GUIDANCE, seed=0, request: gr.Request = None):
        """One seed, denoised by ddpm in 1, 2, 5, 12, 50 and 500 steps: the finished samples side by side, and
        the classifier's verdict on each."""
        runs = [self.classroom.sampling_request(digit, 1, guidance, "ddpm", n, seed, allow_all=False)
                for n in WHY_GRADUAL_STEPS]
        yield_to_the_network()
        with self.classroom.sampling_slots.slot(request):
            images = np.concatenate(self.classroom.server.run(runs))
        d = runs[0].digits[0]
        scores = self.classroom.classifier_scores(images, [d] * len(images))
        fig = new_figure(2.2 * len(images), 3.0)
        for ax, n, image, seen, p in zip(fig.subplots(1, len(images)), WHY_GRADUAL_STEPS, images,
                                         scores.predicted_digit, scores.confidence_requested):
            ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(f"{n} step{'s' if n > 1 else ''}", fontsize=LAB_FONT_PT + 2)
            ax.set_xlabel(f"sees {seen}; p({d}) = {p:.0%}", fontsize=LAB_FONT_PT)
            ax.set_xticks([])
            ax.set_yticks([])
        table = "| ddpm steps | the classifier sees | p(asked digit) |\n|---|---|---|\n" + "\n".join(
            f"| {n} | {seen} | {p:.1%} |" for n, seen, p in zip(WHY_GRADUAL_STEPS, scores.predicted_digit,
                                                                  scores.confidence_requested))
        return fig, table + ("\n\nIn one step the network can only guess the *average* digit that fits the noise: "
                             "a blur. Each small step commits to a little more detail and then asks again, so "
                             "errors are corrected while the picture is still rough.")

    # --- Which digits are hardest? -------------------------------------------------------------------------
    def difficulty(self, samples_per_digit=10, guidance=DEFAULT_GUIDANCE, sampler=DEFAULT_SAMPLER,
                   steps=DEFAULT_STEPS, seed=0, request: gr.Request = None):
        """`samples_per_digit` samples of every digit, judged by the classifier (and CLIP when it is loaded):
        accuracy and confidence per digit, and what each digit is mistaken for."""
        checked_whole_number("samples per digit", samples_per_digit, 1, MAX_DIFFICULTY_SAMPLES // 10)
        checked = self.classroom.sampling_request(ALL_DIGITS, samples_per_digit, guidance, sampler, steps, seed,
                                                  max_samples=MAX_DIFFICULTY_SAMPLES,
                                                  max_work=MAX_WORK)
        yield_to_the_network()
        with self.classroom.sampling_slots.slot(request):
            [images] = self.classroom.server.run([checked])
        asked = np.asarray(checked.digits)
        scores = self.classroom.score(images, asked, ())
        judges = [("classifier", difficulty_by_digit(scores.classifier.probs, asked))]
        if scores.clip is not None:
            judges.append(("CLIP", difficulty_by_digit(scores.clip.digit_probs, asked)))
        table = pd.DataFrame({"digit": range(10)})
        for name, stats in judges:
            mistaken = [f"{digit} ({count})" if count else "–" for digit, count in
                        (m or (None, 0) for m in stats["mistaken_for"])]
            table[f"{name}: accuracy"] = [f"{a:.0%}" for a in stats["accuracy"]]
            table[f"{name}: mean p(asked)"] = [f"{c:.3f}" for c in stats["confidence"]]
            table[f"{name}: most often mistaken for"] = mistaken
        stats = judges[0][1]
        hardest = int(np.argmin(stats["confidence"]))
        shipped = shipped_evaluation()
        note = (f"Hardest here: the **{hardest}** (accuracy {stats['accuracy'][hardest]:.0%}, mean confidence "
                f"{stats['confidence'][hardest]:.3f}) on {len(asked)} samples.")
        if shipped:
            worst = shipped["worst_digit"]
            note += (f" The shipped evaluation ({shipped['num_samples']:,} samples at these defaults) found the "
                     f"**{worst}** hardest ({shipped['per_digit_accuracy'][worst]:.1%} accuracy; all digits "
                     f"{shipped['accuracy']:.1%}).")
        note += " " + (scores.clip_note or "CLIP's verdicts are beside the classifier's.") if scores.clip is None else ""
        return confusion_figure(stats["confusion"], "classifier"), table, note

    # --- Limitations ---------------------------------------------------------------------------------------
    def limitations_text(self) -> str:
        """What this model cannot do, with numbers measured when the app starts."""
        noise = torch.randn(200, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        clean = self.classroom.classifier.predict_proba(noise)
        aware = self.classroom.noise_classifier.predict_proba(noise, self.classroom.pipe.num_train_steps)
        favourite = int(np.bincount(clean.argmax(1).numpy(), minlength=10).argmax())
        pipe = self.classroom.pipe
        params = count_parameters(pipe.model)
        return (f"- **28 × 28 pixels, grey only.** {PIXELS} numbers per image: no colour, no fine detail; the network "
                f"({params:,} parameters) never sees anything larger.\n"
                f"- **One dataset.** It learnt from MNIST's 60,000 training digits alone; it can draw nothing else, and "
                f"its digits look like 1990s US census and school handwriting.\n"
                f"- **CLIP is a weak judge of digits.** CLIP learnt from photos with captions, not 28×28 digits, so "
                f"its zero-shot digit is often wrong; the Generate tab shows where it and the trusted classifier "
                f"disagree (Difficulty below counts it when CLIP is loaded).\n"
                f"- **What the classifier cannot see.** It was trained on clean digits only, so it answers even for "
                f"pure noise: on 200 noise images its mean top probability is {clean.max(1).values.mean():.2f}, and it "
                f"says **{favourite}** most often. The noise-aware classifier, trained on noisy digits, gives "
                f"{aware.max(1).values.mean():.2f} (uniform would be 0.10). Neither judges style or realism: that is "
                f"what the Fréchet distance in the shipped evaluation measures.\n"
                f"- **No control over style.** The only inputs are the digit, w and the seed: no stroke thickness, "
                f"slant or size. To get them, the model would need them as conditions, and data labelled with them.")

    # --- Layout -------------------------------------------------------------------------------------------
    def layout(self) -> None:
        """Build the tab inside the current gr.Tab."""
        lab = {"concurrency_id": "lab", "concurrency_limit": LAB_CONCURRENCY, "preprocess": False}
        light = {"concurrency_id": "sampling", "concurrency_limit": SAMPLING_CONCURRENCY, "preprocess": False}
        digits = [("all ten", ALL_DIGITS)] + [(str(d), str(d)) for d in range(10)]
        guidance = dict(minimum=MIN_GUIDANCE, maximum=MAX_GUIDANCE, step=0.1, label="Guidance scale w")

        with gr.Accordion("When does a digit become recognisable? Does it depend on the digit?", open=True):
            gr.Markdown(f"Many runs of each digit, each judged at every step by the **noise-aware classifier**, which "
                        f"reads the noisy x_t *and* its t (on pure noise it says ≈ 10 % for every digit). A run is "
                        f"recognisable from the first step where p(asked digit) ≥ {RECOGNISABLE_PROBABILITY:g}. "
                        + seeds_note(self.classroom.cpu, self.default_seeds))
            with gr.Row():
                r_digit = gr.Dropdown(digits, value=ALL_DIGITS, label="Digit")
                r_seeds = gr.Slider(1, MAX_RECOGNISABILITY_SEEDS, value=self.default_seeds,
                                    step=1, label="Runs per digit", elem_id="recognisability-seeds")
                r_sampler = gr.Dropdown(list(SAMPLERS), value=RECOGNISABILITY_DEFAULTS["sampler"], label="Sampler")
                r_steps = gr.Number(RECOGNISABILITY_DEFAULTS["steps"], precision=0, label="Steps",
                                    elem_id="recognisability-steps")
                r_w = gr.Slider(value=DEFAULT_GUIDANCE, **guidance)
                r_seed = gr.Number(0, precision=0, label="Seed")
            r_button = gr.Button("Measure recognisability", variant="primary")
            r_summary = gr.Markdown(elem_id="recognisability-summary")
            r_plot = gr.Plot(show_label=False, format="png", elem_id="recognisability-plot")
            r_table = gr.Dataframe(show_label=False, elem_id="recognisability-table")
        r_button.click(self.recognisability, [r_digit, r_seeds, r_sampler, r_steps, r_w, r_seed],
                       [r_plot, r_table, r_summary], api_name="recognisability", **lab)

        with gr.Accordion("The context mask: with and without the label", open=True):
            gr.Markdown("One network learnt both ε(x,c) (with the label) and ε(x,∅) (the label masked out). Guidance "
                        "mixes them: ε = (1+w)·ε(x,c) − w·ε(x,∅). At **w = −1** only ε(x,∅) is left: the model draws "
                        "*a* digit of its own choosing. Below −1 it steers away from the label.")
            with gr.Row():
                c_digit = gr.Dropdown([str(d) for d in range(10)], value="3", label="Digit")
                c_w = gr.Slider(value=2.0, **guidance)
                c_seed = gr.Number(0, precision=0, label="Seed")
                c_step = gr.Slider(0, DEFAULT_STEPS - 1, value=DEFAULT_STEPS // 2, step=1,
                                   label=f"Show the network's prediction at step (of {DEFAULT_STEPS})")
            c_button = gr.Button("Sample with and without the label", variant="primary")
            with gr.Row():
                c_with = gr.Image(format="png", label="with the label (w as set)", elem_classes="pixels", elem_id="with-label")
                c_without = gr.Image(format="png", label="no label: ∅ (w = −1)", elem_classes="pixels", elem_id="without-label")
                c_x = gr.Image(format="png", label="x_t at that step", elem_classes="pixels")
            with gr.Row():
                c_eps_c = gr.Image(format="png", label="ε(x,c): noise predicted with the label", elem_classes="pixels")
                c_eps_u = gr.Image(format="png", label="ε(x,∅): noise predicted without it", elem_classes="pixels")
                c_dir = gr.Image(format="png", label="ε(x,c) − ε(x,∅): the guidance direction", elem_classes="pixels",
                                 elem_id="guidance-direction")
            c_caption = gr.Markdown(elem_id="conditioning-caption")
        c_inputs = [c_digit, c_w, gr.State(DEFAULT_SAMPLER), gr.State(DEFAULT_STEPS), c_seed, c_step]
        c_button.click(self.conditioning, c_inputs, [c_with, c_without, c_x, c_eps_c, c_eps_u, c_dir, c_caption],
                       api_name="conditioning", **light)

        with gr.Accordion("Why is noise removed gradually?", open=True):
            with gr.Row():
                g_digit = gr.Dropdown([str(d) for d in range(10)], value="3", label="Digit")
                g_w = gr.Slider(value=DEFAULT_GUIDANCE, **guidance)
                g_seed = gr.Number(0, precision=0, label="Seed")
            g_button = gr.Button(f"Denoise in {', '.join(map(str, WHY_GRADUAL_STEPS))} steps", variant="primary")
            g_plot = gr.Plot(show_label=False, format="png", elem_id="why-gradual-plot")
            g_table = gr.Markdown(elem_id="why-gradual-table")
        g_button.click(self.why_gradual, [g_digit, g_w, g_seed], [g_plot, g_table], api_name="why_gradual", **light)

        with gr.Accordion("Which digits are hardest, and what are they mistaken for?", open=True):
            with gr.Row():
                d_samples = gr.Slider(1, MAX_DIFFICULTY_SAMPLES // 10, value=10, step=1, label="Samples per digit",
                                      elem_id="difficulty-samples")
                d_w = gr.Slider(value=DEFAULT_GUIDANCE, **guidance)
                d_seed = gr.Number(0, precision=0, label="Seed")
            d_button = gr.Button("Sample every digit and judge", variant="primary")
            d_note = gr.Markdown(elem_id="difficulty-note")
            with gr.Row():
                d_plot = gr.Plot(show_label=False, format="png", elem_id="confusion-plot")
                d_table = gr.Dataframe(show_label=False, elem_id="difficulty-table")
        d_inputs = [d_samples, d_w, gr.State(DEFAULT_SAMPLER), gr.State(DEFAULT_STEPS), d_seed]
        d_button.click(self.difficulty, d_inputs, [d_plot, d_table, d_note], api_name="difficulty", **light)

        with gr.Accordion("Generated digits as training data", open=True):
            gr.Markdown(training_data_text(), elem_id="training-data")

        with gr.Accordion("Limitations of this model", open=True):
            gr.Markdown(self.limitations_text(), elem_id="limitations")

