"""`audiotext serve`: a trained model over HTTP (FastAPI on uvicorn), and a page for people.

    POST /predict   multipart form: `audio` (a file PyAV decodes), optional `text` (the transcript)
                    → {"label", "scores": [{"label", "score"}, ...] best first, "text", "transcribed"}
    GET  /health    the model, its labels, what it reads, whether it can transcribe, the limits
    GET  /labels    the labels in class order
    GET  /          the page: choose or record a clip, type the transcript or let it transcribe
    GET  /docs      FastAPI's OpenAPI page, which loads Swagger UI from a CDN (it needs the
                    internet); /openapi.json is served from here

An upload that is not audio, empty, too large (bytes) or too long (seconds) is answered with a 4xx
and {"detail": message}, never a 500, and the server goes on serving. The form is parsed here
rather than by FastAPI, so that reading stops at the byte limit and the file is written only into
a temporary directory that is removed when the request ends.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import os
import re
import socket
import tempfile
import threading
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel
from python_multipart import create_form_parser
from python_multipart.multipart import MultipartState
from python_multipart.exceptions import FormParserError
from starlette.requests import ClientDisconnect

import audiotext
from audiotext.config import ServiceLimits
from audiotext.data.asr import TranscriptionUnavailable, packaged_model_dir
from audiotext.data.media import MediaError, load_audio
from audiotext.inference.recognizer import EmotionRecognizer
from audiotext.resources import korean_web_font

PAGE = Path(__file__).with_name("page.html")
# What FastAPI would document for `audio: UploadFile, text: str | None = Form(None)`.
UPLOAD_FORM = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": ["audio"],
            "properties": {
                "audio": {"type": "string", "format": "binary",
                          "description": "the clip: any file PyAV decodes (wav, flac, mp3, ogg, webm, m4a, ...)"},
                "text": {"type": "string",
                         "description": "what is said; left out, a model that reads text transcribes the clip offline"},
            },
        }}},
    }
}  # fmt: skip


class Score(BaseModel):
    label: str
    score: float


class Prediction(BaseModel):
    label: str
    scores: list[Score]  # every class, best first
    text: str | None  # the transcript the model read; None for a model that only listens
    transcribed: bool  # whether `text` came from the offline recogniser


class Health(BaseModel):
    status: str
    model: str
    kind: str  # the modality: audio, text, cross, early, late, tfn, lmf, linear
    labels: list[str]
    reads_audio: bool
    reads_text: bool
    transcription: bool  # whether the offline recogniser (the asr extra) is installed
    max_upload_bytes: int
    max_seconds: float


def transcription_available() -> bool:
    """Whether Vosk and its packaged Korean model are installed, without loading the model."""
    try:
        packaged_model_dir()
    except TranscriptionUnavailable:
        return False
    return importlib.util.find_spec("vosk") is not None


@functools.cache
def korean_font_file() -> bytes:
    """`korean_web_font` as the bytes of a TTF file, made once."""
    buffer = io.BytesIO()
    korean_web_font().save(buffer)
    return buffer.getvalue()


def create_app(
    recognizer: EmotionRecognizer,
    max_upload_bytes: int = ServiceLimits.max_upload_bytes,
    max_seconds: float = ServiceLimits.max_seconds,
) -> FastAPI:
    limits = ServiceLimits(max_upload_bytes, max_seconds)  # refuses limits that are not positive and finite
    app = FastAPI(title="audiotext", version=audiotext.__version__,
                  description=f"Speech emotion recognition with the model {recognizer.cfg.name!r} "
                              f"({recognizer.cfg.model.modality}): {', '.join(recognizer.labels)}.")  # fmt: skip
    # Sync work runs on a thread pool; one model call at a time keeps PyTorch's own threads from
    # competing and the recognizer's lazily loaded transcriber safe.
    model_lock = threading.Lock()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/font.ttf", include_in_schema=False)
    def font() -> Response:
        # The page's Hangul, for browsers on machines without a Korean font.
        return Response(korean_font_file(), media_type="font/ttf", headers={"Cache-Control": "max-age=86400"})

    @app.get("/health")
    def health() -> Health:
        return Health(status="ok", model=recognizer.cfg.name, kind=recognizer.cfg.model.modality,
                      labels=recognizer.labels, reads_audio=recognizer.reads_audio, reads_text=recognizer.reads_text,
                      transcription=transcription_available(), max_upload_bytes=limits.max_upload_bytes,
                      max_seconds=limits.max_seconds)  # fmt: skip

    @app.get("/labels")
    def labels() -> list[str]:
        return recognizer.labels

    @app.post("/predict", openapi_extra=UPLOAD_FORM)
    async def predict(request: Request) -> Prediction:
        with tempfile.TemporaryDirectory(prefix="audiotext-upload-") as folder:
            path, name, text = await receive_form(request, Path(folder), limits.max_upload_bytes)
            return await run_in_threadpool(predict_file, path, name, text)

    def predict_file(path: Path, name: str, text: str | None) -> Prediction:
        try:
            # Decoding stops just past the limit: a long compressed file never fills the memory.
            samples, rate = load_audio(path, at_most=limits.max_seconds + 1)
        except MediaError as err:
            raise HTTPException(415, str(err).replace(str(path), name)) from None
        if len(samples) > limits.max_seconds * rate:
            raise HTTPException(413, f"{name}: longer than the limit of {limits.max_seconds:g} s of audio")
        clip = {"raw": samples, "sampling_rate": rate}
        transcribed = recognizer.needs_transcript(text)
        with model_lock:
            try:
                if transcribed:
                    text = recognizer.transcribe(clip, name=name)
                probabilities = recognizer.predict_proba([clip], [text], names=[name])[0]
            except TranscriptionUnavailable as err:
                raise HTTPException(422, f"{name}: no transcript was given, and {err}") from None
            except ValueError as err:  # the samples or the transcript: the message says which
                raise HTTPException(422, str(err)) from None
        scores = recognizer.ranked(probabilities)
        return Prediction(label=scores[0]["label"], scores=scores, text=text if recognizer.reads_text else None,
                          transcribed=transcribed)  # fmt: skip

    return app


async def receive_form(request: Request, folder: Path, max_bytes: int) -> tuple[Path, str, str | None]:
    """Streams a multipart form into `folder`, reading at most `max_bytes` of it: (the `audio` file
    as written, the name it was sent under, the `text` field or None)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise HTTPException(413, f"upload too large: {int(declared)} bytes, the limit is {max_bytes}")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(415, "send a multipart/form-data form with the clip in the field 'audio'")
    fields, files = {}, []  # fields: name → every value sent under it
    try:
        parser = create_form_parser(
            request.headers,
            lambda field: fields.setdefault(field.field_name, []).append(field.value),
            files.append,
            # Every byte of a file goes straight into `folder`: nothing is spooled anywhere else. The
            # sender's extension is not kept here (a NUL byte in it was a 500, a long one an OSError).
            config={"UPLOAD_DIR": str(folder), "UPLOAD_KEEP_EXTENSIONS": False, "UPLOAD_DELETE_TMP": False,
                    "MAX_MEMORY_FILE_SIZE": 0},
        )  # fmt: skip
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                raise HTTPException(413, f"upload too large: more than the limit of {max_bytes} bytes")
            parser.write(chunk)
        parser.finalize()
        # python-multipart does not check that the form was closed: a body cut inside the clip's
        # part would otherwise read as a form without it.
        if parser.parser.state != MultipartState.END:
            raise HTTPException(400, "malformed form: the body ends before the form's closing boundary (cut short?)")
    except ClientDisconnect:  # no one to answer; said so that the server's log has no traceback
        raise HTTPException(400, "the client went away before its form was complete") from None
    except FormParserError as err:
        raise HTTPException(400, f"malformed form: {err}") from None
    finally:
        for file in files:
            file.close()
    audio = [file for file in files if file.field_name == b"audio"]
    # A transcript sent as a file part (what `requests` makes of files={"text": "..."}) is read too.
    texts = fields.get(b"text", []) + [
        Path(os.fsdecode(f.actual_file_name)).read_bytes() if f.actual_file_name else b""  # an empty part is never written
        for f in files if f.field_name == b"text"
    ]  # fmt: skip
    if not audio:
        sent = "'audio' as text, not as a file (no filename)" if b"audio" in fields else "no field 'audio'"
        raise HTTPException(422, f"the form must carry the clip as the file field 'audio'; it has {sent}")
    for field, sent in (("audio", audio), ("text", texts)):
        if len(sent) > 1:  # all but one would be ignored
            raise HTTPException(422, f"the form has {len(sent)} fields '{field}': send one clip and one transcript")
    try:
        text = texts[0].decode("utf-8") if texts else None
    except UnicodeDecodeError as err:
        raise HTTPException(400, f"malformed form: the field 'text' is not UTF-8 ({err})") from None
    # A name that is not UTF-8 would end up in a JSON message that cannot encode it (a 500).
    name = Path((audio[0].file_name or b"upload").decode("utf-8", errors="replace")).name
    if audio[0].size == 0:
        raise HTTPException(400, f"{name}: the upload is empty")
    path = Path(os.fsdecode(audio[0].actual_file_name))
    # The sender's extension, when it is one, helps PyAV tell a format from its first bytes.
    suffix = Path(name).suffix
    if re.fullmatch(r"\.[A-Za-z0-9]{1,10}", suffix):
        path = path.rename(path.with_name(path.name + suffix))
    return path, name, text


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on `host` (a name on its IPv4 address, as uvicorn binds one: clients
    try 127.0.0.1 first) and `port` (0: one the system picks), for `uvicorn.Server.run(sockets=...)`.

    Made with the protocol getaddrinfo names (TCP), not 0: asyncio turns Nagle's algorithm off only
    on sockets that say TCP, and with it on every answer waited 40 ms for the client's delayed ACK."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, kind, protocol, _, address = next((f for f in found if f[0] == socket.AF_INET), found[0])
    listening = socket.socket(family, kind, protocol)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(address)
        listening.listen()
    except OSError:
        listening.close()
        raise
    return listening
