# The viewcount binary, one image for every service (docker-compose.yml runs
# it as ingest, speed, archive, batch schedule and serve). librdkafka is built
# from the rdkafka crate's bundled source.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p viewcount

FROM debian:bookworm-slim
# curl: the compose healthchecks ask /readyz with it.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/viewcount /usr/local/bin/viewcount
USER nobody
ENTRYPOINT ["viewcount"]
