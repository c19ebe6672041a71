# Rookery in a container: built in one stage, run as a non-root user in a slim one.
#   docker build -t rookery .
#   docker run -p 5222:5222 -p 5223:5223 -v rookery-data:/var/lib/rookery rookery
# With PostgreSQL: deploy/docker/compose.yaml. Configuration: deploy/docker/rookery.toml,
# replaced by mounting your own at /etc/rookery/rookery.toml (docs/operations.md, "Docker").

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p rookery --bin rookery \
 && strip --strip-debug target/release/rookery

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/rookery --shell /usr/sbin/nologin rookery \
 && install -d -o rookery -g rookery -m 0750 /var/lib/rookery \
 && install -d -m 0755 /etc/rookery
COPY --from=build /src/target/release/rookery /usr/local/bin/rookery
COPY deploy/docker/rookery.toml /etc/rookery/rookery.toml
USER rookery
WORKDIR /var/lib/rookery
ENV ROOKERY_CONFIG=/etc/rookery/rookery.toml
VOLUME ["/var/lib/rookery"]
EXPOSE 5222 5223 5269 5270
# /health on the admin listener (loopback inside the container), with bash alone: the image
# carries no HTTP client.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/5290 && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/rookery"]
CMD ["serve"]
