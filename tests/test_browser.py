"""A real browser on the app: Playwright driving Debian's headless chromium.

Chromium is found at $CHROMIUM (default /usr/bin/chromium, Debian's package);
Playwright's own browser download is not used. The screenshot goes to
$SCREENSHOT_DIR/screenshot.png (default: the test's tmp dir), e.g.
`SCREENSHOT_DIR=docs python -m pytest tests/test_browser.py` refreshes docs/screenshot.png.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from conftest import PRETRAINED, require

pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # root in a container
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RESULT_IMAGES = ("#cropped", "#grad-cam", "#reconstruction", "#error-map")
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser():
    require(CHROMIUM.is_file(), f"chromium not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    # expect() waits 5 s by default, whatever the page's timeout: on a loaded 2-core
    # machine an upload took longer than that (a CI-like run beside a training run).
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_upload_analyse_shows_images_and_probability(browser, app_url, br35h_slice, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    page.locator("#upload input[type=file]").set_input_files(str(br35h_slice))
    # The preview is the server's answer to the upload: only then does Analyse see the
    # file. (Waiting for the file name alone timed out once on a cold 2-core CI run.)
    expect(page.locator("#preview img")).to_be_visible()
    expect(page.locator("#upload")).to_contain_text(br35h_slice.stem)
    page.locator("#analyse").click()

    expect(page.locator("#verdict")).to_contain_text(re.compile(r"P\(tumour\) = \d\.\d\d"))
    for selector in RESULT_IMAGES:
        expect(page.locator(f"{selector} img")).to_be_visible()
    # Bars with percentages, or, for an input unlike the training MRIs, a warning instead.
    expect(page.locator("#probability")).to_contain_text(re.compile(r"\d%|unlike the training"))

    screenshot_dir = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)
    screenshot_dir.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot_dir / "screenshot.png"), full_page=True)
    page.close()


def test_clicking_an_example_shows_its_results(browser, app_url):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    page.locator("#examples").get_by_text("healthy_flair_volume_ms_patient03.nii.gz").click()

    # One click: the slice slider for the volume, and the results without an Analyse click.
    expect(page.locator("#verdict")).to_contain_text(re.compile(r"P\(tumour\) = \d\.\d\d"))
    for selector in RESULT_IMAGES:
        expect(page.locator(f"{selector} img")).to_be_visible()
    expect(page.get_by_label("Axial slice").first).to_be_visible()
    page.close()


def test_a_tumour_example_shows_its_type_as_a_research_output(browser, app_url, app_model_dir):
    from playwright.sync_api import expect

    if app_model_dir != PRETRAINED:
        pytest.skip("the tiny model has no type network")  # CI serves the bundled model
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    page.locator("#examples").get_by_text("tumour_glioma_figshare_2199.jpg").click()

    expect(page.locator("#verdict")).to_contain_text("Most likely type")
    expect(page.locator("#verdict")).to_contain_text("research output")
    expect(page.locator("#tumor-type")).to_be_visible()
    expect(page.locator("#tumor-type")).to_contain_text(re.compile(r"glioma.*\d%", re.DOTALL))
    page.close()
