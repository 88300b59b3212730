"""report.html in a real headless Chromium (Debian's, installed by .ci/install-chromium): no console errors,
every image loaded, readable on a phone-sized viewport. Screenshots go to the test's tmp_path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_report import SEED_STUDY, settings_of, write_run, write_seed_study

from kagglerun.report import build_report

pytestmark = pytest.mark.slow  # trains, runs notebooks or waits on the emulator

CHROMIUM = Path(os.environ.get("KAGGLERUN_CHROMIUM", "/usr/bin/chromium"))
# Never fetch anything: the page must stand alone, and CI machines may have no network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

if not CHROMIUM.is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (run .ci/install-chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The seed study plus a pooled seed, a running and a failed run: every part of the page."""
    results = tmp_path_factory.mktemp("browser") / "results"
    write_seed_study(results)
    for seed, best in ((0, 92.4), (1, 92.7), (2, 92.1)):
        settings = settings_of(f"res18_s{seed}", *SEED_STUDY["res18"][:3], {"group": "Seeds"})
        settings["training"]["seed"] = seed
        write_run(results, settings, best, 130 + seed)
    write_run(results, settings_of("res50_live", *SEED_STUDY["res50"][:3], {"group": "Table 2", "order": 4}),
              80.0, 30, epochs_done=41, state="running", missing_epochs=(7, 8))
    write_run(results, settings_of("vgg_oom", *SEED_STUDY["vgg16"][:3], {"group": "Table 2", "order": 5}),
              30.0, 2, epochs_done=3, state="failed", error="RuntimeError: CUDA out of memory",
              log="Traceback (most recent call last):\n  File \"train.py\", line 9\nRuntimeError: CUDA out of memory\n")
    # Per-class results of one run: its confusion matrix is drawn too
    matrix = [[90 if i == j else 1 for j in range(10)] for i in range(10)]
    (results / "bsln_4" / "confusion.json").write_text(json.dumps({"epoch": 147, "classes": list("abcdefghij"),
                                                                   "matrix": matrix}))
    return build_report(results, per_class=True)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 900}, {"width": 390, "height": 844}],
                         ids=["desktop", "phone"])
def test_report_html_opens_with_no_errors_and_every_image_loaded(report, browser, viewport, tmp_path):
    page = browser.new_page(viewport=viewport)
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url}"))
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))

    page.goto(report.html.as_uri(), wait_until="load")
    images = page.eval_on_selector_all(
        "img", "imgs => imgs.map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth}))")
    page.screenshot(path=str(tmp_path / f"report-{viewport['width']}.png"), full_page=False)
    page.screenshot(path=str(tmp_path / f"report-{viewport['width']}-full.png"), full_page=True)

    assert problems == []
    assert len(images) == len(report.figures) == 16 + 4 + 1  # 16 runs; groups Table 1-3 and Seeds; a confusion matrix
    assert [i["alt"] for i in images if not (i["complete"] and i["width"] > 0)] == []
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    # Narrow screens scroll the wide tables inside their box; the page itself never scrolls sideways.
    page_width = page.evaluate("document.documentElement.scrollWidth")
    assert page_width <= viewport["width"]
    assert page.locator("#problems").inner_text().count("CUDA out of memory") >= 2
    page.close()


def test_tables_sort_by_a_click_on_any_column_without_a_network(report, browser):
    page = browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(report.html.as_uri(), wait_until="load")
    overview = page.locator("#overview table")
    column = overview.locator("thead th").all_inner_texts().index("best test acc (%)")

    def cells(index: int) -> list[str]:
        return overview.locator("tbody tr").evaluate_all(
            f"rows => rows.map(r => r.cells[{index}].textContent.trim())")

    def number(cell: str) -> float:
        return float(cell.split()[0]) if cell[0].isdigit() else float("inf")

    heading = overview.locator("thead th").nth(column)
    heading.click()
    ascending = [number(c) for c in cells(column)]
    assert ascending == sorted(ascending) and heading.get_attribute("aria-sort") == "ascending"
    heading.click()
    descending = [number(c) for c in cells(column) if number(c) != float("inf")]
    assert descending == sorted(descending, reverse=True) and heading.get_attribute("aria-sort") == "descending"
    before = cells(0)
    names = overview.locator("thead th").nth(0)
    names.press("Enter")  # the keyboard sorts too, text in natural order
    after = cells(0)
    assert sorted(after) == sorted(before) and names.get_attribute("aria-sort") == "ascending"
    assert after.index("bsln_2") < after.index("mnist_bsln") < after.index("vgg16")
    assert problems == [] and all(url.startswith(("file:", "data:")) for url in requests), (problems, requests)
    page.close()
