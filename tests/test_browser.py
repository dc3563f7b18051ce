"""The app in a real browser (Debian's chromium driven by playwright): `python app.py` is started
the way a Space starts it (port from $PORT), each tab is opened, each action triggered, and the
images and plots are checked to have rendered. Screenshots go to test-artifacts/."""

import pytest

from browser_app import app_page, image_source, shot, wait_plotted, wait_rendered


pytestmark = pytest.mark.browser


@pytest.fixture
def page(browser, app_url):
    """A fresh page on the app (see browser_app.app_page)."""
    with app_page(browser, app_url) as page:
        yield page


def test_generate_tab_samples_scores_agreement_and_sweep(page):
    # CLIP starts loading when the page opens; here it fails at once (missing file) and the page says so.
    page.wait_for_function("() => document.querySelector('#clip-status').innerText.includes('CLIP unavailable')")
    page.get_by_role("button", name="Generate", exact=True).click()
    wait_rendered(page, "#sample-cards", 10)
    assert page.locator("#sample-cards .sample-card").count() == 10
    assert page.locator("#sample-cards").inner_text().count("classifier: sees a") == 10  # each beside its image
    assert "No CLIP scores. CLIP is unavailable" in page.locator("#agreement").inner_text()
    # why (the missing file, the environment variables) is folded away under the one short status line
    assert "DIFFUSION_CLIP" not in page.locator("#clip-status").inner_text()
    page.locator("#clip-status summary").click()
    assert "CLIP weights file not found" in page.locator("#clip-status").inner_text()
    page.get_by_role("button", name="Run guidance sweep").click()
    wait_rendered(page, "#sweep-plot")
    assert page.locator("#sweep-table table tr").count() == 1 + 6  # header + the six default values of w
    shot(page, "generate")


def test_reverse_process_tab_animates_then_scrubs(page):
    page.get_by_role("tab", name="Reverse process").click()
    page.get_by_role("button", name="Run the reverse process").click()
    page.wait_for_function("() => /step \\d+ of \\d+/.test(document.querySelector('#step-counter').innerText)")
    wait_rendered(page, "#x-t")
    page.wait_for_function("() => document.querySelector('#step-counter').innerText.includes('first recognises')")
    wait_plotted(page, "#confidence-plot")  # the plot arrives with the last frame
    counter = page.locator("#step-counter").inner_text()
    assert "t = 0 /" in counter and "first recognises" in counter
    wait_rendered(page, "#x0-hat")
    assert page.locator("#gif a").first.get_attribute("href").endswith(".gif")
    last_frame = image_source(page, "#x-t")
    page.locator("#scrubber input[type=range]").fill("2")
    page.wait_for_function("() => document.querySelector('#step-counter').innerText.includes('step 2 of')")
    page.wait_for_function("old => document.querySelector('#x-t img').src !== old", arg=last_frame)
    wait_rendered(page, "#x-t")
    shot(page, "reverse_process")


def test_forward_noising_tab_slider_strip_plot_and_drawing(page):
    page.get_by_role("tab", name="Forward noising").click()
    wait_rendered(page, "#forward-x-t")
    wait_rendered(page, "#strip", 8)
    wait_rendered(page, "#schedule-plot")
    before = image_source(page, "#forward-x-t")
    page.locator("#t-slider input[type=range]").fill("400")
    page.wait_for_function("() => document.querySelector('#forward-formula').innerText.includes('t = 400')")
    page.wait_for_function("old => document.querySelector('#forward-x-t img').src !== old", arg=before)
    wait_rendered(page, "#forward-x-t")
    # Draw a stroke on the sketchpad and use it as x₀.
    x0_before = image_source(page, "#x0")
    canvas = page.locator("#sketch canvas").first.bounding_box()
    page.mouse.move(canvas["x"] + canvas["width"] * 0.5, canvas["y"] + canvas["height"] * 0.2)
    page.mouse.down()
    page.mouse.move(canvas["x"] + canvas["width"] * 0.5, canvas["y"] + canvas["height"] * 0.8, steps=12)
    page.mouse.up()
    page.get_by_role("button", name="Use my drawing").click()
    page.wait_for_function("old => document.querySelector('#x0 img').src !== old", arg=x0_before)
    wait_rendered(page, "#x0")
    shot(page, "forward_noising")


def test_how_it_works_tab_shows_formulas_and_the_models_numbers(page):
    page.get_by_role("tab", name="How it works").click()
    text = page.get_by_text("The model in this app").locator("xpath=..").inner_text()
    assert "parameters" in text and "T = " in text
    assert page.locator(".katex").count() >= 5  # the formulas are typeset (KaTeX ships with gradio)
    shot(page, "how_it_works")
