# Tally's services in one image; docker-compose.yml runs each binary from it.
# Build: docker build -t tally .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --workspace --bins \
    && mkdir /out \
    && cp target/release/ingest target/release/aggregator target/release/projector \
          target/release/api target/release/billing-reporter target/release/stripe-standin \
          target/release/tally-loadgen target/release/tally-migrate /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 tally
COPY --from=build /out/ /usr/local/bin/
USER tally
