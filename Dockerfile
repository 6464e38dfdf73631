# syntax=docker/dockerfile:1
# The model-promoter services (promoter-worker, promoter-gateway, promoter-ingress) and the
# `promoter` command, as one image. Build from the repository root:
#   docker build -t ghcr.io/model-promoter/model-promoter:0.1.0 .
# Triton's image is deploy/triton/Dockerfile.

# --- build: the wheel, from the sources only ------------------------------------------------------
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas/ schemas/
COPY runtime/ runtime/
COPY worker/ worker/
COPY ingress/ ingress/
COPY gateway/ gateway/
COPY promoter_cli/ promoter_cli/
COPY promoter_client/ promoter_client/
COPY console/ console/
COPY deploy/ deploy/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- the gateway's native gRPC front (Go; README "gRPC API"): a static binary --------------------
FROM golang:1.26-bookworm AS grpc-front
WORKDIR /src
COPY gateway/grpc_front_go/go.mod gateway/grpc_front_go/go.sum ./
RUN go mod download
COPY gateway/grpc_front_go/ ./
RUN CGO_ENABLED=0 go build -trimpath -o /out/promoter-grpc-front .

# --- runtime: the built wheel and its dependencies, nothing else --------------------------------
FROM python:3.11-slim-bookworm AS runtime
# On PATH: the gateway starts it as its child (PROMOTER_GATEWAY_GRPC_FRONT=native, the default).
COPY --from=grpc-front /out/promoter-grpc-front /usr/local/bin/promoter-grpc-front
COPY --from=build /wheels/ /tmp/wheels/
RUN pip install --no-cache-dir /tmp/wheels/model_promoter-*.whl \
    && rm -rf /tmp/wheels \
    && groupadd --gid 10001 promoter \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin promoter

# Runs with a read-only root filesystem: logs go to stdout/stderr, and the only writable paths are
# mounted volumes: /tmp (HOME and TMPDIR: library caches), the worker's download dir
# (PROMOTER_WORKER_DOWNLOAD_DIR) and the model repository (PROMOTER_TRITON_MODEL_REPOSITORY).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    PROMOTER_LOG_FORMAT=json

USER 10001:10001
EXPOSE 8080 8081 8090
CMD ["promoter", "--help"]
