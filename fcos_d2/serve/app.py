"""
The HTTP service on Ray Serve: an HTTP deployment (a FastAPI app for the routes) in front of a
model deployment (``replicas`` copies of the model, anywhere on the Ray cluster) that batches
concurrent requests with Ray Serve's dynamic batching. Needs ``pip install 'fcos_d2[serve]'``.

Routes: ``GET /v1/health``, ``GET /v1/model``, ``POST /v1/detect`` (see docs/serving.md).
"""

import asyncio
import logging
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, List, NamedTuple, Optional

from .images import MAX_PIXELS, BadImage, decode_image
from .model import ModelSource, ServedModel, answer

__all__ = ["ServeSettings", "build_app"]

logger = logging.getLogger("fcos_d2.serve")

# request bodies larger than this are refused before they are read (413)
MAX_BODY_BYTES = 64 * 1024 * 1024
# how long a request sent to a replica that is still loading its model waits for it (then 503)
LOAD_WAIT_S = 60.0


class ServeSettings(NamedTuple):
    """
    How the service runs: ``replicas`` model copies; batches of up to ``max_batch_size``
    concurrent requests (None: chosen by measuring on the replica's device, see
    :meth:`ServedModel.best_batch_size`) gathered for up to ``batch_wait_ms``; images of more
    than ``max_pixels`` refused; each replica reserves ``cpus_per_replica`` CPUs and
    ``gpus_per_replica`` GPUs of Ray and runs ``threads`` torch threads (0: its CPUs).
    """

    replicas: int = 1
    max_batch_size: Optional[int] = None
    batch_wait_ms: float = 5.0
    max_pixels: int = MAX_PIXELS
    threads: int = 0
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0


def _error(status: int, message: str):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


def _threshold(value: Optional[str]) -> float:
    if value is None:
        return 0.0
    try:
        threshold = float(value)
    except ValueError:
        threshold = math.nan
    if not 0.0 <= threshold <= 1.0:
        raise BadImage(f"score_threshold={value!r}: a number from 0 to 1")
    return threshold


def _fastapi_app():
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    app = FastAPI(title="fcos_d2", docs_url=None, redoc_url=None, openapi_url=None)
    routes = "GET /v1/health, GET /v1/model, POST /v1/detect"

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if exc.status_code == 404:
            return _error(404, f"no route {request.url.path!r} (routes: {routes})")
        if exc.status_code == 405:
            return _error(405, f"{request.method} {request.url.path}: not allowed ({routes})")
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return _error(400, f"bad request: {str(exc).splitlines()[0]}")

    return app


class Loading(RuntimeError):
    """The replica's model is not loaded (yet, or at all: the message says which)."""


def _model_deployment(source: ModelSource, settings: ServeSettings):
    from ray import serve

    wait_s = max(0.0, settings.batch_wait_ms) / 1000.0
    first_batch = settings.max_batch_size or 8  # until the replica has measured its own

    @serve.deployment(
        name="fcos_d2_model",
        num_replicas=settings.replicas,
        ray_actor_options={
            "num_cpus": settings.cpus_per_replica,
            "num_gpus": settings.gpus_per_replica,
        },
        max_ongoing_requests=256,
        health_check_period_s=2,
        health_check_timeout_s=30,
    )
    class FCOSModel:
        """A copy of the model; concurrent detections are batched (Ray Serve's ``batch``)."""

        def __init__(self):
            self.model: Optional[ServedModel] = None
            self.load_error: Optional[str] = None
            self.batch_size = first_batch
            # one inference at a time per replica, off the event loop: status calls stay
            # answered during a forward pass
            self.pool = ThreadPoolExecutor(max_workers=1)
            threading.Thread(target=self._load, daemon=True).start()

        def _load(self) -> None:
            import torch

            try:
                torch.set_num_threads(settings.threads or max(1, int(settings.cpus_per_replica)))
                model = ServedModel(source)
                size = settings.max_batch_size or model.best_batch_size(8)
                self.detect.set_max_batch_size(max(1, size))
                self.batch_size = size
                self.model = model
                logger.info(f"model loaded in process {os.getpid()}: batches of up to {size}")
            except Exception as e:  # reported by /v1/health
                text = str(e).splitlines()[0] if str(e) else ""
                self.load_error = f"{type(e).__name__}: {text}"
                logger.exception("the model could not be loaded")

        def check_health(self) -> None:  # Ray Serve's replica health check
            if self.load_error:
                raise RuntimeError(self.load_error)

        def status(self) -> Optional[str]:
            """None once loaded, else why not."""
            if self.model is not None:
                return None
            return f"model failed to load: {self.load_error}" if self.load_error else "loading"

        def info(self) -> dict:
            if self.model is None:
                raise Loading(self.status())
            import ray
            import torch

            threads = self.pool.submit(torch.get_num_threads).result()
            return {
                **self.model.info,
                "threads": threads,
                "max_batch_size": self.batch_size,
                "replica": os.getpid(),
                "node": ray.get_runtime_context().get_node_id(),
            }

        @serve.batch(max_batch_size=first_batch, batch_wait_timeout_s=wait_s)
        async def detect(self, images: List[Any]) -> List[Any]:
            """The answers (all scores) of a batch of BGR images."""
            for _ in range(int(LOAD_WAIT_S * 10)):  # a replica that is starting: wait for it
                if self.model is not None or self.load_error:
                    break
                await asyncio.sleep(0.1)
            if self.model is None:
                raise Loading(self.status())
            loop = asyncio.get_running_loop()
            found = await loop.run_in_executor(self.pool, self.model.detect, images)
            model = self.model
            return [
                answer(i, image.shape[:2], model.classes, model.category_ids)
                for i, image in zip(found, images)
            ]

    return FCOSModel


def build_app(source: ModelSource, settings: ServeSettings):
    """
    The Ray Serve application of ``source`` served with ``settings``: an HTTP deployment (the
    routes; it decodes and checks each request, holds no model) in front of ``replicas`` model
    deployments. A model replica that dies mid-request gives its requests a JSON 503 (after
    one retry on another replica), never a hang; Ray Serve starts a new one.
    """
    from fastapi import Request
    from ray import serve

    app = _fastapi_app()
    model_deployment = _model_deployment(source, settings)

    @serve.deployment(name="fcos_d2_http", ray_actor_options={"num_cpus": 0})
    @serve.ingress(app)
    class FCOSHTTP:
        def __init__(self, model):
            self.model = model

        async def _call(self, method: str, *args):
            """The model deployment's ``method``, retried once where its replica died."""
            from ray.exceptions import RayActorError

            for attempt in range(2):
                try:
                    return await getattr(self.model, method).remote(*args)
                except RayActorError:
                    if attempt:
                        raise

        @app.get("/v1/health")
        async def health(self):
            try:
                problem = await self._call("status")
            except Exception as e:
                return _error(503, f"no model replica answers: {type(e).__name__}")
            return _error(503, problem) if problem else {"status": "ok"}

        @app.get("/v1/model")
        async def model_info(self):
            try:
                return await self._call("info")
            except Exception as e:
                return _error(503, _reason(e))

        @app.post("/v1/detect")
        async def detect(self, request: Request, score_threshold: Optional[str] = None):
            length = request.headers.get("content-length")
            if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
                return _error(413, f"body of {length} bytes: more than {MAX_BODY_BYTES}")
            chunks, size = [], 0
            async for chunk in request.stream():  # counted: a chunked body has no length
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    return _error(413, f"body of more than {MAX_BODY_BYTES} bytes")
                chunks.append(chunk)
            try:
                threshold = _threshold(score_threshold)
                loop = asyncio.get_running_loop()  # decoding off the event loop
                image = await loop.run_in_executor(
                    None, decode_image, b"".join(chunks), settings.max_pixels
                )
            except BadImage as e:
                return _error(400, str(e))
            try:
                result = await self._call("detect", image)
            except Exception as e:
                status = 503 if _unavailable(e) else 500
                return _error(status, _reason(e))
            if threshold > 0:
                kept = [d for d in result["detections"] if d["score"] >= threshold]
                result = {**result, "detections": kept}
            return result

    return FCOSHTTP.bind(model_deployment.bind())


def _unavailable(error: BaseException) -> bool:
    """Whether the model deployment could not answer (a dead replica, a model still loading),
    a 503; Ray's error of a replica's exception is an instance of that exception's class."""
    from ray.exceptions import RayActorError

    return isinstance(error, (RayActorError, Loading))


def _reason(error: BaseException) -> str:
    """One line for an error of the model deployment."""
    from ray.exceptions import RayActorError, RayTaskError

    if isinstance(error, RayActorError):
        return "the model replica stopped during the request; retry"
    cause = getattr(error, "cause", None) or error  # a replica's exception, unwrapped
    text = str(cause).splitlines()[0] if str(cause) else ""
    if isinstance(error, Loading):
        return f"the model is {text}" if text == "loading" else text
    if isinstance(error, RayTaskError):
        return f"detection failed: {type(cause).__name__}: {text}"
    return f"{type(error).__name__}: {text}"
