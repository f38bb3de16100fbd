# The instrumented shop. Build context: the repository root
# (docker compose -f compose/docker-compose.yml build shop).
# Every binary of the `shop` package is built and copied; SHOP_BIN picks the
# one to run (one container per service can override it).
FROM rust:1.94-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p shop --bins \
    && mkdir -p /out \
    && find target/release -maxdepth 1 -type f -executable -exec cp {} /out/ \;

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
ENV SHOP_BIN=shop
# `shop serve <service>` or `shop migrate` (docker-compose.yml sets the command per container).
ENTRYPOINT ["/bin/sh", "-c", "exec \"$SHOP_BIN\" \"$@\"", "--"]
