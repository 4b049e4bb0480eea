# rankrm scoring service: onnxruntime + FastAPI, no torch, no compilers in the runtime image.
#   docker build -t rankrm:0.1.0 .
#   docker run -p 8000:8000 rankrm:0.1.0
# GPU variant (NVIDIA container toolkit on the host; CUDA and cuDNN libraries come with the
# onnxruntime-gpu wheel's dependencies or the base image):
#   docker build --build-arg ORT_PACKAGE=onnxruntime-gpu -t rankrm:0.1.0-gpu .
#   docker run --gpus all -e RANKRM_PROVIDER=cuda -e RANKRM_MAX_BATCH_TOKENS=16384 \
#       -p 8000:8000 rankrm:0.1.0-gpu
#   (the default token budget, 1024, is the fastest on CPU; a GPU wants larger calls)
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ARG ORT_PACKAGE=onnxruntime
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from pyproject alone, so source edits do not reinstall them.
COPY pyproject.toml ./
RUN python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
deps = p['dependencies'] + p['optional-dependencies']['serve']; \
print('\n'.join(d for d in deps if not d.startswith('onnxruntime')))" > requirements.txt \
 && pip install -r requirements.txt "${ORT_PACKAGE}>=1.18"
COPY README.md ./
COPY rankrm ./rankrm
COPY app ./app
RUN pip install --no-deps . && python3 -c "import app.main, rankrm.cli"

FROM ${BASE}
LABEL org.opencontainers.image.title="rankrm" \
      org.opencontainers.image.description="Reward model service: rewards, preferences, rankings"
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin rankrm
COPY --from=build /opt/venv /opt/venv
COPY models/default /srv/models/default
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RANKRM_HOST=0.0.0.0 \
    RANKRM_PORT=8000 \
    RANKRM_MODEL_DIR=/srv/models/default
USER rankrm
WORKDIR /home/rankrm
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('RANKRM_PORT', '8000') + '/health', timeout=2)"]
ENTRYPOINT ["rankrm", "serve"]
