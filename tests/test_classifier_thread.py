"""The classifiers' shared thread (ui.classroom.ClassifierThread): requests that wait together run as one batch,
each gets its own rows back (the same numbers as alone, up to float rounding), and a bad request fails alone."""
import threading

import pytest
import torch

from diffusion.classifier import load_classifier, load_noise_classifier
from ui.classroom import ClassifierThread, OnClassifierThread


@pytest.fixture(scope="module")
def models():
    return load_classifier(), load_noise_classifier()


@pytest.fixture
def thread():
    worker = ClassifierThread()
    yield worker
    worker.close()


def hold(thread, classifier) -> tuple[threading.Thread, threading.Event]:
    """Keep the thread busy with one request until the returned event is set (and wait until it is busy)."""
    busy, gate = threading.Event(), threading.Event()

    class Held:
        def predict_proba(self, x, t=None, batch_size=1000):
            busy.set()
            gate.wait(10)
            return classifier.predict_proba(x)

    first = threading.Thread(target=thread.probabilities, args=(Held(), torch.zeros(1, 1, 28, 28)))
    first.start()
    assert busy.wait(10)
    return first, gate


class CountingClassifier(torch.nn.Module):
    """Wraps a classifier, counting its forward passes and the rows of each."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.batches = inner, []

    def predict_proba(self, x, t=None, batch_size=1000):
        self.batches.append(len(x))
        return self.inner.predict_proba(x, batch_size=batch_size) if t is None else self.inner.predict_proba(
            x, t, batch_size=batch_size)


def test_waiting_requests_share_one_pass_and_get_their_own_rows(models, thread):
    clean, noisy = models
    counting = CountingClassifier(noisy)
    inputs = [(torch.randn(n, 1, 28, 28).clamp(-1, 1), torch.randint(0, 500, (n,))) for n in (1, 3, 5, 2, 4)]
    alone = [noisy.predict_proba(x, t) for x, t in inputs]
    first, gate = hold(thread, clean)  # the others queue up behind a first request
    results = [None] * len(inputs)

    def ask(i):
        results[i] = thread.probabilities(counting, *inputs[i])

    askers = [threading.Thread(target=ask, args=(i,)) for i in range(len(inputs))]
    for a in askers:
        a.start()
    while thread._jobs.qsize() < len(inputs):  # all five are waiting
        threading.Event().wait(0.01)
    gate.set()
    for a in [first, *askers]:
        a.join(10)
    assert counting.batches == [16]  # one pass for the five (15 rows, padded to a chunk of 16)
    for got, expected in zip(results, alone):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_a_bad_request_fails_alone(models, thread):
    clean, _ = models
    first, gate = hold(thread, clean)
    outcome = {}

    def ask(name, x):
        try:
            outcome[name] = thread.probabilities(clean, x)
        except Exception as error:
            outcome[name] = error

    good = threading.Thread(target=ask, args=("good", torch.zeros(2, 1, 28, 28)))
    bad = threading.Thread(target=ask, args=("bad", torch.zeros(2, 3, 5, 5)))  # not a digit image
    good.start()
    bad.start()
    while thread._jobs.qsize() < 2:
        threading.Event().wait(0.01)
    gate.set()
    for a in (first, good, bad):
        a.join(10)
    assert isinstance(outcome["bad"], Exception)
    assert outcome["good"].shape == (2, 10)
    torch.testing.assert_close(outcome["good"], clean.predict_proba(torch.zeros(2, 1, 28, 28)), atol=1e-5, rtol=0)


def test_the_scoring_functions_run_through_it(models, thread, classroom):
    """Classroom's scores go through the thread and give the classifier's own numbers."""
    clean, noisy = models
    images = classroom.shipped_images[:6]
    digits = [int(d) for d in classroom.shipped_labels[:6]]
    batched = classroom.classifier_scores(images, digits)
    from diffusion.scoring import classifier_scores, noisy_image_scores
    direct = classifier_scores(clean, images, digits)
    assert (batched.predicted_digit == direct.predicted_digit).all()
    torch.testing.assert_close(torch.from_numpy(batched.probs), torch.from_numpy(direct.probs), atol=1e-5, rtol=0)
    t = [0, 100, 200, 300, 400, 500]
    torch.testing.assert_close(torch.from_numpy(classroom.noisy_image_scores(images, t, digits).probs),
                               torch.from_numpy(noisy_image_scores(noisy, images, t, digits).probs), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="t must be"):  # the checks still run, in the caller's thread
        classroom.noisy_image_scores(images, [0] * 6 + [1], digits)
    assert isinstance(classroom.scorer, ClassifierThread)
    assert isinstance(classroom.batched_noise_classifier, OnClassifierThread)


@pytest.mark.parametrize("rows, padded", [(1, 1), (2, 2), (3, 4), (5, 8), (9, 16), (16, 16), (17, 32), (40, 48),
                                          (300, 300)])
def test_a_batch_is_padded_to_a_few_shapes_and_a_lone_frame_costs_one_row(thread, models, rows, padded):
    """Up to 16 rows: the next power of two (one animation frame is one row, not a chunk of 16); then chunks of 16;
    past 256 rows one shape of its own. Few shapes, so torch keeps few kernels and buffers."""
    seen = []

    class Recording:
        def predict_proba(self, x, t=None, batch_size=1000):
            seen.append((len(x), batch_size))
            return models[0].predict_proba(x, batch_size=batch_size)

    probs = thread.probabilities(Recording(), torch.zeros(rows, 1, 28, 28))
    assert probs.shape == (rows, 10)
    [(sent, chunk)] = seen
    assert sent == padded and chunk == min(padded, 16) if rows <= 256 else (sent, chunk) == (300, 256)
