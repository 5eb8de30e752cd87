"""The page of `audiotext serve`, driven in Debian's chromium (headless, through playwright) against
the real command serving a model folder: a demo clip in, the predicted emotion and its bars out."""

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import soundfile as sf

from audiotext.inference.export import export_model

RATE = 48000  # the demo corpus's clips
CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags chromium keeps calling Google's hosts, which a machine
# without internet refuses over and over.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 # A microphone that plays a tone, granted without asking: the page's recorder runs.
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]  # fmt: skip
SCREENSHOT = Path(__file__).resolve().parent.parent / "test-artifacts" / "page.png"


@pytest.fixture(scope="module")
def served(trained_runs, tmp_path_factory):
    """`audiotext serve` of the cross-modal model folder on a free port: (address, its temporary
    folder, what that folder held once the server had started)."""
    model = export_model(trained_runs["mult"], tmp_path_factory.mktemp("served") / "mult")
    uploads = tmp_path_factory.mktemp("uploads")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "audiotext.cli", "serve", str(model), "--port", str(port), "--no_cuda"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(uploads)})
    try:
        address = f"http://127.0.0.1:{port}"
        assert server.stdout.readline().startswith(f"serving {model} on {address}/")
        deadline = time.monotonic() + 120
        while not answers(f"{address}/health"):
            assert server.poll() is None and time.monotonic() < deadline, "audiotext serve did not start"
            time.sleep(0.2)
        yield address, uploads, set(uploads.iterdir())
    finally:
        server.terminate()
        server.wait(timeout=30)


def answers(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
    except httpx.TransportError:
        return False


@contextlib.contextmanager
def browser_page():
    """A page of headless chromium, closed afterwards."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 820, "height": 720})
        finally:
            browser.close()


def test_the_page_shows_the_prediction_of_a_demo_clip(served, demo_corpus, tmp_path):
    address, uploads, started_with = served
    row = pd.read_pickle(demo_corpus / "test.pkl").iloc[3]
    clip = tmp_path / "clip.wav"
    sf.write(clip, row["audio"], RATE, subtype="PCM_16")
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("a text file, not a recording\n", encoding="utf-8")
    expected = httpx.post(f"{address}/predict", files={"audio": ("clip.wav", clip.read_bytes())},
                          data={"text": row["Sentence"]}, timeout=120).json()  # fmt: skip
    labels = httpx.get(f"{address}/labels").json()

    with browser_page() as page:
        page.goto(f"{address}/")
        page.wait_for_function("document.getElementById('model').textContent.includes('cross')")
        page.set_input_files("#audio", str(clip))
        page.fill("#text", row["Sentence"])
        page.press("#text", "Enter")  # as in a form: Enter in the transcript sends it
        page.wait_for_selector("#bars .bar")
        assert page.text_content("#label") == expected["label"]
        assert row["Sentence"] in page.text_content("#transcript")
        bars = page.locator("#bars .bar")
        assert [bars.nth(i).get_attribute("data-label") for i in range(bars.count())] == [
            s["label"] for s in expected["scores"]]  # fmt: skip
        assert bars.count() == 7
        best = expected["scores"][0]["score"]
        assert bars.nth(0).locator(".pct").text_content() == f"{100 * best:.1f}%"
        # Hangul is drawn with the font the server sends, not with boxes, on a machine without one.
        assert page.evaluate("""document.fonts.ready.then(() => [...document.fonts].some(
            (f) => f.family.includes('audiotext Korean') && f.status === 'loaded'))""")
        assert not page.is_visible("#error")
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)

        page.set_input_files("#audio", str(not_audio))
        page.click("#submit")
        page.wait_for_selector("#error", state="visible")
        assert "notes.wav: not a readable media file" in page.text_content("#error")
        assert not page.is_visible("#result")

        page.click("#record")
        page.wait_for_timeout(1500)
        page.click("#record")
        page.wait_for_function("document.getElementById('recorded').textContent.startsWith('recorded')")
        page.click("#submit")  # the recording (WebM/Opus) goes up instead of the chosen file
        page.wait_for_selector("#result", state="visible")
        assert page.text_content("#label") in labels and bars.count() == 7
        assert not page.is_visible("#error")

        # A request that gets no answer (the server stopped) is said in words, not "Failed to fetch";
        # the last result is hidden as soon as a new request goes: meanwhile it read as the new one's.
        page.route("**/predict", lambda route: route.abort())
        assert page.evaluate("""() => { document.getElementById('submit').click();
            return getComputedStyle(document.getElementById('result')).display; }""") == "none"
        page.wait_for_selector("#error", state="visible")
        assert page.text_content("#error").startswith("The server did not answer: is audiotext serve still running?")

        # A fractional limit is shown as it was given.
        health = httpx.get(f"{address}/health").json()
        page.route("**/health", lambda route: route.fulfill(json={**health, "max_upload_bytes": int(0.3 * 2**20)}))
        page.reload()
        page.wait_for_function("document.getElementById('limits').textContent.includes('MB')")
        assert f"up to {health['max_seconds']:g} s and 0.3 MB." in page.text_content("#limits")
    assert SCREENSHOT.stat().st_size > 10_000
    assert set(uploads.iterdir()) == started_with  # every upload's temporary directory is gone
