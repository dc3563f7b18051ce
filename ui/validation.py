"""Input checks for the endpoints. Every endpoint receives raw JSON values (preprocess=False) and checks
them here or in the engine (`diffusion.requests`), so a bad value from the browser or from gradio_client
gets a message that names it, and nothing else happens."""
from __future__ import annotations

import contextlib

import gradio as gr

from diffusion.requests import real_number, short_repr, whole_number

from .settings import ALL_DIGITS, DEFAULT_SWEEP, MAX_GUIDANCE, MIN_GUIDANCE, MAX_PROMPT_CHARS, MAX_PROMPTS, MAX_SWEEP_VALUES


def invalid(message: str) -> gr.Error:
    """The error for bad input: shown in the page (raised by gradio_client), no traceback logged."""
    return gr.Error(message, title="Invalid input", print_exception=False)


@contextlib.contextmanager
def user_errors():
    """Turn the engine's ValueError (its message is meant for the user) into the page's error."""
    try:
        yield
    except ValueError as e:
        raise invalid(str(e)) from None


def checked_whole_number(name: str, value, low: int, high: int) -> int:
    with user_errors():
        return whole_number(name, value, low, high)


def checked_real_number(name: str, value, low: float, high: float) -> float:
    with user_errors():
        return real_number(name, value, low, high)


def one_of(name: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise invalid(f"{name} must be one of {', '.join(choices)}; got {short_repr(value)}")
    return value


def digit_set(value, allow_all: bool) -> list[int]:
    """'all' -> [0, …, 9]; a digit (7 or "7") -> [7]."""
    if allow_all and value == ALL_DIGITS:
        return list(range(10))
    if isinstance(value, str) and len(value.strip()) == 1 and value.strip() in "0123456789":
        value = int(value)
    if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 9):
        allowed = "a digit from 0 to 9" + (f" or '{ALL_DIGITS}'" if allow_all else "")
        raise invalid(f"digit must be {allowed}, got {short_repr(value)}")
    return [value]


def guidance_values(text) -> list[float]:
    """'0, 0.5, 2' -> [0.0, 0.5, 2.0]: 1 to MAX_SWEEP_VALUES values of w, each from MIN_GUIDANCE to MAX_GUIDANCE."""
    if not isinstance(text, str) or len(text) > 400:
        raise invalid(f"guidance values must be short text such as '{DEFAULT_SWEEP}', got {short_repr(text)}")
    words = text.replace(",", " ").split()
    if not 1 <= len(words) <= MAX_SWEEP_VALUES:
        raise invalid(f"give 1 to {MAX_SWEEP_VALUES} guidance values separated by commas, got {len(words)}")
    try:
        values = [float(word) for word in words]
    except ValueError:
        raise invalid(f"guidance values must be numbers separated by commas, got {short_repr(text)}") from None
    return [checked_real_number("each guidance value w", w, MIN_GUIDANCE, MAX_GUIDANCE) for w in values]


def quality_prompts(text) -> tuple[str, ...]:
    """CLIP quality prompts, one per line: at most MAX_PROMPTS lines of MAX_PROMPT_CHARS characters."""
    if not isinstance(text, str):
        raise invalid(f"quality prompts must be text, one prompt per line, got {short_repr(text)}")
    prompts = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(prompts) > MAX_PROMPTS or any(len(p) > MAX_PROMPT_CHARS for p in prompts):
        raise invalid(f"give at most {MAX_PROMPTS} quality prompts of at most {MAX_PROMPT_CHARS} characters each")
    return prompts
