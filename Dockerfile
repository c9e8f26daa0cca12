# syntax=docker/dockerfile:1
# Multi-stage build of the one binary. The final image is distroless/cc (glibc, CA certificates, no
# shell, non-root): the binary links glibc and etcd-client's TLS stack, so a static musl build would
# need a cross toolchain for no gain in size worth having.

FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole workspace in one step: a dependency layer built from the Cargo.toml files alone breaks
# whenever a manifest names a file (a bench, a workspace member) that the layer leaves out, and a
# test builds from exactly this context (tests/it/kube/dockerfile.rs).
COPY . .
RUN cargo build --release --locked --bin etcd-operator \
 && install -D target/release/etcd-operator /out/etcd-operator

# etcdutl writes a member's data directory from a verified snapshot in member-init (restores).
# The etcd images have no shell, so the restore cannot run there; etcdutl is a static Go binary.
FROM gcr.io/etcd-development/etcd:v3.5.21 AS etcd

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/etcd-operator /usr/local/bin/etcd-operator
COPY --from=etcd /usr/local/bin/etcdutl /usr/local/bin/etcdutl
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/etcd-operator"]
CMD ["run"]
