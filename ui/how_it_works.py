"""The How-it-works tab: the explanations in `how_it_works.md`, filled in with the shipped model's real
numbers read from its checkpoint config."""
from __future__ import annotations

import re
from pathlib import Path

import gradio as gr

from diffusion.model import count_parameters
from diffusion.requests import DEFAULT_GUIDANCE, DEFAULT_GUIDANCE_INTERVAL, DEFAULT_SAMPLER, DEFAULT_STEPS
from diffusion.sampling import EVERY_STEP

from .classroom import Classroom
from .settings import LATEX

HERE = Path(__file__).resolve().parent


def fill(template: str, **values) -> str:
    """Replace every {{name}} in `template`; a name without a value is an error (no half-filled page)."""
    missing = set(re.findall(r"\{\{(\w+)\}\}", template)) - set(values)
    if missing:
        raise KeyError(f"no value for {', '.join(sorted(missing))}")
    return re.sub(r"\{\{(\w+)\}\}", lambda m: str(values[m.group(1)]), template)


def guidance_interval_text() -> str:
    """Where the default guidance applies, if not at every step."""
    lo, hi = DEFAULT_GUIDANCE_INTERVAL
    if (lo, hi) == EVERY_STEP:
        return ""
    return (f", applied only while {lo:g} ≤ t/T ≤ {hi:g} (the digit's identity is settled at large t; "
            f"guiding the fine detail at small t only makes digits more alike, and skipping it saves "
            f"a network evaluation per step)")


def training_text(training: dict) -> str:
    """How the shipped network was trained, from its config's "training" entry."""
    teacher = training.get("distilled_from", {}).get("training", {})
    if teacher:
        return (f"It was first trained for {teacher.get('epochs', '?')} epoch(s) as an ordinary network (the "
                f"*teacher*), then distilled for {training.get('epochs', '?')} epoch(s) into this one, which "
                f"also has a guidance head (see *Classifier-free guidance* below).")
    if isinstance(training.get("steps"), int):
        return (f"Training so far: {training.get('epochs', '?')} epoch(s), {training['steps']:,} optimiser "
                f"steps of batch {training.get('batch_size', '?')}, labels dropped with probability "
                f"{training.get('label_dropout', '?')}, on {training.get('data', 'MNIST')}.")
    return ""


def how_it_works_markdown(classroom: Classroom) -> str:
    """The explanations, with the shipped model's real numbers read from its checkpoint config."""
    cfg, sched = classroom.pipe.config, classroom.pipe.schedule
    arch = cfg["architecture"]
    accuracy = classroom.classifier_config.get("test_accuracy")
    return fill(
        (HERE / "how_it_works.md").read_text(),
        parameters=f"{count_parameters(classroom.pipe.model):,}", T=sched.num_train_steps, schedule=sched.name,
        beta_range="" if sched.name == "cosine" else f", β from {sched.beta_start:g} to {sched.beta_end:g}",
        training=training_text(cfg.get("training", {})), channels=arch["channels"],
        attention_heads=arch["attention_heads"], embedding_dim=arch["embedding_dim"], sampler=DEFAULT_SAMPLER,
        steps=DEFAULT_STEPS, guidance=f"{DEFAULT_GUIDANCE:g}", guidance_interval=guidance_interval_text(),
        classifier_accuracy=f" ({accuracy:.2%} accurate on the MNIST test set)" if accuracy else "",
        guidance_head=(HERE / "guidance_head.md").read_text() if arch.get("guidance_head") else "")


def layout(classroom: Classroom) -> None:
    """Build the tab inside the current gr.Tab."""
    gr.Markdown(how_it_works_markdown(classroom), latex_delimiters=LATEX)
