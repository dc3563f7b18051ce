"""The Edit tab in a real browser (Debian's chromium driven by playwright): re-imagine a real digit and a
drawing, inpaint a preset half and a painted mask; screenshots in test-artifacts/."""

import pytest

from browser_app import ARTIFACTS, app_page, wait_new_image


pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def page(browser, app_url):
    """A page kept for the module on the app's Edit tab (see browser_app.app_page)."""
    with app_page(browser, app_url, width=1366, height=900, tab="Edit") as page:
        yield page


def draw(page, selector: str, points) -> None:
    """Drag the mouse through `points` (fractions of the canvas) on the canvas under selector."""
    page.locator(f"{selector} canvas").first.scroll_into_view_if_needed()
    box = page.locator(f"{selector} canvas").first.bounding_box()
    (x0, y0), *rest = points
    page.mouse.move(box["x"] + box["width"] * x0, box["y"] + box["height"] * y0)
    page.mouse.down()
    for x, y in rest:
        page.mouse.move(box["x"] + box["width"] * x, box["y"] + box["height"] * y, steps=10)
    page.mouse.up()


def test_re_imagine_a_real_digit_then_a_drawing(page):
    page.get_by_role("button", name="Re-imagine the real digit").click()
    page.wait_for_function("() => document.querySelector('#edit-verdict').innerText.includes('s = 0.6')")
    result = wait_new_image(page, "#edit-result")
    wait_new_image(page, "#edit-strip")
    assert page.locator("#edit-result img").bounding_box()["width"] >= 240
    page.locator("#edit-strip").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "edit-sdedit.png"), full_page=True)
    draw(page, "#edit-sketch", [(0.5, 0.2), (0.5, 0.8)])  # a tall stroke: a "1" taller than MNIST frames it
    page.get_by_role("button", name="Re-imagine my drawing").click()
    wait_new_image(page, "#edit-result", old=result)
    page.wait_for_function("() => document.querySelector('#edit-verdict').innerText.includes('Mean change')")


def test_inpaint_a_preset_half_and_a_painted_mask(page):
    page.get_by_role("button", name="Inpaint the chosen half").click()
    page.wait_for_function("() => document.querySelector('#inpaint-note').innerText.includes('at most 0/255')")
    results = wait_new_image(page, "#inpaint-results")
    wait_new_image(page, "#inpaint-input")
    page.locator("#inpaint-results").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "edit-inpaint.png"), full_page=True)
    page.get_by_role("button", name="Inpaint where I painted").click()  # nothing painted yet: a clear error
    page.wait_for_function("() => [...document.querySelectorAll('.toast-body, [data-testid=toast-body]')]"
                           ".some(t => t.innerText.includes('paint over the part to regenerate first'))")
    page.locator("#inpaint-editor").scroll_into_view_if_needed()
    page.wait_for_selector("#inpaint-editor canvas")
    draw(page, "#inpaint-editor", [(0.2, 0.75), (0.8, 0.75), (0.8, 0.9), (0.2, 0.9)])
    page.get_by_role("button", name="Inpaint where I painted").click()
    wait_new_image(page, "#inpaint-results", old=results)
    page.screenshot(path=str(ARTIFACTS / "edit-inpaint-painted.png"), full_page=True)
