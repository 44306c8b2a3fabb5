# syntax=docker/dockerfile:1
# Multi-stage build of a static recommender binary on a distroless, non-root base.
# The same binary is built in CI by `make build` (CGO off, -trimpath), so this file stays honest.
ARG GO_VERSION=1.26
FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/root/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/root/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=linux go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.Version=${VERSION}" \
      -o /out/recommender ./cmd/recommender

# distroless/static ships CA certificates (for Hubble Relay TLS and the git host) and the
# nonroot user (65532); nothing else: no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/recommender /usr/local/bin/recommender
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/recommender"]
CMD ["run"]
