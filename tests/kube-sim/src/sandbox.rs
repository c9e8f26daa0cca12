//! Pod sandboxes and container processes with Linux namespaces, as a container runtime makes
//! them: each pod a network namespace with its own IP on the cluster bridge; each container a
//! mount namespace whose root is made of the host's system directories (read-only), the image's
//! files at `/usr/local/bin`, a private `/etc` whose `hosts` is the cluster's DNS view, and the
//! pod's volumes at their mountPaths.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const BRIDGE: &str = "ks0";
pub const GATEWAY: &str = "10.244.0.1";
pub const API_SERVICE_IP: &str = "10.96.0.1";

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Enters a private network and mount namespace for the whole simulated cluster (before any
/// thread starts) and makes the bridge pods attach to. Nothing on the host changes.
pub fn enter_cluster_namespaces(hosts_file: &Path) -> Result<(), String> {
    // SAFETY: called from main before the runtime starts threads.
    if unsafe { libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS) } != 0 {
        return Err(format!(
            "unshare(CLONE_NEWNET|CLONE_NEWNS) failed: {} (kube-sim needs root)",
            std::io::Error::last_os_error()
        ));
    }
    mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_PRIVATE)?;
    std::fs::create_dir_all("/run/netns").map_err(|e| format!("/run/netns: {e}"))?;
    mount(Some(Path::new("tmpfs")), Path::new("/run/netns"), Some("tmpfs"), 0)?;
    mount(Some(hosts_file), Path::new("/etc/hosts"), None, libc::MS_BIND)?;
    ip(&["link", "set", "lo", "up"])?;
    make_bridge()
}

/// The bridge's own MAC address, fixed. Left to itself, a Linux bridge takes the lowest MAC of
/// its ports and changes it as veths come and go; every pod's ARP entry for the gateway then
/// points at an address nobody answers, and pods lose the API server (the `kubernetes`
/// Service) and their kubelet's probes until the entry expires, up to a minute: an outage no
/// scenario asked for, which once stalled a CI run's operator mid-recovery.
const BRIDGE_MAC: &str = "02:42:0a:f4:00:01";

/// The cluster bridge: the gateway and the `kubernetes` Service's address, on a fixed MAC.
fn make_bridge() -> Result<(), String> {
    ip(&["link", "add", BRIDGE, "address", BRIDGE_MAC, "type", "bridge"])?;
    ip(&["addr", "add", &format!("{GATEWAY}/16"), "dev", BRIDGE])?;
    ip(&["addr", "add", &format!("{API_SERVICE_IP}/32"), "dev", BRIDGE])?;
    ip(&["link", "set", BRIDGE, "up"])?;
    Ok(())
}

fn cstring(path: &Path) -> Result<CString, String> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{} has a NUL byte", path.display()))
}

fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
) -> Result<(), String> {
    let source_c = source.map(cstring).transpose()?;
    let target_c = cstring(target)?;
    let fstype_c = fstype.map(|f| CString::new(f).unwrap_or_default());
    // SAFETY: valid C strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            source_c.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target_c.as_ptr(),
            fstype_c.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "mount {} on {}: {}",
            source.map(|s| s.display().to_string()).unwrap_or_default(),
            target.display(),
            std::io::Error::last_os_error()
        ))
    }
}

/// An address of the cluster's network on the bridge (a node's, where its kubelet answers).
pub fn add_address(address: &str) -> Result<(), String> {
    ip(&["addr", "add", &format!("{address}/32"), "dev", BRIDGE])
}

/// A pod's network: a namespace with a veth on the bridge and `ip` as its address.
pub fn create_pod_network(id: u32, ip_addr: &str) -> Result<String, String> {
    let ns = format!("ks-{id}");
    let host_end = format!("veth{id}");
    ip(&["netns", "add", &ns])?;
    ip(&["link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
    ip(&["link", "set", &host_end, "master", BRIDGE, "up"])?;
    ip(&["-n", &ns, "addr", "add", &format!("{ip_addr}/16"), "dev", "eth0"])?;
    ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
    ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    ip(&["-n", &ns, "route", "add", "default", "via", GATEWAY])?;
    Ok(ns)
}

pub fn delete_pod_network(ns: &str) {
    let _ = ip(&["netns", "del", ns]);
}

/// One bind mount into a container's root.
#[derive(Clone, Debug)]
pub struct Bind {
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

/// Everything prepared in the parent so that the child only makes system calls.
struct Prepared {
    netns: CString,
    root: CString,
    binds: Vec<(CString, CString, bool)>,
    proc_target: CString,
    read_only_root: bool,
    hostname: CString,
    workdir: CString,
}

/// Builds a container's root directory: host system directories, a private `/etc`, and empty
/// mount points for every bind.
fn build_root(root: &Path, hosts: &Path, binds: &[Bind]) -> Result<Vec<Bind>, String> {
    fn io(what: &Path) -> impl Fn(std::io::Error) -> String + '_ {
        move |e| format!("{}: {e}", what.display())
    }
    std::fs::create_dir_all(root).map_err(io(root))?;
    let mut all = Vec::new();
    for dir in ["usr", "lib", "lib64", "bin", "sbin"] {
        let host = Path::new("/").join(dir);
        let inside = root.join(dir);
        match std::fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                if std::fs::symlink_metadata(&inside).is_err() {
                    let link = std::fs::read_link(&host).map_err(io(&host))?;
                    std::os::unix::fs::symlink(link, &inside).map_err(io(&inside))?;
                }
            }
            Ok(_) => {
                std::fs::create_dir_all(&inside).map_err(io(&inside))?;
                all.push(Bind { source: host, target: format!("/{dir}"), read_only: true });
            }
            Err(_) => {}
        }
    }
    for dir in ["etc", "proc", "dev", "tmp", "run", "var/run", "var/lib", "var/tmp", "home/nonroot"]
    {
        std::fs::create_dir_all(root.join(dir)).map_err(io(&root.join(dir)))?;
    }
    let etc = root.join("etc");
    for file in ["passwd", "group", "nsswitch.conf", "ld.so.cache", "host.conf", "localtime"] {
        let host = Path::new("/etc").join(file);
        if host.exists() && !etc.join(file).exists() {
            std::fs::copy(&host, etc.join(file)).map_err(io(&host))?;
        }
    }
    std::fs::write(
        etc.join("resolv.conf"),
        "search svc.cluster.local cluster.local\noptions ndots:5\n",
    )
    .map_err(io(&etc))?;
    std::fs::write(etc.join("hosts"), "").map_err(io(&etc))?;
    all.push(Bind { source: hosts.to_owned(), target: "/etc/hosts".into(), read_only: true });
    for dir in ["ssl", "ca-certificates"] {
        let host = Path::new("/etc").join(dir);
        if host.is_dir() {
            std::fs::create_dir_all(etc.join(dir)).map_err(io(&etc))?;
            all.push(Bind { source: host, target: format!("/etc/{dir}"), read_only: true });
        }
    }
    all.push(Bind { source: "/dev".into(), target: "/dev".into(), read_only: false });
    for bind in binds {
        let inside = root.join(bind.target.trim_start_matches('/'));
        if bind.source.is_dir() {
            std::fs::create_dir_all(&inside).map_err(io(&inside))?;
        } else {
            if let Some(parent) = inside.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            if !inside.exists() {
                std::fs::write(&inside, "").map_err(io(&inside))?;
            }
        }
        all.push(bind.clone());
    }
    Ok(all)
}

/// A command to run as a container: in the pod's network namespace, its own mount and UTS
/// namespaces, chrooted into `root`.
pub struct ContainerSpec<'a> {
    pub netns: &'a str,
    pub root: &'a Path,
    pub hosts: &'a Path,
    pub binds: &'a [Bind],
    pub hostname: &'a str,
    pub workdir: &'a str,
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    /// `securityContext.readOnlyRootFilesystem`: everything but the volumes is read-only.
    pub read_only_root: bool,
}

pub fn command(spec: &ContainerSpec<'_>) -> Result<tokio::process::Command, String> {
    let binds = build_root(spec.root, spec.hosts, spec.binds)?;
    let prepared = Prepared {
        netns: cstring(&Path::new("/run/netns").join(spec.netns))?,
        root: cstring(spec.root)?,
        binds: binds
            .iter()
            .map(|b| {
                Ok((
                    cstring(&b.source)?,
                    cstring(&spec.root.join(b.target.trim_start_matches('/')))?,
                    b.read_only,
                ))
            })
            .collect::<Result<_, String>>()?,
        proc_target: cstring(&spec.root.join("proc"))?,
        read_only_root: spec.read_only_root,
        hostname: CString::new(spec.hostname).map_err(|_| "hostname has a NUL byte".to_owned())?,
        workdir: CString::new(spec.workdir).map_err(|_| "workingDir has a NUL byte".to_owned())?,
    };
    let (program, args) = spec.argv.split_first().ok_or("the container has no command")?;
    let mut command = tokio::process::Command::new(program);
    command.args(args).env_clear().envs(spec.env.iter().cloned());
    // SAFETY: the closure only makes system calls on memory prepared before fork.
    unsafe {
        command.pre_exec(move || enter(&prepared));
    }
    Ok(command)
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// In the forked child: join the pod's network, make the mounts, chroot.
fn enter(p: &Prepared) -> std::io::Result<()> {
    // SAFETY: plain system calls with valid, NUL-terminated strings owned by `p`.
    unsafe {
        let fd = libc::open(p.netns.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        check(libc::setns(fd, libc::CLONE_NEWNET))?;
        libc::close(fd);
        check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS))?;
        check(libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        // The root a mount of its own, so that it can be made read-only without its volumes.
        check(libc::mount(
            p.root.as_ptr(),
            p.root.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ))?;
        for (source, target, read_only) in &p.binds {
            check(libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ))?;
            if *read_only {
                check(libc::mount(
                    std::ptr::null(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC,
                    std::ptr::null(),
                ))?;
            }
        }
        check(libc::mount(
            c"proc".as_ptr(),
            p.proc_target.as_ptr(),
            c"proc".as_ptr(),
            0,
            std::ptr::null(),
        ))?;
        if p.read_only_root {
            check(libc::mount(
                std::ptr::null(),
                p.root.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                std::ptr::null(),
            ))?;
        }
        check(libc::sethostname(p.hostname.as_ptr(), p.hostname.as_bytes().len()))?;
        check(libc::chroot(p.root.as_ptr()))?;
        check(libc::chdir(p.workdir.as_ptr()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(link: &str) -> String {
        let out = Command::new("ip").args(["-o", "link", "show", link]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let after = text.split("link/ether ").nth(1).unwrap_or_else(|| panic!("{link}: {text}"));
        after.split_whitespace().next().unwrap().to_owned()
    }

    /// Pods come and go; the gateway's MAC address, which every pod has in its ARP cache, stays.
    #[test]
    fn the_bridge_keeps_its_mac_address_as_pods_come_and_go() {
        // A network namespace of this thread's own (and of the `ip` it runs): nothing on the
        // host changes. Needs root, as kube-sim does.
        std::thread::spawn(|| {
            // SAFETY: unshare(2) affects only this thread.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "kube-sim needs root");
            make_bridge().unwrap();
            let gateway = mac(BRIDGE);
            // A port whose MAC is lower than the bridge's: a bridge that follows its ports
            // would take it, and change again once it goes.
            for (port, address) in
                [("vethlow", "02:00:00:00:00:01"), ("vethhigh", "fe:00:00:00:00:01")]
            {
                ip(&[
                    "link",
                    "add",
                    port,
                    "address",
                    address,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &format!("p{port}"),
                ])
                .unwrap();
                ip(&["link", "set", port, "master", BRIDGE, "up"]).unwrap();
                assert_eq!(mac(BRIDGE), gateway, "after {port} joined");
            }
            ip(&["link", "del", "vethlow"]).unwrap();
            assert_eq!(mac(BRIDGE), gateway, "after a port left");
        })
        .join()
        .unwrap();
    }
}
