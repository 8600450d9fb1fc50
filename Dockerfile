# tally as a container image: one static binary on an empty image.
#
#   docker build -t tally .
#   docker run --rm -p 8080:8080 -v tally-data:/data tally
#
# Settings come from TALLY_* environment variables (every `tally serve` flag
# has one; see `tally serve --help`) or from flags after the image name.
# compose.yaml runs three regions of it.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# CGO off: a static binary that needs no libc, so it runs FROM scratch.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/tally ./cmd/tally \
 && mkdir -p /out/data /out/tmp

FROM scratch
COPY --from=build /out/tally /tally
# The data directory and a temporary directory, owned by the unprivileged user.
COPY --from=build --chown=65532:65532 /out/data /data
COPY --from=build --chown=65532:65532 /out/tmp /tmp
USER 65532:65532
ENV TALLY_HTTP=:8080 \
    TALLY_DATA=/data \
    TALLY_LOG_FORMAT=json
# HTTP (API, dashboard, metrics); Serf gossip (TCP and UDP); replication.
EXPOSE 8080 7946/tcp 7946/udp 7947
VOLUME /data
# No shell or curl in the image: the binary probes itself.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s \
  CMD ["/tally", "probe", "http://127.0.0.1:8080/healthz"]
# SIGTERM (docker stop) drains HTTP, leaves the pool and flushes the store.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/tally"]
CMD ["serve"]
