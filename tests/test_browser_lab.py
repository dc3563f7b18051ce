"""The Lab tab in a real browser (Debian's chromium driven by playwright): each experiment run from the
page with small settings, its figures and tables checked to have rendered; screenshots in test-artifacts/."""

import pytest

from browser_app import ARTIFACTS, app_page, wait_rendered


pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def page(browser, app_url):
    """A page kept for the module on the app's Lab tab (see browser_app.app_page)."""
    with app_page(browser, app_url, width=1366, height=768, tab="Lab") as page:
        yield page


def test_recognisability_from_the_page(page):
    page.locator("#recognisability-steps input").fill("10")  # ddpm in 10 steps, 2 runs per digit: quick
    page.locator("#recognisability-seeds input[type=range]").fill("2")
    page.get_by_role("button", name="Measure recognisability").click()
    page.wait_for_function("() => document.querySelector('#recognisability-summary').innerText.includes('of 20 runs')")
    wait_rendered(page, "#recognisability-plot")
    table = page.locator("#recognisability-table").inner_text()
    assert table.count("of 2") == 10 and "of 10" in table  # ten digits, 2 runs each; steps of 10
    page.locator("#recognisability-plot").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "lab-recognisability.png"), full_page=True)


def test_conditioning_from_the_page(page):
    page.get_by_role("button", name="Sample with and without the label").click()
    page.wait_for_function("() => document.querySelector('#conditioning-caption').innerText.includes('ε(x,c)')")
    for selector in ("#with-label", "#without-label", "#guidance-direction"):
        wait_rendered(page, selector)
    box = page.locator("#with-label img").bounding_box()
    assert box["width"] >= 240 and box["height"] >= 240  # legible at the back of the room
    page.locator("#guidance-direction").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "lab-conditioning.png"))


def test_why_gradual_and_difficulty_from_the_page(page):
    page.get_by_role("button", name="Denoise in 1, 2, 5, 12, 50, 500 steps").click()
    wait_rendered(page, "#why-gradual-plot")
    page.wait_for_function("() => document.querySelectorAll('#why-gradual-table tr').length === 7")
    page.locator("#why-gradual-plot").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "lab-why-gradual.png"))
    page.locator("#difficulty-samples input[type=range]").fill("2")
    page.get_by_role("button", name="Sample every digit and judge").click()
    wait_rendered(page, "#confusion-plot")
    page.wait_for_function("() => document.querySelector('#difficulty-note').innerText.includes('Hardest here')")
    assert "784" in page.locator("#limitations").inner_text()
    page.locator("#confusion-plot").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "lab-difficulty.png"))
