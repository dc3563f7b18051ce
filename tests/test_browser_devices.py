"""Issue 16 in a real browser (Debian's chromium, headless): the page at a 1366×768 projector, at a 390×844 phone
and in presenter mode. Screenshots of every tab go to test-artifacts/devices-*.png. On the phone every tab is
visible (no "•••" menu) and no tab is wider than the screen; presenter mode's sizes are checked on computed
styles; typing T in its box refits t."""

import pytest

from browser_app import ARTIFACTS, app_page
from ui.settings import PRESENTER_IMAGE_PX, PRESENTER_TEXT_PX

pytestmark = pytest.mark.browser

TABS = ["Generate", "Reverse process", "Forward noising", "Training", "Architecture", "Edit", "Lab", "How it works"]


def tab_names(page) -> list[str]:
    return page.eval_on_selector_all("[role=tab]", "tabs => tabs.filter(t => t.offsetParent !== null)"
                                                   ".map(t => t.innerText.trim())")


def visit_every_tab(page, name: str) -> dict:
    """Open every tab, screenshot it, and return {tab: (scrollWidth, innerWidth)}."""
    widths = {}
    for tab in TABS:
        page.get_by_role("tab", name=tab, exact=True).click()
        page.wait_for_timeout(800)  # the tab's images and plots lay out
        widths[tab] = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        page.screenshot(path=str(ARTIFACTS / f"devices-{name}-{tab.lower().replace(' ', '-')}.png"), full_page=True)
    return widths


def test_projector_1366x768_every_tab(browser, app_url):
    with app_page(browser, app_url, width=1366, height=768) as page:
        assert tab_names(page) == TABS
        widths = visit_every_tab(page, "projector")
        assert all(scroll <= inner for scroll, inner in widths.values()), widths


def test_phone_390x844_every_tab_one_tap_and_no_sideways_scrolling(browser, app_url):
    with app_page(browser, app_url, width=390, height=844, phone=True) as page:
        page.wait_for_timeout(500)
        assert tab_names(page) == TABS  # all eight on the bar ...
        assert page.locator(".overflow-menu").count() == 0  # ... none behind a "•••" menu
        for tab in TABS:
            box = page.get_by_role("tab", name=tab, exact=True).bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390  # on screen: one tap
        widths = visit_every_tab(page, "phone")
        assert all(scroll <= inner for scroll, inner in widths.values()), widths


def test_phone_reverse_process_shows_x_t_beside_x0_hat(browser, app_url):
    with app_page(browser, app_url, width=390, height=844, phone=True) as page:
        page.get_by_role("tab", name="Reverse process", exact=True).click()
        x_t, x0 = page.locator("#x-t").bounding_box(), page.locator("#x0-hat").bounding_box()
        assert abs(x_t["y"] - x0["y"]) < 2 and x_t["x"] + x_t["width"] <= x0["x"] + 1  # side by side
        assert x0["x"] + x0["width"] <= 390


def presenter_sizes(page) -> dict:
    return page.evaluate("""() => {
        const px = (el) => el ? parseFloat(getComputedStyle(el).fontSize) : null;
        return {presenter: document.body.classList.contains('presenter'),
                dark: document.body.classList.contains('dark'),
                body: px(document.querySelector('#sample-cards .empty-prompt')),
                intro: px(document.querySelector('.md p')),
                background: getComputedStyle(document.querySelector('.gradio-container')).backgroundColor};
    }""")


def test_presenter_mode_from_the_address_and_the_switch(browser, app_url):
    with app_page(browser, app_url, width=1366, height=768, query="?presenter=1") as page:
        page.wait_for_function("() => document.body.classList.contains('presenter')")
        sizes = presenter_sizes(page)
        assert sizes["dark"] and sizes["body"] >= PRESENTER_TEXT_PX and sizes["intro"] >= PRESENTER_TEXT_PX, sizes
        assert page.locator("#presenter-toggle input").is_checked()
        page.get_by_role("tab", name="Forward noising", exact=True).click()
        page.wait_for_function("() => document.querySelector('#x0 img')?.complete")
        page.wait_for_function("() => document.querySelector('#forward-x-t img')?.complete")
        for selector in ("#x0 img", "#forward-x-t img"):
            box = page.locator(selector).bounding_box()
            assert box["width"] >= PRESENTER_IMAGE_PX and box["height"] >= PRESENTER_IMAGE_PX, (selector, box)
        for label in ("β start", "β end", "T (steps)", "Noise seed"):  # compact, but every control still named
            assert page.get_by_text(label, exact=True).first.is_visible(), label
        visit_every_tab(page, "presenter")
        # the switch turns it off again (and back to the light theme)
        page.locator("#presenter-toggle input").uncheck()
        page.wait_for_function("() => !document.body.classList.contains('presenter')")
        assert not presenter_sizes(page)["dark"]
        assert "presenter" not in page.url


def test_typing_t_and_enter_refits_t(browser, app_url):
    with app_page(browser, app_url, width=1366, height=768) as page:
        page.get_by_role("tab", name="Forward noising", exact=True).click()
        page.wait_for_function("() => document.querySelector('#forward-formula').innerText.includes('t = ')")
        box = page.locator("#T-slider input[type=number]")
        box.fill("50")
        box.press("Enter")
        page.wait_for_function("() => /t = (\\d+):/.exec(document.querySelector('#forward-formula').innerText)?.[1] <= 50")
        assert page.locator("#t-slider input[type=range]").get_attribute("max") == "50"


def test_beta_inputs_disabled_for_cosine(browser, app_url):
    with app_page(browser, app_url, width=1366, height=768) as page:
        page.get_by_role("tab", name="Forward noising", exact=True).click()
        page.get_by_label("cosine").check()
        page.wait_for_function("() => document.querySelector('#beta-start input').disabled")
        page.get_by_label("linear").check()
        page.wait_for_function("() => !document.querySelector('#beta-start input').disabled")
