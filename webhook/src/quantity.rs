//! Kubernetes resource quantities (`8Gi`, `500M`, `1.5e9`), compared by value so that storage can
//! be checked for growth whichever suffix a user writes.

/// The value of a quantity, or `None` when it is not one.
pub fn parse(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let multiplier = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        exponent if exponent.starts_with(['e', 'E']) => 10f64.powi(exponent[1..].parse().ok()?),
        _ => return None,
    };
    let value = number * multiplier;
    value.is_finite().then_some(value)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn binary_decimal_and_exponent_forms() {
        assert_eq!(parse("8Gi"), Some(8.0 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(parse("10G"), Some(10e9));
        assert_eq!(parse("500Mi"), Some(500.0 * 1024.0 * 1024.0));
        assert_eq!(parse("1.5e3"), Some(1500.0));
        assert_eq!(parse("100m"), Some(0.1));
        assert_eq!(parse("42"), Some(42.0));
        assert!(parse("8Gi").unwrap() > parse("8G").unwrap());
    }

    #[test]
    fn garbage_is_none() {
        for bad in ["", "Gi", "8Xi", "eight", "8 Gi", "1e", "--3"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
