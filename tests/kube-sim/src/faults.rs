//! Faults a scenario causes, sent by `kube-sim fault VERB KEY=VALUE...` over the agent's control
//! socket (`$KUBE_SIM_STATE/control.sock`):
//!
//! - `kill pod=NS/NAME container=C`: SIGKILL the container's process (its kubelet restarts it);
//! - `freeze node=N` (or `pod=NS/NAME` for that pod's node): the machine hangs — its processes
//!   stop (SIGSTOP) and its kubelet goes silent; kube-controller-manager's node lifecycle
//!   controller does the rest (NotReady, taints, evictions). `unfreeze node=N` brings it back;
//! - `partition node=N`: its kubelet is cut off from the API server, its pods keep running and
//!   serving; `heal node=N` ends it;
//! - `wipe claim=NS/NAME`: the claim's volume loses its data;
//! - `corrupt claim=NS/NAME`: every file on the claim's volume is overwritten with garbage;
//! - `rewrite claim=NS/NAME from=TEXT to=TEXT`: every copy of TEXT in the claim's files is
//!   overwritten in place with TEXT of the same length, as failing storage changes bytes under a
//!   running process (which maps its files: nothing is truncated, so it reads the change);
//! - `restart-apiserver`: the real kube-apiserver process restarts (watches drop, caches rebuild);
//! - `fail permille=N`: that share of the requests pods send to the API server fail with 500.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::client::Api;
use crate::control_plane::ControlPlane;
use crate::kubelet::Pids;
use crate::nodes::Nodes;

pub struct Control {
    pub api: Api,
    pub nodes: Arc<Nodes>,
    pub pids: Pids,
    pub plane: Arc<ControlPlane>,
    pub fail: Arc<crate::api_proxy::FailRate>,
}

pub fn socket(state: &Path) -> PathBuf {
    state.join("control.sock")
}

/// Signals every container process on `node`, of pods deleted meanwhile too (a frozen node's
/// kubelet has not heard of their deletion, and their processes still exist there).
fn signal_node(pids: &Pids, node: &str, signal: i32) {
    let prefix = format!("{node}/");
    for (key, pid) in pids.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        if key.starts_with(&prefix) {
            // SAFETY: a container process this agent started.
            unsafe { libc::kill(*pid, signal) };
        }
    }
}

/// Overwrites every file under `dir` with garbage of the same length, as a failing disk would
/// leave it; returns how many files.
fn corrupt_files(dir: &Path) -> Result<usize, String> {
    let mut count = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            count += corrupt_files(&path)?;
        } else if let Ok(meta) = std::fs::metadata(&path) {
            let garbage = vec![0xA5u8; usize::try_from(meta.len()).unwrap_or(0)];
            std::fs::write(&path, garbage).map_err(|e| format!("{}: {e}", path.display()))?;
            count += 1;
        }
    }
    Ok(count)
}

/// Overwrites every copy of `from` in the files under `dir` with `to` (same length), in place;
/// returns how many.
fn rewrite_files(dir: &Path, from: &[u8], to: &[u8]) -> Result<usize, String> {
    use std::os::unix::fs::FileExt;
    if from.is_empty() || from.len() != to.len() {
        return Err("from and to must be of one length, not empty".into());
    }
    let mut count = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            count += rewrite_files(&path, from, to)?;
            continue;
        }
        let io = |e: std::io::Error| format!("{}: {e}", path.display());
        let bytes = std::fs::read(&path).map_err(io)?;
        let file = std::fs::OpenOptions::new().write(true).open(&path).map_err(io)?;
        for (at, window) in bytes.windows(from.len()).enumerate() {
            if window == from {
                file.write_all_at(to, at as u64).map_err(io)?;
                count += 1;
            }
        }
    }
    Ok(count)
}

impl Control {
    async fn object(&self, resource: &str, what: &str, key: &str) -> Result<Value, String> {
        let (ns, name) = key.split_once('/').ok_or_else(|| format!("{what}=NAMESPACE/NAME"))?;
        self.api
            .get(&format!("/api/v1/namespaces/{ns}/{resource}/{name}"))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{what} {key} not found"))
    }

    /// The directory backing the volume bound to `claim` (NAMESPACE/NAME).
    async fn volume_dir(&self, claim: &str) -> Result<PathBuf, String> {
        let object = self.object("persistentvolumeclaims", "claim", claim).await?;
        let volume = object["spec"]["volumeName"].as_str().ok_or("the claim is not bound")?;
        let pv = self
            .api
            .get(&format!("/api/v1/persistentvolumes/{volume}"))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("persistentvolume {volume} not found"))?;
        pv["spec"]["hostPath"]["path"]
            .as_str()
            .map(PathBuf::from)
            .ok_or_else(|| "no hostPath".into())
    }

    async fn node(&self, args: &HashMap<String, String>) -> Result<String, String> {
        let node = match (args.get("node"), args.get("pod")) {
            (Some(node), _) => node.clone(),
            (None, Some(pod)) => {
                let object = self.object("pods", "pod", pod).await?;
                object["spec"]["nodeName"]
                    .as_str()
                    .ok_or_else(|| format!("pod {pod} is not scheduled"))?
                    .to_owned()
            }
            (None, None) => return Err("node=NAME (or pod=NS/NAME) is needed".into()),
        };
        if self.nodes.get(&node).is_none() {
            return Err(format!("no node {node}"));
        }
        Ok(node)
    }

    async fn act(&self, verb: &str, args: &HashMap<String, String>) -> Result<Value, String> {
        let arg = |k: &str| args.get(k).cloned().ok_or_else(|| format!("{verb} needs {k}="));
        match verb {
            "kill" => {
                let pod = self.object("pods", "pod", &arg("pod")?).await?;
                let key = crate::kubelet::process_key(&pod, &arg("container")?);
                let pid = self.pids.lock().unwrap_or_else(|p| p.into_inner()).get(&key).copied();
                let pid = pid.ok_or_else(|| format!("no running container {key}"))?;
                // SAFETY: a container process this agent started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                Ok(json!({"killed": key, "pid": pid}))
            }
            "freeze" => {
                let node = self.node(args).await?;
                self.nodes.set_frozen(&node, true);
                signal_node(&self.pids, &node, libc::SIGSTOP);
                Ok(json!({"frozen": node}))
            }
            "unfreeze" => {
                let node = self.node(args).await?;
                signal_node(&self.pids, &node, libc::SIGCONT);
                self.nodes.set_frozen(&node, false);
                Ok(json!({"unfrozen": node}))
            }
            "partition" => {
                let node = self.node(args).await?;
                self.nodes.set_partitioned(&node, true);
                Ok(json!({"partitioned": node}))
            }
            "heal" => {
                let node = self.node(args).await?;
                self.nodes.set_partitioned(&node, false);
                Ok(json!({"healed": node}))
            }
            "wipe" => {
                let claim = arg("claim")?;
                let dir = self.volume_dir(&claim).await?;
                for entry in std::fs::read_dir(&dir).map_err(|e| e.to_string())?.flatten() {
                    let path = entry.path();
                    let _ = if path.is_dir() {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                }
                Ok(json!({"wiped": claim}))
            }
            "rewrite" => {
                let claim = arg("claim")?;
                let (from, to) = (arg("from")?, arg("to")?);
                let dir = self.volume_dir(&claim).await?;
                let count = rewrite_files(&dir, from.as_bytes(), to.as_bytes())?;
                Ok(json!({"rewritten": claim, "copies": count}))
            }
            "corrupt" => {
                let claim = arg("claim")?;
                let corrupted = corrupt_files(&self.volume_dir(&claim).await?)?;
                Ok(json!({"corrupted": claim, "files": corrupted}))
            }
            "restart-apiserver" => {
                let plane = self.plane.clone();
                let away = tokio::task::spawn_blocking(move || plane.restart_apiserver())
                    .await
                    .map_err(|e| e.to_string())??;
                Ok(json!({"restarted": "kube-apiserver", "awaySeconds": away.as_secs_f64()}))
            }
            "fail" => {
                let permille: u32 =
                    arg("permille")?.parse().map_err(|_| "permille is a number from 0 to 1000")?;
                self.fail.set(permille);
                Ok(json!({"failPermille": permille}))
            }
            other => Err(format!("unknown fault {other}")),
        }
    }
}

/// Answers one request a line: `VERB KEY=VALUE...` → a JSON line, or `error: WHY`.
pub async fn serve(listener: tokio::net::UnixListener, control: Arc<Control>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let control = control.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            if BufReader::new(read).read_line(&mut line).await.is_err() {
                return;
            }
            let mut words = line.split_whitespace();
            let verb = words.next().unwrap_or_default().to_owned();
            let args: HashMap<String, String> = words
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            let answer = match control.act(&verb, &args).await {
                Ok(v) => format!("{v}\n"),
                Err(e) => format!("error: {e}\n"),
            };
            let _ = write.write_all(answer.as_bytes()).await;
        });
    }
}

/// `kube-sim fault VERB KEY=VALUE...`, from inside a cluster: sends the fault and prints the
/// answer; fails when the agent refused it.
pub fn send(words: &[String]) -> Result<String, String> {
    use std::io::{BufRead, Write};
    let state = std::env::var_os("KUBE_SIM_STATE")
        .ok_or("KUBE_SIM_STATE is not set: run this inside `kube-sim run`")?;
    let path = socket(Path::new(&state));
    let mut stream = std::os::unix::net::UnixStream::connect(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(stream, "{}", words.join(" ")).map_err(|e| e.to_string())?;
    let mut answer = String::new();
    std::io::BufReader::new(stream).read_line(&mut answer).map_err(|e| e.to_string())?;
    match answer.strip_prefix("error: ") {
        Some(why) => Err(why.trim().to_owned()),
        None => Ok(answer.trim().to_owned()),
    }
}
