//! The process adapter of the member port: each member is an `etcd` process on loopback, in a
//! process group of its own so that it outlives the operator, as a pod outlives a controller.
//!
//! Layout of the state directory:
//! `pki/` (the cluster's PEM files), `ports.json` (each member's client and peer port),
//! `members/NAME/{data/, etcd.conf.yaml, etcd.log, pid, version}`, `status.json`. `version` is
//! the etcd version the member runs: a restart keeps it, only an upgrade changes it.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use etcd_crds::EtcdOptions;
use serde::{Deserialize, Serialize};

use crate::etcd::ClusterState;
use crate::etcd::config::{MemberConfig, TlsFiles};
use crate::etcd::install::Installations;
use crate::membership::planner::Wanted;
use crate::membership::{Error, MemberPort, MemberUrls};

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Ports {
    client: u16,
    peer: u16,
}

/// Members as local processes under one state directory.
pub struct ProcessMembers {
    dir: PathBuf,
    tls: bool,
    /// Processes this operator started: reaped here so that an exited member is not a zombie
    /// that still looks alive.
    children: Mutex<BTreeMap<String, Child>>,
    options: EtcdOptions,
    installs: Installations,
    /// The version new members start on: the spec's, when it is installed.
    version: Mutex<Option<String>>,
    /// The peer certificate's common name, the only one the peer listeners let in.
    peer_common_name: Option<String>,
    /// Test hook ([`super::EXIT_AFTER_ENV`]` = stop`): the operator exits right after it
    /// stopped a running member, as a crash inside a step that stops and starts one would.
    exit_after_stop: bool,
}

impl ProcessMembers {
    pub fn new(dir: &Path, tls: bool) -> Self {
        Self {
            dir: dir.to_owned(),
            tls,
            options: EtcdOptions::default(),
            children: Mutex::new(BTreeMap::new()),
            installs: Installations::default(),
            version: Mutex::new(None),
            peer_common_name: None,
            exit_after_stop: false,
        }
    }

    /// Exit the process right after stopping a running member (the crash-test hook).
    pub fn with_exit_after_stop(mut self, exit: bool) -> Self {
        self.exit_after_stop = exit;
        self
    }

    /// Peer listeners let in only a certificate of this common name (the operator issued the
    /// PKI, so it knows the peer certificate's).
    pub fn with_peer_common_name(mut self, name: String) -> Self {
        self.peer_common_name = Some(name);
        self
    }

    /// Members run the etcd of their version from these installations (without: `etcd` on
    /// PATH, whatever its version).
    pub fn with_installations(mut self, installs: Installations) -> Self {
        self.installs = installs;
        self
    }

    /// The version new members start on from now on.
    pub fn set_version(&self, version: Option<String>) {
        *self.version.lock().unwrap_or_else(|p| p.into_inner()) = version;
    }

    /// The version `name` runs or will run: the one it last started on while it has data,
    /// else the version new members start on.
    pub fn version_of(&self, name: &str) -> Option<String> {
        let recorded = std::fs::read_to_string(self.version_file(name)).ok();
        let recorded = recorded.filter(|_| self.data_dir(name).join("member").exists());
        recorded
            .map(|v| v.trim().to_owned())
            .or_else(|| self.version.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    fn version_file(&self, name: &str) -> PathBuf {
        self.member_dir(name).join("version")
    }

    /// The etcd program for `version` (`None`: `etcd` on PATH).
    fn etcd_program(&self, name: &str, version: Option<&str>) -> Result<PathBuf, Error> {
        let Some(version) = version else { return Ok(PathBuf::from("etcd")) };
        self.installs.tool(version, "etcd").ok_or_else(|| Error::Version {
            name: name.to_owned(),
            version: version.to_owned(),
            reason: format!(
                "no etcd of that version is installed here (installed: {}); give one with --etcd {version}=DIR",
                self.installs.describe()
            ),
        })
    }

    /// Members started from now on run with this tuning (`spec.options`).
    pub fn with_options(mut self, options: EtcdOptions) -> Self {
        self.options = options;
        self
    }

    pub fn pki_dir(&self) -> PathBuf {
        self.dir.join("pki")
    }

    fn member_dir(&self, name: &str) -> PathBuf {
        self.dir.join("members").join(name)
    }

    /// A member's etcd data directory.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.member_dir(name).join("data")
    }

    fn pid_file(&self, name: &str) -> PathBuf {
        self.member_dir(name).join("pid")
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Io { path: path.to_owned(), source }
    }

    /// Ports of every member, allocating (and recording) free loopback ports for new names.
    fn ports(&self, name: &str) -> Result<Ports, Error> {
        let path = self.dir.join("ports.json");
        let mut all: BTreeMap<String, Ports> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::State { path: path.clone(), reason: e.to_string() })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(err) => return Err(Self::io(&path)(err)),
        };
        if let Some(ports) = all.get(name) {
            return Ok(*ports);
        }
        let mut taken: BTreeSet<u16> = all.values().flat_map(|p| [p.client, p.peer]).collect();
        let free = |taken: &BTreeSet<u16>| {
            super::ports::free_port(taken)
                .map_err(|source| Error::Io { path: "127.0.0.1 (a free port)".into(), source })
        };
        let client = free(&taken)?;
        taken.insert(client);
        let peer = free(&taken)?;
        let ports = Ports { client, peer };
        all.insert(name.to_owned(), ports);
        std::fs::create_dir_all(&self.dir).map_err(Self::io(&self.dir))?;
        let text = serde_json::to_vec_pretty(&all).unwrap_or_default();
        super::write_atomically(&path, text)?;
        Ok(ports)
    }

    fn pid(&self, name: &str) -> Option<i32> {
        std::fs::read_to_string(self.pid_file(name)).ok()?.trim().parse().ok()
    }

    /// Names with a member directory.
    fn names(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("members")) else { return Vec::new() };
        entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect()
    }
}

/// Whether `pid` is a live (not zombie) etcd process.
fn is_live_etcd(pid: i32) -> bool {
    is_live(pid, "etcd")
}

/// Whether `pid` is a live (not zombie) process whose command line contains `command`.
pub fn is_live(pid: i32, command: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The state follows the parenthesised command name: "123 (etcd) S ...".
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    state.is_some_and(|s| s != "Z" && s != "X")
        && String::from_utf8_lossy(&cmdline).contains(command)
}

impl MemberPort for ProcessMembers {
    fn urls(&self, name: &str) -> Result<MemberUrls, Error> {
        let ports = self.ports(name)?;
        let scheme = if self.tls { "https" } else { "http" };
        Ok(MemberUrls {
            client: format!("{scheme}://127.0.0.1:{}", ports.client),
            peer: format!("{scheme}://127.0.0.1:{}", ports.peer),
        })
    }

    async fn running(&self) -> Result<BTreeSet<String>, Error> {
        Ok(self.running_now())
    }

    async fn with_data(&self) -> Result<BTreeSet<String>, Error> {
        Ok(self
            .names()
            .into_iter()
            .filter(|name| self.data_dir(name).join("member").exists())
            .collect())
    }

    async fn member_data(&self) -> Result<BTreeSet<String>, Error> {
        self.with_data().await
    }

    async fn start(
        &self,
        name: &str,
        initial: &[Wanted],
        state: ClusterState,
        token: &str,
    ) -> Result<(), Error> {
        self.start_now(name, initial, state, token)
    }

    async fn stop(&self, name: &str) -> Result<(), Error> {
        let was_running = self.running_now().contains(name);
        self.stop_now(name)?;
        if self.exit_after_stop && was_running {
            tracing::warn!(member = name, "exiting after stopping it ({})", super::EXIT_AFTER_ENV);
            std::process::exit(super::EXIT_AFTER_CODE);
        }
        Ok(())
    }

    async fn upgrade(
        &self,
        name: &str,
        version: &str,
        initial: &[Wanted],
        token: &str,
    ) -> Result<(), Error> {
        self.etcd_program(name, Some(version))?;
        // Recorded first: a crash after the stop restarts the member on the new version.
        let path = self.version_file(name);
        super::write_atomically(&path, version)?;
        self.stop_now(name)?;
        self.start_now(name, initial, ClusterState::Existing, token)
    }

    async fn wipe(&self, name: &str) -> Result<(), Error> {
        let data = self.data_dir(name);
        match std::fs::remove_dir_all(&data) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(Self::io(&data)(err)),
        }
    }
}

impl ProcessMembers {
    /// Names whose etcd process is alive, reaping exited children first.
    pub fn running_now(&self) -> BTreeSet<String> {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        children.retain(|_, child| matches!(child.try_wait(), Ok(None)));
        self.names().into_iter().filter(|name| self.pid(name).is_some_and(is_live_etcd)).collect()
    }

    /// Starts `etcd` for `name` in a process group of its own.
    pub fn start_now(
        &self,
        name: &str,
        initial: &[Wanted],
        state: ClusterState,
        token: &str,
    ) -> Result<(), Error> {
        let dir = self.member_dir(name);
        std::fs::create_dir_all(&dir).map_err(Self::io(&dir))?;
        let version = self.version_of(name);
        let program = self.etcd_program(name, version.as_deref())?;
        let urls = self.urls(name)?;
        let log_path = dir.join("etcd.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(Self::io(&log_path))?;
        let log_err = log.try_clone().map_err(Self::io(&log_path))?;
        let pki = self.pki_dir();
        let file = |f: &str| pki.join(f).display().to_string();
        let files = |part: &str, allowed_cn| TlsFiles {
            cert: file(&format!("{part}.crt")),
            key: file(&format!("{part}.key")),
            ca: file("ca.crt"),
            allowed_cn,
        };
        // The same configuration file a pod's member-init writes, with loopback URLs.
        let config = MemberConfig {
            name: name.to_owned(),
            data_dir: self.data_dir(name).display().to_string(),
            listen_peer: urls.peer.clone(),
            listen_client: urls.client.clone(),
            listen_metrics: None,
            advertise_peer: urls.peer,
            advertise_client: urls.client,
            initial_cluster: crate::etcd::config::initial_cluster(initial),
            state,
            token: token.to_owned(),
            tls: self
                .tls
                .then(|| (files("server", None), files("peer", self.peer_common_name.clone()))),
        };
        let config_path = dir.join("etcd.conf.yaml");
        std::fs::write(&config_path, config.render(&self.options))
            .map_err(Self::io(&config_path))?;
        let mut command = Command::new(&program);
        command
            .arg(format!("--config-file={}", config_path.display()))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // A process group of its own: Ctrl-C on the operator does not reach the members.
            .process_group(0);
        let child =
            command.spawn().map_err(|source| Error::Spawn { name: name.to_owned(), source })?;
        let pid_path = self.pid_file(name);
        super::write_atomically(&pid_path, child.id().to_string())?;
        if let Some(version) = &version {
            let path = self.version_file(name);
            super::write_atomically(&path, version)?;
        }
        self.children.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), child);
        Ok(())
    }

    /// SIGTERM, then SIGKILL after 10 s; data is kept.
    pub fn stop_now(&self, name: &str) -> Result<(), Error> {
        let Some(pid) = self.pid(name) else { return Ok(()) };
        if is_live_etcd(pid) {
            // SAFETY: kill(2) with a pid read from our pid file and checked to be an etcd process.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while is_live_etcd(pid) && Instant::now() < deadline {
                self.running_now(); // reaps our own children
                std::thread::sleep(Duration::from_millis(50));
            }
            if is_live_etcd(pid) {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        self.running_now();
        let pid_path = self.pid_file(name);
        std::fs::remove_file(&pid_path)
            .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
            .map_err(Self::io(&pid_path))
    }
}
