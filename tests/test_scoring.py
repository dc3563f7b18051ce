"""Scoring: CLIP through the real loading path (a tiny random open_clip model saved to a local file),
fast and clear failure offline, the classifier on real digits, and the agreement between the two."""
import http.server
import shutil
import socket
import threading
import time
from types import SimpleNamespace

import huggingface_hub.constants
import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from diffusion import scoring
from diffusion.checkpoints import save_checkpoint
from tiny_clip import TINY_CLIP
from diffusion.classifier import DigitClassifier, load_classifier
from diffusion.data import load_shipped_digits
from diffusion.scoring import (DEFAULT_QUALITY_PROMPTS, DIGIT_PROMPTS, Agreement, ClassifierScores, ClipScores,
                               ClipUnavailable, LazyClip, agreement, classifier_scores, load_clip)

TINY = TINY_CLIP
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@pytest.fixture(scope="module")
def tiny_clip(tiny_clip_weights):
    return load_clip(model_name=TINY, pretrained=tiny_clip_weights)


@pytest.fixture(scope="module")
def digits():
    return load_shipped_digits()


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """An empty Hugging Face cache, no proxies, the default CLIP; and a guard: nothing may start a download."""
    for name in PROXY_VARIABLES + ("DIFFUSION_CLIP_MODEL", "DIFFUSION_CLIP_PRETRAINED"):
        monkeypatch.delenv(name, raising=False)

    def download(*args, **kwargs):
        raise AssertionError("load_clip tried to download although the hub is unreachable")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", download)
    return str(tmp_path / "empty_hf_cache")


# --- loading -----------------------------------------------------------------------------------------

def test_loads_a_local_weights_file_through_load_clip(tiny_clip, tiny_clip_weights):
    saved = load_file(tiny_clip_weights)
    loaded = tiny_clip.model.state_dict()
    assert (tiny_clip.model_name, tiny_clip.pretrained) == (TINY, tiny_clip_weights)
    assert set(loaded) == set(saved)
    for name, tensor in saved.items():
        torch.testing.assert_close(loaded[name], tensor, msg=name)


def test_environment_variables_choose_the_model_through_the_entry_points(monkeypatch, tiny_clip_weights):
    """app.py reads the environment and passes the choice in; the engine itself reads no variable."""
    import app

    monkeypatch.setenv("DIFFUSION_CLIP_MODEL", TINY)
    monkeypatch.setenv("DIFFUSION_CLIP_PRETRAINED", tiny_clip_weights)
    args = app.parse_args([])
    assert (args.clip_model, args.clip_pretrained) == (TINY, tiny_clip_weights)
    scorer = load_clip(args.clip_model, args.clip_pretrained)
    assert (scorer.model_name, scorer.pretrained) == (TINY, tiny_clip_weights)


def test_a_tag_whose_weights_are_cached_loads_without_the_hub(monkeypatch, tmp_path, tiny_clip_weights, no_hub):
    """The Hugging Face cache layout (models--org--repo/snapshots/<rev>/file): what a download leaves."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.5, 0.5)
    # open_clip has no public way to add a pretrained tag: add one to its table for this test only
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, TINY,
                        {"cached": {"hf_hub": "test-org/tiny-clip/", "mean": mean, "std": std}})
    repo = tmp_path / "hf" / "models--test-org--tiny-clip"
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    shutil.copy(tiny_clip_weights, repo / "snapshots" / "0123abcd" / "open_clip_model.safetensors")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    scorer = load_clip(TINY, "cached", cache_dir=str(tmp_path / "hf"))
    assert scorer.pretrained == "cached"
    torch.testing.assert_close(scorer.mean.flatten(), torch.tensor(mean))  # the tag's normalisation
    torch.testing.assert_close(scorer.std.flatten(), torch.tensor(std))


@pytest.mark.parametrize("pretrained, expected", [
    ("/no/such/dir/clip.safetensors", "not found"),
    ("no_such_tag", "neither a weights file nor"),
])
def test_bad_pretrained_values_are_explained(tiny_clip_weights, pretrained, expected):
    with pytest.raises(ClipUnavailable, match=expected) as err:
        load_clip(TINY, pretrained)
    assert "DIFFUSION_CLIP_PRETRAINED" in str(err.value) and "--clip-pretrained" in str(err.value)


def test_unknown_model_and_corrupt_file_are_explained(tmp_path, tiny_clip_weights):
    with pytest.raises(ClipUnavailable, match="unknown CLIP model 'ViT-Nope'"):
        load_clip("ViT-Nope", tiny_clip_weights)
    broken = tmp_path / "broken.safetensors"
    with open(tiny_clip_weights, "rb") as f:
        broken.write_bytes(f.read(1000))  # a truncated download
    with pytest.raises(ClipUnavailable, match="could not load CLIP"):
        load_clip(TINY, str(broken))


# --- offline: fast and clear -------------------------------------------------------------------------------

def _assert_explains_offline(message: str) -> None:
    assert "ViT-B-32" in message and "laion2b_s34b_b79k" in message
    assert "not on this machine" in message and "classifier" in message
    assert "DIFFUSION_CLIP_PRETRAINED=/path/to/" in message and "--clip-pretrained /path/to/" in message


def test_offline_failure_with_hf_hub_offline_is_fast_and_clear(monkeypatch, no_hub):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(ClipUnavailable) as err:
        load_clip(cache_dir=no_hub)
    assert time.perf_counter() - t0 < 5
    _assert_explains_offline(str(err.value))
    assert "HF_HUB_OFFLINE" in str(err.value)


def test_offline_failure_when_the_hub_never_answers_is_fast_and_clear(monkeypatch, no_hub):
    """Offline mode off: a server that accepts connections but never answers stands in for the hub."""
    silent = socket.create_server(("127.0.0.1", 0))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
    try:
        t0 = time.perf_counter()
        with pytest.raises(ClipUnavailable) as err:
            load_clip(cache_dir=no_hub)
        assert time.perf_counter() - t0 < 5
    finally:
        silent.close()
    _assert_explains_offline(str(err.value))
    assert "cannot be reached" in str(err.value)


def test_hub_probe_counts_any_http_answer_as_reachable():
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # answers 501
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert scoring._hub_reachable(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    assert not scoring._hub_reachable("http://127.0.0.1:1")  # connection refused


# --- CLIP scores ---------------------------------------------------------------------------------------

def test_clip_scores_have_the_right_shapes_and_ranges(tiny_clip, digits):
    images, labels = digits
    s = tiny_clip.score(images, labels)
    N, P = len(images), len(DEFAULT_QUALITY_PROMPTS)
    assert isinstance(s, ClipScores) and s.quality_prompts == DEFAULT_QUALITY_PROMPTS
    assert s.digit_probs.shape == (N, 10) and s.quality_probs.shape == s.quality_similarity.shape == (N, P)
    assert s.predicted_digit.shape == s.prob_requested.shape == s.clip_score.shape == (N,)
    np.testing.assert_allclose(s.digit_probs.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(s.quality_probs.sum(1), 1, atol=1e-5)
    assert s.digit_probs.min() >= 0 and s.quality_probs.min() >= 0
    assert np.issubdtype(s.predicted_digit.dtype, np.integer)
    np.testing.assert_array_equal(s.predicted_digit, s.digit_probs.argmax(1))
    np.testing.assert_array_equal(s.prob_requested, s.digit_probs[np.arange(N), labels])
    assert np.all(np.abs(s.quality_similarity) <= 1 + 1e-5)
    assert np.all((s.clip_score >= 0) & (s.clip_score <= 100))


def test_clip_score_is_torchmetrics_clipscore(tiny_clip, digits):
    """torchmetrics' clip_score with our model behind the interface it calls (HF CLIPModel/CLIPProcessor)."""
    from torchmetrics.functional.multimodal.clip_score import clip_score

    class Adapter(torch.nn.Module):
        config = SimpleNamespace()

        def get_image_features(self, pixel_values):
            return tiny_clip.model.encode_image(pixel_values)

        def get_text_features(self, input_ids, attention_mask):
            return tiny_clip.model.encode_text(input_ids)

    def processor(images=None, text=None, **kwargs):
        if images is not None:
            return {"pixel_values": tiny_clip.preprocess(torch.stack(images)[:, 0])}
        tokens = tiny_clip.tokenizer(text)
        return {"input_ids": tokens, "attention_mask": torch.ones_like(tokens)}

    images, labels = digits[0][::3], digits[1][::3]
    ours = tiny_clip.score(images, labels).clip_score
    theirs = [clip_score(torch.from_numpy(images[i:i + 1]), DIGIT_PROMPTS[labels[i]],
                         model_name_or_path=lambda: (Adapter(), processor)).item() for i in range(len(images))]
    np.testing.assert_allclose(ours, theirs, atol=1e-3)
    assert ours.max() > 0  # not all clamped to zero, so the comparison means something


def test_zero_shot_probabilities_are_open_clips_logits_softmaxed(tiny_clip, digits):
    images, labels = digits
    s = tiny_clip.score(images, labels, quality_prompts=DEFAULT_QUALITY_PROMPTS)
    pixels = tiny_clip.preprocess(torch.from_numpy(images))
    with torch.inference_mode():
        digit_logits, _ = tiny_clip.model.get_logits(pixels, tiny_clip.tokenizer(list(DIGIT_PROMPTS)))
        quality_logits, _ = tiny_clip.model.get_logits(pixels, tiny_clip.tokenizer(list(DEFAULT_QUALITY_PROMPTS)))
        cosine = quality_logits / tiny_clip.model.logit_scale.exp()
    np.testing.assert_allclose(s.digit_probs, digit_logits.softmax(1).numpy(), atol=1e-5)
    np.testing.assert_allclose(s.quality_probs, quality_logits.softmax(1).numpy(), atol=1e-5)
    np.testing.assert_allclose(s.quality_similarity, cosine.numpy(), atol=1e-5)


def test_digits_reach_clip_as_its_own_preprocessing_would_give_them(tiny_clip, digits):
    """Our batched tensor preprocessing ≈ open_clip's PIL transform applied to the RGB digit."""
    images, _ = digits
    cfg = tiny_clip.model.visual.preprocess_cfg
    transform = open_clip.image_transform(cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"],
                                          interpolation=cfg["interpolation"], resize_mode=cfg["resize_mode"])
    theirs = torch.stack([transform(Image.fromarray(img).convert("RGB")) for img in images])
    ours = tiny_clip.preprocess(torch.from_numpy(images))
    assert ours.shape == theirs.shape == (len(images), 3, 64, 64)
    assert (ours - theirs).abs().mean() < 0.05  # bicubic kernels differ slightly (PIL a=-0.5, torch a=-0.75)
    assert (ours - theirs).abs().amax() < 1.0


def test_images_are_scored_in_batches_with_the_same_result(tiny_clip, digits):
    images, labels = digits
    whole = tiny_clip.score(images, labels)
    batched = tiny_clip.score(images, labels, batch_size=7)
    one = tiny_clip.score(images[4:5], labels[4:5])
    np.testing.assert_allclose(batched.digit_probs, whole.digit_probs, atol=1e-5)
    np.testing.assert_allclose(batched.clip_score, whole.clip_score, atol=1e-3)
    np.testing.assert_allclose(one.quality_similarity[0], whole.quality_similarity[4], atol=1e-5)


def test_text_features_are_cached_per_prompt_set(tiny_clip, digits, monkeypatch):
    calls = []
    encode_text = tiny_clip.model.encode_text
    monkeypatch.setattr(tiny_clip.model, "encode_text", lambda *a, **k: calls.append(1) or encode_text(*a, **k))
    images, labels = digits
    tiny_clip.score(images[:3], labels[:3])  # digit and default prompts were encoded when it loaded
    assert calls == []
    prompts = ("a neat digit", "a smudge")
    first = tiny_clip.score(images[:3], labels[:3], quality_prompts=prompts)
    again = tiny_clip.score(images[:3], labels[:3], quality_prompts=prompts)
    assert len(calls) == 1
    np.testing.assert_array_equal(first.quality_similarity, again.quality_similarity)


def test_quality_prompts_are_editable(tiny_clip, digits):
    images, labels = digits
    s = tiny_clip.score(images[:5], labels[:5], quality_prompts=[" a neat digit ", "", "a smudge"])
    assert s.quality_prompts == ("a neat digit", "a smudge") and s.quality_probs.shape == (5, 2)
    none = tiny_clip.score(images[:5], labels[:5], quality_prompts=[])
    assert none.quality_similarity.shape == none.quality_probs.shape == (5, 0)


@pytest.mark.parametrize("images, digits, expected", [
    (np.zeros((2, 28, 28), np.float32), [1, 2], "uint8"),
    (np.zeros((2, 32, 32), np.uint8), [1, 2], "uint8"),
    (np.zeros((0, 28, 28), np.uint8), [], "N ≥ 1"),
    (np.zeros((2, 28, 28), np.uint8), [1], "one per image"),
    (np.zeros((2, 28, 28), np.uint8), [1, 10], "from 0 to 9"),
])
def test_bad_inputs_are_rejected(tiny_clip, images, digits, expected):
    with pytest.raises(ValueError, match=expected):
        tiny_clip.score(images, digits)
    with pytest.raises(ValueError, match=expected):
        classifier_scores(DigitClassifier().eval(), images, digits)


# --- LazyClip: never blocks a request --------------------------------------------------------------------

def test_lazy_clip_loads_in_the_background(tiny_clip_weights):
    lazy = LazyClip(TINY, tiny_clip_weights)
    assert lazy.status() == "not loaded"
    lazy.start()
    lazy.start()  # idempotent
    scorer = lazy.get(timeout=60)
    assert lazy.status() == "ready" and scorer.model_name == TINY and lazy.get() is scorer


def test_lazy_clip_says_still_loading_without_waiting(monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(scoring, "load_clip", lambda *a: release.wait(30) and "the scorer")
    lazy = LazyClip()
    lazy.start()
    assert lazy.status() == "loading"
    t0 = time.perf_counter()
    with pytest.raises(ClipUnavailable, match="still loading"):
        lazy.get()
    assert time.perf_counter() - t0 < 1
    release.set()
    assert lazy.get(timeout=5) == "the scorer" and lazy.status() == "ready"


def test_lazy_clip_reports_why_it_is_unavailable(monkeypatch, no_hub):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lazy = LazyClip(cache_dir=no_hub)
    with pytest.raises(ClipUnavailable) as err:
        lazy.get(timeout=30)
    _assert_explains_offline(str(err.value))
    assert lazy.status() == f"unavailable: {err.value}"


# --- the classifier and the agreement panel -----------------------------------------------------------------

def test_shipped_classifier_reads_the_shipped_real_digits(digits):
    images, labels = digits
    s = classifier_scores(load_classifier(), images, labels)
    assert isinstance(s, ClassifierScores)
    assert s.probs.shape == (len(images), 10) and s.confidence_requested.shape == (len(images),)
    np.testing.assert_allclose(s.probs.sum(1), 1, atol=1e-5)
    np.testing.assert_array_equal(s.predicted_digit, labels)
    np.testing.assert_array_equal(s.confidence_requested, s.probs[np.arange(len(labels)), labels])
    assert np.median(s.confidence_requested) > 0.9


def _clip_says(*digits: int) -> ClipScores:
    probs, zero = np.eye(10)[list(digits)], np.zeros(len(digits))
    return ClipScores(probs, np.array(digits), zero, (), probs[:, :0], probs[:, :0], zero)


def _classifier_says(*digits: int) -> ClassifierScores:
    return ClassifierScores(np.eye(10)[list(digits)], np.array(digits), np.zeros(len(digits)))


def test_agreement_counts_matching_digits():
    assert agreement(_clip_says(1, 2, 3, 4), _classifier_says(1, 0, 3, 0)) == Agreement(rate=0.5, disagree=[1, 3])
    assert agreement(_clip_says(7, 7), _classifier_says(7, 7)) == Agreement(rate=1.0, disagree=[])
    with pytest.raises(ValueError):
        agreement(_clip_says(1), _classifier_says(1, 2))


def test_agreement_of_real_scores(tiny_clip, digits):
    """On real scores of the shipped digits: the classifier is right on all 30, so CLIP's digit agrees
    exactly where CLIP itself is right (the tiny random CLIP is right on few)."""
    images, labels = digits
    c = tiny_clip.score(images, labels)
    k = classifier_scores(load_classifier(), images, labels)
    assert (k.predicted_digit == labels).all()
    a = agreement(c, k)
    clip_wrong = np.flatnonzero(c.predicted_digit != labels).tolist()
    assert a.disagree == clip_wrong and 0 < len(clip_wrong) < len(images)
    assert a.rate == (len(images) - len(clip_wrong)) / len(images)


# --- the CLI -------------------------------------------------------------------------------------------

def test_cli_prints_scores_and_agreement(tmp_path, tiny_clip_weights, digits, capsys):
    images, labels = digits
    np.savez(tmp_path / "samples.npz", x=images[:4], y=labels[:4])
    torch.manual_seed(0)
    stem = tmp_path / "classifier"
    save_checkpoint(stem, DigitClassifier().state_dict(),
                    {"kind": "digit-classifier", "architecture": {"width": 32, "feature_dim": 128}})
    scoring.main(["--images", str(tmp_path / "samples.npz"), "--classifier", str(stem),
                  "--clip-model", TINY, "--clip-pretrained", tiny_clip_weights])
    out = capsys.readouterr().out
    assert f"CLIP: {TINY}" in out and "CLIP agrees with the classifier on" in out
    assert len([line for line in out.splitlines() if line[:3].strip().isdigit()]) == 4
