"""The Architecture tab: why skip connections, why a time embedding, why attention. Four U-Nets trained on one
budget, each without one part (`diffusion.ablations`), draw the same digits from the same noise; their reverse
processes side by side, their loss curves, their measured quality (checkpoints/ablations.md), and a diagram of
the app's U-Net drawn from its config. Endpoint: /compare_architectures."""
from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import gradio as gr
import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw

from diffusion.ablations import (ABLATION_DIR, REPORT, VARIANTS, final_losses, load_variant, read_report,
                                 variant_stem)
from diffusion.checkpoints import checkpoint_paths
from diffusion.data import to_uint8
from diffusion.model import UNetConfig
from diffusion.requests import (DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS, SamplingRequest,
                               check_sampling_request, short_repr)
from diffusion.sampling import SAMPLERS
from diffusion.training_history import loss_history
from diffusion.loss_logs import read_loss_logs

from .classroom import Classroom, ResultCache
from .rendering import enlarge, font, new_figure, swatch
from .settings import (ARCHITECTURE_CONCURRENCY, ARCHITECTURE_DIGIT_PRESETS, ARCHITECTURE_DIGITS,
                       ARCHITECTURE_FONT_PX, ARCHITECTURE_FRAME_PERCENTS, ARCHITECTURE_LOSS_FROM_STEP,
                       ARCHITECTURE_MAX_DIGITS,
                       ARCHITECTURE_MAX_WORK, ARCHITECTURE_RESULTS_KEPT, ARCHITECTURE_TILE_SCALE, ARCHITECTURE_WORKERS,
                       DEFAULT_REVERSE_DIGIT, DIAGRAM_FONT_PT, MAX_GUIDANCE, MAX_SEED, MIN_GUIDANCE)
from .validation import invalid, user_errors

TITLES = {"reference": "reference (every part)", "no_skip_connections": "no skip connections",
          "no_time_embedding": "no time embedding", "no_attention": "no attention"}
COLOURS = {"reference": "#3b82f6", "no_skip_connections": "#f97316", "no_time_embedding": "#22c55e",
           "no_attention": "#a855f7"}  # the loss plots' lines, named in the page's own legend


# --- the U-Net diagram, from the config --------------------------------------------------------------------

def unet_layout(config: UNetConfig) -> dict:
    """The U-Net `ClassConditionalUNet(config)` builds, as plain data (what the diagram draws):
    encoder: one entry per level, top (28×28) first: level, resolution (px per side), in_channels, channels,
    blocks; bottleneck: resolution, channels, attention_heads (0 = none); decoder: one entry per level, deepest
    first: level, resolution, in_channels (from below), skip_channels (0 without skips), channels, attention_heads;
    skips: [{"from_encoder_level", "to_decoder_level", "channels"}]; embedding: dim, time (bool), classes;
    input_channels, output_channels (2 per image channel with a guidance head)."""
    ch, heads = config.channels, config.attention_heads
    sizes = [28]
    for _ in ch[1:]:
        sizes.append((sizes[-1] + 1) // 2)  # a 3×3 convolution with stride 2 and padding 1
    encoder = [{"level": i, "resolution": sizes[i], "in_channels": ch[max(i - 1, 0)], "channels": c,
                "blocks": config.blocks_per_level} for i, c in enumerate(ch)]
    skips = [{"from_encoder_level": i, "to_decoder_level": i, "channels": c} for i, c in enumerate(ch)
             ] if config.skip_connections else []
    decoder = [{"level": i, "resolution": sizes[i], "in_channels": ch[i],
                "skip_channels": ch[i] if config.skip_connections else 0, "channels": ch[i],
                "attention_heads": heads if i == len(ch) - 1 else 0} for i in reversed(range(len(ch)))]
    return {"encoder": encoder, "bottleneck": {"resolution": sizes[-1], "channels": ch[-1], "attention_heads": heads},
            "decoder": decoder, "skips": skips,
            "embedding": {"dim": config.embedding_dim, "time": config.time_embedding, "classes": config.num_classes},
            "input_channels": config.image_channels,
            "output_channels": config.image_channels * (2 if config.guidance_head else 1)}


def side(resolution: int) -> str:
    return f"{resolution}×{resolution}"


def diagram_figure(layout: dict):
    """The U-Net of `unet_layout` as a matplotlib figure: the encoder going down on the left, the decoder going
    up on the right, a skip arrow from each encoder level to the decoder level it feeds, attention in purple,
    and the embedding of t and the label (it enters every box marked ◆). Text ≥ DIAGRAM_FONT_PT."""
    from matplotlib.patches import FancyBboxPatch

    n, row, width, height = len(layout["encoder"]), 2.6, 4.6, 1.6
    x_enc, x_mid, x_dec, top, y_mid = 2.6, 8.0, 13.4, 1.1 * row, -n * row
    bottom_y, top_y = y_mid - height / 2 - 0.3, top + height / 2 + 0.3
    fig = new_figure(14, 14 / 16 * (top_y - bottom_y))  # 16 units wide, the same scale both ways
    ax = fig.subplots()
    ax.set_xlim(0, 16)
    ax.set_ylim(bottom_y, top_y + 0.6)  # room for the page's label over the image
    ax.axis("off")
    text = {"fontsize": DIAGRAM_FONT_PT, "ha": "center", "va": "center"}
    purple, orange, grey = "#7e22ce", "#c2410c", "#475569"

    def box(x, y, lines, colour="#1e293b", fill="#f1f5f9", film=True, w=width):
        ax.add_patch(FancyBboxPatch((x - w / 2, y - height / 2), w, height, boxstyle="round,pad=0.05",
                                    facecolor=fill, edgecolor=colour, linewidth=2))
        ax.text(x, y, "\n".join(lines), **text)
        if film:
            ax.text(x + w / 2 - 0.1, y + height / 2 - 0.08, "◆", color=orange, fontsize=DIAGRAM_FONT_PT,
                    ha="right", va="top")

    def arrow(start, end, label="", colour=grey, style="-", offset=(0.15, 0.0), ha="left"):
        ax.annotate("", end, start, arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 2, "linestyle": style,
                                                "mutation_scale": 18})
        if label:
            ax.text((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1], label, color=colour,
                    fontsize=DIAGRAM_FONT_PT, ha=ha, va="center")

    enc, dec, mid, emb = layout["encoder"], layout["decoder"], layout["bottleneck"], layout["embedding"]
    box(x_enc, top, ["x_t, the noisy image", f"{layout['input_channels']} ch · {side(enc[0]['resolution'])}"],
        film=False)
    arrow((x_enc, top - height / 2), (x_enc, height / 2), f"conv 3×3 → {enc[0]['in_channels']} ch")
    for e in enc:
        y = -e["level"] * row
        blocks = f"{e['blocks']} residual block{'s' if e['blocks'] > 1 else ''}"
        box(x_enc, y, [f"encoder level {e['level']}: {side(e['resolution'])}",
                       f"{blocks}: {e['in_channels']} → {e['channels']} ch"])
        if e["level"] < n - 1:
            arrow((x_enc, y - height / 2), (x_enc, y - row + height / 2),
                  f"conv stride 2 → {side(enc[e['level'] + 1]['resolution'])}")
    attention = f"self-attention ({mid['attention_heads']} heads)" if mid["attention_heads"] else "no attention"
    box(x_mid, y_mid, [f"bottleneck: {side(mid['resolution'])} · {mid['channels']} ch",
                       f"{attention} → residual block"], colour=purple if mid["attention_heads"] else "#1e293b", w=5.8)
    arrow((x_enc, -(n - 1) * row - height / 2), (x_mid - 2.9, y_mid))
    arrow((x_mid + 2.9, y_mid), (x_dec, -(n - 1) * row - height / 2))
    for d in dec:
        y = -d["level"] * row
        concat = f"{d['in_channels']} + {d['skip_channels']}" if d["skip_channels"] else f"{d['in_channels']}"
        lines = [f"decoder level {d['level']}: {side(d['resolution'])}",
                 f"residual block: {concat} → {d['channels']} ch"]
        if d["attention_heads"]:
            lines.append(f"then self-attention ({d['attention_heads']} heads)")
        box(x_dec, y, lines, colour=purple if d["attention_heads"] else "#1e293b")
        if d["level"] > 0:
            arrow((x_dec, y + height / 2), (x_dec, y + row - height / 2),
                  f"upsample ×2 + conv → {enc[d['level'] - 1]['channels']} ch", offset=(-0.15, 0), ha="right")
    for s in layout["skips"]:
        y = -s["from_encoder_level"] * row
        arrow((x_enc + width / 2, y), (x_dec - width / 2, y), f"skip: concatenate {s['channels']} ch",
              colour="#0f766e", offset=(0, 0.28), ha="center")
    if not layout["skips"]:
        ax.text(x_mid, -row / 2, "no skip connections", color=grey, **{**text, "fontstyle": "italic"})
    outputs = "ε̂" if layout["output_channels"] == layout["input_channels"] else "ε̂ and the guidance direction"
    box(x_dec, top, [outputs, f"{layout['output_channels']} ch · {side(enc[0]['resolution'])}"], film=False)
    arrow((x_dec, height / 2), (x_dec, top - height / 2), "GroupNorm, SiLU, conv 3×3", offset=(-0.15, 0), ha="right")
    time = f"t → sinusoids → MLP ({emb['dim']})" if emb["time"] else "t: not given (ablation)"
    box(x_mid, top, ["embedding: " + time, f"+ label → one-hot ({emb['classes']}) → linear",
                     "◆ scales and shifts every residual block"], colour=orange, fill="#fff7ed", film=False, w=5.2)
    return fig


def diagram_png(config: UNetConfig) -> bytes:
    """The diagram of `config`'s U-Net as PNG bytes (1400 px wide)."""
    buffer = io.BytesIO()
    diagram_figure(unet_layout(config)).savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


# --- pictures of the comparison ------------------------------------------------------------------------------

PICTURE_TOP = 36  # room for the page's buttons over an image (download, full screen)
LABEL_W, GAP, GROUP_GAP = 290, 4, 20


def tile_position(r: int, c: int, header_lines: int = 1, group: int = 1, subheaders: bool = False,
                  notes: bool = False) -> tuple[int, int]:
    """(top, left) in pixels of tile (row r, column c) of a `picture_table` picture."""
    tile, line = 28 * ARCHITECTURE_TILE_SCALE, ARCHITECTURE_FONT_PX + 8
    top = PICTURE_TOP + line * (header_lines + subheaders) + r * (tile + (line if notes else 0) + 3 * GAP)
    return top, LABEL_W + (c // group) * (group * (tile + GAP) + GROUP_GAP) + (c % group) * (tile + GAP)


def picture_table(tiles: np.ndarray, row_labels, headers, group: int = 1, subheaders=(), notes=None) -> np.ndarray:
    """Digits in a table: tiles uint8 [R, C, 28, 28] shown ARCHITECTURE_TILE_SCALE× (crisp), each row with its label
    (a list of lines) on the left; columns in groups of `group` tiles, each group under one of `headers` (a list
    of lines each); `subheaders` (one per tile of a group) above the tiles; notes: R lists of C texts under the
    tiles, or None. Returns uint8 [H, W]: black text on white; tile (r, c) at `tile_position`."""
    R, C = tiles.shape[:2]
    tile, line = 28 * ARCHITECTURE_TILE_SCALE, ARCHITECTURE_FONT_PX + 8
    lines = max(map(len, headers))

    def position(r: int, c: int) -> tuple[int, int]:
        return tile_position(r, c, lines, group, bool(subheaders), notes is not None)

    bottom, right = position(R, C - 1)
    picture = Image.new("L", (right + tile + GAP, bottom), 255)
    draw, big, small = ImageDraw.Draw(picture), font(ARCHITECTURE_FONT_PX), font(ARCHITECTURE_FONT_PX - 4)
    for g, header in enumerate(headers):
        middle = (position(0, g * group)[1] + position(0, g * group + group - 1)[1] + tile) // 2
        for k, words in enumerate(header):
            draw.text((middle, PICTURE_TOP + k * line), words, fill=0, font=big, anchor="mt")
    for c in range(C if subheaders else 0):
        top, left = position(0, c)
        draw.text((left + tile // 2, top - line), subheaders[c % group], fill=80, font=small, anchor="mt")
    for r in range(R):
        for k, words in enumerate(row_labels[r]):
            draw.text((8, position(r, 0)[0] + 4 + k * line), words, fill=0 if k == 0 else 60,
                      font=big if k == 0 else small)
        for c in range(C):
            top, left = position(r, c)
            picture.paste(Image.fromarray(enlarge(tiles[r, c], ARCHITECTURE_TILE_SCALE)), (left, top))
            if notes:
                draw.text((left + tile // 2, top + tile + 2), notes[r][c], fill=0, font=small, anchor="mt")
    return np.asarray(picture)


@dataclass
class Comparison:
    """One request's runs. names: the variants, in VARIANTS' order; samples: uint8 [V, N, 28, 28];
    read: int [V, N], the trusted classifier's digit for each sample; steps: the step numbers of the frames
    (1..S); ts: their t; x_t, x0: uint8 [V, F, N, 28, 28], x_t and the network's x̂₀ at those steps."""

    request: SamplingRequest
    names: list[str]
    samples: np.ndarray
    read: np.ndarray
    steps: list[int]
    ts: list[int]
    x_t: np.ndarray
    x0: np.ndarray


# --- the tab ---------------------------------------------------------------------------------------------------

class ArchitectureTab:
    """Handlers (their parameter names are the API's) and the layout of the Architecture tab."""

    def __init__(self, classroom: Classroom):
        self.classroom = classroom
        self.names = [n for n in VARIANTS if checkpoint_paths(variant_stem(n))[0].is_file()]
        self.num_train_steps = classroom.pipe.num_train_steps  # the variants' T too (checked as they load)
        self.networks: dict = {}  # name -> DigitDiffusion, loaded on first use: at most len(VARIANTS), ~4 MB each
        self._load_lock = threading.Lock()
        # The variants sample on threads of their own, one torch thread each (two variants at a time on 2 cores)
        self.workers = ThreadPoolExecutor(max_workers=ARCHITECTURE_WORKERS, thread_name_prefix="architecture",
                                          initializer=torch.set_num_threads, initargs=(1,))
        self.results = ResultCache(ARCHITECTURE_RESULTS_KEPT)
        self.report = read_report()  # {} without checkpoints/ablations.json: the page says "not evaluated"
        self.config = UNetConfig(**classroom.pipe.config["architecture"])
        # In the background while the app starts: the diagram drawn (about 1 s), every variant loaded and run once
        # (a fresh network's first passes are slow)
        self.diagram = self.workers.submit(self.draw_diagram)
        self.workers.submit(self.warm_up)

    def network(self, name: str):
        with self._load_lock:
            if name not in self.networks:
                pipe = load_variant(name)
                if pipe.num_train_steps != self.num_train_steps:
                    raise invalid(f"the ablation {name} was trained with T = {pipe.num_train_steps}, the app's "
                                  f"network with T = {self.num_train_steps}")
                self.networks[name] = pipe
            return self.networks[name]

    def warm_up(self) -> None:
        """Load every variant and run it once on a batch of the default's size."""
        x = torch.zeros(2 * len(ARCHITECTURE_DIGITS), 1, 28, 28)
        t, labels = torch.ones(len(x), dtype=torch.long), torch.zeros(len(x), dtype=torch.long)
        for name in self.names:
            model = self.network(name).model
            with torch.inference_mode():
                model(x.to(next(model.parameters()).dtype), t, labels)

    def draw_diagram(self) -> str:
        """The app's U-Net diagram as a PNG file in the work folder; returns its path."""
        path = self.classroom.work_folder / "unet-diagram.png"
        path.write_bytes(diagram_png(self.config))
        return str(path)

    def show_diagram(self) -> str:
        return self.diagram.result()

    # --- the endpoint ---------------------------------------------------------------------------------------
    def compare_architectures(self, digits=ARCHITECTURE_DIGITS, reverse_digit=DEFAULT_REVERSE_DIGIT,
                              sampler=DEFAULT_SAMPLER, steps=DEFAULT_STEPS, guidance=DEFAULT_GUIDANCE, seed=0,
                              request: gr.Request = None):
        """Every variant draws `digits` (text: 1 to 10 digits, e.g. "0123456789"; one sample each) from the
        same seed with the same sampler, steps and w. Returns the samples (one row per variant, the classifier's
        reading under each digit), the reverse process of the first sample of `reverse_digit` (one row per
        variant: x_t beside x̂₀ at ARCHITECTURE_FRAME_PERCENTS of the steps), both uint8 [H, W], and a caption."""
        if not self.names:
            raise invalid(f"this app has no ablation networks ({ABLATION_DIR} has no *.fp16.safetensors)")
        asked = digit_list(digits)
        follow = str(reverse_digit) if type(reverse_digit) is int else reverse_digit  # a number, or a digit as text
        if not (isinstance(follow, str) and len(follow) == 1 and follow in "0123456789"):
            raise invalid(f"reverse_digit must be one digit from 0 to 9, got {short_repr(reverse_digit)}")
        follow = int(follow)
        if follow not in asked:
            raise invalid(f"the reverse process follows one of the digits drawn ({', '.join(map(str, asked))}); "
                          f"got reverse_digit {follow}")
        with user_errors():
            checked = check_sampling_request(asked, guidance=guidance, sampler=sampler, steps=steps, seed=seed,
                                             num_train_steps=self.num_train_steps,
                                             max_samples=ARCHITECTURE_MAX_DIGITS, max_work=ARCHITECTURE_MAX_WORK)
        with self.classroom.view_slots.slot(request):
            comparison = self.results.get_or_compute(checked, lambda: self.compare(checked))
        return (self.samples_picture(comparison), self.filmstrip_picture(comparison, asked.index(follow)),
                self.caption(comparison, follow))

    def compare(self, request: SamplingRequest) -> Comparison:
        """Run `request` with every variant (on the tab's worker threads) and score the samples."""
        runs = [self.workers.submit(self.run_variant, name, request) for name in self.names]
        runs = [run.result() for run in runs]
        samples = np.stack([r[0] for r in runs])
        read = np.stack([self.classroom.classifier_scores(s, request.digits).predicted_digit for s in samples])
        return Comparison(request, list(self.names), samples, read, frame_steps(request.num_inference_steps),
                          runs[0][1],
                          np.stack([r[2] for r in runs]), np.stack([r[3] for r in runs]))

    def run_variant(self, name: str, request: SamplingRequest) -> tuple:
        """(samples uint8 [N,28,28], t of each kept frame, x_t uint8 [F,N,28,28], x̂₀ uint8 [F,N,28,28])."""
        keep = frame_steps(request.num_inference_steps)
        kept = [step for step in self.network(name).run(request) if step.index in keep]
        return (to_uint8(kept[-1].x), [s.t for s in kept], np.stack([to_uint8(s.x) for s in kept]),
                np.stack([to_uint8(s.x0) for s in kept]))

    def samples_picture(self, c: Comparison) -> np.ndarray:
        asked = np.array(c.request.digits)
        labels = [[TITLES[n], f"{(r == asked).sum()} of {len(asked)} read as asked"] for n, r in zip(c.names, c.read)]
        notes = [[f"{d}" if d == a else f"✗ {d}" for d, a in zip(r, asked)] for r in c.read]
        return picture_table(c.samples, labels, [[str(d)] for d in asked], notes=notes)

    def filmstrip_picture(self, c: Comparison, index: int) -> np.ndarray:
        """Sample `index`'s frames: one row per variant, x_t beside x̂₀ at each kept step."""
        S = c.request.num_inference_steps
        pairs = np.stack([c.x_t[:, :, index], c.x0[:, :, index]], axis=2)  # [V, F, 2, 28, 28]
        tiles = pairs.reshape(len(c.names), -1, 28, 28)                    # [V, 2F, 28, 28]: x_t, x̂₀, x_t, x̂₀, …
        headers = [[f"step {s} of {S}", f"t = {t}"] for s, t in zip(c.steps, c.ts)]
        return picture_table(tiles, [[TITLES[n]] for n in c.names], headers, group=2, subheaders=("xₜ", "x̂₀"))

    def caption(self, c: Comparison, follow: int) -> str:
        r = c.request
        return (f"**The same noise, the same labels, {r.sampler}, {r.num_inference_steps} steps, w = {r.guidance:g}, "
                f"seed {r.seed}.** Under each digit: what the trusted classifier reads (✗ = not the digit asked for). "
                f"Below: the reverse process of the first {follow}, x_t beside the network's guess x̂₀. Each network "
                f"guides with two passes a step (ε(x,c) and ε(x,∅)): none has the app's guidance head.")

    # --- the page ---------------------------------------------------------------------------------------------
    def loss_tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(step, loss, variant) rows: the smoothed training loss from ARCHITECTURE_LOSS_FROM_STEP on, and the
        held-out loss after each epoch."""
        training, heldout = [], []
        for name in self.names:
            h = loss_history(ABLATION_DIR / f"{name}_logs")
            late = h.steps >= ARCHITECTURE_LOSS_FROM_STEP
            training.append(pd.DataFrame({"step": h.steps[late], "loss": h.smoothed[late], "variant": TITLES[name]}))
            _, fixed = read_loss_logs(ABLATION_DIR / f"{name}_logs")
            heldout.append(pd.DataFrame({"step": [r["step"] for r in fixed], "loss": [r["heldout_loss"] for r in fixed],
                                         "variant": TITLES[name]}))
        return pd.concat(training, ignore_index=True), pd.concat(heldout, ignore_index=True)

    def table(self) -> str:
        try:
            return (REPORT.parent / (REPORT.name + ".md")).read_text()
        except OSError:
            return ("*Not evaluated yet:* run `python -m diffusion.ablations evaluate --data-dir <MNIST folder>` "
                    "(writes checkpoints/ablations.md).")

    def explanation(self) -> str:
        """What each part is for, with the measured numbers (from ablations.json, else from the loss logs)."""
        rows = {r["name"]: r for r in self.report.get("variants", [])} or {
            n: {"name": n, **final_losses(n)} for n in self.names}
        return explanation(rows)

    def layout(self) -> None:
        """Build the tab inside the current gr.Tab."""
        gr.Markdown("## Why skip connections, why a time embedding, why attention?\nFour U-Nets of the app's size "
                    "were trained on one budget (5 epochs, the same data, optimiser, schedule and seed); three of them "
                    "each lack one part. Below: the app's U-Net, drawn from its config; then what the four networks "
                    "draw from the same noise, and what they measure.")
        layout = unet_layout(self.config)
        diagram = gr.Image(label=f"The app's U-Net (from checkpoints/unet.json): channels "
                 f"{list(self.config.channels)}, {len(layout['skips'])} skip connections, attention at "
                 f"{side(layout['bottleneck']['resolution'])}", format="png", interactive=False,
                 elem_id="unet-diagram", )
        gr.Markdown("## The same noise through each network")
        with gr.Row():
            digits = gr.Dropdown(list(ARCHITECTURE_DIGIT_PRESETS), value=ARCHITECTURE_DIGITS, allow_custom_value=True,
                                 label=f"Digits to draw (1 to {ARCHITECTURE_MAX_DIGITS}, e.g. 0123456789)",
                                 elem_id="architecture-digits")
            follow = gr.Dropdown([str(d) for d in range(10)], value=DEFAULT_REVERSE_DIGIT,
                                 label="Reverse process of the digit", elem_id="architecture-follow")
            sampler = gr.Dropdown(list(SAMPLERS), value=DEFAULT_SAMPLER, label="Sampler")
            steps = gr.Slider(1, 100, value=DEFAULT_STEPS, step=1, label="Steps", elem_id="architecture-steps")
            guidance = gr.Slider(MIN_GUIDANCE, MAX_GUIDANCE, value=DEFAULT_GUIDANCE, step=0.1, label="Guidance w")
            seed = gr.Number(0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed", elem_id="architecture-seed")
        caption = gr.Markdown(elem_id="architecture-caption")
        image = {"format": "png", "interactive": False, "elem_classes": "pixels"}
        samples = gr.Image(label="Each network's samples", elem_id="architecture-samples", **image)
        reverse = gr.Image(label="Each network's reverse process", elem_id="architecture-reverse", **image)
        gr.Markdown("## How each network learned\n" + " · ".join(swatch(COLOURS[n], TITLES[n]) for n in self.names)
                    + "\n\nThe loss is mean((ε̂ − ε)²), as on the Training tab; lower is better.")
        training, heldout = self.loss_tables()
        plot = {"x": "step", "y": "loss", "color": "variant", "height": 320, "x_title": "training step",
                "y_title": "loss", "elem_classes": "projector-plot", "colors_in_legend": [],
                "color_map": {TITLES[n]: COLOURS[n] for n in self.names}}
        with gr.Row():
            for data, title, elem_id in (
                    (training, f"Training loss (smoothed), from step {ARCHITECTURE_LOSS_FROM_STEP}",
                     "architecture-loss"),
                    (heldout, "Held-out loss, after each epoch", "architecture-heldout")):
                y_lim = [0.95 * data["loss"].min(), 1.05 * data["loss"].max()]
                gr.LinePlot(data, title=title, elem_id=elem_id, y_lim=y_lim, **plot)
        gr.Markdown("## What they measure\n" + self.table(), elem_id="architecture-table")
        gr.Markdown(self.explanation(), elem_id="architecture-explanation")
        gr.on(None, self.show_diagram, None, diagram, api_visibility="private", concurrency_id="architecture-diagram",
              concurrency_limit=8, show_progress="hidden")  # no inputs: on page load
        # no triggers: on page load, and whenever an input changes
        gr.on(None, self.compare_architectures, [digits, follow, sampler, steps, guidance, seed],
              [samples, reverse, caption], api_name="compare_architectures", preprocess=False,
              concurrency_id="architecture", concurrency_limit=ARCHITECTURE_CONCURRENCY, trigger_mode="always_last",
              show_progress="minimal")



def frame_steps(num_steps: int) -> list[int]:
    """The steps (1..num_steps) the filmstrip shows: those nearest ARCHITECTURE_FRAME_PERCENTS of the process."""
    return sorted({max(1, round(p * num_steps / 100)) for p in ARCHITECTURE_FRAME_PERCENTS})


def digit_list(text) -> list[int]:
    """'0123456789' or '0, 1, 2' -> [0, 1, 2, …]: 1 to ARCHITECTURE_MAX_DIGITS digits (repeats allowed)."""
    digits = [ch for ch in text if ch not in " ,"] if isinstance(text, str) and len(text) <= 100 else None
    if not digits or len(digits) > ARCHITECTURE_MAX_DIGITS or not all(ch in "0123456789" for ch in digits):
        raise invalid(f"digits must be text of 1 to {ARCHITECTURE_MAX_DIGITS} digits such as "
                      f"'{ARCHITECTURE_DIGITS}', got {short_repr(text)}")
    return [int(ch) for ch in digits]


def compared(value: float, reference: float) -> str:
    """'7% higher than', 'about the same as' (within 3%) or '5% lower than'."""
    change = value / reference - 1
    if abs(change) < 0.03:
        return "about the same as"
    return f"{abs(change):.0%} {'higher' if change > 0 else 'lower'} than"


def explanation(rows: dict) -> str:
    """The page's explanation of each part, with the variants' numbers. rows: name -> the report's entry (at
    least "heldout_loss"; with "accuracy", "worst_digit", "worst_digit_accuracy", "fd_over_floor" when evaluated)."""
    ref = rows.get("reference")
    if ref is None:
        return ""
    why = {"no_skip_connections": "**Skip connections** hand each decoder level the encoder's features at the same "
                                   "resolution. Without them, everything the decoder knows about the image (the "
                                   "edges of strokes, where exactly the ink is) has to survive the trip through 7×7.",
           "no_time_embedding": "**The time embedding** tells the network how noisy x_t is. Without it the network "
                                "must judge the noise level from x_t itself. Averaged over every t that works almost "
                                "as well (MNIST helps: most pixels are background, exactly −1 in x₀, so how much they "
                                "scatter in x_t gives the noise level away). But a sampler needs the right ε̂ at "
                                "every step, and near the end, where little noise is left, a network that must guess "
                                "how much is left leaves some behind: look for the grey haze around its digits above.",
           "no_attention": "**Self-attention** at 7×7 lets every position see every other position at once. At 7×7 a "
                           "few 3×3 convolutions already span the whole digit, so attention has less to add here than "
                           "on large images."}
    lines = ["## What each part is for"]
    for name, text in why.items():
        r = rows.get(name)
        if r is None:
            continue
        measured = (f" Measured: held-out loss {r['heldout_loss']:.4f}, "
                    f"{compared(r['heldout_loss'], ref['heldout_loss'])} the reference's {ref['heldout_loss']:.4f}")
        if "accuracy" in r and "accuracy" in ref:
            measured += (f"; the classifier reads {r['accuracy']:.1%} of its samples as the digit asked for "
                         f"(worst digit {r['worst_digit']}: {r['worst_digit_accuracy']:.1%}; reference "
                         f"{ref['accuracy']:.1%}), and its Fréchet distance is {r['fd_over_floor']:.2f}× "
                         f"the real-vs-real floor (reference {ref['fd_over_floor']:.2f}×)")
        lines.append(f"{text}{measured}.")
    fooled = [TITLES[n] for n, r in rows.items() if "accuracy" in r and "accuracy" in ref and
              r["heldout_loss"] < 1.1 * ref["heldout_loss"] and r["accuracy"] < ref["accuracy"] - 0.1]
    if fooled:
        lines.append(f"**The loss is not the whole story.** {' and '.join(fooled)}: a held-out loss within 10% of "
                     "the reference's, samples far worse. The loss averages over every t; a sampler needs every step "
                     "right.")
    lines.append("Each network was trained once (one budget, one seed): small differences might not survive "
                 "another training run.")
    return "\n\n".join(lines)
