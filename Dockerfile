# The viewcount binary. librdkafka is built from the rdkafka crate's bundled source.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p viewcount

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/viewcount /usr/local/bin/viewcount
ENTRYPOINT ["viewcount"]
