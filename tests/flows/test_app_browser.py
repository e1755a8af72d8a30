"""The search page in a real browser (Debian's chromium driven by Playwright): it loads, a typed query shows result
tiles, clicking one plays the video from the clip's start, and the capsules view shows capsules with their clips.

Skipped, with the install command, where chromium or Playwright is missing; CI installs chromium (.ci/run).
``MMCAPS_SCREENSHOT_DIR=DIR`` also saves the two views as PNGs there (the README's screenshot comes from this test).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from flows.app import AppThread, create_app
from flows.app.server import MAX_K
from pipeline.runs import RunFolder
from pipeline.search import IndexConfig, Searcher, build_index
from storage import Workspace

pytestmark = pytest.mark.slow
DATASET = "search-browser"
CHROMIUM_FLAGS = [
    "--no-sandbox",  # CI runs as root, where chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no chromium browser: install it with `sudo apt-get install -y chromium` (Debian/Ubuntu)")


@pytest.fixture(scope="module")
def page(trained_demo):
    browser_path = _chromium()
    from playwright import sync_api  # a dev dependency: missing, this fails (only the system's chromium may be absent)

    trained_demo.copy_dataset("eval-synthetic", DATASET)
    build_index(
        RunFolder(Workspace(trained_demo.workspace), trained_demo.run_id), DATASET, IndexConfig(window=3, stride=1.5)
    )
    searcher = Searcher.open(trained_demo.workspace, trained_demo.run_id, DATASET)
    with AppThread(create_app(searcher)) as url, sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix="mmcaps-chromium-"),  # a fresh profile every run
            executable_path=browser_path,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            tab = context.new_page()
            tab.goto(f"{url}/")
            tab.wait_for_selector("body[data-ready='1']", timeout=20_000)
            yield tab, searcher
        finally:
            context.close()


def _screenshot(tab, name: str) -> None:
    folder = os.environ.get("MMCAPS_SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(Path(folder) / name))


def test_query_shows_tiles_and_a_click_plays_from_the_clip_start(page):
    tab, searcher = page
    served = tab.inner_text("#served")
    assert searcher.index.info["run_id"] in served and DATASET in served and "fingerprint" in served
    query = "the green triangle moves to the right"
    tab.fill("#query", query)
    tab.press("#query", "Enter")
    tab.wait_for_selector(".tile", timeout=20_000)
    tiles = tab.query_selector_all("#results .tile")
    (want,) = searcher.search([query], 10)
    assert len(tiles) == len(want.hits) == 10
    assert [t.get_attribute("data-clip") for t in tiles] == [str(h.clip) for h in want.hits]
    assert want.hits[0].video_id in tiles[0].inner_text()
    # a tile whose clip starts after 0 s, so that "from the clip's start" means something
    i = next(i for i, h in enumerate(want.hits) if h.start > 0.5)
    hit = want.hits[i]
    tiles[i].click()
    tab.wait_for_function(
        "([start, end]) => { const v = document.querySelector('#video');"
        " return !v.paused && v.currentTime >= start - 0.05 && v.currentTime <= end + 1.0; }",
        arg=[hit.start, hit.end],
        timeout=20_000,
    )
    assert tab.get_attribute("#video", "src").endswith(f"/media/{hit.video_id}.mp4")
    assert hit.video_id in tab.inner_text("#now-playing")
    tab.wait_for_function("document.querySelector('#video').readyState >= 2", timeout=10_000)
    tab.wait_for_timeout(600)  # a decoded frame on screen for the screenshot
    _screenshot(tab, "search.png")


def test_capsules_view_shows_the_top_clips_of_each_capsule(page):
    tab, searcher = page
    tab.click("#tab-capsules")
    tab.wait_for_selector(".capsule .tile", timeout=20_000)
    rows = tab.query_selector_all(".capsule")
    want = searcher.index.capsules(16, 6)
    assert len(rows) == len(want) and rows[0].get_attribute("data-capsule") == str(want[0]["capsule"])
    first = rows[0].query_selector_all(".tile")
    assert [t.get_attribute("data-clip") for t in first] == [str(c["clip"]) for c in want[0]["clips"]]
    tab.wait_for_function("[...document.querySelectorAll('.capsule img')].slice(0, 6).every((i) => i.complete)")
    _screenshot(tab, "capsules.png")
    tab.click("#tab-search")


def _open(tab, link: str) -> str:
    """Load ``link`` and wait for its search to answer; the status line then."""
    tab.goto(link)
    tab.wait_for_selector("body[data-ready='1']", timeout=20_000)
    tab.wait_for_function(
        "() => { const s = document.querySelector('#status').textContent; return s && !s.startsWith('searching'); }",
        timeout=20_000,
    )
    return tab.inner_text("#status")


def test_a_deep_link_shows_its_k_and_an_api_error_as_one_readable_line(page):
    """A link with k=8 (not in the menu) selects 8 and shows 8 tiles; k above the API's range shows pydantic's 422 as
    one line naming k, never ``[object Object]``."""
    tab, searcher = page
    base = tab.url.split("?")[0]
    query = "the green triangle moves to the right"
    status = _open(tab, f"{base}?q={query.replace(' ', '+')}&k=8")
    (want,) = searcher.search([query], 8)
    assert tab.eval_on_selector("#k", "s => s.value") == "8" and "error" not in status, status
    assert tab.eval_on_selector("#k", "s => [...s.options].map((o) => o.value)") == ["5", "8", "10", "20", "50"]
    tiles = tab.query_selector_all("#results .tile")
    assert [t.get_attribute("data-clip") for t in tiles] == [str(h.clip) for h in want.hits] and len(tiles) == 8
    status = _open(tab, f"{base}?q={query.replace(' ', '+')}&k={MAX_K + 1}")
    assert tab.eval_on_selector("#k", "s => s.value") == str(MAX_K + 1)
    assert status == f'error: k: Input should be less than or equal to {MAX_K} (got "{MAX_K + 1}")', status
    assert "object" not in status
