# Build stage: the release binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p releasedesk

# Runtime stage: a small image with the binary, running as a non-root user.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/releasedesk --create-home releasedesk
COPY --from=build /src/target/release/releasedesk /usr/local/bin/releasedesk
USER releasedesk
WORKDIR /var/lib/releasedesk
ENTRYPOINT ["releasedesk"]
CMD ["serve", "--addr", "0.0.0.0:8080"]
