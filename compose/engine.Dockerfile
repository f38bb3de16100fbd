# The detection engine. Build context: the repository root
# (docker compose -f compose/docker-compose.yml build engine).
FROM rust:1.94-bookworm AS build
# The `kafka` feature builds librdkafka from source with cmake.
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p engine --features kafka --bins \
    && mkdir -p /out && cp target/release/engine /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /out/engine /usr/local/bin/engine
# `./rules` is where the engine looks for the rule pack by default.
COPY rules /app/rules
ENTRYPOINT ["engine"]
CMD ["run"]
