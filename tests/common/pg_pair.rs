//! A PostgreSQL primary and its synchronous standby, for the failover test: two clusters in a
//! temporary folder on free loopback ports, the standby made with `pg_basebackup` and
//! streaming from a replication slot, and named in the primary's `synchronous_standby_names`,
//! so that a COMMIT returns only once the standby has flushed it. The primary can be killed
//! (SIGKILL to its whole process group: postmaster and backends at once, as a crash of its
//! machine) and the standby promoted.
//!
//! It uses the programs and helpers of the single cluster (`postgres.rs`): as root, both run
//! as the unprivileged test user; each postmaster gets SIGQUIT when the thread that started
//! it ends, and the pair stops both and removes its folder when dropped.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::postgres::{
    as_user, bin_dir, check, free_port, path_str, try_psql_at, unprivileged_user,
};

/// The standby's `application_name`, which `synchronous_standby_names` names, and its slot.
pub const STANDBY_NAME: &str = "standby";
/// How long a postmaster may take to accept connections, and the standby to become `sync`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One running postmaster.
struct Postmaster {
    child: Child,
    port: u16,
    data: PathBuf,
}

/// A primary and its synchronous standby.
pub struct ReplicatedPair {
    bin: PathBuf,
    dir: PathBuf,
    run_as: Option<(u32, u32)>,
    /// `None` once killed.
    primary: Option<Postmaster>,
    standby: Postmaster,
    primary_port: u16,
}

impl ReplicatedPair {
    /// Starts the primary, makes and starts the standby, and waits until the primary reports
    /// it as its synchronous standby; then creates the database `database`.
    pub fn start(database: &str) -> ReplicatedPair {
        let bin = bin_dir().expect("PostgreSQL is installed: apt-get install postgresql");
        let run_as = unprivileged_user();
        let dir = tempfile::Builder::new()
            .prefix("messageu-pg-pair-")
            .tempdir()
            .expect("temporary folder")
            .keep();
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the pair's folder");
        }
        let primary_data = dir.join("primary");
        let initdb = as_user(run_as, &bin.join("initdb"))
            .args([
                "-D",
                path_str(&primary_data),
                "-U",
                "postgres",
                "-A",
                "trust",
            ])
            .args(["-E", "UTF8", "--locale=C", "--no-sync"])
            .current_dir(&dir)
            .output()
            .expect("run initdb");
        check(&initdb, "initdb");
        let primary = spawn(&bin, &dir, primary_data, run_as, &[]);
        let primary_port = primary.port;
        let standby_data = dir.join("standby");
        let basebackup = as_user(run_as, &bin.join("pg_basebackup"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &primary_port.to_string(),
                "-U",
                "postgres",
            ])
            .args([
                "-D",
                path_str(&standby_data),
                "-R",
                "-C",
                "-S",
                STANDBY_NAME,
            ])
            .args(["-X", "stream", "-c", "fast", "--no-sync"])
            .current_dir(&dir)
            .output()
            .expect("run pg_basebackup");
        check(&basebackup, "pg_basebackup");
        let conninfo = format!(
            "primary_conninfo=host=127.0.0.1 port={primary_port} user=postgres \
             application_name={STANDBY_NAME}"
        );
        let standby = spawn(&bin, &dir, standby_data, run_as, &["-c", &conninfo]);
        let pair = ReplicatedPair {
            bin,
            dir,
            run_as,
            primary: Some(primary),
            standby,
            primary_port,
        };
        // Set after the base backup, so that the standby, once promoted, waits for no one.
        pair.primary_sql(&format!(
            "ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'"
        ));
        pair.primary_sql("SELECT pg_reload_conf()");
        pair.wait_until_sync();
        pair.primary_sql(&format!("CREATE DATABASE {database}"));
        pair
    }

    /// A connection string that reaches whichever of the two accepts writes.
    pub fn conninfo(&self, database: &str) -> String {
        format!(
            "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname={database} \
             target_session_attrs=read-write connect_timeout=2",
            self.primary_port, self.standby.port
        )
    }

    /// How the primary sees its standby: `sync` once COMMITs wait for it.
    pub fn standby_state(&self) -> String {
        self.primary_sql(&format!(
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = '{STANDBY_NAME}'"
        ))
    }

    fn wait_until_sync(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while self.standby_state() != "sync" {
            assert!(
                Instant::now() < deadline,
                "the standby never became synchronous: {:?}",
                self.standby_state()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs the primary's postmaster and backends at once.
    pub fn kill_primary(&mut self) {
        let mut primary = self.primary.take().expect("the primary runs");
        kill_group(&primary, "-KILL");
        primary.child.wait().expect("reap the primary");
    }

    /// Promotes the standby and waits until it accepts writes.
    pub fn promote_standby(&self) {
        let promote = as_user(self.run_as, &self.bin.join("pg_ctl"))
            .args([
                "promote",
                "-w",
                "-t",
                "30",
                "-D",
                path_str(&self.standby.data),
            ])
            .current_dir(&self.dir)
            .output()
            .expect("run pg_ctl promote");
        check(&promote, "pg_ctl promote");
    }

    /// Runs `sql` on the primary (in database `postgres`).
    pub fn primary_sql(&self, sql: &str) -> String {
        try_psql_at(&self.bin, self.primary_port, "postgres", sql)
            .unwrap_or_else(|error| panic!("{sql}: {error}"))
    }

    /// Runs `sql` in `database` on the standby.
    pub fn standby_sql(&self, database: &str, sql: &str) -> String {
        try_psql_at(&self.bin, self.standby.port, database, sql)
            .unwrap_or_else(|error| panic!("{sql}: {error}"))
    }
}

impl Drop for ReplicatedPair {
    fn drop(&mut self) {
        let running = self.primary.iter_mut().chain([&mut self.standby]);
        for postmaster in running {
            kill_group(postmaster, "-QUIT");
            let _ = postmaster.child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Starts a postmaster on `data`, in a process group of its own, and waits until it accepts
/// connections.
fn spawn(
    bin: &Path,
    dir: &Path,
    data: PathBuf,
    run_as: Option<(u32, u32)>,
    extra: &[&str],
) -> Postmaster {
    let port = free_port();
    let log_path = dir.join(format!(
        "{}.log",
        data.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("postgres")
    ));
    let log = fs::File::create(&log_path).expect("the postmaster's log");
    let child = as_user(run_as, &bin.join("postgres"))
        .args(["-D", path_str(&data), "-p", &port.to_string()])
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
        ])
        // Nothing here survives a power cut, only a process's death: replication still
        // waits for the standby to have written each commit.
        .args(["-c", "fsync=off"])
        .args(extra)
        .current_dir(dir)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("the log again"))
        .stderr(log)
        .spawn()
        .expect("run postgres");
    let mut postmaster = Postmaster { child, port, data };
    let deadline = Instant::now() + READY_TIMEOUT;
    while try_psql_at(bin, port, "postgres", "SELECT 1").is_err() {
        let exited = postmaster.child.try_wait().expect("try_wait");
        if exited.is_some() || Instant::now() > deadline {
            kill_group(&postmaster, "-QUIT");
            let _ = postmaster.child.wait();
            panic!(
                "PostgreSQL on {} did not start: {}",
                postmaster.data.display(),
                fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    postmaster
}

/// Sends `signal` to the postmaster's process group: itself and every backend it forked.
fn kill_group(postmaster: &Postmaster, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", &format!("-{}", postmaster.child.id())])
        .stderr(Stdio::null())
        .status();
}
