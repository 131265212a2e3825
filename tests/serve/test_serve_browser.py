"""The playground page in headless Chromium: pick an image, ask, watch the streamed answer and experts."""

from __future__ import annotations

import shutil

import pytest
from serve_helpers import ColorBackend, png_bytes, running

from moesaic.serve.app import create_app
from moesaic.serve.settings import ServeConfig

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.browser
@pytest.mark.skipif(not shutil.which("chromium") and not __import__("os").path.exists(CHROMIUM),
                    reason="Debian chromium is not installed")
@pytest.mark.parametrize("api_key", [None, "pw-key"])
def test_playground_uploads_asks_and_streams(tmp_path, api_key):
    from playwright.sync_api import sync_playwright

    photo = tmp_path / "green.png"
    photo.write_bytes(png_bytes((0, 160, 0), size=(48, 48)))
    backend = ColorBackend(delay_s=0.02)
    app = create_app(ServeConfig(model="colors", api_key=api_key), backend)
    with running(app) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(url + "/")
            if api_key:
                page.fill("#key", api_key)
            page.set_input_files("#file", str(photo))
            page.wait_for_function("document.getElementById('preview').src.startsWith('data:image/png')")
            page.fill("#question", "What colour is it?")
            page.click("#ask")
            page.wait_for_selector("#answer[data-done='1']", timeout=20_000)
            assert page.inner_text("#answer") == "green about what colour is it?"
            assert page.locator("#experts span").all_inner_texts() == ["colors", "echo"]
            assert page.inner_text("#model") == "colors"
            assert page.inner_text("#status") == ""
        finally:
            browser.close()
    assert backend.streams_started == 1  # the page used the streaming API
