"""The Gradio app's user interface: one module per tab, each holding its layout and its handlers.

    classroom      the loaded models and the services every tab shares
    generate       Generate: samples with the classifier's and CLIP's scores, the guidance sweep
    reverse        Reverse process: denoising, frame by frame
    forward        Forward noising: x_t under any β schedule
    training       Training: the loss and the samples over training, and what the loss means
    architecture   Architecture: the U-Net drawn from its config; what skip connections, t and attention are for
    edit           Edit: re-imagine a digit as another (SDEdit), inpaint part of one
    lab            Lab: experiments (recognisability per digit, the context mask, why gradual, difficulty, limits)
    how_it_works   How it works: the explanations (how_it_works.md) with the model's real numbers
    controls, validation, rendering, settings: shared widgets, input checks, pictures, limits

Every action is an API endpoint whose parameters all have defaults (see the README):
    /generate  /guidance_sweep  /clip_status                 (Generate tab)
    /reverse_process  /show_frame  /all_ten                  (Reverse process tab)
    /shipped_digit  /load_image  /load_drawing  /forward_noising  /noise_at_t   (Forward noising tab)
    /training_snapshots  /noise_prediction                   (Training tab)
    /compare_architectures                                   (Architecture tab)
    /edit  /inpaint                                          (Edit tab)
    /recognisability  /conditioning  /why_gradual  /difficulty  (Lab tab)
"""
from __future__ import annotations

import functools
import inspect
import types

import gradio as gr
import gradio.blocks
import gradio.route_utils
import gradio.state_holder
from starlette.middleware import Middleware

from . import how_it_works, image_cache
from .architecture import ArchitectureTab
from .classroom import Classroom, load_classroom
from .controls import presenter_toggle, wrap_tabs
from .forward import ForwardTab
from .generate import GenerateTab
from .edit import EditTab
from .guard import RequestGuard
from .lab import LabTab
from .reverse import ReverseTab
from .settings import CSS, MAX_FILE_BYTES, QUEUE_SIZE, SESSION_CAPACITY, UI_ONLY, WORKER_THREADS
from .training import TrainingTab

__all__ = ["Classroom", "build_app", "launch", "load_classroom"]

THEME = gr.themes.Soft(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])  # no web fonts


def build_app(classroom: Classroom) -> gr.Blocks:
    """The page: its eight tabs wired to `classroom`, and the header's presenter switch."""
    generate, reverse, forward = GenerateTab(classroom), ReverseTab(classroom), ForwardTab(classroom)
    with gr.Blocks(title="MNIST Diffusion Classroom", delete_cache=(1800, 3600)) as demo:
        with gr.Row(elem_id="page-header"):
            gr.Markdown("# MNIST Diffusion Classroom\nA class-conditional diffusion model (DDPM) drawing handwritten "
                        "digits, step by step.")
            presenter_toggle(demo)  # large and dark for a projector; also ?presenter=1 in the address
        with gr.Tab("Generate", id="generate"):
            clip_status = generate.layout()
        with gr.Tab("Reverse process", id="reverse"):
            reverse.layout()
        with gr.Tab("Forward noising", id="forward"):
            forward_event = forward.layout()
        with gr.Tab("Training", id="training"):
            TrainingTab(classroom).layout()
        with gr.Tab("Architecture", id="architecture"):
            ArchitectureTab(classroom).layout()
        with gr.Tab("Edit", id="edit"):
            EditTab(classroom).layout()
        with gr.Tab("Lab", id="lab"):
            LabTab(classroom).layout()
        with gr.Tab("How it works", id="how"):
            how_it_works.layout(classroom)
        timer = gr.Timer(2.0, active=True)
        timer.tick(generate.poll_clip_status, None, [clip_status, timer], **UI_ONLY)
        demo.load(generate.clip_status, None, clip_status, api_name="clip_status", concurrency_id="ui",
                  concurrency_limit=8)
        demo.load(api_visibility="private", **forward_event)
    wrap_tabs(demo)  # on a phone every tab is one tap away: no "•••" menu
    return demo


class _CachedSignatures(types.ModuleType):
    """The `inspect` module as gradio.blocks sees it, with `signature` remembered per function.

    gradio builds a config of every component for each new session (a student's first request), calling
    inspect.signature(cls.__init__) for each: 13.5 ms for this app's 257 blocks, on the server's event loop,
    so thirty students' first clicks queued 0.4 s of it behind each other. Remembered: 6.6 ms. (A signature
    never changes; a callable that cannot be a dictionary key is simply inspected again.)"""

    def __init__(self):
        super().__init__("inspect")

    def __getattr__(self, name):
        return getattr(inspect, name)

    @staticmethod
    def signature(obj, *args, **kwargs):
        if args or kwargs:
            return inspect.signature(obj, *args, **kwargs)
        try:
            return _remembered_signature(obj)
        except TypeError:  # unhashable
            return inspect.signature(obj)


@functools.lru_cache(maxsize=4096)
def _remembered_signature(obj) -> inspect.Signature:
    return inspect.signature(obj)


class _SessionWithoutConfigCopies(gradio.state_holder.SessionState):
    """gradio's per-session state, without gradio's copies of its components' configs and last values.

    gradio keeps them for deep links (a URL that reopens a page as it was), which this app does not offer. It
    built a config of all 257 components for each new session, and every API call without a session is a new
    session: 0.44 MB and 6.6 ms of the event loop each, and then a copy of every output an event sent (a
    class's 64 sessions kept 28 MB, then 10 MB). The session's own state (gr.State values, components an
    event changed) is kept as gradio keeps it; `components` builds the configs when asked, without the
    last values."""

    def __init__(self, blocks: gr.Blocks):
        super().__init__(types.SimpleNamespace(default_config=blocks.default_config, blocks={}))  # no configs
        self._blocks = blocks

    def __setitem__(self, key: int, value) -> None:
        super().__setitem__(key, value)
        self.config_values.pop(key, None)

    def _update_config(self, key: int) -> None:
        pass

    def _update_value_in_config(self, key: int, value) -> None:
        pass

    @property
    def components(self) -> list[dict]:
        configs = (self.blocks_config.config_for_block(key, [], block)
                   for key, block in self.blocks_config.blocks.items() if key in self._blocks.blocks)
        return [config for config in configs if config]


def launch(demo: gr.Blocks, classroom: Classroom, host: str, port: int, **kwargs):
    """Queue with limits (sized for 2 vCPUs) and serve, with the classroom's work folder (GIFs, the players'
    sheets of frames: nothing a user sent) served as files. Returns what gr.Blocks.launch returns."""
    # api_open=False: a queued event cannot be called directly (POST /run/<name>), skipping the queue's limits;
    # RequestGuard closes the other doors and bounds every request body before gradio stores anything.
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=2, api_open=False)
    image_cache.install()  # identical pictures share a cache file: never rewrite one while it is being served
    gradio.blocks.inspect = _CachedSignatures()
    gradio.state_holder.SessionState = gradio.route_utils.SessionState = _SessionWithoutConfigCopies
    # run_history=False: gradio's run history re-reads and re-writes up to 100 past runs in the browser's
    # localStorage on every event, so each slider move got slower as a lesson went on (measured: 45 ms
    # round trips became 100 ms after ten reverse-process runs). The app has its own frame slider.
    return demo.launch(server_name=host, server_port=port, theme=THEME, css=CSS, max_file_size=MAX_FILE_BYTES,
                       max_threads=WORKER_THREADS, state_session_capacity=SESSION_CAPACITY,
                       ssr_mode=False, show_error=True, run_history=False, allowed_paths=[str(classroom.work_folder)],
                       app_kwargs={"middleware": [Middleware(RequestGuard, blocks=demo)]}, **kwargs)
