"""Scores beside every sample: the trusted digit classifier, and CLIP as a second (weak) opinion.

CLIP never learnt to read 28×28 digits, so the app shows its zero-shot guess beside the classifier's
and lets students see where the two agree.

    >>> from diffusion.classifier import load_classifier
    >>> from diffusion.scoring import agreement, classifier_scores, load_clip
    >>> clip = load_clip()                        # ViT-B-32 / laion2b_s34b_b79k unless configured
    >>> c = clip.score(images, digits)            # images: uint8 [N,28,28], 0 = background, 255 = ink
    >>> k = classifier_scores(load_classifier(), images, digits)
    >>> agreement(c, k).rate, agreement(c, k).disagree

Which CLIP: a model name and a pretrained tag *or a local weights file*, from the arguments, else the
defaults below. (The entry points, app.py and this module's CLI, read DIFFUSION_CLIP_MODEL and
DIFFUSION_CLIP_PRETRAINED from the environment and pass them in.)
Offline, with the weights not on disk, `load_clip` raises `ClipUnavailable` at once (no retry loop)
and says how to point at a local file; the classifier scores work without CLIP.

CLI: python -m diffusion.scoring [--images samples.npz] [--clip-model M] [--clip-pretrained TAG_OR_FILE]
"""
from __future__ import annotations

import argparse
import functools
import os
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .classifier import DEFAULT_CLASSIFIER, load_classifier
from .data import load_shipped_digits, to_model_range

DEFAULT_CLIP_MODEL = "ViT-B-32"
DEFAULT_CLIP_PRETRAINED = "laion2b_s34b_b79k"
ENV_CLIP_MODEL = "DIFFUSION_CLIP_MODEL"
ENV_CLIP_PRETRAINED = "DIFFUSION_CLIP_PRETRAINED"  # a pretrained tag, or a path to a local weights file
# OpenAI's zero-shot MNIST prompt; the requested digit's prompt is also the caption for CLIPScore.
DIGIT_PROMPTS = tuple(f'a photo of the number: "{d}".' for d in range(10))
DEFAULT_QUALITY_PROMPTS = ("a clear handwritten digit", "a blurry handwritten digit", "an unreadable scribble")
HUB_PROBE_TIMEOUT = 1.5  # seconds the hub has to answer before it counts as unreachable

_HOW_TO_POINT = (f"To use CLIP without the internet, copy a weights file (e.g. open_clip_model.safetensors) onto this "
                 f"machine and point at it: {ENV_CLIP_PRETRAINED}=/path/to/open_clip_model.safetensors "
                 f"or --clip-pretrained /path/to/open_clip_model.safetensors "
                 f"(and {ENV_CLIP_MODEL} / --clip-model for its architecture).")


def _check_samples(images: np.ndarray, digits: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Validate a batch: images uint8 [N,28,28] (N ≥ 1), digits N integers from 0 to 9."""
    images, digits = np.asarray(images), np.asarray(digits)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) == 0:
        raise ValueError(f"images must be uint8 [N,28,28] with N ≥ 1, got {images.dtype} {list(images.shape)}")
    if digits.shape != (len(images),) or not np.issubdtype(digits.dtype, np.integer):
        raise ValueError(f"digits must be {len(images)} integers (one per image), got {digits.tolist()!r}")
    if digits.min() < 0 or digits.max() > 9:
        raise ValueError(f"digits must be from 0 to 9, got {digits.tolist()}")
    return images, digits.astype(np.int64)


# --- the trusted classifier ------------------------------------------------------------------------

@dataclass
class ClassifierScores:
    """The digit classifier's view of N samples (numpy arrays)."""
    probs: np.ndarray                 # [N,10] softmax over the digits
    predicted_digit: np.ndarray       # [N] int64, argmax of probs
    confidence_requested: np.ndarray  # [N] probability of the digit that was asked for


def classifier_scores(classifier, images: np.ndarray, digits: Sequence[int]) -> ClassifierScores:
    """Score samples with a `DigitClassifier` (e.g. `diffusion.classifier.load_classifier()`).

    images: uint8 [N,28,28], 0 = background, 255 = ink; digits: the N requested digits.
    """
    images, digits = _check_samples(images, digits)
    probs = classifier.predict_proba(to_model_range(images)).numpy()
    return ClassifierScores(probs, probs.argmax(1), probs[np.arange(len(digits)), digits])


def noisy_image_scores(classifier, images: np.ndarray, t: Sequence[int], digits: Sequence[int]) -> ClassifierScores:
    """Score noisy images x_t with a `NoiseAwareClassifier` (`diffusion.classifier.load_noise_classifier()`).

    images: uint8 [N,28,28] (x_t as shown, clipped to [-1,1]); t: the N time steps (0 = clean, T = pure noise);
    digits: the N requested digits.
    """
    images, digits = _check_samples(images, digits)
    t = np.asarray(t, dtype=np.int64)
    if t.shape != (len(images),) or t.min() < 0 or t.max() > classifier.schedule.num_train_steps:
        raise ValueError(f"t must be {len(images)} time steps from 0 to {classifier.schedule.num_train_steps}")
    probs = classifier.predict_proba(to_model_range(images), torch.from_numpy(t)).numpy()
    return ClassifierScores(probs, probs.argmax(1), probs[np.arange(len(digits)), digits])


def best_of_n(candidates: np.ndarray, confidence: np.ndarray, n: int) -> np.ndarray:
    """Best-of-N reranking: candidates uint8 [S·n,28,28] (n consecutive candidates per sample) and a judge's
    confidence in the asked digit for each, float [S·n] -> uint8 [S,28,28], each sample's surest candidate."""
    best = np.asarray(confidence).reshape(-1, n).argmax(1)
    return np.asarray(candidates).reshape(-1, n, 28, 28)[np.arange(len(best)), best]


# --- CLIP -------------------------------------------------------------------------------------------

class ClipUnavailable(RuntimeError):
    """CLIP cannot be used (weights missing and no hub, unknown model, still loading…); says why and what to do."""


@dataclass
class ClipScores:
    """CLIP's view of N samples (numpy arrays; P = number of quality prompts)."""
    digit_probs: np.ndarray         # [N,10] softmax over the ten DIGIT_PROMPTS (CLIP's own temperature)
    predicted_digit: np.ndarray     # [N] int64, CLIP's zero-shot digit
    prob_requested: np.ndarray      # [N] CLIP's probability for the requested digit
    quality_prompts: tuple[str, ...]
    quality_similarity: np.ndarray  # [N,P] cosine similarity to each quality prompt, in [-1,1]
    quality_probs: np.ndarray       # [N,P] softmax over the quality prompts
    clip_score: np.ndarray          # [N] CLIPScore = 100·max(cos(image, requested digit's prompt), 0), in [0,100]


class ClipScorer:
    """An open_clip model and its tokenizer, ready to score digits. `load_clip()` makes one."""

    def __init__(self, model: torch.nn.Module, tokenizer, model_name: str, pretrained: str):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_name, self.pretrained = model_name, pretrained
        cfg = model.visual.preprocess_cfg  # set by open_clip.create_model: size, mean, std, …
        self.image_size = cfg["size"] if isinstance(cfg["size"], int) else tuple(cfg["size"])
        self.mean = torch.tensor(cfg["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg["std"], dtype=torch.float32).view(1, 3, 1, 1)
        # Text features per prompt set, so only images are encoded per request; bounded because
        # students edit the quality prompts in the app.
        self.text_features = functools.lru_cache(maxsize=32)(self._encode_text)
        self.text_features(DIGIT_PROMPTS)
        self.text_features(DEFAULT_QUALITY_PROMPTS)

    @torch.inference_mode()
    def _encode_text(self, prompts: tuple[str, ...]) -> torch.Tensor:
        """Unit-length text features [P,D] for a tuple of prompts."""
        return self.model.encode_text(self.tokenizer(list(prompts)), normalize=True)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N,28,28] -> float [N,3,S,S] as CLIP expects: bicubic upscale to its image size S
        (224 for ViT-B-32), grey copied to R, G and B, CLIP's mean/std normalisation.

        The digits stay white ink on black: as MNIST stores them, as the app shows them, and as
        CLIP's zero-shot MNIST benchmarks feed them.
        """
        x = F.interpolate(images.float().div(255).unsqueeze(1), size=self.image_size, mode="bicubic",
                          align_corners=False).clamp(0, 1)  # bicubic overshoots a little at strokes
        return (x.expand(-1, 3, -1, -1) - self.mean) / self.std

    def prompt_similarity(self, prompts: Sequence[str]):
        """A differentiable judge for `sampling.x0_guided_eps`: x̂_0 [B,1,28,28] in [-1,1] -> [B], CLIP's cosine
        similarity between image i and prompts[i] (the digits as the app shows them: white ink on black)."""
        text = self.text_features(tuple(prompts)).clone()  # [B,D], outside inference mode's graph

        def similarity(x0: torch.Tensor) -> torch.Tensor:
            x = F.interpolate((x0 + 1) / 2, size=self.image_size, mode="bicubic", align_corners=False).clamp(0, 1)
            image = self.model.encode_image((x.expand(-1, 3, -1, -1) - self.mean) / self.std, normalize=True)
            return (image * text).sum(1)
        return similarity

    @torch.inference_mode()
    def score(self, images: np.ndarray, digits: Sequence[int],
              quality_prompts: Sequence[str] = DEFAULT_QUALITY_PROMPTS, batch_size: int = 32) -> ClipScores:
        """CLIP's scores for samples. images: uint8 [N,28,28], 0 = background, 255 = ink; digits: the
        N requested digits; quality_prompts: P strings (blank ones are dropped; P may be 0)."""
        images, digits = _check_samples(images, digits)
        prompts = tuple(p.strip() for p in quality_prompts if p.strip())
        digit_text = self.text_features(DIGIT_PROMPTS)                               # [10,D]
        quality_text = self.text_features(prompts) if prompts else digit_text[:0]    # [P,D]
        image = torch.cat([self.model.encode_image(self.preprocess(chunk), normalize=True)
                           for chunk in torch.from_numpy(images).split(batch_size)])  # [N,D]
        digit_cos, quality_cos = image @ digit_text.T, image @ quality_text.T
        scale = self.model.logit_scale.exp()  # CLIP's learnt softmax temperature (100 for trained models)
        digit_probs = (scale * digit_cos).softmax(1)
        rows, requested = torch.arange(len(digits)), torch.from_numpy(digits)
        return ClipScores(
            digit_probs=digit_probs.numpy(),
            predicted_digit=digit_probs.argmax(1).numpy(),
            prob_requested=digit_probs[rows, requested].numpy(),
            quality_prompts=prompts,
            quality_similarity=quality_cos.numpy(),
            quality_probs=(scale * quality_cos).softmax(1).numpy(),
            clip_score=(100 * digit_cos[rows, requested]).clamp(min=0).numpy(),
        )


def _hub_reachable(endpoint: str, timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """Whether the hub answers an HTTP request (any status; proxies honoured) within `timeout` seconds.

    The request runs in a daemon thread because the name lookup ignores socket timeouts.
    """
    answered = []

    def ask():
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
            answered.append(True)
        except urllib.error.HTTPError:  # an error status is still an answer
            answered.append(True)
        except (OSError, ValueError):
            pass

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(timeout)  # returns as soon as the request fails, too
    return bool(answered)


def _resolve_pretrained(open_clip, model_name: str, pretrained: str, cache_dir: str | None) -> tuple[str, dict]:
    """What to hand `open_clip.create_model` so that it never waits on an unreachable hub.

    Returns (pretrained, preprocessing overrides): a weights file as it is; a tag's cached weights
    file with the tag's preprocessing; or, when the hub answers, the tag itself (open_clip downloads
    it). Raises ClipUnavailable at once when the weights are not on disk and the hub is unreachable.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    if (os.sep in pretrained or pretrained.endswith((".safetensors", ".bin", ".pt", ".pth"))
            or Path(pretrained).is_file()):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise ClipUnavailable(f"CLIP weights file not found: {path}. {_HOW_TO_POINT}")
        return str(path), {}
    tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not tag_cfg.get("hf_hub"):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model_name)) or "none"
        raise ClipUnavailable(f"{pretrained!r} is neither a weights file nor a Hugging Face pretrained tag of "
                              f"{model_name} (its tags: {tags}). {_HOW_TO_POINT}")
    # The files open_clip would download for the tag, safetensors first ('org/repo/' = the default file).
    repo_id, filename = os.path.split(tag_cfg["hf_hub"])
    filename = filename or open_clip.pretrained.HF_WEIGHTS_NAME
    names = [*open_clip.pretrained._get_safe_alternatives(filename), filename]
    for name in names:
        cached = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
        if isinstance(cached, str):
            return cached, tag_cfg
    # huggingface_hub reads its own HF_HUB_OFFLINE once, at import; honour it if it was set after that
    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    if offline or not _hub_reachable(constants.ENDPOINT):
        why = "HF_HUB_OFFLINE is set" if offline else f"the Hugging Face hub ({constants.ENDPOINT}) cannot be reached"
        raise ClipUnavailable(
            f"CLIP weights {model_name} / {pretrained} are not on this machine and {why}, so there are no CLIP "
            f"scores (the classifier's scores still work). The weights are {names[0]} from "
            f"https://huggingface.co/{repo_id}. {_HOW_TO_POINT}")
    return pretrained, {}


def load_clip(model_name: str | None = None, pretrained: str | None = None,
              cache_dir: str | None = None) -> ClipScorer:
    """Load CLIP for scoring, on the CPU. model_name: an open_clip architecture (e.g. "ViT-B-32");
    pretrained: a pretrained tag (e.g. "laion2b_s34b_b79k") or a path to a weights file (.safetensors,
    .bin, .pt). Each None
    -> the default. cache_dir: the Hugging Face cache (None = its default).

    Raises ClipUnavailable, with what to do, when CLIP cannot be loaded; within ~2 s when offline.
    """
    model_name = model_name or DEFAULT_CLIP_MODEL
    pretrained = pretrained or DEFAULT_CLIP_PRETRAINED
    try:
        import open_clip
    except ImportError as e:
        raise ClipUnavailable(f"open_clip is not installed ({e}): pip install open_clip_torch") from None
    if model_name not in open_clip.list_models():
        raise ClipUnavailable(f"unknown CLIP model {model_name!r} (open_clip.list_models() lists the names)")
    source, preprocess = _resolve_pretrained(open_clip, model_name, pretrained, cache_dir)
    try:
        model = open_clip.create_model(model_name, pretrained=source, cache_dir=cache_dir,
                                       force_preprocess_cfg=preprocess)
        return ClipScorer(model, open_clip.get_tokenizer(model_name), model_name, pretrained)
    except Exception as e:  # a corrupt or mismatched file, a failed download, …: all mean "no CLIP"
        raise ClipUnavailable(f"could not load CLIP {model_name} / {pretrained}: {type(e).__name__}: {e}. "
                              f"{_HOW_TO_POINT}") from e


class LazyClip:
    """What the app holds: CLIP loads in a background thread, so no request ever waits for it.

    status() is "not loaded", "loading", "ready" or "unavailable: <why and what to do>".
    """

    def __init__(self, model_name: str | None = None, pretrained: str | None = None, cache_dir: str | None = None):
        self.model_name, self.pretrained, self.cache_dir = model_name, pretrained, cache_dir  # as for load_clip
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._scorer: ClipScorer | None = None
        self._error = ""

    def start(self) -> None:
        """Begin loading in a daemon thread (calling it again does nothing)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._load, name="load-clip", daemon=True)
                self._thread.start()

    def _load(self) -> None:
        try:
            self._scorer = load_clip(self.model_name, self.pretrained, self.cache_dir)
        except Exception as e:  # whatever went wrong must reach status(), not die with the thread
            self._error = str(e) if isinstance(e, ClipUnavailable) else f"loading CLIP failed: {type(e).__name__}: {e}"
        finally:
            self._done.set()

    def status(self) -> str:
        if self._thread is None:
            return "not loaded"
        if not self._done.is_set():
            return "loading"
        return "ready" if self._scorer is not None else f"unavailable: {self._error}"

    def get(self, timeout: float = 0.0) -> ClipScorer:
        """The scorer, waiting at most `timeout` seconds (starts loading if nobody has yet).
        Raises ClipUnavailable with the loading error, or "CLIP is still loading"."""
        self.start()
        if not self._done.wait(timeout):
            raise ClipUnavailable("CLIP is still loading; its scores appear once it is ready")
        if self._scorer is None:
            raise ClipUnavailable(self._error)
        return self._scorer


# --- where CLIP and the classifier agree ---------------------------------------------------------------

@dataclass
class Agreement:
    rate: float          # fraction of samples where CLIP's zero-shot digit == the classifier's digit
    disagree: list[int]  # indices of the samples where they differ


def agreement(clip: ClipScores, classifier: ClassifierScores) -> Agreement:
    """How often CLIP's zero-shot digit matches the classifier's, on the same N samples."""
    if len(clip.predicted_digit) != len(classifier.predicted_digit):
        raise ValueError(f"scores of {len(clip.predicted_digit)} and {len(classifier.predicted_digit)} samples")
    same = clip.predicted_digit == classifier.predicted_digit
    return Agreement(rate=float(same.mean()), disagree=np.flatnonzero(~same).tolist())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Print classifier and CLIP scores for digits.")
    p.add_argument("--images", help=".npz with x: uint8 [N,28,28] (255 = ink) and y: the requested digits "
                                    "(default: the real MNIST test digits shipped with the repo)")
    p.add_argument("--clip-model", default=os.environ.get(ENV_CLIP_MODEL),
                   help=f"open_clip architecture (default: ${ENV_CLIP_MODEL} or {DEFAULT_CLIP_MODEL})")
    p.add_argument("--clip-pretrained", default=os.environ.get(ENV_CLIP_PRETRAINED),
                   help=f"pretrained tag or local weights file (default: ${ENV_CLIP_PRETRAINED} or "
                        f"{DEFAULT_CLIP_PRETRAINED})")
    p.add_argument("--classifier", help="classifier checkpoint stem (default: the shipped one)")
    args = p.parse_args(argv)

    if args.images:
        with np.load(args.images) as f:
            images, digits = f["x"], f["y"].astype(np.int64)
    else:
        images, digits = load_shipped_digits()
    cls = classifier_scores(load_classifier(args.classifier or DEFAULT_CLASSIFIER), images, digits)
    try:
        clip = load_clip(args.clip_model, args.clip_pretrained)
        clip_scores = clip.score(images, digits)
        print(f"CLIP: {clip.model_name} / {clip.pretrained}")
    except ClipUnavailable as e:
        clip_scores = None
        print(f"CLIP unavailable: {e}\n")
    print("  #  asked | classifier: digit  p(asked) |" + ("" if clip_scores is None else
          " CLIP: digit  p(asked)  CLIPScore  best quality prompt"))
    for i, d in enumerate(digits):
        row = f"{i:3d}  {d:5d} | {cls.predicted_digit[i]:17d}  {cls.confidence_requested[i]:8.3f} |"
        if clip_scores is not None:
            best = clip_scores.quality_prompts[clip_scores.quality_probs[i].argmax()]
            row += (f" {clip_scores.predicted_digit[i]:11d}  {clip_scores.prob_requested[i]:8.3f}"
                    f"  {clip_scores.clip_score[i]:9.1f}  {best}")
        print(row)
    print(f"classifier accuracy on the requested digits: {(cls.predicted_digit == digits).mean():.1%}")
    if clip_scores is not None:
        a = agreement(clip_scores, cls)
        print(f"CLIP agrees with the classifier on {a.rate:.1%} of samples; they disagree on {a.disagree}")


if __name__ == "__main__":
    main()
