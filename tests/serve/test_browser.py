"""End to end in a real browser: ``steerflow serve`` on a tiny checkpoint where u matters, driven
by headless Chromium (Debian's ``chromium`` + ``chromium-driver`` through Selenium, no browser
download). Set ``STEERFLOW_SCREENSHOT=PATH`` to keep the screenshot it takes (the README's
``docs/img/playground.png`` comes from ``python -m tests.serve.screenshot``, the same steps)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from .harness import browser_missing, chromium, walkthrough

MISSING = browser_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"no headless browser: {MISSING}")


def test_page_streams_text_that_follows_the_slider(server, tmp_path):
    url, process = server
    with chromium() as driver:
        seen = walkthrough(driver, url, tmp_path / "playground.png")
    # bad input is a message in the page, and the server carries on
    assert "error:" in seen["empty"] and "the prompt is empty" in seen["empty"]
    # the slider moved in steps of 0.1, and generation ran at the slider's u
    assert seen["u_up"] == 1.0 and "u = [+1]" in seen["status_up"]
    assert seen["u_down"] == -1.0 and "u = [-1]" in seen["status_down"]
    # text appears, and it changes with u the way the model was trained
    assert seen["text_up"].startswith(" great") and seen["text_down"].startswith(" awful")
    # the side-by-side view: the same seed at -1, 0, +1; +1 is what generate gave at +1
    assert len(set(seen["side"])) == 3 and seen["side"][2] == seen["text_up"]
    assert "NFE" in seen["nfe"] and "4" in seen["nfe"]  # euler, 4 steps: 4 per token
    from PIL import Image

    with Image.open(seen["screenshot"]) as image:
        assert image.format == "PNG" and image.width >= 1000 and image.height >= 800
    if os.environ.get("STEERFLOW_SCREENSHOT"):
        shutil.copyfile(seen["screenshot"], Path(os.environ["STEERFLOW_SCREENSHOT"]))
    assert process.poll() is None
