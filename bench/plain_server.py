"""The peer a user would write first: FastAPI + onnxruntime, no batching across requests.
Each request is tokenised and run as its own onnxruntime call in FastAPI's threadpool (a
plain ``def`` endpoint), on the same model file and tokenizer as the service, with
onnxruntime's default threads (all cores, spinning). Run by ``bench/serve_bench.py``.

    python bench/plain_server.py MODEL_DIR PORT
"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from rankrm.runtime import OnnxRewardModel


class Body(BaseModel):
    texts: list[str]


def build(model_dir: str) -> FastAPI:
    """A one-endpoint app: POST /score {"texts": [...]} -> {"rewards": [...]}."""
    model = OnnxRewardModel.load(model_dir)  # onnxruntime's defaults: all cores, spinning
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/score")
    def score(body: Body) -> dict[str, list[float]]:
        raw = model.run_encodings(model.encode([None] * len(body.texts), body.texts))
        return {"rewards": model.normalize(raw).tolist()}

    return app


if __name__ == "__main__":
    uvicorn.run(build(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
