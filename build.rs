//! Links the `etcd-operator` binary position-dependent, as Go links kube-apiserver, the kubelet
//! and etcd by default, and, in release builds, with the code it runs at start and while it
//! works laid out together.
//!
//! A position-independent executable is relocated when it starts: glibc's loader applies 1.8 MB
//! of relocations (`.rela.dyn`, read from the file) and so writes 1.8 MB of `.data.rel.ro`, which
//! becomes the process's own memory. Linked at a fixed address, neither happens: the `webhook`
//! subcommand idles at 14.9 MiB RSS instead of 19.0 (1.2 MiB anonymous instead of 2.9). The
//! executable's code loses address randomisation; its libraries, heap and stacks keep it.
//!
//! The kernel maps a file's pages 64 KiB at a time around each page a process touches, so code
//! spread over the binary makes nearly all of it resident: 10 of 12 MiB at idle, of which under
//! 3 MiB ever runs. `link/symbol-order.txt` lists the functions that do (recorded by
//! `scripts/order-symbols`), and the linker places them first, in that order. A function the list
//! does not name (new code, or a name that changed) is placed as before: a stale list costs
//! memory, never correctness. The list is for rust-lld, the toolchain's linker on x86_64 Linux.
//!
//! Only the binaries: tests, benches and build scripts link as the toolchain likes.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    let release = std::env::var("PROFILE").as_deref() == Ok("release");
    if release && std::env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu") {
        let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
        let order = std::path::Path::new(&root).join("link/symbol-order.txt");
        println!("cargo:rerun-if-changed={}", order.display());
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}", order.display());
        // Names the binary no longer has are expected after any change; they are not errors.
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
