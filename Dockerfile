# The viewcount binary, one image for every service (docker-compose.yml runs
# it as ingest, speed, archive, batch schedule and serve). librdkafka is built
# from the rdkafka crate's bundled source.
FROM rust:1.95-bookworm AS build
# Cargo features of the binary: `sql` (batch run --engine sql, the SQL
# specification to cross-check runs; links DataFusion). `ballista` (the
# cluster engine, `batch scheduler` and `batch executor`) is off: this
# deployment runs no scheduler or executors. Build with
# --build-arg VIEWCOUNT_FEATURES=ballista only together with compose
# services for them.
ARG VIEWCOUNT_FEATURES=sql
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p viewcount --features "$VIEWCOUNT_FEATURES"

FROM debian:bookworm-slim
# curl: the compose healthchecks ask /readyz with it.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/viewcount /usr/local/bin/viewcount
USER nobody
ENTRYPOINT ["viewcount"]
