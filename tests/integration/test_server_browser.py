"""The playground page in a real browser: Debian's chromium, driven by Playwright. The text
streams in token by token (the library's greedy text, the oracle), and a click on a token
shows its alternatives and what the last layer attended to. Skipped where Playwright or
chromium is not installed (`pip install playwright`; `apt-get install chromium`)."""

from __future__ import annotations

import colorsys
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


def _hue(css: str) -> float:
    """The hue, in degrees, of a computed CSS colour "rgb(r, g, b)" (8-bit channels: about a
    degree off the hue the page asked for)."""
    r, g, b = (int(v) / 255 for v in css[css.index("(") + 1:-1].split(","))
    return 360 * colorsys.rgb_to_hls(r, g, b)[0]


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
            # The legend shows the tokens' colour scale, 0% to 100%, and says what a click does.
            assert page.locator("#legend").is_visible()
            assert "probability" in page.inner_text("#legend")
            scale = page.eval_on_selector_all(
                "#scale span", "els => els.map(e => getComputedStyle(e).backgroundColor)")
            assert len(scale) == 11 and scale[0] != scale[-1]
            assert page.locator("#click-note").is_visible()
            assert "Click a token" in page.inner_text("#click-note")
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
            assert "previous-token heads" in page.inner_text("#attn-note")
            # The legend runs from red (0%) to green (100%) in tenths, and each token's colour
            # sits on that scale at its probability.
            assert all(abs(_hue(c) - 12 * i) < 1.5 for i, c in enumerate(scale)), scale
            colours = page.eval_on_selector_all(
                ".tok", "els => els.map(e => [e.title, getComputedStyle(e).backgroundColor])")
            for title, colour in colours:
                assert abs(_hue(colour) / 120 - float(title.rstrip("%")) / 100) < 0.015
            # Token 5 was chosen reading the prompt and the 5 tokens before it.
            assert page.locator("#attn span").count() == len(prompt) + 5
            page.screenshot(path=str(tmp_path / "playground.png"))
        finally:
            browser.close()


def test_the_chat_view_talks_through_the_chat_template(chat_run: Path) -> None:
    """The page's chat view sends the conversation to /v1/chat/completions and shows the
    fine-tuned model's answers, each ending at its end-of-turn marker."""
    loaded: Any = api.load(chat_run, device="cpu", dtype="float32")
    with running(api.server_app(loaded)) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            page.goto(f"{url}/")
            page.fill("#temperature", "0")
            for turn, question in enumerate(["is it so", "why so"], 1):
                page.fill("#message", question)
                page.click("#send")
                page.wait_for_function(
                    "document.getElementById('chat-status').textContent.startsWith('finished')",
                    timeout=30_000)
                shown = page.eval_on_selector_all(".msg", "els => els.map(e => e.textContent)")
                assert shown[-2:] == [question, "yes"] and len(shown) == 2 * turn
                assert page.inner_text("#chat-status") == "finished: stop"
            page.click("#new-chat")
            assert page.eval_on_selector_all(".msg", "els => els.length") == 0
        finally:
            browser.close()
