"""Pictures for the page: enlarged digits, sample cards, tables, matplotlib figures, GIFs, the reverse-process
player and the all-ten filmstrip. No diffusion maths here: every number drawn comes from the engine."""
from __future__ import annotations

import base64
import hashlib
import html
import io
import uuid
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from diffusion.data import grid_image
from diffusion.scoring import ClassifierScores, ClipScores, agreement
from diffusion.schedules import SCHEDULE_NAMES, NoiseSchedule

from .settings import (FILMSTRIP_FONT_PX, FILMSTRIP_SCALE, GIF_FRAME_MS, GIF_LAST_FRAME_MS, GIF_MAX_FRAMES, GIF_SCALE,
                       GIF_SECONDS, PLAYER_IMAGE_PX, PLAYER_MAX_FPS, PLAYER_MIN_FPS, PLAYER_RUNS_KEPT,
                       PLAYER_SHEET_COLUMNS)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOT_DPI = 100                      # pixels per inch of the figures saved as files
SCHEDULE_FIGURE_INCHES = (11, 4.2)  # ᾱ(t) and log-SNR side by side
PLOT_FONT_PT = 14                   # every text of the figures drawn here: legible from the back of a room


BLUE, ORANGE, GREEN, RED = "#3b82f6", "#f97316", "#22c55e", "#ef4444"  # the native plots' line colours


def swatch(colour: str, text: str) -> str:
    """'━━ text' in a plot line's colour, for a legend the page draws itself (page-sized text)."""
    return f'<b style="color: {colour}">━━ {text}</b>'


def enlarge(images: np.ndarray, scale: int) -> np.ndarray:
    """uint8 [..., H, W] -> uint8 [..., H·scale, W·scale]: each pixel becomes a crisp scale×scale block."""
    return np.asarray(images).repeat(scale, axis=-2).repeat(scale, axis=-1)


def png_data_uri(image: np.ndarray) -> str:
    """uint8 [H,W] -> 'data:image/png;base64,…' (inline in HTML: no extra request per image)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)  # 5× faster than the default, ~5 % larger
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib figure (inches), drawn off-screen; matplotlib is imported on first use (faster start)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def legible(fig: Figure) -> Figure:
    """Every text of `fig` (titles, labels, tick labels, legends) at least PLOT_FONT_PT."""
    from matplotlib.text import Text

    for ax in fig.axes:
        ax.tick_params(labelsize=PLOT_FONT_PT)
    for text in fig.findobj(Text):
        if text.get_fontsize() < PLOT_FONT_PT:
            text.set_fontsize(PLOT_FONT_PT)
    return fig


def keep_newest(folder: Path, pattern: str, keep: int) -> None:
    """Delete all but the `keep` newest files matching `pattern` (bounds the disk a busy Space uses)."""
    def age(path: Path) -> float:
        try:
            return -path.stat().st_mtime
        except FileNotFoundError:  # another request just deleted it
            return 0.0

    for old in sorted(folder.glob(pattern), key=age)[keep:]:
        old.unlink(missing_ok=True)


# --- Generate: samples beside their scores ---------------------------------------------------------------

def sample_cards(images: np.ndarray, digits: Sequence[int], classifier: ClassifierScores,
                 clip: ClipScores | None, indices) -> str:
    """HTML: each sample (of `indices`) with the classifier's and CLIP's scores right beside it."""
    c, k = classifier, clip
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
        miss = " data-miss" if c.predicted_digit[i] != d else ""  # the compact grid frames it in red
        cards.append(f'<div class="sample-card"{miss}><img src="{png_data_uri(images[i])}" alt="sample {i + 1}">'
                     f'<div>{"<br>".join(lines)}</div></div>')
    return f'<div class="sample-cards">{"".join(cards)}</div>'


def _verdict(judge: str, seen: int, asked: int, probability: float) -> str:
    seen_text = f"sees a {seen}" if seen == asked else f'<span class="miss">sees a {seen}</span>'
    return f"{judge}: {seen_text} · p({asked}) = {probability:.0%}"


def scores_table(digits: Sequence[int], classifier: ClassifierScores, clip: ClipScores | None) -> pd.DataFrame:
    """One row per sample: the classifier's and (if ready) CLIP's digit and scores."""
    def rounded(values, places=3):
        return np.asarray(values, dtype=np.float64).round(places)

    table = {"#": np.arange(1, len(digits) + 1), "asked": list(digits), "classifier digit": classifier.predicted_digit,
             "classifier p(asked)": rounded(classifier.confidence_requested)}
    if clip is not None:
        table.update({"CLIP digit": clip.predicted_digit, "CLIP p(asked)": rounded(clip.prob_requested),
                      "CLIPScore": rounded(clip.clip_score, 1)})
        for j, prompt in enumerate(clip.quality_prompts):
            table[f"CLIP p({prompt})"] = rounded(clip.quality_probs[:, j])
    return pd.DataFrame(table)


def agreement_panel(images: np.ndarray, digits: Sequence[int], classifier: ClassifierScores,
                    clip: ClipScores | None, clip_note: str) -> tuple[str, str]:
    """Markdown on how often CLIP's digit matches the classifier's, and HTML cards of the disagreements."""
    if clip is None:
        return f"**No CLIP scores.** {clip_note}  \nThe classifier's scores work without CLIP.", ""
    found = agreement(clip, classifier)
    text = (f"**CLIP's digit matches the classifier's on {len(digits) - len(found.disagree)} of {len(digits)} "
            f"samples ({found.rate:.0%}).** ")
    text += (f"They disagree on {len(found.disagree)}, shown below." if found.disagree
             else "They agree on every sample.")
    return text, sample_cards(images, digits, classifier, clip, found.disagree)


def sweep_figure(ws: list[float], grids: list[np.ndarray], captions: list[str]) -> Figure:
    """The guidance sweep: one row of samples per w (the same seed, so columns match), each row
    labelled with w and its scores. grids: uint8 [H,W] pictures of equal size."""
    height, width = grids[0].shape
    fig = new_figure(2.6 + width / 60, 0.3 + len(ws) * max(height / 60 + 0.15, 0.6))
    for ax, w, grid, caption in zip(np.atleast_1d(fig.subplots(len(ws), 1)), ws, grids, captions):
        ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_ylabel(f"w = {w:g}\n{caption}", rotation=0, ha="right", va="center", fontsize=PLOT_FONT_PT)
        ax.set_xticks([])
        ax.set_yticks([])
    return legible(fig)


# --- Forward noising -------------------------------------------------------------------------------------

def schedule_plot(folder: Path, schedules: dict[str, NoiseSchedule], chosen: str) -> str:
    """The schedules plot as a PNG file in `folder`, drawn once per setting (every page load shows the
    default one). schedules: every schedule by name, all with the same T and β range."""
    first = schedules[chosen]
    settings = repr((chosen, first.num_train_steps, first.beta_start, first.beta_end)).encode()
    path = folder / f"schedules-{hashlib.sha1(settings).hexdigest()[:16]}.png"
    if not path.exists():
        drawing = path.with_suffix(f".{uuid.uuid4().hex[:8]}.tmp")
        schedule_figure(schedules, chosen).savefig(drawing, dpi=PLOT_DPI, format="png")
        drawing.replace(path)  # atomic: a request drawing the same plot at the same time reads a whole file
        keep_newest(path.parent, "schedules-*.png", keep=64)
    return str(path)


def schedule_figure(schedules: dict[str, NoiseSchedule], chosen: str) -> Figure:
    """ᾱ(t) and log-SNR(t) for every schedule (same T and β range), the chosen one drawn thick."""
    fig = new_figure(*SCHEDULE_FIGURE_INCHES)
    ax_bar, ax_snr = fig.subplots(1, 2)
    for name in SCHEDULE_NAMES:
        schedule = schedules[name]
        t = np.arange(schedule.num_train_steps + 1)
        style = {"linewidth": 3.2, "alpha": 1.0} if name == chosen else {"linewidth": 1.3, "alpha": 0.55}
        label = name + (" (ignores the β range)" if name == "cosine" else "")
        ax_bar.plot(t, schedule.alpha_bar.numpy(), label=label, **style)
        ax_snr.plot(t[1:], schedule.log_snr[1:].numpy(), label=label, **style)
    ax_bar.set(xlabel="t", ylabel="ᾱ(t)", title="How much of x₀ survives: ᾱ(t)")
    ax_snr.set(xlabel="t", ylabel="log SNR(t)", title="log signal-to-noise ratio")
    ax_bar.legend(fontsize=PLOT_FONT_PT, loc="upper right")
    legible(fig)
    return fig


# --- Reverse process -------------------------------------------------------------------------------------

def gif_frame(x_t: np.ndarray, x0: np.ndarray) -> np.ndarray:
    """One GIF frame: x_t beside x̂0 (uint8 [28,28] each), enlarged GIF_SCALE times."""
    return enlarge(grid_image(np.stack([x_t, x0]), nrow=2), GIF_SCALE)


def write_gif(x_t: Sequence[np.ndarray], x0: Sequence[np.ndarray], folder: Path, name: str) -> Path:
    """An animation of x_t beside x̂0 (uint8 [28,28] frames) as a looping GIF of at most GIF_MAX_FRAMES frames."""
    picks = np.unique(np.linspace(0, len(x_t) - 1, min(len(x_t), GIF_MAX_FRAMES)).round().astype(int))
    frames = [Image.fromarray(gif_frame(x_t[i], x0[i])) for i in picks]
    path = folder / f"{name}-{uuid.uuid4().hex[:8]}.gif"
    frame_ms = max(GIF_FRAME_MS, round(1000 * GIF_SECONDS / len(frames)))  # a short run is not over in a blink
    # optimize=False: no search for the smallest palette and changed region of each frame (26 ms -> 9 ms for
    # 60 frames; the frames are grey levels anyway)
    frames[0].save(path, save_all=True, append_images=frames[1:], loop=0, optimize=False,
                   duration=[frame_ms] * (len(frames) - 1) + [GIF_LAST_FRAME_MS])
    keep_newest(folder, "*.gif", keep=200)
    return path


def sheet_position(i: int, rows: int, columns: int) -> str:
    """CSS background-position of frame i's cell in a sheet of rows × columns cells (percentages: the tile can
    be any size; p% puts the image's p% point on the tile's p% point)."""
    row, column = divmod(i, columns)
    return f"{100 * column / max(1, columns - 1):.4g}% {100 * row / max(1, rows - 1):.4g}%"


def player_html(x_t: Sequence[np.ndarray], x0: Sequence[np.ndarray], captions: Sequence[str], fps: int,
                folder: Path) -> str:
    """The reverse-process player: every frame (x_t beside x̂₀, uint8 [28,28] each, shown PLAYER_IMAGE_PX wide)
    with its caption, all but the last hidden, and the play controls; `fps` is the speed it starts at.
    The frames travel as two sheets, PNG files in `folder` (which the app serves, see
    ui.launch) named in CSS variables on the player; each frame's two tiles show their cell of them. Files, not
    data in the page: gradio keeps every session's last outputs, and a 500-step run's sheets are ~0.6 MB.
    ui/player.js plays it in the browser (each player is new to the page, data-run, so the same run asked
    again plays again); without JavaScript it shows the last frame."""
    # each a sheet of 28-px cells, frame i at row i // columns, column i % columns: one PNG for a run's frames,
    # one encoding and not one per frame (a class's 500-step runs all end at once, and encoding a thousand small
    # PNGs each held the others up)
    columns = min(len(x_t), PLAYER_SHEET_COLUMNS)
    rows = -(-len(x_t) // columns)
    run = uuid.uuid4().hex[:8]
    sheets = {}
    for name, frames in (("x-t", x_t), ("x0", x0)):
        path = folder / f"player-{run}-{name}.png"
        Image.fromarray(grid_image(np.stack(frames), nrow=columns, pad=0)).save(path, compress_level=1)
        sheets[name] = f"gradio_api/file={path}"  # relative to the page, so the app may live under a path
    keep_newest(folder, "player-*.png", keep=2 * PLAYER_RUNS_KEPT)

    def tile(sheet: str, i: int, what: str) -> str:
        return (f'<i class="tile" role="img" aria-label="{what} at step {i}" style="background-image: '
                f'var(--{sheet}-sheet); background-position: {sheet_position(i, rows, columns)}"></i>')

    frames = "".join(
        f'<figure class="frame" data-step="{i}"{"" if i == len(x_t) - 1 else " hidden"}>'
        f'{tile("x-t", i, "x_t")}{tile("x0", i, "x̂₀")}<figcaption>{html.escape(caption)}</figcaption></figure>'
        for i, caption in enumerate(captions))
    return (f'<div class="player" data-run="{run}" data-autoplay data-columns="{columns}" '
            f'data-rows="{rows}" style="--x-t-sheet: url(&quot;{html.escape(sheets["x-t"])}&quot;); '
            f'--x0-sheet: url(&quot;{html.escape(sheets["x0"])}&quot;); '
            f'--sheet-size: {100 * columns}% {100 * rows}%">'
            f'<div class="player-heads"><span>x_t (noisy image)</span><span>x̂₀ (the model’s guess)</span></div>'
            f'{frames}<div class="player-controls">'
            f'<button data-action="back" title="one frame back">◀ frame</button>'
            f'<button data-action="play" class="primary">▶ Play</button>'
            f'<button data-action="forward" title="one frame forward">frame ▶</button>'
            f'<label>speed <input type="range" name="fps" min="{PLAYER_MIN_FPS}" max="{PLAYER_MAX_FPS}" '
            f'value="{fps}"><output>{fps}</output> frames/s</label>'
            f'<label><input type="checkbox" name="loop"> loop</label></div></div>')


PLAYER_CSS = f"""
.player-heads, .frame > .tile {{ display: inline-block; }}
.player-heads span {{ display: inline-block; width: {PLAYER_IMAGE_PX}px; margin-right: 12px; font-weight: 600; }}
.frame {{ margin: 0; }}
.frame > .tile {{ width: {PLAYER_IMAGE_PX}px; aspect-ratio: 1; margin-right: 12px; image-rendering: pixelated;
  background-size: var(--sheet-size); background-repeat: no-repeat; }}
.frame figcaption {{ font-size: 1.15em; font-variant-numeric: tabular-nums; margin: 6px 0; }}
.player-controls {{ display: flex; flex-wrap: wrap; gap: 10px; align-items: center; }}
.player-controls button {{ padding: 4px 12px; border: 1px solid var(--border-color-primary); border-radius: 6px; }}
.player-controls .primary {{ min-width: 7em; font-weight: 600; }}
.player-controls input[type=checkbox] {{ appearance: auto; width: 1.1em; height: 1.1em; vertical-align: middle; }}
.player-controls output {{ display: inline-block; min-width: 2ch; margin-left: 6px; text-align: right; }}
"""  # the player's own CSS (gr.HTML scopes it to the player)

# The filmstrip's layout, in pixels: a label column, a header of three lines, gaps between tiles
FILMSTRIP_TILE = 28 * FILMSTRIP_SCALE
FILMSTRIP_LABEL_W, FILMSTRIP_GAP, FILMSTRIP_COLUMN_GAP = 48, 4, 20
FILMSTRIP_TOP = 36  # room for the page's buttons over the image (download, full screen)
FILMSTRIP_HEADER_H = FILMSTRIP_TOP + 3 * (FILMSTRIP_FONT_PX + 8)


@cache
def font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (shipped with matplotlib: it has x̂₀ and xₜ), else PIL's own font."""
    spec = find_spec("matplotlib")
    path = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf" if spec else None
    return ImageFont.truetype(str(path), size) if path and path.exists() else ImageFont.load_default(size)


def filmstrip_cell(row: int, column: int, guess: bool) -> tuple[int, int]:
    """(top, left) of a tile of the filmstrip: digit row `row`, column `column`; x̂₀ if guess else x_t."""
    left = FILMSTRIP_LABEL_W + column * (2 * FILMSTRIP_TILE + FILMSTRIP_GAP + FILMSTRIP_COLUMN_GAP)
    return (FILMSTRIP_HEADER_H + row * (FILMSTRIP_TILE + FILMSTRIP_GAP),
            left + guess * (FILMSTRIP_TILE + FILMSTRIP_GAP))


def filmstrip(x_t: np.ndarray, x0: np.ndarray, headers: Sequence[tuple[str, str]], row_labels: Sequence[str]) -> np.ndarray:
    """All ten digits along the reverse process: one row per digit, one column per moment, each column x_t
    beside x̂₀ under a two-line header (e.g. "25%", "t = 375"). x_t, x0: uint8 [columns, rows, 28, 28].
    Returns uint8 [H, W]: black tiles (white digits) on white, FILMSTRIP_SCALE× enlarged; see filmstrip_cell."""
    columns, rows = x_t.shape[:2]
    bottom, right = filmstrip_cell(rows - 1, columns - 1, True)
    picture = Image.new("L", (right + FILMSTRIP_TILE, bottom + FILMSTRIP_TILE), 255)
    draw, text, small = ImageDraw.Draw(picture), font(FILMSTRIP_FONT_PX), font(FILMSTRIP_FONT_PX - 4)
    line = FILMSTRIP_FONT_PX + 8
    for c, header in enumerate(headers):
        top, left = filmstrip_cell(0, c, False)
        middle = left + FILMSTRIP_TILE + FILMSTRIP_GAP // 2
        for k, words in enumerate(header):
            draw.text((middle, FILMSTRIP_TOP + k * line), words, fill=0, font=text, anchor="mt")
        for guess, name in ((False, "xₜ"), (True, "x̂₀")):
            draw.text((filmstrip_cell(0, c, guess)[1] + FILMSTRIP_TILE // 2, top - 4), name, fill=80, font=small,
                      anchor="mb")
        for r in range(rows):
            for guess, image in ((False, x_t[c, r]), (True, x0[c, r])):
                picture.paste(Image.fromarray(enlarge(image, FILMSTRIP_SCALE)), filmstrip_cell(r, c, guess)[::-1])
    for r, label in enumerate(row_labels):
        top = filmstrip_cell(r, 0, False)[0]
        draw.text((FILMSTRIP_LABEL_W // 2 - 4, top + FILMSTRIP_TILE // 2), label, fill=0, font=text, anchor="mm")
    return np.asarray(picture)


def labelled_strip(images: np.ndarray, above: Sequence[str], below: Sequence[str], scale: int, font_px: int,
                   highlight: Sequence[bool] = ()) -> np.ndarray:
    """Images side by side with a caption above and below each (PIL: a few ms, where a matplotlib figure
    costs ~80). images: uint8 [N,28,28]; highlight[i]: draw caption i below in orange. Returns uint8 [H,W,3]."""
    tile, gap, line = 28 * scale, 8, font_px + 10
    picture = Image.new("RGB", (len(images) * (tile + gap) + gap, tile + 2 * line + gap), (255, 255, 255))
    draw, text = ImageDraw.Draw(picture), font(font_px)
    for i, image in enumerate(images):
        left = gap + i * (tile + gap)
        picture.paste(Image.fromarray(enlarge(image, scale)).convert("RGB"), (left, line))
        draw.text((left + tile // 2, line - 4), above[i], fill=(0, 0, 0), font=text, anchor="mb")
        orange = i < len(highlight) and highlight[i]
        draw.text((left + tile // 2, line + tile + 4), below[i], fill=(194, 65, 12) if orange else (0, 0, 0),
                  font=text, anchor="mt")
    return np.asarray(picture)
