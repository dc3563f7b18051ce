"""The Generate tab: samples of the asked digits, each scored by the classifier and CLIP, and a
guidance sweep (the same seed at several w).  Endpoints: /generate, /guidance_sweep, /clip_status."""
from __future__ import annotations

import html

import gradio as gr
import numpy as np

from diffusion.data import grid_image
from diffusion.digit_images import pixel_diversity
from diffusion.recognisability import RECOGNISABLE_PROBABILITY
from diffusion.requests import DEFAULT_GUIDE, GUIDES, is_number
from diffusion.scoring import DEFAULT_QUALITY_PROMPTS

from .classroom import Classroom, yield_to_the_network
from .controls import (RANDOM_SEED_JS, fit_samples_slider, samples_cap, samples_info, sampling_controls,
                       sweep_samples_cap)
from .rendering import agreement_panel, enlarge, sample_cards, scores_table, sweep_figure
from .settings import (ALL_DIGITS, DEFAULT_SWEEP, GRID_SCALE, MAX_GUIDANCE, MAX_PROMPTS, MAX_SAMPLES, MAX_SWEEP_VALUES,
                       MAX_WORK, MIN_GUIDANCE, SAMPLING_CONCURRENCY, UI_ONLY)
from .validation import guidance_values, invalid, one_of, quality_prompts


def clip_status_text(status: str) -> str:
    """One short line for students; when CLIP is unavailable, why (and what a teacher can do) in a closed
    <details> under it."""
    if status == "ready":
        return "**CLIP:** ready. Its zero-shot scores appear beside each sample."
    if status.startswith("unavailable"):
        why = html.escape(status.removeprefix("unavailable: "))
        return ("**CLIP unavailable**: samples are scored by the digit classifier alone; everything else works.\n\n"
                f'<details class="clip-details"><summary>Why, and how to turn CLIP on (for the teacher)</summary>'
                f"{why}</details>")
    return f"**CLIP:** {status}… (it loads in the background; the classifier's scores work meanwhile)"


# What empty panels say before the first click (and after a failed one)
CARDS_PROMPT = ('<p class="empty-prompt">Press <b>Generate</b>: each sample appears here beside the digit classifier\'s '
                "verdict, with a summary line (accuracy, mean confidence, diversity) above them.</p>")
CARDS_FAILED = ('<p class="empty-prompt stale">The last request failed (see the message): its old results were '
                "cleared so they are not mistaken for this request's.</p>")
SWEEP_PROMPT = ("*Press **Run guidance sweep** to see the same seed drawn at each w above, one row per w, with "
                "each row's fidelity and diversity.*")
SWEEP_FAILED = "*The last sweep failed (see the message): its old results were cleared.*"
COMPACT_JS = "(on) => { document.querySelector('#sample-cards')?.classList.toggle('compact', !!on); }"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def sweep_refusal(digits: int, steps: int, values_of_w: int) -> str:
    """Why a sweep is refused although it would draw only 1 sample per digit, and what to reduce."""
    work = digits * steps * values_of_w
    per_digit = " per digit × 10 digits" if digits > 1 else ""
    fixes = []
    if MAX_WORK // (digits * values_of_w) >= 1:
        fixes.append(f"fewer steps (at most {MAX_WORK // (digits * values_of_w)} with {plural(values_of_w, 'value')} "
                     f"of w)")
    if values_of_w > 1 and MAX_WORK // (digits * steps) >= 1:
        fixes.append(f"fewer values of w (at most {MAX_WORK // (digits * steps)} with {steps} steps)")
    if digits > 1:
        fixes.append("one digit instead of all ten")
    return (f"too much work for one request, even with 1 sample per digit: a guidance sweep draws every sample "
            f"once per value of w, and 1 sample{per_digit} × {steps} steps × {plural(values_of_w, 'value')} of w = "
            f"{work:,} network evaluations (at most {MAX_WORK:,}). Reduce it: " + ", or ".join(fixes) + ".")


def fewer_samples_note(asked: int, drawn: int, steps: int, values_of_w: int, digits: int) -> str:
    """Markdown above the sweep's table when it drew fewer samples per digit than asked ('' when not)."""
    if drawn >= asked:
        return ""
    each = " (× 10 digits)" if digits > 1 else ""
    return (f"**Drawn with {plural(drawn, 'sample')} per digit, not the {asked} asked**: a sweep draws every sample "
            f"once per value of w, and samples{each} × {steps} steps × {plural(values_of_w, 'value')} of w must stay "
            f"within {MAX_WORK:,} network evaluations ({asked} per digit would need "
            f"{asked * digits * steps * values_of_w:,}). Fewer steps or values of w leave room for more samples.\n\n")


def sweep_plan_text(digit, samples_per_digit, steps, guidance_values_text) -> str:
    """The line under the sweep's values of w: how many samples per digit it will draw with these settings."""
    try:
        values = len(guidance_values(guidance_values_text))
    except gr.Error:
        return f"values of w from {MIN_GUIDANCE:g} to {MAX_GUIDANCE:g}, separated by commas"
    fit = sweep_samples_cap(digit, steps, values, MAX_WORK)
    if fit < 1:
        return ("too much work even with 1 sample per digit: use fewer steps or values of w"
                + (", or one digit" if digit == ALL_DIGITS else ""))
    asked = int(samples_per_digit) if is_number(samples_per_digit) and samples_per_digit >= 1 else 1
    drawn = min(fit, asked)
    why = (f" (not {asked}: samples × steps × values of w ≤ {MAX_WORK:,})" if drawn < asked
           else f" (samples × steps × values of w ≤ {MAX_WORK:,})")
    return f"each sample is drawn once per w: {plural(drawn, 'sample')} per digit{why}"


def summary_line(digits, classifier, images, samples_per_digit: int) -> str:
    """HTML: how many samples the classifier reads as the asked digit, its mean confidence, and their diversity."""
    right = int(np.sum(np.asarray(classifier.predicted_digit) == np.asarray(digits)))
    n = len(digits)
    spread = pixel_diversity(images, samples_per_digit)
    diversity = (f"diversity {spread:.3f}" if spread is not None
                 else "diversity – (needs 2 or more samples per digit)")
    return (f'<p class="sample-summary"><b>{n} sample{"s" if n != 1 else ""}: the classifier reads {right} of {n} '
            f"as the asked digit ({right / n:.0%})</b> · mean confidence {np.mean(classifier.confidence_requested):.0%}"
            f" · {diversity}</p>")


class GenerateTab:
    """Handlers (their parameter names are the API's) and the layout of the Generate tab."""

    def __init__(self, classroom: Classroom):
        self.classroom = classroom

    def generate(self, digit, samples_per_digit, guidance, sampler, steps, seed, quality_prompts_text,
                 guide=DEFAULT_GUIDE, request: gr.Request = None):
        """The samples with their scores beside them (HTML), all samples in one image (sample i at row i // 10,
        column i % 10 of a grid of 28×28 cells with 2-pixel gaps, enlarged ×2), the scores table, and the
        agreement panel (text, and the samples where CLIP and the classifier disagree). guide: how to steer
        toward the digit, one of GUIDES (classifier-free: w alone, today's behaviour)."""
        checked = self.classroom.sampling_request(digit, samples_per_digit, guidance, sampler, steps, seed)
        prompts = quality_prompts(quality_prompts_text)
        guide = one_of("guide", guide, GUIDES)
        yield_to_the_network()
        with self.classroom.sampling_slots.slot(request):
            images = self.classroom.sample_with_guide(checked, guide)
        digits = list(checked.digits)
        scores = self.classroom.score(images, digits, prompts)
        cards = (summary_line(digits, scores.classifier, images, checked.samples_per_digit)
                 + sample_cards(images, digits, scores.classifier, scores.clip, range(len(images))))
        note = scores.clip_note
        if scores.clip is None and self.classroom.clip.status().startswith("unavailable"):
            note = "CLIP is unavailable on this machine (why: the note at the top of this panel)."
        agreement_text, disagreements = agreement_panel(images, digits, scores.classifier, scores.clip, note)
        grid = enlarge(grid_image(images, nrow=10), GRID_SCALE)
        return cards, grid, scores_table(digits, scores.classifier, scores.clip), agreement_text, disagreements

    def guidance_sweep(self, digit, samples_per_digit, guidance_values_text, sampler, steps, seed,
                       request: gr.Request = None):
        """The same seed at several w, side by side (a figure), and a table of fidelity and diversity.

        A sweep draws every sample once per w (samples × steps × values of w ≤ MAX_WORK), so it draws as many of
        the asked samples per digit as fit, at least 1 (else it is refused, saying what to reduce); the table
        says when it drew fewer than asked, and why."""
        ws = guidance_values(guidance_values_text)
        asked = self.classroom.sampling_request(digit, samples_per_digit, max(ws), sampler, steps, seed,
                                                max_work=None)  # every value checked; the work is bounded below
        steps, digits = asked.num_inference_steps, asked.num_samples // asked.samples_per_digit
        fit = sweep_samples_cap(digit, steps, len(ws), MAX_WORK)
        if fit < 1:
            raise invalid(sweep_refusal(digits, steps, len(ws)))
        checked = self.classroom.sampling_request(digit, min(fit, asked.samples_per_digit), max(ws), sampler, steps,
                                                  seed, sweep_size=len(ws), max_work=MAX_WORK)
        yield_to_the_network()
        with self.classroom.sampling_slots.slot(request):
            results = self.classroom.server.run([checked.with_guidance(w) for w in ws])
        rows, grids, captions = [], [], []
        for w, images in zip(ws, results):
            confidence = self.classroom.confidence(images, list(checked.digits))
            spread = pixel_diversity(images, checked.samples_per_digit)
            grids.append(grid_image(images, nrow=min(len(images), 20)))
            captions.append(f"classifier {confidence.mean():.0%}")
            rows.append(f"| {w:g} | {confidence.mean():.1%} | {(confidence >= RECOGNISABLE_PROBABILITY).mean():.0%} | "
                        + (f"{spread:.3f} |" if spread is not None else "– |"))
        table = (fewer_samples_note(asked.samples_per_digit, checked.samples_per_digit, steps, len(ws), digits)
                 + "| w | classifier's mean p(asked digit) | recognisable | diversity |\n|---|---|---|---|\n"
                 + "\n".join(rows) + "\n\n*Fidelity*: the classifier's confidence in the asked digit. *Diversity*: "
                 "how much samples of the same digit differ (mean per-pixel standard deviation, 0 = identical; "
                 "needs 2 or more samples per digit). Larger w usually buys fidelity with diversity.")
        return sweep_figure(ws, grids, captions), table

    @staticmethod
    def sweep_plan(digit, samples_per_digit, steps, guidance_values_text):
        """The sweep's values-of-w box, its line under it saying how many samples per digit the sweep will draw
        with these settings (UI only: the sliders cap samples × steps, a sweep multiplies that by the values of w)."""
        return gr.Textbox(info=sweep_plan_text(digit, samples_per_digit, steps, guidance_values_text))

    def clip_status(self):
        """Whether CLIP is ready, loading or unavailable (and why). Starts loading it if nobody has."""
        self.classroom.clip.start()
        return clip_status_text(self.classroom.clip.status())

    def poll_clip_status(self):
        """For the page's timer: the status, and the timer switched off once CLIP is ready or unavailable."""
        text = self.clip_status()
        return text, gr.Timer(active=self.classroom.clip.status() in ("not loaded", "loading"))

    fit_samples_slider = staticmethod(fit_samples_slider)  # (digit, samples, steps): UI only

    @staticmethod
    def cleared_after_failure():
        """What the outputs show after a failed /generate: no stale results (UI only)."""
        return CARDS_FAILED, None, None, "", ""

    @staticmethod
    def sweep_cleared_after_failure():
        return None, SWEEP_FAILED

    def layout(self) -> gr.Markdown:
        """Build the tab inside the current gr.Tab; returns its CLIP status line (the page's timer updates it)."""
        gr.Markdown(f"Ask the model for digits. Each sample is scored by a trusted digit classifier and, when it "
                    f"is available, by CLIP. Limits per request: {MAX_SAMPLES} samples, samples × steps ≤ "
                    f"{MAX_WORK:,}.")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                digit_choices = [("all ten", ALL_DIGITS)] + [(str(d), str(d)) for d in range(10)]
                c = sampling_controls(self.classroom, digit_choices, ALL_DIGITS)
                samples = gr.Slider(1, samples_cap(ALL_DIGITS, c.steps.value), value=1, step=1,
                                    label="Samples per digit", info=samples_info(ALL_DIGITS, c.steps.value))
                guide = gr.Radio(list(GUIDES), value=DEFAULT_GUIDE, label="Steer toward the digit with",
                                 info="classifier-free: w alone (the course's); classifier: plus a noise-aware "
                                      "classifier's gradient; best-of-4: keep the likeliest of 4 candidates; "
                                      "clip: plus CLIP's pull toward the digit's prompt (slow; needs CLIP)")
                generate_button = gr.Button("Generate", variant="primary")
                with gr.Accordion("CLIP quality prompts (one per line)", open=False):
                    prompts = gr.Textbox("\n".join(DEFAULT_QUALITY_PROMPTS), lines=3, show_label=False,
                                         max_lines=MAX_PROMPTS)
                with gr.Accordion("Guidance sweep: the same seed at several w", open=True):
                    sweep_values = gr.Textbox(DEFAULT_SWEEP, label=f"Values of w (up to {MAX_SWEEP_VALUES})",
                                              info=sweep_plan_text(ALL_DIGITS, samples.value, c.steps.value,
                                                                   DEFAULT_SWEEP), elem_id="sweep-values")
                    sweep_button = gr.Button("Run guidance sweep")
            with gr.Column(scale=2):
                clip_status = gr.Markdown(clip_status_text(self.classroom.clip.status()), elem_id="clip-status")
                compact = gr.Checkbox(False, label="Compact grid (images only; red frame = the classifier reads "
                                      "another digit)", elem_id="compact-toggle", container=False)
                cards = gr.HTML(CARDS_PROMPT, label="Samples and their scores", elem_id="sample-cards")
                with gr.Accordion("Where CLIP and the classifier disagree", open=True):
                    agreement_text = gr.Markdown("*After **Generate**: how often CLIP's digit matches the "
                                                 "classifier's, and the samples where they differ.*",
                                                 elem_id="agreement")
                    disagreements = gr.HTML(elem_id="disagreements")
                with gr.Accordion("Scores table", open=False):
                    table = gr.Dataframe(show_label=False, elem_id="scores", max_height=400)
                with gr.Accordion("All samples in one image (to download)", open=False):
                    grid = gr.Image(show_label=False, format="png", interactive=False, elem_classes="pixels",
                                    elem_id="samples-grid")
                sweep_plot = gr.Plot(label="Guidance sweep", show_label=False, format="png", elem_id="sweep-plot")
                sweep_table = gr.Markdown(SWEEP_PROMPT, elem_id="sweep-table")

        for control in (c.digit, c.steps):  # more steps, fewer samples: samples × steps ≤ MAX_WORK
            control.change(self.fit_samples_slider, [c.digit, samples, c.steps], samples, trigger_mode="always_last",
                           **UI_ONLY)
        for control in (c.digit, samples, c.steps, sweep_values):  # what the sweep will draw, before it runs
            control.change(self.sweep_plan, [c.digit, samples, c.steps, sweep_values], sweep_values,
                           trigger_mode="always_last", show_progress="hidden", **UI_ONLY)
        compact.change(None, compact, None, js=COMPACT_JS, api_visibility="private")
        inputs = [c.digit, samples, c.guidance, c.sampler, c.steps, c.seed, prompts, guide]
        outputs = [cards, grid, table, agreement_text, disagreements]
        sampling = {"concurrency_id": "sampling", "concurrency_limit": SAMPLING_CONCURRENCY, "preprocess": False}
        # a failed request clears its outputs: an error must not leave other settings' results on show
        generate_button.click(self.generate, inputs, outputs, api_name="generate", **sampling).failure(
            self.cleared_after_failure, None, outputs, **UI_ONLY)
        c.dice.click(None, js=RANDOM_SEED_JS, outputs=c.seed, api_visibility="private").then(
            self.generate, inputs, outputs, api_visibility="private", **sampling).failure(
            self.cleared_after_failure, None, outputs, **UI_ONLY)
        sweep_button.click(self.guidance_sweep, [c.digit, samples, sweep_values, c.sampler, c.steps, c.seed],
                           [sweep_plot, sweep_table], api_name="guidance_sweep", **sampling).failure(
            self.sweep_cleared_after_failure, None, [sweep_plot, sweep_table], **UI_ONLY)
        return clip_status
