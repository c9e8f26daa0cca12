//! A real S3-compatible server for tests: `moto_server` (from PyPI) on a loopback port, with a
//! bucket, and the environment object_store reads to reach it. The process dies with the guard.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::etcd::free_port;

pub struct Moto {
    pub endpoint: String,
    child: Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts moto_server (`$MOTO_SERVER`, or `moto_server` on PATH) and creates `bucket`.
    pub fn start(bucket: &str) -> Self {
        let program = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".to_owned());
        let port = free_port();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program} (pip install 'moto[server]'): {e}"));
        let moto = Self { endpoint: format!("http://127.0.0.1:{port}"), child };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(status) = raw_request(port, &format!("PUT /{bucket} HTTP/1.1"))
                && status.starts_with("HTTP/1.1 200")
            {
                return moto;
            }
            assert!(Instant::now() < deadline, "moto_server did not answer in 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The object-store options that reach this server (the keys are object_store's).
    pub fn options(&self) -> std::collections::BTreeMap<String, String> {
        options_for(&self.endpoint)
    }

    /// The same as environment variables, for the CLI.
    pub fn env(&self) -> Vec<(String, String)> {
        self.options().into_iter().map(|(k, v)| (k.to_ascii_uppercase(), v)).collect()
    }
}

pub fn options_for(endpoint: &str) -> std::collections::BTreeMap<String, String> {
    [
        ("aws_endpoint", endpoint),
        ("aws_allow_http", "true"),
        ("aws_region", "us-east-1"),
        ("aws_access_key_id", "testing"),
        ("aws_secret_access_key", "testing"),
        ("aws_virtual_hosted_style_request", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn raw_request(port: u16, line: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "{line}\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// A TCP proxy in front of `upstream` that forwards until `budget` bytes have gone upstream,
/// then cuts every connection and refuses new ones: the store going away mid-upload.
pub struct CuttingProxy {
    pub endpoint: String,
    pub cut: Arc<AtomicBool>,
}

impl CuttingProxy {
    pub fn start(upstream: &str, budget: usize) -> Self {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let cut = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let cut_flag = cut.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if cut_flag.load(Ordering::SeqCst) {
                    break; // the listener is dropped: connections are refused from now on
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                let (cut, sent) = (cut_flag.clone(), sent.clone());
                let (client_read, server_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    pump(client_read, server_write, Some((sent, budget, cut)))
                });
                std::thread::spawn(move || pump(server, client, None));
            }
        });
        Self { endpoint, cut }
    }
}

type Budget = (Arc<AtomicUsize>, usize, Arc<AtomicBool>);

fn pump(mut from: TcpStream, mut to: TcpStream, budget: Option<Budget>) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((sent, limit, cut)) = &budget
            && (cut.load(Ordering::SeqCst) || sent.fetch_add(n, Ordering::SeqCst) + n > *limit)
        {
            cut.store(true, Ordering::SeqCst);
            break;
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}
