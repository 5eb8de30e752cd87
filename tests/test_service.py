"""`audiotext serve`'s app: the real FastAPI app on uvicorn at 127.0.0.1, asked over real HTTP
about real demo clips, good and bad."""

import logging
import socket
import tempfile
import threading
import time

import httpx
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import uvicorn

from audiotext.data.asr import EXTRA_HINT
from audiotext.data.media import MediaError, load_audio, write_media
from audiotext.inference.export import export_model
from audiotext.inference.recognizer import EmotionRecognizer
from audiotext.inference.service import create_app, transcription_available

RATE = 48000  # the demo corpus's clips
MAX_BYTES, MAX_SECONDS = 600_000, 5.0  # small limits that a demo clip (about 2 s, 200 kB) keeps


@pytest.fixture(scope="module")
def uploads(tmp_path_factory):
    """The temporary folder of the whole process while these tests run, where uploads go."""
    folder = tmp_path_factory.mktemp("uploads")
    previous, tempfile.tempdir = tempfile.tempdir, str(folder)
    yield folder
    tempfile.tempdir = previous


@pytest.fixture(scope="module")
def clip(demo_corpus, tmp_path_factory):
    """(a demo test clip as a 16-bit WAV file, its sentence)."""
    row = pd.read_pickle(demo_corpus / "test.pkl").iloc[3]
    path = tmp_path_factory.mktemp("clips") / "clip.wav"
    sf.write(path, row["audio"], RATE, subtype="PCM_16")
    return path, row["Sentence"]


@pytest.fixture(scope="module")
def server(trained_runs, uploads, tmp_path_factory):
    """The app serving the cross-modal model folder on a free port: (address, the recognizer)."""
    model = export_model(trained_runs["mult"], tmp_path_factory.mktemp("served") / "mult")
    recognizer = EmotionRecognizer.from_pretrained(model, device="cpu")
    app = create_app(recognizer, max_upload_bytes=MAX_BYTES, max_seconds=MAX_SECONDS)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    running = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", recognizer
    running.should_exit = True
    thread.join(timeout=10)
    assert not thread.is_alive(), "uvicorn did not shut down"


def post(address, content: bytes, name="clip.wav", text=None) -> httpx.Response:
    return httpx.post(f"{address}/predict", files={"audio": (name, content, "audio/wav")},
                      data={} if text is None else {"text": text}, timeout=120)  # fmt: skip


def test_health_labels_schema_and_a_prediction_equal_to_the_python_api(server, clip, uploads):
    address, recognizer = server
    health = httpx.get(f"{address}/health").json()
    assert health["status"] == "ok" and health["kind"] == "cross" and health["model"] == recognizer.cfg.name
    assert health["reads_text"] and health["reads_audio"] and health["transcription"] == transcription_available()
    assert (health["max_upload_bytes"], health["max_seconds"]) == (MAX_BYTES, MAX_SECONDS)
    assert httpx.get(f"{address}/labels").json() == recognizer.labels == health["labels"]
    form = httpx.get(f"{address}/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert form["multipart/form-data"]["schema"]["required"] == ["audio"]

    path, sentence = clip
    answer = post(address, path.read_bytes(), text=sentence)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected = recognizer.predict(str(path), text=sentence)
    assert body["label"] == expected[0]["label"] and body["text"] == sentence and body["transcribed"] is False
    assert [s["label"] for s in body["scores"]] == [s["label"] for s in expected]
    np.testing.assert_allclose([s["score"] for s in body["scores"]], [s["score"] for s in expected], atol=1e-4)
    assert not list(uploads.iterdir())


def test_without_a_transcript_the_server_transcribes_or_says_how_to(server, clip):
    address, recognizer = server
    path, _ = clip
    answer = post(address, path.read_bytes(), text="  ")
    if not transcription_available():
        assert answer.status_code == 422 and EXTRA_HINT in answer.json()["detail"]
        return
    body = answer.json()
    assert answer.status_code == 200 and body["transcribed"] is True and body["text"].strip()
    expected = recognizer.predict(str(path), text=body["text"])
    np.testing.assert_allclose([s["score"] for s in body["scores"]], [s["score"] for s in expected], atol=1e-4)


def test_bad_uploads_get_a_4xx_with_a_reason_and_the_server_goes_on(server, clip, uploads, tmp_path):
    address, _ = server
    path, sentence = clip
    not_audio = post(address, b"a text file, not a recording\n", name="notes.wav", text=sentence)
    assert not_audio.status_code == 415 and "notes.wav: not a readable media file" in not_audio.json()["detail"]
    empty = post(address, b"", text=sentence)
    assert empty.status_code == 400 and empty.json()["detail"] == "clip.wav: the upload is empty"
    large = post(address, b"\0" * (MAX_BYTES + 1), text=sentence)
    assert large.status_code == 413 and f"the limit is {MAX_BYTES}" in large.json()["detail"]

    long_clip = tmp_path / "long.wav"
    sf.write(long_clip, np.zeros(int(8000 * (MAX_SECONDS + 1)), np.int16), 8000)  # 96 kB, 6 s
    too_long = post(address, long_clip.read_bytes(), name="long.wav", text=sentence)
    assert too_long.status_code == 413
    assert too_long.json()["detail"] == "long.wav: longer than the limit of 5 s of audio"
    cut = post(address, path.read_bytes()[:100], name="cut.wav", text=sentence)  # a header and 28 samples of many
    assert cut.status_code == 415 and cut.json()["detail"].startswith("cut.wav: truncated: its header promises")
    write_media(tmp_path / "fast.flac", np.zeros(65535, np.int16), 655350, "flac", channels=2)  # 0.1 s, 5 kB
    fast = post(address, (tmp_path / "fast.flac").read_bytes(), name="fast.flac", text=sentence)
    assert fast.status_code == 415 and fast.json()["detail"].startswith("fast.flac: sample rate 655350 Hz is above")
    sf.write(tmp_path / "short.wav", np.ones(28, np.int16), 48000)
    short = post(address, (tmp_path / "short.wav").read_bytes(), name="short.wav", text=sentence)
    assert short.status_code == 422 and short.json()["detail"].startswith("short.wav: clip has")
    no_words = post(address, path.read_bytes(), text="—— ——")
    assert no_words.status_code == 422 and "normalises to nothing" in no_words.json()["detail"]
    no_file = httpx.post(f"{address}/predict", data={"text": sentence})
    assert no_file.status_code == 415 and "multipart/form-data" in no_file.json()["detail"]
    form = httpx.Request("POST", f"{address}/predict", files={"audio": ("clip.wav", path.read_bytes())})
    cut_form = httpx.post(f"{address}/predict", content=form.read()[:5000],
                          headers={"content-type": form.headers["content-type"]})  # fmt: skip
    assert cut_form.status_code == 400 and "ends before the form's closing boundary" in cut_form.json()["detail"]
    wrong_field = httpx.post(f"{address}/predict", files={"file": ("clip.wav", path.read_bytes())})
    assert wrong_field.status_code == 422 and "it has no field 'audio'" in wrong_field.json()["detail"]
    # A file name that is not UTF-8 made the JSON answer itself fail: a 500.
    body = (b'--b0und\r\nContent-Disposition: form-data; name="audio"; filename="a\xff.wav"\r\n'
            b"Content-Type: audio/wav\r\n\r\nnot audio\r\n--b0und--\r\n")  # fmt: skip
    odd_name = httpx.post(f"{address}/predict", content=body, headers={"content-type": "multipart/form-data; boundary=b0und"})
    assert odd_name.status_code == 415 and odd_name.json()["detail"].startswith("a\ufffd.wav: not a readable media file")
    # The sender's file name is only a name: a NUL byte in its extension was a 500, a long one a 400.
    for filename in (b"clip.w\x00av", b"clip." + b"a" * 300):
        body = (b'--b0und\r\nContent-Disposition: form-data; name="text"\r\n\r\n' + sentence.encode() +
                b'\r\n--b0und\r\nContent-Disposition: form-data; name="audio"; filename="' + filename +
                b'"\r\nContent-Type: audio/wav\r\n\r\n' + path.read_bytes() + b"\r\n--b0und--\r\n")  # fmt: skip
        named = httpx.post(f"{address}/predict", content=body, headers={"content-type": "multipart/form-data; boundary=b0und"})
        assert named.status_code == 200 and named.json()["text"] == sentence, named.text
    # A transcript sent as a file part (requests' files={"text": ...}) was ignored and the clip transcribed.
    as_file = httpx.post(f"{address}/predict", files={"audio": ("clip.wav", path.read_bytes()), "text": ("text", sentence.encode())})
    assert as_file.status_code == 200 and as_file.json()["text"] == sentence and not as_file.json()["transcribed"]
    empty_file = httpx.post(f"{address}/predict", files={"audio": ("clip.wav", path.read_bytes()), "text": ("t.txt", b"")})
    assert empty_file.status_code == 200 and empty_file.json()["transcribed"]  # blank: transcribed; a 500 before
    # Two transcripts: the first was kept without a word, even an empty one.
    twice = httpx.post(f"{address}/predict", files={"audio": ("clip.wav", path.read_bytes())}, data={"text": ["", sentence]})
    assert twice.status_code == 422 and twice.json()["detail"] == "the form has 2 fields 'text': send one clip and one transcript"

    assert httpx.get(f"{address}/health").json()["status"] == "ok"
    assert post(address, path.read_bytes(), text=sentence).status_code == 200
    assert not list(uploads.iterdir())


def test_a_client_that_goes_away_mid_upload_leaves_no_traceback_and_no_file(server, clip, uploads, caplog):
    address, _ = server
    path, sentence = clip
    host, port = address.removeprefix("http://").split(":")
    form = httpx.Request("POST", f"{address}/predict", files={"audio": ("clip.wav", path.read_bytes())}, data={"text": sentence})
    body = form.read()
    with caplog.at_level(logging.ERROR):
        with socket.create_connection((host, int(port)), timeout=30) as conn:
            conn.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {form.headers['content-type']}\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2])  # fmt: skip
            time.sleep(0.5)  # the server is reading the upload
        assert post(address, path.read_bytes(), text=sentence).status_code == 200  # and goes on serving
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    assert not list(uploads.iterdir())


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read(server):
    address, _ = server
    host, port = address.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        # Headers only: a server that waited for the 10 MB body would never answer.
        conn.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 10000000\r\n\r\n")  # fmt: skip
        reply = b""
        while not reply.endswith(b"}") and (chunk := conn.recv(4096)):  # headers and body come apart
            reply += chunk
    reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413") and "upload too large: 10000000 bytes" in reply


def test_a_truncated_mp3_is_refused_as_load_audio_refuses_it(server, clip, tmp_path):
    address, _ = server
    path, sentence = clip
    samples = sf.read(path, dtype="int16")[0]
    write_media(tmp_path / "whole.mp3", samples, RATE, "libmp3lame")  # with a Xing header: its frame count
    whole = (tmp_path / "whole.mp3").read_bytes()
    cut = whole[: whole.index(b"\xff\xfb", len(whole) // 2)]  # where a frame starts: it decodes cleanly
    (tmp_path / "cut.mp3").write_bytes(cut)
    with pytest.raises(MediaError, match="truncated: its header promises"):
        load_audio(tmp_path / "cut.mp3")
    answer = post(address, cut, name="cut.mp3", text=sentence)
    assert answer.status_code == 415 and answer.json()["detail"].startswith("cut.mp3: truncated: its header promises")
    assert post(address, whole, name="whole.mp3", text=sentence).status_code == 200


def test_a_port_out_of_range_or_in_use_is_refused_in_one_line(server, trained_runs, cli_error, tmp_path):
    code, printed = cli_error("serve", tmp_path / "no_model", "--port", "99999")  # before the model is looked for
    assert code == 2 and printed == "error: --port must be in 0..65535, got 99999\n"
    address, _ = server
    code, printed = cli_error("serve", trained_runs["mult"], "--port", address.rsplit(":", 1)[1])
    assert code == 1 and printed.startswith("error: [Errno 98] Address already in use") and printed.count("\n") == 1


@pytest.mark.parametrize("limit", [0, float("inf"), float("nan")])
def test_the_limits_must_be_positive_and_finite(server, limit, cli_error, tmp_path):
    _, recognizer = server
    with pytest.raises(ValueError, match=r"max_seconds = \w+: must be positive and finite"):
        create_app(recognizer, max_seconds=limit)
    with pytest.raises(ValueError, match=r"max_upload_bytes = \w+: must be positive and finite"):
        create_app(recognizer, max_upload_bytes=limit)
    rules = {"--max_seconds": "must be positive and finite", "--max_upload_mb": "must be finite and at least one byte"}
    for flag, rule in rules.items():
        # Refused before the model is looked for: there is none.
        code, printed = cli_error("serve", tmp_path / "no_model", flag, str(limit))
        assert code == 2 and printed == f"error: {flag[2:]} = {float(limit)!r}: {rule}\n"
