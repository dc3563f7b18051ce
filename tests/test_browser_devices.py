"""Issue 16 in a real browser (Debian's chromium, headless): the page at a 1366×768 projector, at a 390×844 phone
and in presenter mode. Screenshots of every tab go to test-artifacts/devices-*.png. On the phone every tab is
visible (no "•••" menu) and no tab is wider than the screen; presenter mode's sizes are checked on computed
styles, the native plots' text too (at least 14 pt); typing T in its box refits t."""

import pytest

from browser_app import ARTIFACTS, app_page, shot, wait_plotted
from ui.settings import PRESENTER_IMAGE_PX, PRESENTER_TEXT_PX

MIN_PLOT_TEXT_PX = 14 * 96 / 72  # 14 pt = 18.67 CSS px

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


def plot_text_sizes(page, selector: str) -> list:
    """[text, computed font-size in px, inside the plot's box] of every visible text of the native plot under
    `selector` (Vega draws it as SVG: its <text> elements)."""
    return page.eval_on_selector(selector, """plot => {
        const block = plot.getBoundingClientRect();
        return [...plot.querySelectorAll('.vega-embed svg text')].filter(t => {
            const box = t.getBoundingClientRect();
            return t.textContent.trim() && box.width > 0 && box.height > 0 && t.checkVisibility({opacityProperty: true,
                visibilityProperty: true}); })
        .map(t => { const box = t.getBoundingClientRect();
            return [t.textContent.trim(), parseFloat(getComputedStyle(t).fontSize),
                    box.top >= block.top - 1 && box.bottom <= block.bottom + 1 && box.left >= block.left - 1
                    && box.right <= block.right + 1]; });
    }""")


def assert_plot_text_large(page, selector: str) -> list:
    """Every visible text of the native plot under `selector` at least 14 pt, and none cut off by its box."""
    assert page.locator(f"{selector} .vega-embed canvas").count() == 0, f"{selector} is drawn on a canvas"
    sizes = plot_text_sizes(page, selector)
    assert sizes, f"{selector}: no visible SVG text"
    small = [(text, px) for text, px, _ in sizes if px < MIN_PLOT_TEXT_PX]
    assert not small, (selector, small)
    cut_off = [text for text, _, inside in sizes if not inside]
    assert not cut_off, (selector, cut_off)
    return sizes


def test_presenter_mode_plots_text_at_least_14_pt(browser, app_url):
    with app_page(browser, app_url, width=1366, height=768, query="?presenter=1", tab="Reverse process") as page:
        page.wait_for_function("() => document.body.classList.contains('presenter')")
        page.get_by_role("button", name="Run the reverse process").click()  # at the page's default settings
        page.wait_for_function("() => document.querySelector('#step-counter').innerText.includes('first recognises')")
        wait_plotted(page, "#confidence-plot")
        page.wait_for_function("() => document.querySelectorAll('#confidence-plot .vega-embed svg text').length > 0")
        sizes = assert_plot_text_large(page, "#confidence-plot")
        texts = [text for text, _, _ in sizes]
        assert "When does the digit become recognisable?" in texts, texts
        assert "p(the asked digit)" in page.locator("#confidence-plot").inner_text()  # the block's label
        assert "12" in texts and "12.0" not in texts, texts  # steps are whole numbers
        # no two texts run into each other ("11.012.0", the y title over its ticks)
        boxes = page.eval_on_selector_all("#confidence-plot .vega-embed svg text", """texts => texts
            .filter(t => t.textContent.trim() && t.getBoundingClientRect().width > 0)
            .map(t => { const r = t.getBoundingClientRect(); return [t.textContent, r.left, r.top, r.right, r.bottom]; })""")
        for i, (a, *ra) in enumerate(boxes):
            for b, *rb in boxes[i + 1:]:
                overlap_x = min(ra[2], rb[2]) - max(ra[0], rb[0])
                overlap_y = min(ra[3], rb[3]) - max(ra[1], rb[1])
                assert overlap_x <= 1 or overlap_y <= 1, (a, b, ra, rb)
        # the lines' legend is the page's (Vega's own, under the plot, was cut off by the plot's box): page-sized
        assert "curve" not in texts and not any(text.startswith("x_t") for text in texts), texts
        legend = page.locator("#confidence-legend")
        assert "x_t (noise-aware classifier)" in legend.inner_text() and legend.is_visible()
        assert legend.evaluate("e => parseFloat(getComputedStyle(e.querySelector('b')).fontSize)") >= PRESENTER_TEXT_PX
        page.locator("#confidence-plot").scroll_into_view_if_needed()
        shot(page, "devices-presenter-confidence-plot", "#confidence-plot")
        # the other tabs' native plots (drawn from the app's stored training logs when the tab opens)
        for tab, selectors in (("Training", ("#loss-curve", "#loss-curve-zoom")),
                               ("Architecture", ("#architecture-loss", "#architecture-heldout"))):
            page.get_by_role("tab", name=tab, exact=True).click()
            for selector in selectors:
                wait_plotted(page, selector)
                page.locator(selector).scroll_into_view_if_needed()
                assert_plot_text_large(page, selector)
                shot(page, f"devices-presenter-{selector[1:]}", selector)


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
