//! Text for people, in the manner of `kubectl get`: rows as columns padded to their widest cell,
//! two spaces apart (`local status`, `kubectl etcd status`).

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

#[cfg(test)]
mod tests {
    #[test]
    fn a_table_pads_each_column_to_its_widest_cell() {
        let rows =
            vec![vec!["A".to_owned(), "BB".to_owned()], vec!["ccc".to_owned(), "d".to_owned()]];
        assert_eq!(super::table(&rows), "A    BB\nccc  d\n");
    }
}
