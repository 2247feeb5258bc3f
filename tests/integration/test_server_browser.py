"""The playground page in a real browser: Debian's chromium, driven by Playwright. The text
streams in token by token (the library's greedy text, the oracle), and a click on a token
shows its alternatives and what the last layer attended to. Skipped where Playwright or
chromium is not installed (`pip install playwright`; `apt-get install chromium`)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from serving import running

from gptscratch import api

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("needs chromium (apt-get install chromium)", allow_module_level=True)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def test_the_playground_streams_and_explains_a_token(tiny_run: Path, tmp_path: Path) -> None:
    loaded: Any = api.load(tiny_run, device="cpu", dtype="float32")
    prompt = "ROMEO:\n"
    want = api.complete(loaded, prompt, max_new_tokens=30, temperature=0.0)[0].text
    with running(api.server_app(loaded)) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            page.goto(f"{url}/")
            page.wait_for_function("document.getElementById('model').textContent"
                                   ".includes('tiny')", timeout=10_000)
            page.fill("#prompt", prompt)
            page.fill("#max_tokens", "30")
            page.fill("#temperature", "0")
            page.click("#go")
            page.wait_for_function("document.getElementById('status').textContent"
                                   ".startsWith('finished')", timeout=30_000)
            shown = page.eval_on_selector_all(".tok", "els => els.map(e => e.textContent)")
            assert "".join(shown) == want and len(shown) == 30
            page.click(".tok >> nth=5")
            page.wait_for_selector("#attn span", timeout=10_000)
            assert page.locator("#alts tr").count() == 5
            # Token 5 was chosen reading the prompt and the 5 tokens before it.
            assert page.locator("#attn span").count() == len(prompt) + 5
            page.screenshot(path=str(tmp_path / "playground.png"))
        finally:
            browser.close()
