"""The scoring service: config -> engine -> batcher -> routes -> client.

Runs on onnxruntime, tokenizers, numpy, FastAPI, uvicorn and pydantic alone; importing
``app`` never imports torch (a test enforces it). Build the application with
:func:`app.main.create_app`; nothing is built at import time.
"""
