"""The Generate tab: samples of the asked digits, each scored by the classifier and CLIP, and a
guidance sweep (the same seed at several w).  Endpoints: /generate, /guidance_sweep, /clip_status."""
from __future__ import annotations

import gradio as gr

from diffusion.data import grid_image
from diffusion.digit_images import pixel_diversity
from diffusion.recognisability import RECOGNISABLE_PROBABILITY
from diffusion.requests import DEFAULT_GUIDE, GUIDES, is_number
from diffusion.scoring import DEFAULT_QUALITY_PROMPTS

from .classroom import Classroom, yield_to_the_network
from .controls import RANDOM_SEED_JS, sampling_controls
from .rendering import agreement_panel, enlarge, sample_cards, scores_table, sweep_figure
from .settings import (ALL_DIGITS, DEFAULT_SWEEP, GRID_SCALE, MAX_PROMPTS, MAX_SAMPLES, MAX_SWEEP_VALUES, MAX_WORK,
                       SAMPLING_CONCURRENCY, UI_ONLY)
from .validation import guidance_values, one_of, quality_prompts


def clip_status_text(status: str) -> str:
    if status == "ready":
        return "**CLIP:** ready. Its zero-shot scores appear beside each sample."
    if status.startswith("unavailable"):
        return (f"**CLIP unavailable:** {status.removeprefix('unavailable: ')}  \n"
                f"Everything else works; samples are scored by the digit classifier alone.")
    return f"**CLIP:** {status}… (it loads in the background; the classifier's scores work meanwhile)"


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
        cards = sample_cards(images, digits, scores.classifier, scores.clip, range(len(images)))
        agreement_text, disagreements = agreement_panel(images, digits, scores.classifier, scores.clip,
                                                        scores.clip_note)
        grid = enlarge(grid_image(images, nrow=10), GRID_SCALE)
        return cards, grid, scores_table(digits, scores.classifier, scores.clip), agreement_text, disagreements

    def guidance_sweep(self, digit, samples_per_digit, guidance_values_text, sampler, steps, seed,
                       request: gr.Request = None):
        """The same seed at several w, side by side (a figure), and a table of fidelity and diversity."""
        ws = guidance_values(guidance_values_text)
        checked = self.classroom.sampling_request(digit, samples_per_digit, max(ws), sampler, steps, seed,
                                                  sweep_size=len(ws))
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
        table = ("| w | classifier's mean p(asked digit) | recognisable | diversity |\n|---|---|---|---|\n"
                 + "\n".join(rows) + "\n\n*Fidelity*: the classifier's confidence in the asked digit. *Diversity*: "
                 "how much samples of the same digit differ (mean per-pixel standard deviation, 0 = identical; "
                 "needs 2 or more samples per digit). Larger w usually buys fidelity with diversity.")
        return sweep_figure(ws, grids, captions), table

    def clip_status(self):
        """Whether CLIP is ready, loading or unavailable (and why). Starts loading it if nobody has."""
        self.classroom.clip.start()
        return clip_status_text(self.classroom.clip.status())

    def poll_clip_status(self):
        """For the page's timer: the status, and the timer switched off once CLIP is ready or unavailable."""
        text = self.clip_status()
        return text, gr.Timer(active=self.classroom.clip.status() in ("not loaded", "loading"))

    @staticmethod
    def fit_samples_slider(digit, samples):
        """'all ten' allows 10 samples per digit, a single digit 100 (UI only)."""
        high = MAX_SAMPLES // 10 if digit == ALL_DIGITS else MAX_SAMPLES
        return gr.Slider(maximum=high, value=min(samples, high) if is_number(samples) else 1)

    def layout(self) -> gr.Markdown:
        """Build the tab inside the current gr.Tab; returns its CLIP status line (the page's timer updates it)."""
        gr.Markdown(f"Ask the model for digits. Each sample is scored by a trusted digit classifier and, when it "
                    f"is available, by CLIP. Limits per request: {MAX_SAMPLES} samples, samples × steps ≤ "
                    f"{MAX_WORK:,}.")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                digit_choices = [("all ten", ALL_DIGITS)] + [(str(d), str(d)) for d in range(10)]
                c = sampling_controls(self.classroom, digit_choices, ALL_DIGITS)
                samples = gr.Slider(1, MAX_SAMPLES // 10, value=1, step=1, label="Samples per digit",
                                    info=f"at most {MAX_SAMPLES} samples in all")
                guide = gr.Radio(list(GUIDES), value=DEFAULT_GUIDE, label="Steer toward the digit with",
                                 info="classifier-free: w alone (the course's); classifier: plus a noise-aware "
                                      "classifier's gradient; best-of-4: keep the likeliest of 4 candidates")
                generate_button = gr.Button("Generate", variant="primary")
                with gr.Accordion("CLIP quality prompts (one per line)", open=False):
                    prompts = gr.Textbox("\n".join(DEFAULT_QUALITY_PROMPTS), lines=3, show_label=False,
                                         max_lines=MAX_PROMPTS)
                with gr.Accordion("Guidance sweep: the same seed at several w", open=True):
                    sweep_values = gr.Textbox(DEFAULT_SWEEP, label=f"Values of w (up to {MAX_SWEEP_VALUES})")
                    sweep_button = gr.Button("Run guidance sweep")
            with gr.Column(scale=2):
                clip_status = gr.Markdown(clip_status_text(self.classroom.clip.status()), elem_id="clip-status")
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

        c.digit.change(self.fit_samples_slider, [c.digit, samples], samples, **UI_ONLY)
        inputs = [c.digit, samples, c.guidance, c.sampler, c.steps, c.seed, prompts, guide]
        outputs = [cards, grid, table, agreement_text, disagreements]
        sampling = {"concurrency_id": "sampling", "concurrency_limit": SAMPLING_CONCURRENCY, "preprocess": False}
        generate_button.click(self.generate, inputs, outputs, api_name="generate", **sampling)
        c.dice.click(None, js=RANDOM_SEED_JS, outputs=c.seed, api_visibility="private").then(
            self.generate, inputs, outputs, api_visibility="private", **sampling)
        sweep_button.click(self.guidance_sweep, [c.digit, samples, sweep_values, c.sampler, c.steps, c.seed],
                           [sweep_plot, sweep_table], api_name="guidance_sweep", **sampling)
        return clip_status
