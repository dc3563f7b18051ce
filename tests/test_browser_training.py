"""The Training tab in a real browser (Debian's chromium driven by playwright), against `python app.py`
started as a Space starts it: the loss curves are drawn, the snapshot slider changes the samples and their
scores, the noise prediction follows the t slider, and every image is at least 240 px on screen, pixelated.
Screenshots go to test-artifacts/training-tab.png and training-noise.png."""

import pytest

from browser_app import (app_page, image_box, image_source, shot, wait_new_image, wait_plotted, wait_rendered,
                         wait_text)


pytestmark = pytest.mark.browser


@pytest.fixture
def page(browser, app_url):
    """A fresh page on the app's Training tab (see browser_app.app_page)."""
    with app_page(browser, app_url, tab="Training") as page:
        yield page


def assert_large_and_pixelated(page, selector: str) -> None:
    size = image_box(page, selector)
    assert min(size[:2]) >= 240 and size[2] == "pixelated", (selector, size)


def test_loss_curves_and_the_snapshot_slider(page):
    wait_plotted(page, "#loss-curve")
    wait_plotted(page, "#loss-curve-zoom")
    wait_text(page, "#snapshot-caption", "Snapshot 0: step 25")
    wait_rendered(page, "#snapshot-grid")
    first = image_source(page, "#snapshot-grid")
    page.locator("#snapshot-slider input[type=range]").fill("6")
    wait_text(page, "#snapshot-caption", "Snapshot 6: step 2345, epoch 5.00")
    wait_new_image(page, "#snapshot-grid", first)
    assert_large_and_pixelated(page, "#snapshot-grid")
    caption = page.locator("#snapshot-caption").inner_text()
    assert "held-out digits: 0.0379" in caption
    assert "the classifier read" in caption or "not evaluated" in caption
    page.locator("#snapshot-grid").scroll_into_view_if_needed()
    shot(page, "training-tab")


def test_noise_prediction_follows_t(page):
    images = ["#noise-x0", "#noise-x-t", "#noise-eps", "#noise-eps-hat", "#noise-error"]
    for selector in images:
        wait_rendered(page, selector)
    wait_text(page, "#noise-loss", "t = 50)")
    wait_plotted(page, "#loss-by-t")
    before = image_source(page, "#noise-x-t")
    page.locator("#noise-t input[type=range]").fill("300")
    wait_text(page, "#noise-loss", "t = 300)")
    wait_new_image(page, "#noise-x-t", before)
    for selector in images:
        wait_rendered(page, selector)
        assert_large_and_pixelated(page, selector)
    assert "The loss of this example: mean((ε̂ − ε)²) = " in page.locator("#noise-loss").inner_text()
    page.locator("#loss-by-t").scroll_into_view_if_needed()
    shot(page, "training-noise")
