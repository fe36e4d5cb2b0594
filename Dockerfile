# lmbridge image: a static binary on Alpine, run as a non-root user, with its config, registration and database in
# the /data volume. See README.md ("Docker") for the first-run flow docker-run.sh implements.

# Build stage. mattn/go-sqlite3 is cgo, so the binary is linked statically against musl.
FROM golang:1.26-alpine3.24 AS builder
RUN apk add --no-cache build-base git ca-certificates
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The same build command as README.md.
RUN CGO_ENABLED=1 go build -trimpath -tags 'netgo osusergo sqlite_omit_load_extension goolm' \
    -ldflags '-s -w -linkmode external -extldflags -static' -o lmbridge ./cmd/lmbridge \
 && ./lmbridge -v

# Runtime stage.
FROM alpine:3.24
RUN apk add --no-cache ca-certificates \
 && addgroup -S -g 1337 lmbridge \
 && adduser -S -D -H -u 1337 -G lmbridge -h /data lmbridge \
 && mkdir -p /data \
 && chown lmbridge:lmbridge /data
COPY --from=builder /src/lmbridge /usr/bin/lmbridge
COPY docker-run.sh /docker-run.sh
USER lmbridge:lmbridge
WORKDIR /data
VOLUME /data
# The application-service listener (appservice.port) and the LM federation listener (lm.listen).
EXPOSE 29340 8448
CMD ["/docker-run.sh"]
