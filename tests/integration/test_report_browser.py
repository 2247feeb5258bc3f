"""The run report in a real browser (Debian's chromium, driven by Playwright): it opens from
the file with no console error, no failed request and no network access, and every picture
in it decodes. Skipped where Playwright or chromium is not installed (`pip install
playwright`; `apt-get install chromium`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gptscratch import api

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("needs chromium (apt-get install chromium)", allow_module_level=True)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def test_the_report_opens_without_errors(tiny_run: Path, tmp_path: Path) -> None:
    report = api.report([tiny_run], tmp_path / "report.html")
    problems: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(Path(report).resolve().as_uri())
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.complete, e.naturalWidth])")
            assert page.title() and page.locator("table").count() >= 2
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert images and all(done and width > 0 for done, width in images)
    # The file itself, and the pictures inlined in it: nothing from a network.
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
