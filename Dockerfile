# One build context, two images (these machines have no container engine, so they are
# built by users, not here):
#   docker build --target node     -t zonestore:dev .
#   docker build --target operator -t zonestore-operator:dev .
# Both run as a non-root user and write only to their volumes (read-only root filesystem).

# zonestore-edge, the client port's server (node/edge): a static Go binary.
FROM golang:1.26-bookworm AS edge
WORKDIR /src
COPY node/edge/go.mod node/edge/go.sum ./
RUN go mod download
COPY node/edge/*.go ./
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /zonestore-edge .

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin zonestore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY node/zonestore_node ./node/zonestore_node
COPY operator/zonestore_operator ./operator/zonestore_operator
RUN pip install . && rm -rf /src
# Beside the interpreter: `zonestore serve --edge auto` (the default) finds it there.
COPY --from=edge /zonestore-edge /usr/local/bin/zonestore-edge
WORKDIR /

FROM base AS node
ENV ZONESTORE_DATA_DIR=/var/lib/zonestore ZONESTORE_LOG_FORMAT=json
RUN mkdir -p /var/lib/zonestore && chown 65532:65532 /var/lib/zonestore
VOLUME ["/var/lib/zonestore"]
# client gRPC, admin/metrics HTTP, Raft peers
EXPOSE 8081 9081 7081
USER 65532:65532
ENTRYPOINT ["zonestore"]
CMD ["serve", "--client-addr", "0.0.0.0:8081", "--admin-addr", "0.0.0.0:9081", "--peer-addr", "0.0.0.0:7081"]

FROM base AS operator
EXPOSE 8080 9090
USER 65532:65532
ENTRYPOINT ["zonestore-operator"]
