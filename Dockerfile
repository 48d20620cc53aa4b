# One image for every inferq process: `api`, `worker --pool io|local`, `migrate`, and the
# CLI (`keys create`, `top`, `submit`). The command picks the process:
#
#   docker build -t inferq .
#   docker run --rm -p 8000:8000 -e INFERQ_REDIS_URL=redis://... \
#     -e INFERQ_DATABASE_URL=postgresql://... inferq api
#
# deploy/compose.yaml and deploy/kubernetes/ run it with Redis and PostgreSQL.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV VIRTUAL_ENV=/opt/inferq \
    PATH=/opt/inferq/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv "$VIRTUAL_ENV" && pip install --upgrade pip
# PyTorch's CPU build, from its own index: PyPI's torch of the same version is a
# multi-GB CUDA build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install torch==2.13.0 --index-url "$TORCH_INDEX_URL"
# llama.cpp compiles for a CPU family, not for the build machine (its default,
# -march=native, makes an image that can crash on an older CPU). On x86-64: AVX2, FMA
# and F16C, which every x86-64 server of the last ten years has; elsewhere its portable
# build. Set LLAMA_CMAKE_ARGS to build for another target.
ARG LLAMA_CMAKE_ARGS=""
COPY pyproject.toml README.md /src/
COPY src /src/src
RUN if [ -z "$LLAMA_CMAKE_ARGS" ]; then \
        LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF"; \
        if [ "$(uname -m)" = x86_64 ]; then \
            LLAMA_CMAKE_ARGS="$LLAMA_CMAKE_ARGS -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"; \
        fi; \
    fi \
    && CMAKE_ARGS="$LLAMA_CMAKE_ARGS" pip install /src

FROM ${PYTHON_IMAGE}
# llama.cpp's threads are OpenMP's (libgomp); the slim image does not carry it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 inferq \
    && mkdir /data && chown inferq:inferq /data
COPY --from=build /opt/inferq /opt/inferq
ENV PATH=/opt/inferq/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    INFERQ_HOST=0.0.0.0 \
    INFERQ_DATA_DIR=/data
USER inferq
WORKDIR /data
# The bundled GGUF is shipped in parts; join them now, not at a worker's first job.
RUN python -c "from inferq.providers.llamacpp import default_gguf_path; print(default_gguf_path())"
EXPOSE 8000
ENTRYPOINT ["inferq"]
CMD ["api"]
