"""The HTTP API of `lookalike run`: FastAPI on uvicorn, in a thread of the service's process.

It answers from the service's own catalogue: the same models, the same in-memory index (a search
waits at most for one index update, never for a batch being embedded). Embeddings for /query
run in a bounded pool; beyond it a request is refused with 503 and Retry-After. Every request
has a deadline, its upload included, and an upload is refused (413) once it passes the limit,
before it is read whole. No route opens a file: /similar searches from the vector the index
holds, and asks the store only why a path is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from typing import Annotated

import uvicorn
from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from lookalike.api.catalogue import Answer, Catalogue
from lookalike.base.errors import LookalikeError, TransientError
from lookalike.daemon.settings import HttpSettings, address
from lookalike.search.query import EMPTY_INDEX, MAX_TEXT_BYTES
from lookalike.search.settings import MAX_K
from lookalike.web.metrics import Metrics

log = logging.getLogger(__name__)

MAX_PATHS = 1000  # paths in one POST /similar
RETRY_AFTER_SECONDS = 1

# Says why the service is not healthy, or None when it is.
Health = Callable[[], str | None]
# The k of a request: how many neighbours.
K = Annotated[int | None, Query(ge=1, le=MAX_K, description="neighbours in the answer "
                                "(default: [query] k)")]


class Refused(HTTPException):
    """A request answered with an error status and a JSON {"error": ...} body."""


def http_app(catalogue: Catalogue, settings: HttpSettings, metrics: Metrics,
             health: Health) -> FastAPI:
    """The API's routes over ``catalogue``; ``health`` says whether the service is well."""
    app = FastAPI(title="lookalike", version=version("lookalike"), docs_url=None,
                  redoc_url=None, description="Lookalikes of fashion product images.")
    embedding = threading.BoundedSemaphore(settings.max_concurrent_embeddings)

    def pool_full() -> Refused:  # images and words share the pool
        return busy(f"[http] max_concurrent_embeddings = {settings.max_concurrent_embeddings} "
                    "queries are being embedded already: try again shortly")

    @app.exception_handler(HTTPException)
    async def refused(_request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def failed(_request: Request, exc: Exception) -> JSONResponse:
        log.error("HTTP request failed: %s", exc, exc_info=exc)
        return JSONResponse({"error": f"internal error: {exc}"}, 500)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(part) for part in e['loc'][1:])}: {e['msg']}"
                             for e in exc.errors())
        return JSONResponse({"error": problems}, 400)

    @app.post("/query", summary="The catalogue images most like an uploaded image",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "image/*": {"schema": {"type": "string", "format": "binary"}},
                  "multipart/form-data": {"schema": {"type": "object", "properties": {
                      "image": {"type": "string", "format": "binary"}}}}}}})
    async def query(request: Request, k: K = None) -> JSONResponse:
        name, data = await uploaded_image(request, settings.max_upload_bytes)
        if not embedding.acquire(blocking=False):
            raise pool_full()

        def answer() -> Answer:
            try:
                return catalogue.query([(name, data)], k)[0]
            except TransientError as exc:  # memory ran out: the machine's state, not the image's
                raise busy(f"the image could not be embedded now ({exc}): try again") from None
            finally:
                embedding.release()

        return answered(await run_in_threadpool(answer), 400)

    @app.get("/query", summary="The catalogue images that best match words (with a CLIP "
             "embedder: its text tower); nothing is stored")
    def query_text(text: Annotated[str, Query(max_length=MAX_TEXT_BYTES,
                                              description="the words, e.g. red floral dress")],
                   k: K = None) -> JSONResponse:
        if not embedding.acquire(blocking=False):
            raise pool_full()
        try:
            return answered(catalogue.query_text([(text, text)], k)[0], 400)
        except TransientError as exc:
            raise busy(f"the text could not be embedded now ({exc}): try again") from None
        finally:
            embedding.release()

    @app.get("/similar", summary="The catalogue images most like a catalogue image, from its "
             "stored vector (no model is run); the image itself left out")
    def similar(path: Annotated[str, Query(description="the image's path under images_dir")],
                k: K = None) -> JSONResponse:
        return answered(catalogue.similar([path], k)[0], 404)

    @app.post("/similar", summary="GET /similar for each path of a list: an answer each, with "
              "an error field for a path that is not an indexed image")
    def similar_each(paths: Annotated[list[str], Body(max_length=MAX_PATHS)],
                     k: K = None) -> JSONResponse:
        return JSONResponse(catalogue.similar(paths, k))

    @app.get("/status", summary="What `lookalike status --json` prints")
    def status() -> JSONResponse:
        return JSONResponse(catalogue.status())

    @app.get("/healthz", summary="200 while the models are loaded and the service loop turns; "
             "503 with the reason otherwise (no token needed)")
    async def healthz() -> dict[str, str]:  # on the event loop: a probe must not queue
        problem = health()
        if problem:
            raise Refused(503, problem)
        return {"status": "ok"}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def busy(message: str) -> Refused:
    """503 with Retry-After: the service cannot take the request now, but will soon."""
    return Refused(503, message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def answered(answer: Answer, status: int) -> JSONResponse:
    """The answer, or its error as ``status`` (503 while the index is empty). Answers are
    sent as they are, not validated again by a response model: the schema is formats.md's."""
    error = answer.get("error")
    if error:
        raise Refused(503 if error == EMPTY_INDEX else status, error)
    return JSONResponse(answer)


async def uploaded_image(request: Request, limit: int) -> tuple[str, bytes]:
    """(a name, the image's bytes) of the request: its body, or the multipart field "image".
    413 once the body passes ``limit`` bytes, before it is read whole; 400 when empty."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"the image is {int(declared)} bytes; at most {limit} are taken")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise Refused(413, f"the image is over {limit} bytes, the most taken")
    except ClientDisconnect:
        raise Refused(400, "the client went away during the upload") from None
    name, data = "upload", bytes(body)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        name, data = await multipart_image(request.headers, data, limit)
    if not data:
        raise Refused(400, "the request has no image: send one as the body, or as the "
                      "multipart field 'image'")
    return name, data


async def multipart_image(headers: Headers, body: bytes, limit: int) -> tuple[str, bytes]:
    async def stream():
        yield body

    try:
        form = await MultiPartParser(headers, stream(), max_files=1, max_fields=10,
                                     max_part_size=limit).parse()
    except MultiPartException as exc:
        raise Refused(400, f"the multipart body cannot be read: {exc.message}") from None
    image = form.get("image")
    if image is None or isinstance(image, str):
        raise Refused(400, "the multipart body has no file field 'image'")
    return image.filename or "upload", await image.read()


class Guard:
    """Around every request: the token, the deadline and the request's time in metrics."""

    def __init__(self, app: FastAPI, settings: HttpSettings, metrics: Metrics):
        self.app, self.settings, self.metrics = app, settings, metrics
        self._token = f"Bearer {settings.token}".encode()
        # Timings are labelled by route; any other path is "other" (labels stay few).
        self._routes = {route.path for route in app.routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if self.settings.token and path != "/healthz" and not self._authorised(scope):
            return await error(send, 401, "this service needs its token: send the header "
                               "'Authorization: Bearer <[http] token>'",
                               [(b"www-authenticate", b"Bearer")])
        started, responded = time.perf_counter(), False

        async def sending(message: Message) -> None:
            nonlocal responded
            responded = responded or message["type"] == "http.response.start"
            await send(message)

        try:
            async with asyncio.timeout(self.settings.request_timeout_seconds):
                await self.app(scope, receive, sending)
        except TimeoutError:
            if not responded:
                await error(send, 408, "the request took longer than "
                            f"{self.settings.request_timeout_seconds:g} s")
        finally:
            route = path if path in self._routes else "other"
            self.metrics.request_seconds.labels(route).observe(time.perf_counter() - started)

    def _authorised(self, scope: Scope) -> bool:
        given = dict(scope["headers"]).get(b"authorization", b"")
        return hmac.compare_digest(given, self._token)


async def error(send: Send, status: int, message: str,
                headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *headers]})
    await send({"type": "http.response.body", "body": body})


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on (host, port). Made as IPPROTO_TCP, not 0 (as
    socket.create_server makes it): asyncio sets TCP_NODELAY only on such sockets, and without
    it every answer waits 40 ms for the client's delayed acknowledgement."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host, port))
        listening.listen(1024)
    except OSError:
        listening.close()
        raise
    return listening


@contextmanager
def serving(catalogue: Catalogue, settings: HttpSettings, metrics: Metrics,
            health: Health, announce: Callable[[str | None], None]) -> Iterator[None]:
    """The API served on ``settings.listen`` in a thread while inside, its URL told to
    ``announce`` (None once it stops); LookalikeError (one line) when the address cannot be
    listened on."""
    try:
        listening = listening_socket(*address(settings.listen))
    except OSError as exc:
        raise LookalikeError(f"[http] listen = {settings.listen!r}: {exc.strerror or exc}") \
            from None
    app = Guard(http_app(catalogue, settings, metrics, health), settings, metrics)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False,
                                           lifespan="off", timeout_keep_alive=5,
                                           timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]},
                              name="http", daemon=True)
    thread.start()
    url = f"http://{settings.listen}"
    log.info("answering HTTP on %s", url)
    announce(url)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)
        listening.close()
        with contextlib.suppress(SQLAlchemyError):  # the node's row goes when it leaves
            announce(None)
