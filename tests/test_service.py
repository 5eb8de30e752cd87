"""`audiotext serve`: the real FastAPI app on uvicorn at 127.0.0.1, asked over real HTTP, and its
page driven by Debian's chromium."""

import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import soundfile as sf
import uvicorn

from audiotext.config import ServiceLimits
from audiotext.inference.export import export_model
from audiotext.inference.recognizer import EmotionRecognizer
from audiotext.inference.service import create_app

RATE = 48000
SCREENSHOT = Path(__file__).resolve().parent.parent / "test-artifacts" / "page.png"
CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags chromium keeps calling Google's hosts, which this
# machine's closed network refuses.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def uploads(tmp_path_factory):
    """Where the server's temporary files go during these tests: empty again after every request."""
    folder = tmp_path_factory.mktemp("uploads")
    previous, tempfile.tempdir = tempfile.tempdir, str(folder)
    yield folder
    tempfile.tempdir = previous


@pytest.fixture(scope="module")
def clip(demo_corpus, tmp_path_factory):
    """(a demo test clip as a WAV file, its sentence)."""
    row = pd.read_pickle(demo_corpus / "test.pkl").iloc[3]
    path = tmp_path_factory.mktemp("clips") / "clip.wav"
    sf.write(path, row["audio"], RATE, subtype="PCM_16")
    return path, row["Sentence"]


@pytest.fixture(scope="module")
def server(trained_runs, uploads, tmp_path_factory):
    """The app serving the cross-modal model folder on a free port; yields (address, recognizer)."""
    model = export_model(trained_runs["mult"], tmp_path_factory.mktemp("served") / "mult")
    recognizer = EmotionRecognizer.from_pretrained(model, device="cpu")
    limits = ServiceLimits(max_upload_bytes=600_000, max_seconds=5.0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    running = uvicorn.Server(uvicorn.Config(create_app(recognizer, limits), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    for _ in range(200):
        if running.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", recognizer
    running.should_exit = True
    thread.join(timeout=10)


def post(address, path: Path | None = None, content: bytes | None = None, name="clip.wav", text=None):
    audio = content if content is not None else path.read_bytes()
    return httpx.post(f"{address}/predict", files={"audio": (name, audio, "audio/wav")},
                      data={"text": text} if text else {}, timeout=60)  # fmt: skip


def test_health_labels_and_a_prediction_equal_to_the_api(server, clip, uploads):
    address, recognizer = server
    health = httpx.get(f"{address}/health").json()
    assert health["status"] == "ok" and health["kind"] == "cross" and health["reads_text"]
    assert httpx.get(f"{address}/labels").json() == recognizer.labels == health["labels"]
    assert "/predict" in httpx.get(f"{address}/openapi.json").json()["paths"]

    path, sentence = clip
    answer = post(address, path, text=sentence)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected = recognizer.predict(str(path), text=sentence)
    assert body["label"] == expected[0]["label"] and body["text"] == sentence and not body["transcribed"]
    assert [s["label"] for s in body["scores"]] == [s["label"] for s in expected]
    assert [s["score"] for s in body["scores"]] == pytest.approx([s["score"] for s in expected], abs=1e-5)
    assert not list(uploads.iterdir())


def test_without_text_the_server_transcribes(server, clip):
    address, _ = server
    body = post(address, clip[0]).json()
    assert body["transcribed"] and body["text"] and len(body["scores"]) == 7


def test_bad_uploads_get_a_4xx_with_a_reason_and_the_server_goes_on(server, clip, uploads, tmp_path):
    address, _ = server
    not_audio = post(address, content="this is a text file".encode(), name="notes.wav", text="안녕")
    assert not_audio.status_code == 415 and "notes.wav" in not_audio.json()["detail"]
    empty = post(address, content=b"", text="안녕")
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]
    large = post(address, content=b"\0" * 700_000, text="안녕")
    assert large.status_code == 413 and "too large" in large.json()["detail"]
    long_clip = tmp_path / "long.wav"
    sf.write(long_clip, pd.Series([0.1, -0.1] * 4000 * 6).to_numpy(), 8000, subtype="PCM_16")  # 6 s at 8 kHz
    too_long = post(address, long_clip, text="안녕")
    assert too_long.status_code == 413 and "6.0 s of audio" in too_long.json()["detail"]
    no_words = post(address, clip[0], text="???!!!___")
    assert no_words.status_code == 200  # "?" and "!" are kept by the normaliser
    nothing = post(address, clip[0], text="—— ——")
    assert nothing.status_code == 422 and "normalises to nothing" in nothing.json()["detail"]
    assert httpx.get(f"{address}/health").status_code == 200
    assert post(address, clip[0], text=clip[1]).status_code == 200
    assert not list(uploads.iterdir())


def test_the_page_predicts_a_clip_in_a_real_browser(server, clip):
    from playwright.sync_api import sync_playwright

    assert shutil.which("chromium") or Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: `make test` installs Debian's chromium"
    address, recognizer = server
    path, sentence = clip
    expected = recognizer.predict(str(path), text=sentence)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 800, "height": 760})
        page.goto(f"{address}/")
        page.wait_for_function("document.getElementById('model').textContent.includes('cross')")
        page.evaluate("document.fonts.ready")
        page.set_input_files("#audio", str(path))
        page.fill("#text", sentence)
        page.click("#submit")
        page.wait_for_selector("#bars .bar")
        assert page.text_content("#label") == expected[0]["label"]
        rows = page.locator("#bars .bar")
        assert rows.count() == 7
        assert [rows.nth(i).get_attribute("data-label") for i in range(7)] == [s["label"] for s in expected]
        assert f"{100 * expected[0]['score']:.1f}%" in rows.nth(0).text_content()
        assert page.evaluate("document.fonts.check('16px \"audiotext Korean\"', '공포')")  # Hangul has a font
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        page.set_input_files("#audio", [])
        page.click("#submit")
        assert "Choose a clip" in page.text_content("#error")
        browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
