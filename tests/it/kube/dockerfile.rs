//! The Dockerfile's build stage, without Docker: its context (the repository less
//! .dockerignore) is copied where the stage copies it, and the workspace must load and resolve
//! there with the lock file, offline — what failed when the stage copied only the Cargo.toml
//! files (their [[bench]] targets named files the layer did not have).

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_build_stage_context_loads_and_resolves_the_workspace() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let build_stage: Vec<&str> = dockerfile
        .lines()
        .skip_while(|l| !l.starts_with("FROM rust:"))
        .take_while(|l| !l.starts_with("FROM ") || l.starts_with("FROM rust:"))
        .collect();
    let copies: Vec<&str> =
        build_stage.iter().copied().filter(|l| l.starts_with("COPY ")).collect();
    assert_eq!(copies, ["COPY . ."], "the build stage copies the whole context, once");
    assert!(
        build_stage
            .iter()
            .any(|l| l.contains("cargo build --release --locked --bin etcd-operator")),
        "the build stage builds the operator with the lock file"
    );

    let ignored: Vec<String> = std::fs::read_to_string(root().join(".dockerignore"))
        .unwrap()
        .lines()
        .map(|l| l.trim().trim_matches('/').to_owned())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let listed = Command::new("git")
        .args(["ls-files", "--cached", "--others", "--exclude-standard"])
        .current_dir(root())
        .output()
        .expect("git lists the repository's files");
    let context = tempfile::tempdir().unwrap();
    for file in String::from_utf8_lossy(&listed.stdout).lines() {
        let top = file.split('/').next().unwrap_or_default();
        if ignored.iter().any(|i| i == top) || !root().join(file).is_file() {
            continue;
        }
        let target = context.path().join(file);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(root().join(file), &target).unwrap();
    }
    for args in [
        &["metadata", "--locked", "--offline", "--format-version", "1", "--no-deps"][..],
        &[
            "tree",
            "--locked",
            "--offline",
            "-p",
            "etcd-operator",
            "-e",
            "normal",
            "--target",
            "x86_64-unknown-linux-gnu",
        ][..],
    ] {
        let out =
            Command::new(env!("CARGO")).args(args).current_dir(context.path()).output().unwrap();
        assert!(
            out.status.success(),
            "cargo {} fails in the Dockerfile's build context: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
