//! Text for people, in the manner of `kubectl get`: rows as columns padded to their widest cell,
//! two spaces apart (`local status`, `kubectl etcd status`), and the cells both show of a member.

/// `rows` (the header first) as aligned columns, one line each.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width = |i: usize| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max();
    let widths: Vec<usize> = (0..columns).map(|i| width(i).unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> =
            row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A member's backend as it last answered: the bytes in use of the file's (`1.2 MiB/40.0 MiB`;
/// the difference is what a defragmentation frees).
pub fn backend(member: &etcd_crds::MemberStatus) -> String {
    match (member.db_size_in_use, member.db_size) {
        (Some(used), Some(file)) => format!("{}/{}", bytes(used), bytes(file)),
        _ => "-".to_owned(),
    }
}

/// A size as people read it: bytes, KiB, MiB or GiB.
fn bytes(n: i64) -> String {
    const UNITS: [(&str, f64); 3] =
        [("GiB", 1024.0 * 1024.0 * 1024.0), ("MiB", 1024.0 * 1024.0), ("KiB", 1024.0)];
    let n = n as f64;
    UNITS
        .iter()
        .find(|(_, size)| n >= *size)
        .map_or_else(|| format!("{n} B"), |(unit, size)| format!("{:.1} {unit}", n / size))
}

/// A member's raft log as it last answered: its last index and the index it applied.
pub fn raft(member: &etcd_crds::MemberStatus) -> String {
    match (member.raft_index, member.raft_applied_index) {
        (Some(index), Some(applied)) => format!("{index}/{applied}"),
        _ => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_members_backend_and_raft_log_read_as_people_read_them() {
        let member = etcd_crds::MemberStatus {
            db_size: Some(40 * 1024 * 1024),
            db_size_in_use: Some(1258291),
            raft_index: Some(1204),
            raft_applied_index: Some(1203),
            ..etcd_crds::MemberStatus::default()
        };
        assert_eq!(super::backend(&member), "1.2 MiB/40.0 MiB");
        assert_eq!(super::bytes(20480), "20.0 KiB");
        assert_eq!(super::bytes(3 << 30), "3.0 GiB");
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::raft(&member), "1204/1203");
        assert_eq!(super::backend(&etcd_crds::MemberStatus::default()), "-");
    }

    #[test]
    fn a_table_pads_each_column_to_its_widest_cell() {
        let rows =
            vec![vec!["A".to_owned(), "BB".to_owned()], vec!["ccc".to_owned(), "d".to_owned()]];
        assert_eq!(super::table(&rows), "A    BB\nccc  d\n");
    }
}
