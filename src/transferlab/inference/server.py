"""The HTTP app of `transferlab.serve` (FastAPI, run by uvicorn): JSON in, class names and probabilities out.

- `GET /health`: {"status": "ok", "classes": [...], "inputs": what the model reads, "model": the file}
- `POST /predict` with {"inputs": [item, ...], "top_k": 1}: {"predictions": [{"label", "probability"
  [, "top": [...]]}, ...]} in the order given. An item is a text (text models), an object of column ->
  value (a table row), a nested list of numbers (an array of the input shape), or {"image": base64 of an
  image file} (image models). Items that do not fit the model are answered 400 with {"error": one line};
  a body that is not {"inputs": [...]} is 422.

Batching: each request is preprocessed on its own (so a bad request fails alone), then a single
batcher task gathers waiting requests for up to `max_wait_ms` or `max_batch_size` examples and runs
them through the model in one forward pass, in a worker thread (the event loop keeps accepting).
"""

import asyncio
import base64
import binascii
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from transferlab.errors import InputError
from transferlab.inference.predictor import Predictor


@dataclass
class _Job:
    x: torch.Tensor
    done: asyncio.Future


def item_kind(items: list[Any]) -> str:
    """What the JSON items are ("text", "image", "row" or "array"), one kind per request."""
    if not items:
        raise InputError("inputs is empty: send {\"inputs\": [item, ...]} with at least one item")
    kinds = {("text" if isinstance(i, str) else "image" if isinstance(i, dict) and set(i) == {"image"}
              else "row" if isinstance(i, dict) else "array" if isinstance(i, list) else type(i).__name__) for i in items}
    if len(kinds) > 1:
        raise InputError(f"inputs mix kinds {sorted(kinds)}; send one kind per request")
    kind = kinds.pop()
    if kind not in ("text", "image", "row", "array"):
        raise InputError(f"an input is a JSON {kind}; send texts, objects (table rows), nested lists or {{\"image\": base64}}")
    return kind


def decode_images(items: list[dict[str, Any]]) -> list[bytes]:
    try:
        return [base64.b64decode(str(i["image"]), validate=True) for i in items]
    except (binascii.Error, ValueError):
        raise InputError("an image is not valid base64") from None


class Batcher:
    """Gathers preprocessed requests and runs them through the model together."""

    def __init__(self, predictor: Predictor, max_batch_size: int, max_wait_ms: float):
        self.predictor = predictor
        self.max_batch_size = max(1, int(max_batch_size))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.batches = 0

    async def submit(self, x: torch.Tensor) -> np.ndarray:
        job = _Job(x, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.done

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            size = len(jobs[0].x)
            deadline = loop.time() + self.max_wait
            while size < self.max_batch_size:
                try:
                    job = await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time()))
                except asyncio.TimeoutError:
                    break
                jobs.append(job)
                size += len(job.x)
            try:
                probs = await asyncio.to_thread(self._forward, torch.cat([j.x for j in jobs]))
            except Exception as e:  # the model failed: every waiting request hears it
                for j in jobs:
                    j.done.set_exception(e)
                continue
            self.batches += 1
            start = 0
            for j in jobs:
                j.done.set_result(probs[start : start + len(j.x)])
                start += len(j.x)

    @torch.inference_mode()
    def _forward(self, x: torch.Tensor) -> np.ndarray:
        model = self.predictor.model
        return torch.softmax(model(x.to(self.predictor.device)).float(), dim=-1).cpu().numpy()


def create_app(predictor: Predictor, max_batch_size: int = 64, max_wait_ms: float = 5.0, max_inputs: int = 1024,
               model_name: str = ""):
    """The FastAPI app; `max_inputs` bounds one request's items (more is a 400)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, Field

    batcher = Batcher(predictor, max_batch_size, max_wait_ms)
    pre = predictor.pre

    class Request(BaseModel):
        inputs: list[Any] = Field(description="texts, objects (table rows), nested lists, or {image: base64}")
        top_k: int = Field(1, ge=1)

    @asynccontextmanager
    async def lifespan(_app):
        worker = asyncio.create_task(batcher.run())
        yield
        worker.cancel()

    app = FastAPI(title="transferlab", lifespan=lifespan)
    app.state.batcher = batcher

    @app.exception_handler(InputError)
    async def bad_input(_request, exc: InputError):
        return JSONResponse(status_code=400, content={"error": str(exc)})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_name, "classes": pre.class_names, "inputs": pre.describe(),
                "input_shape": list(pre.input_shape), "modality": pre.modality, "batches": batcher.batches}

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        if len(request.inputs) > max_inputs:
            raise InputError(f"{len(request.inputs)} inputs in one request; at most {max_inputs} (serve's max_inputs)")
        kind = item_kind(request.inputs)
        items = decode_images(request.inputs) if kind == "image" else request.inputs
        x = await asyncio.to_thread(pre.encode, items, kind)
        probs = await batcher.submit(x)
        return {"predictions": predictor.answers(probs, request.top_k)}

    return app
