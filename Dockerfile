# Drover operator image: a static (musl) binary on distroless, running as non-root.
# Not built in this repository's CI: the build machines have no Docker engine or base images.
#   docker build -t ghcr.io/drover-dr/drover:0.1.0 .

FROM docker.io/library/rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools cmake clang \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
# Dependencies first, so source edits reuse the cached layer.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && cargo build --release --locked --target x86_64-unknown-linux-musl \
 && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --target x86_64-unknown-linux-musl \
 && cp target/x86_64-unknown-linux-musl/release/drover /drover

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /drover /usr/local/bin/drover
# 65532 is distroless's "nonroot"; the chart's securityContext runs the same IDs.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/drover"]
CMD ["run"]
