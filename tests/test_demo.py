"""The draw-a-digit demo: its server against a real TorchServe, and the page in a real Chromium."""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import requests

from harness.local_server import free_port
from harness.samples import not_one_digit_samples
from ops.polling import wait_until
from tests.conftest import FIXTURES, ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo(server):
    """`python -m demo.server` on a free port, forwarding to the session's TorchServe."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "demo.server",
            "--port",
            str(port),
            "--url",
            server.inference,
            "--token-file",
            str(server.root / "key_file.json"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            if process.poll() is not None:
                raise ChildProcessError(f"exited with {process.returncode}")
            return requests.get(f"{url}/api/health", timeout=5).ok

        try:
            wait_until(healthy, 60, 0.2, "the demo server to answer", errors=(requests.ConnectionError,))
        except (TimeoutError, ChildProcessError) as error:
            pytest.fail(f"the demo server did not start ({error}): {process.stdout.read1().decode(errors='replace')}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_demo_forwards_predictions_and_errors(demo):
    answer = requests.post(
        f"{demo}/api/predict",
        data=(FIXTURES / "canvas_seven.png").read_bytes(),
        headers={"Content-Type": "image/png"},
        timeout=30,
    )
    assert answer.status_code == 200 and answer.json()["digit"] == 7 and len(answer.json()["probabilities"]) == 10
    refused = requests.post(
        f"{demo}/api/predict", data=b"plain text", headers={"Content-Type": "text/plain"}, timeout=30
    )
    assert refused.status_code == 415 and refused.json()["code"] == 415 and refused.json()["error"]
    assert requests.get(f"{demo}/nothing-here", timeout=10).status_code == 404


def test_demo_forwards_numbers(demo, mnist_sample):
    from synthetic.families import encode_image
    from synthetic.numbers import mnist_row

    digits, labels = mnist_sample
    answer = requests.post(f"{demo}/api/number", data=encode_image(mnist_row(digits[4:8])), timeout=30)
    assert answer.status_code == 200 and answer.json()["number"] == "".join(map(str, labels[4:8]))
    assert [len(d["box"]) for d in answer.json()["digits"]] == [4] * 4
    blank = requests.post(f"{demo}/api/number", data=encode_image(digits[0] * 0), timeout=30)
    assert blank.status_code == 422 and "no digit" in blank.json()["error"]


def test_demo_forwards_explanations(demo):
    canvas = (FIXTURES / "canvas_seven.png").read_bytes()
    answer = requests.post(f"{demo}/api/explain", data=canvas, headers={"Content-Type": "image/png"}, timeout=60)
    assert answer.status_code == 200 and answer.json()["digit"] == 7
    assert np.asarray(answer.json()["view"]).shape == np.asarray(answer.json()["attributions"]).shape == (28, 28)
    refused = requests.post(f"{demo}/api/explain", data=b"plain text", timeout=30)
    assert refused.status_code == 415 and refused.json()["code"] == 415


def test_a_refused_demo_key_is_our_fault_and_big_bodies_stop_at_the_demo(server):
    from threading import Thread

    from demo.server import make_server
    from mnist_digit_client import DigitClient

    demo_server = make_server(DigitClient(server.inference, token="not-the-key", retries=0), port=0)
    Thread(target=demo_server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{demo_server.server_address[1]}/api/predict"
    try:
        refused = requests.post(url, data=(FIXTURES / "seven.png").read_bytes(), timeout=30)
        assert refused.status_code == 502 and "key" in refused.json()["error"]
        # Refused from the Content-Length alone, before a byte of the body is read.
        connection = http.client.HTTPConnection("127.0.0.1", demo_server.server_address[1], timeout=30)
        connection.putrequest("POST", "/api/predict")
        connection.putheader("Content-Length", str(demo_server.RequestHandlerClass.max_body + 1))
        connection.endheaders()
        too_big = connection.getresponse()
        assert too_big.status == 413 and json.loads(too_big.read())["code"] == 413
        connection.close()
    finally:
        demo_server.shutdown()
        demo_server.server_close()


def test_the_key_never_reaches_the_browser(demo, server):
    keys = server.keys().values()
    for path in ("/", "/app.js", "/number.js", "/style.css", "/api/health"):
        response = requests.get(f"{demo}{path}", timeout=10)
        assert response.ok
        seen = response.text + "".join(f"{k}: {v}" for k, v in response.headers.items())
        assert not any(key in seen for key in keys), path
    page = requests.get(demo, timeout=10)
    assert 'name="viewport"' in page.text and "http" not in page.text.replace("http-equiv", "")  # no CDN
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")


# -- a real browser


def chromium_or_skip() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    missing = None
    if not path:
        missing = "no Chromium: `sudo apt-get install chromium` (`make test` installs it when run as root)"
    elif importlib.util.find_spec("playwright") is None:
        missing = "Playwright is not installed: `make setup`"
    if missing and os.environ.get("CI"):
        pytest.fail(f"CI must run the browser test: {missing}")
    if missing:
        pytest.skip(missing)
    return path


@pytest.fixture(scope="module")
def browser():
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        yield browser
        browser.close()


def draw_seven(page) -> None:
    """A 7 as a person draws it: a bar across the top, then a stroke down to the lower left."""
    box = page.locator("#pad").bounding_box()

    def at(x: float, y: float) -> tuple[float, float]:
        return box["x"] + x * box["width"], box["y"] + y * box["height"]

    page.mouse.move(*at(0.28, 0.22))
    page.mouse.down()
    page.mouse.move(*at(0.72, 0.22), steps=12)
    page.mouse.move(*at(0.45, 0.82), steps=16)
    page.mouse.up()


def shows_digit(page, digit: str) -> None:
    page.wait_for_function("d => document.getElementById('digit').textContent === d", arg=digit, timeout=30_000)


@pytest.mark.parametrize(
    "viewport, screenshot",
    [
        ({"width": 960, "height": 600}, "demo.png"),
        ({"width": 390, "height": 780}, "demo-phone.png"),  # a phone's width
    ],
)
def test_drawing_a_seven_in_chromium_shows_7(demo, browser, viewport, screenshot, tmp_path):
    page = browser.new_page(viewport=viewport)
    try:
        page.goto(demo)
        draw_seven(page)
        shows_digit(page, "7")
        assert page.locator("#bars li.top .name").inner_text() == "7"
        assert "% sure" in page.locator("#confidence").inner_text()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "wider than the screen"
        page.wait_for_timeout(300)  # the bars' 120 ms transition, for the picture only
        page.screenshot(path=str(tmp_path / screenshot), full_page=True)  # a temporary folder: nothing tracked
        assert (tmp_path / screenshot).stat().st_size > 0
    finally:
        page.close()


def heatmap_pixels(page) -> np.ndarray:
    """The explanation's canvas as (28, 28, RGBA)."""
    script = "Array.from(document.getElementById('heatmap').getContext('2d').getImageData(0, 0, 28, 28).data)"
    return np.asarray(page.evaluate(script)).reshape(28, 28, 4)


def test_explain_overlays_the_attributions_on_the_view_the_network_read(demo, browser, tmp_path):
    page = browser.new_page(viewport={"width": 960, "height": 600})
    try:
        page.goto(demo)
        assert page.locator("#explain").is_disabled() and page.locator("#explanation").is_hidden()
        draw_seven(page)
        shows_digit(page, "7")
        with page.expect_response("**/api/explain") as answered:
            page.click("#explain")
        answer = answered.value.json()
        page.locator("#explanation").wait_for(state="visible", timeout=30_000)
        assert answer["digit"] == 7 and page.locator("#explanation .explained-digit").inner_text() == "7"
        # The canvas shows this answer: the strongest attributions in the "for" colour, and black
        # wherever the view had no ink (and so no attribution).
        pixels = heatmap_pixels(page)
        view, attributions = np.asarray(answer["view"]), np.asarray(answer["attributions"])
        strongest = attributions >= 0.3 * np.abs(attributions).max()
        assert strongest.sum() >= 3 and (pixels[strongest][:, 0] > pixels[strongest][:, 2] + 80).all()
        empty = (view == 0) & (attributions == 0)
        assert empty.sum() > 300 and (pixels[empty][:, :3] == 0).all()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "wider than the screen"
        page.screenshot(path=str(tmp_path / "demo-explained.png"), full_page=True)  # a temporary folder
        draw_seven(page)  # a new stroke: the explanation no longer describes the drawing
        assert page.locator("#explanation").is_hidden()
    finally:
        page.close()


def test_keyboard_reaches_every_control_and_a_photo_upload_is_read(demo, browser):
    page = browser.new_page(viewport={"width": 960, "height": 600})

    def focused() -> str:
        return page.evaluate("document.activeElement.id")

    try:
        page.goto(demo)
        tabbed = []
        for _ in range(3):
            page.keyboard.press("Tab")
            tabbed.append(focused())
        assert tabbed == ["pad", "clear", "upload"]

        draw_seven(page)
        shows_digit(page, "7")
        assert focused() == "pad"
        page.keyboard.press("Escape")  # on the canvas: start again
        shows_digit(page, "-")

        draw_seven(page)
        shows_digit(page, "7")
        page.keyboard.press("Tab")
        assert focused() == "clear"
        page.keyboard.press("Enter")
        shows_digit(page, "-")

        page.set_input_files("#upload", str(FIXTURES / "paper_seven.jpg"))
        shows_digit(page, "7")
    finally:
        page.close()


def test_what_is_not_one_digit_is_shown_as_such(demo, browser, tmp_path):
    """A letter and several digits, uploaded: the page says what they are instead of a digit."""
    samples = not_one_digit_samples()
    page = browser.new_page(viewport={"width": 960, "height": 600})
    try:
        page.goto(demo)
        for name, says in (("letter", "does not look like a digit"), ("several_digits", "one digit per image")):
            path = tmp_path / f"{name}.png"
            path.write_bytes(samples[name][0])
            page.set_input_files("#upload", str(path))
            page.wait_for_function(
                "r => document.getElementById('status').dataset.reason === r", arg=samples[name][1], timeout=30_000
            )
            assert says in page.locator("#status").inner_text()
            assert page.locator("#digit").inner_text() == "?"
        draw_seven(page)  # a digit again: the reason goes
        shows_digit(page, "7")
        assert page.locator("#status").inner_text() == "" and page.evaluate(
            "!('reason' in document.getElementById('status').dataset)"
        )
    finally:
        page.close()


def draw_one_seven(page) -> None:
    """A "1" and a "7" side by side on the number pad, as a person writes them: a stroke down, then a
    bar across and a stroke down to the lower left."""
    box = page.locator("#number-pad").bounding_box()

    def at(x: float, y: float) -> tuple[float, float]:
        return box["x"] + x * box["width"], box["y"] + y * box["height"]

    for stroke in ([(0.2, 0.2), (0.2, 0.8)], [(0.33, 0.22), (0.47, 0.22), (0.38, 0.82)]):
        page.mouse.move(*at(*stroke[0]))
        page.mouse.down()
        for point in stroke[1:]:
            page.mouse.move(*at(*point), steps=14)
        page.mouse.up()


@pytest.mark.parametrize("viewport", [{"width": 960, "height": 900}, {"width": 390, "height": 900}])
def test_a_number_drawn_on_the_wide_pad_is_read_and_boxed(demo, browser, viewport, tmp_path):
    page = browser.new_page(viewport=viewport)
    try:
        page.goto(demo)
        page.locator("#number-pad").scroll_into_view_if_needed()
        draw_one_seven(page)
        page.wait_for_function("t => document.getElementById('number').textContent === t", arg="17", timeout=30_000)
        boxes = [item.get_attribute("data-box") for item in page.locator("#number-digits li").all()]
        assert len(boxes) == 2
        (x1, _, w1, _), (x2, _, _, _) = ([int(v) for v in box.split(",")] for box in boxes)
        assert x1 + w1 <= x2 and x1 < 0.3 * 840 < x2 + 5, boxes  # the 1, then the 7, in the pad's pixels
        drawn = page.evaluate(
            "Array.from(document.getElementById('number-boxes').getContext('2d')"
            ".getImageData(0, 0, 840, 280).data).some((v, i) => i % 4 === 3 && v > 0)"
        )
        assert drawn, "no box drawn over the pad"
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "wider than the screen"
        page.screenshot(path=str(tmp_path / "number.png"), full_page=True)
        page.locator("#number-pad").focus()
        page.keyboard.press("Escape")
        page.wait_for_function("t => document.getElementById('number').textContent === t", arg="-", timeout=10_000)
        assert page.locator("#number-digits li").count() == 0
    finally:
        page.close()
