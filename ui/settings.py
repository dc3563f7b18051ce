"""The app's limits and display sizes: one place for every number the UI states or enforces.

The sampling limits (samples, steps, work, guidance, seed) are the engine's, from `diffusion.requests`.
"""
from diffusion.digit_images import MAX_IMAGE_PIXELS  # noqa: F401 (re-exported)
from diffusion.requests import MAX_FEW_STEPS, MAX_GUIDANCE, MIN_GUIDANCE, MAX_SAMPLES, MAX_SEED, MAX_WORK  # noqa: F401

# --- Limits: they bound the work one request can cause on a 2-core machine (the UI states them) ------
MAX_SWEEP_VALUES = 8
MAX_PROMPTS, MAX_PROMPT_CHARS = 8, 200
MAX_FORWARD_T = 1000
MAX_FILE_BYTES = 10 * 2**20     # uploads, as sent (gradio refuses bigger files with HTTP 413)
MAX_PATH_CHARS = 4096           # a file argument's path
MAX_BODY_BYTES = 64 * 2**10     # any other request body (the largest real one, the CLIP prompts, is ~2 KB)
MAX_IN_FLIGHT_PER_CLIENT = 2    # sampling requests one client (an address, or a session on this machine) may have running
QUEUE_SIZE = 256                # requests waiting at once; more get "queue full"
SAMPLING_CONCURRENCY = 40       # /generate and /guidance_sweep wait on the shared network server
ANIMATION_CONCURRENCY = 40      # /reverse_process too: a whole class animates at once
HANDLER_NICENESS = 10           # handler threads run below the network server's thread (see classroom.py)
WORKER_THREADS = SAMPLING_CONCURRENCY + ANIMATION_CONCURRENCY + 24  # gradio's threads for the handlers
LIGHT_CONCURRENCY = 4           # forward noising, loading x₀: milliseconds each
# Browser sessions whose state is kept (the id of their last reverse-process run, and the components an event
# changed; no copies of configs or last outputs: ui._SessionWithoutConfigCopies). Least recently used goes
# first, so a class of 30 (each page one session) keeps theirs.
SESSION_CAPACITY = 64
CLASSIFIER_CHUNK_ROWS = 16        # the classifiers' thread runs its batches in chunks of this many rows …
MAX_CHUNKED_CLASSIFIER_ROWS = 256 # … unless a batch has more (then in chunks of this)
MAX_RUN_STORE_BYTES = 16 * 2**20  # reverse-process frames kept for scrubbing (a 500-step run: 0.8 MB)
# Every event goes through the queue (nothing can skip its limits). Sliders (/noise_at_t, /show_frame) take
# milliseconds; UI-only events (fitting a slider to the sampler, CLIP's status) take microseconds.
INSTANT = {"preprocess": False, "concurrency_id": "instant", "concurrency_limit": 2}
UI_ONLY = {"api_visibility": "private", "concurrency_id": "ui", "concurrency_limit": 8}

# --- Display -------------------------------------------------------------------------------------------
SAMPLE_SCALE = 4   # 28 px -> 112 px in galleries
GRID_SCALE = 1     # the downloadable grid of samples: 28 px per digit (a larger PNG costs 14 ms to encode)
FRAME_SCALE = 8    # 28 px -> 224 px for x_t, x̂0 and x_0
GIF_SCALE, GIF_MAX_FRAMES, GIF_FRAME_MS, GIF_LAST_FRAME_MS = 3, 60, 80, 1500  # a 60-frame GIF: ~20 ms to encode
MAX_STREAMED_FRAMES = 100  # frames sent while the reverse process runs (a 500-step ddpm run sends every 5th)
FRAME_INTERVAL_S = 0.1     # at most 10 frames a second while it runs: the page plays every frame back afterwards
FRAMES_PER_SECOND = 10     # … and at most about 10 a second for all the animations at once: each frame sent
                           # wakes threads that preempt the network's (30 ddpm-500 runs: 20 a second took 1.3× the
                           # network's own time, 5 a second 1.1×)
PLOT_POINTS = 50           # frames the classifier scores for the confidence plot (more where it first recognises)
STRIP_FRAMES = 8
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
LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]

# --- The Lab tab (ui/lab.py) ------------------------------------------------------------------------------
# The recognisability experiment is the heaviest request in the app (the course's ddpm-500 × 20 runs per
# digit: 100,000 network evaluations, about a minute on 2 cores), so it has its own bound and queue.
MAX_RECOGNISABILITY_SEEDS = 20
MAX_RECOGNISABILITY_WORK = 10 * MAX_RECOGNISABILITY_SEEDS * 500  # samples × steps
RECOGNISABILITY_DEFAULTS = {"seeds_per_digit": 20, "sampler": "ddpm", "steps": 500}  # the course's setting
RECOGNISABILITY_BUDGET_S = 40  # network seconds the default measurement may take: fewer runs per digit where the
                               # measured CPU is slower (a client's time-out, and a class, wait for it)
LAB_CONCURRENCY = 2          # experiments running at once; more wait in the queue
LAB_RESULTS_KEPT = 16        # finished experiments kept: a class asking the same one shares it
PROGRESS_INTERVAL_S = 0.5    # how often a long experiment's progress bar moves
MAX_DIFFICULTY_SAMPLES = 200 # the difficulty table's samples (20 per digit)
WHY_GRADUAL_STEPS = (1, 2, 5, 12, 50, 500)
EPS_IMAGE_RANGE = (-3.0, 3.0)  # noise images: black = -3, grey = 0, white = +3 (ε ~ N(0, 1))
LAB_FONT_PT = 14             # figure text, legible on a projector
LAB_IMAGE_SCALE = 10         # 28 px -> 280 px images

# --- Reverse process: playback in the browser, and all ten digits as one filmstrip ----------------------
PLAYER_IMAGE_PX = 256            # x_t and x̂₀ in the player: 28 px shown 256 px wide, pixelated
PLAYER_MIN_FPS, PLAYER_MAX_FPS = 1, 30  # the player's speed slider, frames a second
PLAYER_SHEET_COLUMNS = 32        # the player's frames travel as one sheet of 28-px cells, this many a row
PLAYER_RUNS_KEPT = 400           # the newest runs whose sheets stay on disk for their players (~0.8 MB each at most)
PLAYER_SECONDS = 4               # a run starts playing at the speed that shows all its frames in about this long
GIF_SECONDS = 4                  # the GIF lasts about this long too (each frame at least GIF_FRAME_MS)
FILMSTRIP_PERCENTS = (0, 10, 25, 50, 75, 90, 100)  # the filmstrip's columns: % of the reverse process
FILMSTRIP_SCALE = 3              # 28 px -> 84 px per digit in the filmstrip
FILMSTRIP_FONT_PX = 24           # its headers (≥ 12 pt when the 1400 px-wide image fills a projector)

# --- Training tab (ui/training.py) ------------------------------------------------------------------------
TRAINING_CONCURRENCY = 2     # /training_snapshots samples with a snapshot network (~0.2 s), /noise_prediction
SNAPSHOT_CACHE = 8           # snapshot networks kept loaded (about 2-4 MB each; the reference run keeps 7)
SNAPSHOT_GRID_CACHE = 64     # sample grids kept (9 KB each), by (snapshot, seed): a class on one slider samples once
SNAPSHOT_GRID_SCALE = 4      # 2 rows of 5 digits, 152×62 px -> 608×248 px
NOISE_IMAGE_SCALE = 9        # x₀, x_t, ε, ε̂ and ε̂ − ε: 28 px -> 252 px
LOSS_BY_T_POINTS = 25        # time steps in the loss-against-t plot (× 30 real digits: 750 network inputs)
DEFAULT_NOISE_T = 50         # the "what the loss means" t at first: x_t still shows the digit
CSS += """
.projector-plot { --text-sm: 16px; --text-md: 20px; }
"""

# --- The Edit tab (ui/edit.py) -----------------------------------------------------------------------------
DEFAULT_EDIT_SOURCE = 9      # the shipped real digits' index of the 3 that /edit starts from by default
DEFAULT_INPAINT_SOURCE = 21  # … and of the 7 that /inpaint starts from
MASK_PRESETS = ("top", "bottom", "left", "right")
MAX_INPAINT_SAMPLES = 8
STRIP_SCALE, STRIP_FONT_PX = 4, 22  # the SDEdit strip over s: 112 px digits, captions legible on a projector

# --- The Architecture tab (ui/architecture.py) --------------------------------------------------------------
ARCHITECTURE_CONCURRENCY = 2      # /compare_architectures requests running at once; more wait in the queue
ARCHITECTURE_WORKERS = 2          # threads sampling the variants (one torch thread each): 4 variants in ~0.7 s
ARCHITECTURE_RESULTS_KEPT = 16    # comparisons kept (~0.4 MB of frames each): a class asking the same one samples once
ARCHITECTURE_DIGITS = "0123456789"  # the digits every variant draws by default
ARCHITECTURE_DIGIT_PRESETS = ("0123456789", "3333333333", "4444444444", "7777777777", "0123")
ARCHITECTURE_MAX_DIGITS = 10
ARCHITECTURE_MAX_WORK = 1000      # digits × steps per variant (× 4 variants, × 2 network passes a guided step)
ARCHITECTURE_FRAME_PERCENTS = (10, 25, 50, 75, 100)  # the filmstrip's columns: % of the reverse process
ARCHITECTURE_LOSS_FROM_STEP = 400 # the training-loss plot starts here (before, the losses fall from 1 too fast to compare)
ARCHITECTURE_TILE_SCALE = 3       # 28 px -> 84 px per digit in the comparison pictures
ARCHITECTURE_FONT_PX = 22         # their text (≥ 12 pt when the ~1200 px-wide pictures fill a projector)
DIAGRAM_FONT_PT = 14              # the U-Net diagram's text (drawn at 100 dpi; ≥ 12 pt shown 1216 px of 1400 wide)

# --- Readable from the back of the room, usable on a phone (ui/controls.py's presenter_toggle) ---------------------
PRESENTER_TEXT_PX = 20       # presenter mode: body text at least this
PRESENTER_IMAGE_PX = 320     # … the digit images (x₀, x_t, x̂₀) at least this wide
PRESENTER_PLOT_TEXT_PX = 19  # … the native plots' text (≈ 14 pt); the matplotlib figures use rendering.PLOT_FONT_PT
PHONE_MAX_PX = 640           # below this width: the phone layout
CSS += f"""
#page-header {{ align-items: center; }}
#page-header .presenter-toggle {{ flex: 0 0 auto; }}
.empty-prompt {{ padding: 14px; border: 1px dashed var(--border-color-primary); border-radius: 8px; opacity: .85; }}
.empty-prompt.stale {{ border-color: #c2410c; }}
.sample-summary {{ margin: 0 0 8px; font-size: 1.05em; }}
#sample-cards.compact .sample-cards {{ grid-template-columns: repeat(auto-fill, minmax(64px, 1fr)); gap: 4px; }}
#sample-cards.compact .sample-card {{ padding: 2px; border-width: 2px; }}
#sample-cards.compact .sample-card > div {{ display: none; }}
#sample-cards.compact .sample-card img {{ width: 100%; height: auto; }}
#sample-cards.compact .sample-card[data-miss] {{ border-color: #c2410c; }}
.clip-details summary {{ cursor: pointer; opacity: .8; }}
/* A native plot's block is `height` tall, its label included, but Vega is given the whole height under the label
   (and the x axis was cut off): it gets what the label leaves */
#confidence-plot {{ display: flex; flex-direction: column; }}
#confidence-plot > .vega-embed {{ flex: 1 1 0; min-height: 0; height: auto; }}
/* Empty image panels say what fills them */
#x-t:not(:has(img))::after, #x0-hat:not(:has(img))::after, #forward-x-t:not(:has(img))::after,
#all-ten:not(:has(img))::after {{
  content: "appears when you press the button on the left"; display: block; padding: 8px; text-align: center;
  opacity: .7; }}
#all-ten:not(:has(img))::after {{ content: "press “All ten digits at once” to draw the filmstrip"; }}

/* Presenter mode: a class on <body>, with gradio's own dark theme */
body.presenter {{
  --text-xxs: 16px; --text-xs: 17px; --text-sm: {PRESENTER_PLOT_TEXT_PX}px; --text-md: {PRESENTER_TEXT_PX}px;
  --text-lg: 24px; --text-xl: 28px; --text-xxl: 32px;
  --block-label-text-size: 18px; --block-info-text-size: 18px; --block-title-text-size: 20px;
  --section-header-text-size: 20px; --input-text-size: {PRESENTER_TEXT_PX}px; --button-large-text-size: 22px;
  --button-small-text-size: 18px; --checkbox-label-text-size: 18px;
  --layout-gap: 8px; --block-padding: 6px 10px; --form-gap-width: 1px; --spacing-lg: 6px; --spacing-xl: 8px;
  font-size: {PRESENTER_TEXT_PX}px;
}}
body.presenter .prose, body.presenter .md, body.presenter .md p, body.presenter .md li, body.presenter .md td,
body.presenter .md th, body.presenter .sample-card, body.presenter label, body.presenter button {{
  font-size: max({PRESENTER_TEXT_PX}px, 1em); }}
body.presenter .md h1 {{ font-size: 32px; }}
body.presenter .pixels img, body.presenter #player .frame > .tile {{
  min-width: {PRESENTER_IMAGE_PX}px; min-height: {PRESENTER_IMAGE_PX}px; object-fit: contain; }}
body.presenter .pixels:not(.gallery):not(#strip) .image-container,
body.presenter .pixels:not(#strip) [data-testid="image"] {{ height: auto !important; min-height: {PRESENTER_IMAGE_PX}px; }}
body.presenter .sample-card img {{ width: 112px; height: 112px; }}
body.presenter #strip img {{ min-width: 0; min-height: 0; }}
body.presenter .vega-embed text, body.presenter .vega-embed .vega-bind {{ font-size: {PRESENTER_PLOT_TEXT_PX}px !important; }}
body.presenter .gradio-container {{ max-width: 100% !important; }}  /* compact: the whole screen, small gaps */

/* Phone: every tab one tap away (ui.controls.wrap_tabs), nothing wider than the screen */
@media (max-width: {PHONE_MAX_PX}px) {{
  .tab-wrapper .tab-container {{ flex-wrap: wrap; height: auto; }}
  .tab-wrapper button[role="tab"] {{ padding: 6px 9px; }}
  .gradio-container {{ padding-left: 6px !important; padding-right: 6px !important; }}
  .gradio-container img, .gradio-container canvas, .gradio-container svg {{ max-width: 100%; }}
  .gradio-container .row:has(> #x-t), .gradio-container .row:has(> #x0-hat) {{ flex-wrap: nowrap !important; }}
  #x-t, #x0-hat {{ min-width: 0 !important; flex: 1 1 0 !important; }}
  #player .frame > .tile {{ width: calc(50% - 8px) !important; margin-right: 4px !important; }}
  #player .player-heads span {{ width: calc(50% - 8px) !important; margin-right: 4px !important; }}
  #strip .grid-container {{ grid-template-columns: repeat(4, minmax(0, 1fr)) !important; }}
  .md table, .prose table {{ display: block; overflow-x: auto; max-width: 100%; }}
  .md pre, .prose pre {{ overflow-x: auto; max-width: 100%; }}
}}
"""
