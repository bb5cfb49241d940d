# stratumd's container image: stratumd and stratumctl on Debian bookworm (slim), as a non-root user.
#
#   docker build -t stratumd .                        # builds from source (stage `build`)
#   docker build -t stratumd --target prebuilt -f Dockerfile DIR
#                                                     # DIR holds stratumd and stratumctl built
#                                                     # elsewhere (cargo build --release
#                                                     # -p stratumd --features xdp) for bookworm
#
# The image runs the embedded default configuration as is (loopback, port 11123, /metrics on
# 127.0.0.1:9123); pass `--config /etc/stratumd/stratumd.toml` with a mounted file to serve a
# network. README.md, "Docker", has the run lines and the capabilities each backend needs.
# server/tests/container.rs builds this file (the prebuilt target) with podman and runs the image.
# Both ways end in the same `runtime` stage; neither needs a FROM chosen by a build argument,
# which podman's builder does not resolve to a stage.

# --- build: the release binaries, with the AF_XDP backend (feature `xdp`). ---
FROM docker.io/library/rust:1-bookworm AS build
# clang compiles the XDP steering program; libbpf (vendored) needs libelf, zlib and pkg-config.
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang libelf-dev zlib1g-dev pkg-config linux-libc-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p stratumd --features xdp \
 && install -D -m 0755 target/release/stratumd /out/stratumd \
 && install -D -m 0755 target/release/stratumctl /out/stratumctl

# --- runtime: everything but the binaries. ---
FROM docker.io/library/debian:bookworm-slim AS runtime
# libelf1 for the XDP loader (libbpf); zlib1g is already in the base.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libelf1 \
 && rm -rf /var/lib/apt/lists/*
# A fixed uid/gid (10123), so that a Kubernetes securityContext or a bind-mounted file's owner
# can name it. /run/stratumd holds the control socket: RUNTIME_DIRECTORY points both stratumd
# and stratumctl at it (as systemd's RuntimeDirectory= does), so `stratumctl` in the container,
# the HEALTHCHECK included, finds the server with no flag.
RUN groupadd --system --gid 10123 stratumd \
 && useradd --system --uid 10123 --gid stratumd --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin stratumd \
 && install -d -o stratumd -g stratumd -m 0750 /run/stratumd \
 && install -d -m 0755 /etc/stratumd
ENV RUNTIME_DIRECTORY=/run/stratumd
USER stratumd
# NTP on 123 (or the embedded default's 11123), /metrics and /healthz on 9123.
EXPOSE 123/udp 11123/udp 9123/tcp
# Healthy only while synchronised within [health] max-root-distance (exit 1 with the reason).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/stratumctl", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/stratumd"]
CMD []

# --- prebuilt (`--target prebuilt`): binaries built outside, from the build context's top level.
FROM runtime AS prebuilt
COPY stratumd stratumctl /usr/local/bin/

# --- the default: the binaries the `build` stage compiled.
FROM runtime
COPY --from=build /out/stratumd /out/stratumctl /usr/local/bin/
