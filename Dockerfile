# syntax=docker/dockerfile:1
# ReleaseDesk: one image for every role (serve, api, reviewer, worker, migrate, admin).
#   docker build -t releasedesk .
# Dependencies are cached with cargo-chef: editing our code rebuilds only our crates.

# Build tools, shared by the planning and the building stage.
FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src
# apalis's storages use sqlx's checked macros; never let a build try a database.
ENV SQLX_OFFLINE=true

# The recipe: our manifests and lock file, without our source.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# Dependencies first (cached while Cargo.lock is unchanged), then our crates.
FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --package releasedesk --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --package releasedesk --bin releasedesk \
    && cp target/release/releasedesk /usr/local/bin/releasedesk

# Runtime: Debian slim (bash serves the compose healthcheck), the binary, a non-root user.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/releasedesk \
       --create-home --shell /usr/sbin/nologin releasedesk
COPY --from=build /usr/local/bin/releasedesk /usr/local/bin/releasedesk
USER 10001:10001
# Relative paths (mail.outbox_dir = var/mail, the default SQLite file) land here.
WORKDIR /var/lib/releasedesk
ENV RUST_LOG=info LOG_FORMAT=json
# 8080: serve and api; 8081: reviewer (as in docker-compose.yml).
EXPOSE 8080 8081 9090
# SIGTERM drains in-flight requests and jobs before the process exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["releasedesk"]
CMD ["serve", "--addr", "0.0.0.0:8080"]
