//! Loopback ports for `local`'s members, chosen outside the kernel's ephemeral range.
//!
//! A member keeps its ports for its lifetime (its peer URL is in the member list), so each must
//! be free again every time the member starts. A port the kernel picks for a bind to port 0
//! comes from the ephemeral range, the range every outgoing connection on the machine takes its
//! local port from: while a member is down (crashed, restarting), another member's connection to
//! a peer, or any client's, could take it, and the member would fail to start with "address
//! already in use" for as long as that connection lives. Outside that range only a process that
//! binds the port on purpose can take it.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::ops::RangeInclusive;

/// Ports below this are left alone: well-known services listen there.
const LOWEST: u16 = 10_000;
/// How many ports are tried before giving up on finding one outside the ephemeral range.
const ATTEMPTS: usize = 1_000;
const EPHEMERAL_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// A loopback port nobody listens on now, not in `taken`, outside the ephemeral range if this
/// machine leaves any port there (a range tuned to start at 1024 does not: then the kernel
/// picks).
pub fn free_port(taken: &BTreeSet<u16>) -> io::Result<u16> {
    // A random starting point (RandomState's keys come from the OS), so that processes looking
    // for ports at once do not all try the same ones.
    let start = RandomState::new().hash_one(std::process::id());
    match search(start, taken) {
        Some(port) => Ok(port),
        None => kernel_pick(taken),
    }
}

/// The first port that can be bound, from the `start`th (wrapping around) of the ports at or
/// above [`LOWEST`] outside the ephemeral range, skipping `taken`. Counted among those ports
/// only, so that a random start picks each alike (counted from [`LOWEST`], every start inside
/// the ephemeral range would land on its first port above).
fn search(start: u64, taken: &BTreeSet<u16>) -> Option<u16> {
    let ephemeral = ephemeral_range();
    let candidates: Vec<u16> = (LOWEST..=u16::MAX).filter(|p| !ephemeral.contains(p)).collect();
    let count = u64::try_from(candidates.len()).ok().filter(|&n| n > 0)?;
    let first = usize::try_from(start % count).ok()?;
    let (before, after) = candidates.split_at(first);
    after
        .iter()
        .chain(before)
        .filter(|port| !taken.contains(port))
        .take(ATTEMPTS)
        .copied()
        .find(|&port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok())
}

/// The ephemeral range as the kernel reports it, or Linux's default.
fn ephemeral_range() -> RangeInclusive<u16> {
    let read = std::fs::read_to_string(EPHEMERAL_RANGE).ok().and_then(|text| {
        let mut bounds = text.split_whitespace().map(|b| b.parse::<u16>().ok());
        Some(bounds.next()??..=bounds.next()??)
    });
    read.unwrap_or(32_768..=60_999)
}

/// A port the kernel picks, not in `taken`.
fn kernel_pick(taken: &BTreeSet<u16>) -> io::Result<u16> {
    for _ in 0..100 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        if !taken.contains(&port) {
            return Ok(port);
        }
    }
    Err(io::Error::new(io::ErrorKind::AddrInUse, "no free loopback port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_inside_the_ephemeral_range_do_not_crowd_onto_one_port() {
        let ports: BTreeSet<u16> = (0..20u64)
            .filter_map(|i| search(RandomState::new().hash_one(i), &BTreeSet::new()))
            .collect();
        assert!(ports.len() >= 18, "20 searches found only {ports:?}");
    }

    #[test]
    fn ports_are_free_outside_the_ephemeral_range_and_not_taken() {
        let ephemeral = ephemeral_range();
        let mut taken = BTreeSet::new();
        for _ in 0..20 {
            let port = free_port(&taken).unwrap();
            assert!(port >= LOWEST && !ephemeral.contains(&port), "{port} in {ephemeral:?}");
            assert!(taken.insert(port), "{port} given out twice");
            // Nothing listens there: it can be bound.
            drop(TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap());
        }
    }

    #[test]
    fn a_port_someone_listens_on_or_taken_is_passed_over() {
        let port = free_port(&BTreeSet::new()).unwrap();
        let ephemeral = ephemeral_range();
        let start = (LOWEST..port).filter(|p| !ephemeral.contains(p)).count() as u64;
        assert_eq!(search(start, &BTreeSet::new()), Some(port));
        let held = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        let next = search(start, &BTreeSet::new()).unwrap();
        assert_ne!(next, port, "a port listened on was given out");
        drop(held);
        assert_eq!(search(start, &BTreeSet::from([port])), Some(next));
    }
}
