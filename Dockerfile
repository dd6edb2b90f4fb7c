# syntax=docker/dockerfile:1
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS TARGETARCH VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd cmd
COPY pkg pkg
COPY providers providers
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath \
    -ldflags "-s -w -X github.com/lastcall/lastcall/pkg/version.Version=${VERSION}" \
    -o /out/lastcall ./cmd/lastcall

FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/lastcall /lastcall
USER 65532:65532
ENTRYPOINT ["/lastcall"]
