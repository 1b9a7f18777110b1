//! CPU time and peak memory from `/proc` (Linux), to show what the server and the generator
//! itself consume.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// CPU time the calling thread has run (scheduler statistics, nanosecond resolution).
pub fn thread_cpu() -> io::Result<Duration> {
    schedstat_cpu(Path::new("/proc/thread-self/schedstat"))
}

/// The calling thread's statistics file, by a name other threads can read too.
pub fn own_schedstat() -> io::Result<PathBuf> {
    Ok(Path::new("/proc")
        .join(fs::read_link("/proc/thread-self")?)
        .join("schedstat"))
}

/// CPU time all live threads of process `pid` have run.
pub fn process_cpu(pid: u32) -> io::Result<Duration> {
    let mut total = Duration::ZERO;
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread may end between listing and reading.
        if let Ok(cpu) = schedstat_cpu(&path) {
            total += cpu;
        }
    }
    Ok(total)
}

/// The peak resident set size (`VmHWM`) of process `pid`, in bytes.
pub fn peak_rss(pid: u32) -> io::Result<u64> {
    status_bytes(pid, "VmHWM:")
}

/// The resident set size now (`VmRSS`) of process `pid`, in bytes.
pub fn rss(pid: u32) -> io::Result<u64> {
    status_bytes(pid, "VmRSS:")
}

fn status_bytes(pid: u32, field: &str) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_kib_field(&status, field)
        .map(|kib| kib * 1024)
        .ok_or_else(|| io::Error::other(format!("no {field} in /proc/{pid}/status")))
}

/// The CPU time in a `schedstat` file of `/proc`.
pub fn schedstat_cpu(path: &Path) -> io::Result<Duration> {
    let text = fs::read_to_string(path)?;
    text.split_whitespace()
        .next()
        .and_then(|nanos| nanos.parse().ok())
        .map(Duration::from_nanos)
        .ok_or_else(|| io::Error::other(format!("{}: unexpected format", path.display())))
}

/// The value of a `Name:   1234 kB` line of a `/proc/*/status` file.
fn parse_kib_field(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|number| number.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn kib_fields_are_read_from_status_text() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t    1768 kB\nVmRSS:\t 1700 kB\n";
        assert_eq!(parse_kib_field(status, "VmHWM:"), Some(1768));
        assert_eq!(parse_kib_field(status, "VmSwap:"), None);
    }

    #[test]
    fn this_process_has_a_peak_and_spends_cpu() {
        let pid = std::process::id();
        let resident = rss(pid).expect("own status");
        assert!(resident > 0 && peak_rss(pid).expect("own status") >= resident);
        let mut spin = 0u64;
        let before = thread_cpu().expect("own schedstat");
        for i in 0..2_000_000u64 {
            spin = std::hint::black_box(spin.wrapping_add(i));
        }
        assert!(thread_cpu().expect("own schedstat") > before, "{spin}");
        assert!(process_cpu(pid).expect("own tasks") >= thread_cpu().expect("own schedstat"));
        let shared = own_schedstat().expect("own thread's path");
        let seen_from_elsewhere = thread::spawn(move || schedstat_cpu(&shared))
            .join()
            .expect("reader thread");
        assert!(seen_from_elsewhere.expect("readable") > Duration::ZERO);
    }
}
