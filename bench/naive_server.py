"""The baseline: FastAPI + a torch model scoring each request as it arrives, no batching
across requests (the shape of OpenRLHF's own ``serve_rm``). Run by ``bench/serve_bench.py``.

    python bench/naive_server.py CHECKPOINT PORT
"""

from __future__ import annotations

import sys

import torch
import uvicorn
from fastapi import FastAPI, Request
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def build(checkpoint: str) -> FastAPI:
    """A one-endpoint app: POST /score {"texts": [...]} -> {"rewards": [...]}."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/score")
    async def score(request: Request) -> dict[str, list[float]]:
        texts = (await request.json())["texts"]
        batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.no_grad():
            rewards = model(**batch).logits.squeeze(-1)
        return {"rewards": rewards.tolist()}

    return app


if __name__ == "__main__":
    uvicorn.run(build(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
