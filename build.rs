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
//! 3 MiB ever runs. `link/hot-text.ld` names the functions that do (recorded by
//! `scripts/order-symbols`), and places them in a section of their own ahead of the rest. It
//! names them by patterns that survive dependency and toolchain updates (v0 symbol names,
//! `.cargo/config.toml`, with the crates' disambiguators left out); a function it does not name
//! (new code, or a name that changed) is placed as before: a stale script costs memory, never
//! correctness.
//!
//! Only the binaries: tests, benches and build scripts link as the toolchain likes.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    println!("cargo:rustc-link-arg-bins=-no-pie");
    let release = std::env::var("PROFILE").as_deref() == Ok("release");
    // A linker chosen in RUSTFLAGS (mold takes no such script) is left to link as it likes.
    let own_linker = std::env::var("CARGO_ENCODED_RUSTFLAGS")
        .is_ok_and(|flags| flags.contains("linker") || flags.contains("fuse-ld"));
    if release && !own_linker {
        let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
        let script = std::path::Path::new(&root).join("link/hot-text.ld");
        println!("cargo:rerun-if-changed={}", script.display());
        println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
    }
}
