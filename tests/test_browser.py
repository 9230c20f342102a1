"""The app in a real browser: Debian's Chromium driven by Playwright opens each tab, uploads an image,
waits for the result and saves a screenshot (RNNHA_SCREENSHOTS=docs/ refreshes the README's)."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from conftest import REPO

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
GALLERY = REPO / "assets" / "gallery"
NOT_SURE = "car_0036_cam2.jpg"  # a car whose car model the default model is not sure of (15 %)
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian's chromium is not installed (.ci/run installs it with apt-get)")


@pytest.fixture(scope="module")
def page(app_server):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 1500})
        page.goto(app_server)
        page.wait_for_selector("text=RNN-HA: coarse-to-fine vehicle re-identification", timeout=60_000)
        yield page
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = os.environ.get("RNNHA_SCREENSHOTS")
    return Path(folder) if folder else tmp_path_factory.mktemp("screenshots")


def screenshot(page, path: Path):
    """After every image on the page has loaded (the matches arrive after the table)."""
    page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)",
                           timeout=60_000)
    page.wait_for_function("() => !document.querySelector('.pending, .generating')", timeout=60_000)
    page.wait_for_timeout(500)  # the outputs fade back in from their pending state
    page.screenshot(path=str(path), full_page=True)


def open_tab(page, name: str):
    page.get_by_role("tab", name=name).click()


def test_identify_tab(page, shots):
    open_tab(page, "Identify")
    page.locator("input[type=file]").first.set_input_files(str(GALLERY / "car_0139_cam1.jpg"))
    page.get_by_role("button", name="Identify", exact=True).click()
    page.wait_for_selector("text=Query identity: car_0139", timeout=120_000)
    assert page.locator("text=car_0139_cam2.jpg").count() >= 1  # its other view is among the matches
    assert page.get_by_text(re.compile(r"car \d+ % → ")).count() >= 1  # the coarse-to-fine path
    screenshot(page, shots / "identify.png")


def test_identify_tab_says_not_sure(page, shots):
    """A traffic-camera car whose car model the calibrated default is not sure of: the path stops there."""
    open_tab(page, "Identify")
    page.locator("input[type=file]").first.set_input_files(str(GALLERY / NOT_SURE))
    page.get_by_role("button", name="Identify", exact=True).click()
    page.wait_for_selector(f"text=Query identity: {NOT_SURE.rsplit('_', 1)[0]}", timeout=120_000)
    assert page.locator("text=(not sure)").count() >= 1
    screenshot(page, shots / "identify-not-sure.png")


def test_compare_tab(page, shots):
    open_tab(page, "Compare")
    tab = page.get_by_role("tabpanel")
    files = tab.locator("input[type=file]")
    files.nth(0).set_input_files(str(GALLERY / "car_0139_cam1.jpg"))
    files.nth(1).set_input_files(str(GALLERY / "car_0139_cam2.jpg"))
    page.get_by_role("button", name="Compare", exact=True).click()
    page.wait_for_function("() => [...document.querySelectorAll('textarea, input')].some("
                           "e => /same vehicle|different vehicles/.test(e.value))", timeout=120_000)
    assert float(tab.get_by_label("Cosine similarity").input_value()) > 0
    page.wait_for_function("() => [...document.querySelectorAll('textarea, input')].some("
                           "e => /probability of the same vehicle \\d+ %/.test(e.value))", timeout=30_000)
    # the pair among the calibration pairs (the default is calibrated for it)
    tab.locator(".block", has_text="This pair among the calibration pairs").locator("img").first.wait_for(timeout=30_000)
    screenshot(page, shots / "compare.png")


def test_attention_browser_tab(page, shots):
    open_tab(page, "Attention browser")
    page.get_by_role("button", name="Next ▶").click()
    page.wait_for_selector("text=Page 2 of", timeout=120_000)
    assert page.get_by_role("tabpanel").locator("img").count() >= 12
    screenshot(page, shots / "attention-browser.png")


def test_a_browser_tile_and_an_example_are_accepted_as_uploads(page):
    """Images the app itself offers (a clicked attention-browser tile, an example) pass the upload check
    that refuses every other server path."""
    open_tab(page, "Attention browser")
    page.get_by_role("tabpanel").locator("img").first.click()  # jumps to Identify with that image
    page.get_by_role("button", name="Identify", exact=True).click()
    page.wait_for_selector("text=Query identity:", timeout=120_000)
    assert page.locator("text=not an upload of this app").count() == 0
    open_tab(page, "Identify")
    page.get_by_role("tabpanel").locator(".gallery-item").first.click()  # the first example: car_0016_cam1.jpg
    page.wait_for_timeout(500)
    page.get_by_role("button", name="Identify", exact=True).click()
    page.wait_for_function("() => document.body.innerText.includes('Query identity: car_0016')", timeout=120_000)
    assert page.locator("text=not an upload of this app").count() == 0


def test_your_gallery_tab(page, shots):
    open_tab(page, "Your gallery")
    tab = page.get_by_role("tabpanel")
    tab.locator("input[type=file]").first.set_input_files(
        [str(GALLERY / n) for n in ("car_0139_cam2.jpg", "truck_0010_cam2.jpg", "truck_0001_cam2.jpg")])
    page.wait_for_timeout(1000)
    page.get_by_role("button", name="Build index").click()
    page.wait_for_selector("text=Gallery of 3 images ready", timeout=120_000)
    screenshot(page, shots / "your-gallery.png")
