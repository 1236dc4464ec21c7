# syntax=docker/dockerfile:1
#
# listwarden in a container: a multi-stage build (Rust 1.95 on Debian
# bookworm) and a small bookworm runtime that runs as an unprivileged user.
#
# NOT TESTED: no Docker engine runs on the machine this was written on, so
# this file has never been built. The build stage runs the same
# `cargo build --release --locked` that `cargo deb` runs (that was tried),
# and the runtime command is the one the systemd unit uses.
#
#   docker build -t listwarden .
#
# The image ships NO config and NO key: a signing key baked into an image
# would be shared by everyone who pulls it. Mount a directory with your
# listwarden.yaml and keys at /etc/listwarden, readable by uid 10001:
#
#   install -d -m 0750 -o root -g 10001 /srv/listwarden/keys
#   head -c 32 /dev/urandom | base64 > /srv/listwarden/keys/1.key
#   chgrp 10001 /srv/listwarden/keys/1.key && chmod 0640 /srv/listwarden/keys/1.key
#   cp packaging/debian/listwarden.yaml /srv/listwarden/listwarden.yaml
#
# Inside a container 127.0.0.1 is the container itself, so a config that
# listens on 127.0.0.1 (as the shipped ones do) is unreachable from Postfix
# on the host. Change the two listen lines of the mounted config to
#
#   milter:
#     listen: inet:0.0.0.0:8890
#   metrics:
#     listen: 0.0.0.0:9890
#
# and publish the ports on the host's loopback only (the milter protocol has
# no authentication; never publish it on a public address):
#
#   docker run -d --name listwarden --restart on-failure \
#     --read-only --cap-drop ALL --security-opt no-new-privileges \
#     -v /srv/listwarden:/etc/listwarden:ro \
#     -p 127.0.0.1:8890:8890 -p 127.0.0.1:9890:9890 \
#     listwarden
#
# Postfix on the host then uses, in main.cf,
#
#   smtpd_milters = inet:127.0.0.1:8890
#   non_smtpd_milters = inet:127.0.0.1:8890
#
# listwarden judges the SMTP client address that Postfix reports in the
# milter protocol, not the address the milter connection comes from, so
# `trusted_networks` keeps naming the list server's own addresses (e.g.
# 127.0.0.1 for the list manager on the host) despite Docker's NAT.
# Alternatives: `--network host` (then the 127.0.0.1 config works as is), or
# a unix socket: bind-mount the host's /var/spool/postfix/listwarden (mode
# 2750, owner 10001, group postfix) to the same path in the container and
# use `unix:/var/spool/postfix/listwarden/milter.sock`.
#
# Operations: `docker kill -s HUP listwarden` reloads the config (an invalid
# file is refused and the old config keeps running); `docker stop` sends
# SIGTERM, which listwarden handles. Check a config with
#   docker run --rm -v /srv/listwarden:/etc/listwarden:ro --entrypoint \
#     /usr/bin/listwarden listwarden check-config /etc/listwarden/listwarden.yaml
# Liveness: GET http://127.0.0.1:9890/healthz (the image has no curl; probe
# from outside).

# ---- build ------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Only what the binary is built from. (If Cargo.toml later names benches,
# tests or workspace members explicitly, copy those paths too.)
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
COPY config ./config
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -m 0755 target/release/listwarden target/release/listwarden-expand /usr/local/bin/

# ---- runtime ----------------------------------------------------------------
FROM debian:bookworm-slim
# Fixed ids, so a mounted config can be made readable by group 10001.
RUN groupadd --system --gid 10001 listwarden \
    && useradd --system --uid 10001 --gid listwarden --home-dir /nonexistent \
       --no-create-home --shell /usr/sbin/nologin listwarden
COPY --from=build /usr/local/bin/listwarden /usr/bin/listwarden
USER listwarden:listwarden
VOLUME ["/etc/listwarden"]
# 8890: milter (Postfix connects here); 9890: /metrics and /healthz.
EXPOSE 8890 9890
ENV LISTWARDEN_LOG=info
ENTRYPOINT ["/usr/bin/listwarden", "run", "--config", "/etc/listwarden/listwarden.yaml"]
