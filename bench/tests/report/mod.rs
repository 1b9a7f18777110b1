//! Figures read from `messageu-bench`'s report, for the bench's tests.
#![allow(dead_code)] // each test binary uses a different subset

/// The whole number after `label ` in `report`, e.g. `lost 0`.
pub fn count(report: &str, label: &str) -> u64 {
    number_after(report, label, |c| c.is_ascii_digit())
}

/// The decimal number after `label ` in `report`, e.g. `RSS 22.8 MiB` gives 22.8.
pub fn figure(report: &str, label: &str) -> f64 {
    number_after(report, label, |c| c.is_ascii_digit() || c == '.')
}

fn number_after<T: std::str::FromStr>(report: &str, label: &str, part: fn(char) -> bool) -> T {
    let pattern = format!("{label} ");
    let at = report
        .find(&pattern)
        .unwrap_or_else(|| panic!("no {label:?} in the report:\n{report}"));
    report[at + pattern.len()..]
        .split(|c: char| !part(c))
        .next()
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no number after {label:?}:\n{report}"))
}
