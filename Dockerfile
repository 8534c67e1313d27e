# Multi-stage build of the settle binary. Not exercised by CI here (no Docker engine on the CI
# machines): the scripts under scripts/ are the tested path.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
COPY tests/fixtures ./tests/fixtures
# The compile-time query checks read the saved schema, not a database.
COPY .sqlx ./.sqlx
ENV SQLX_OFFLINE=true
RUN cargo build --release --locked --bin settle

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app settle
WORKDIR /app
COPY --from=build /src/target/release/settle /usr/local/bin/settle
COPY config ./config
USER settle
# The internal API and /metrics on their own port (not published by the compose files).
ENV SETTLE_ENV=production SETTLE_CONFIG_DIR=/app/config SETTLE_HTTP_ADDR=0.0.0.0:8080 SETTLE_ADMIN_ADDR=0.0.0.0:8081
EXPOSE 8080 8081
ENTRYPOINT ["settle"]
CMD ["run"]
