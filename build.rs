//! Links the `etcd-operator` binary position-dependent, as Go links kube-apiserver, the kubelet
//! and etcd by default.
//!
//! A position-independent executable is relocated when it starts: glibc's loader applies 1.8 MB
//! of relocations (`.rela.dyn`, read from the file) and so writes 1.8 MB of `.data.rel.ro`, which
//! becomes the process's own memory. Linked at a fixed address, neither happens: the `webhook`
//! subcommand idles at 14.9 MiB RSS instead of 19.0 (1.2 MiB anonymous instead of 2.9). The
//! executable's code loses address randomisation; its libraries, heap and stacks keep it.
//! Only the binaries: tests, benches and build scripts link as the toolchain likes.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
