//! A throwaway PostgreSQL cluster for tests: one per test process, started on first use in a
//! temporary folder on a free loopback port, with a fresh database per test.
//!
//! It uses only the standard library and PostgreSQL's own programs (`initdb`, `postgres`,
//! `psql`, found under `/usr/lib/postgresql/*/bin` or on the `PATH`), so that the server's
//! unit tests and every test binary can include it by path. PostgreSQL refuses to run as
//! root: as root, the cluster runs as the system user `messageu-test` (created if missing,
//! else `nobody`), through `setpriv`. There is no skipping: without PostgreSQL the tests that
//! need it fail, saying how to install it (`.ci/run` installs it).
//!
//! The cluster stops when the process exits: an exit handler stops it (immediate shutdown)
//! and removes its folder; if the process dies without running it, the postmaster gets
//! SIGQUIT as its parent-death signal.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The user the cluster runs as when the tests run as root.
const TEST_USER: &str = "messageu-test";
/// How long the cluster may take to start, and to stop.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The running cluster of this process.
struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    pid: u32,
    /// Tells when the postmaster has exited (its keeper thread waits on it).
    exited: Mutex<mpsc::Receiver<()>>,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static NEXT_DATABASE: AtomicU32 = AtomicU32::new(0);

/// A database of its own in the cluster, dropped (with any connection left) when this is.
pub struct TestDatabase {
    name: String,
}

impl TestDatabase {
    /// A new, empty database.
    pub fn create() -> TestDatabase {
        let cluster = CLUSTER.get_or_init(Cluster::start);
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            NEXT_DATABASE.fetch_add(1, Ordering::Relaxed)
        );
        cluster.sql(&format!("CREATE DATABASE {name}"));
        TestDatabase { name }
    }

    /// A libpq connection string (key=value form) for it.
    pub fn conninfo(&self) -> String {
        let port = CLUSTER.get().map_or(0, |cluster| cluster.port);
        format!(
            "host=127.0.0.1 port={port} user=postgres dbname={} connect_timeout=10",
            self.name
        )
    }

    /// The same as a `postgresql://` URL.
    pub fn url(&self) -> String {
        let port = CLUSTER.get().map_or(0, |cluster| cluster.port);
        format!("postgresql://postgres@127.0.0.1:{port}/{}", self.name)
    }

    /// Runs `sql` in this database through `psql`, returning what it prints (unaligned,
    /// tuples only): for tests that look at the tables themselves.
    pub fn query(&self, sql: &str) -> String {
        let cluster = CLUSTER.get().expect("the cluster runs");
        cluster.psql(&self.name, sql)
    }
}

/// The database end-to-end servers share, one schema each.
const SERVERS_DATABASE: &str = "servers";

/// A URL for schema `name` of a database the end-to-end tests' servers share (created on
/// first use, as is the schema): a server's tables go there, and a server started again with
/// the same name finds them. Schemas cost next to nothing, so none is dropped before the
/// cluster is.
pub fn server_schema_url(name: &str) -> String {
    static SERVERS: OnceLock<()> = OnceLock::new();
    let cluster = CLUSTER.get_or_init(Cluster::start);
    SERVERS.get_or_init(|| cluster.sql(&format!("CREATE DATABASE {SERVERS_DATABASE}")));
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "a plain schema name: {name}"
    );
    cluster.psql(
        SERVERS_DATABASE,
        &format!("CREATE SCHEMA IF NOT EXISTS {name}"),
    );
    format!(
        "postgresql://postgres@127.0.0.1:{}/{SERVERS_DATABASE}?options=-csearch_path%3D{name}",
        cluster.port
    )
}

/// Runs `sql` in the database of [`server_schema_url`] with `schema` first on the search
/// path, returning what it prints (unaligned, tuples only): for tests that look at what a
/// server stored.
pub fn server_schema_query(schema: &str, sql: &str) -> String {
    let cluster = CLUSTER.get().expect("the cluster runs");
    cluster.psql(
        SERVERS_DATABASE,
        &format!("SET search_path TO {schema}; {sql}"),
    )
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(cluster) = CLUSTER.get() {
            let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            if let Err(error) = cluster.try_psql("postgres", &drop) {
                eprintln!("cannot drop test database {}: {error}", self.name);
            }
        }
    }
}

impl Cluster {
    fn start() -> Cluster {
        let bin = bin_dir().unwrap_or_else(|| {
            panic!(
                "PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or on \
                 the PATH): apt-get install postgresql"
            )
        });
        let run_as = unprivileged_user();
        let dir = tempfile::Builder::new()
            .prefix("messageu-pg-")
            .tempdir()
            .expect("temporary folder")
            .keep();
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the cluster folder");
        }
        let data = dir.join("data");
        let initdb = as_user(run_as, &bin.join("initdb"))
            .args(["-D", path_str(&data), "-U", "postgres", "-A", "trust"])
            .args(["-E", "UTF8", "--locale=C", "--no-sync"])
            .current_dir(&dir)
            .output()
            .expect("run initdb");
        check(&initdb, "initdb");
        // A port can be taken between finding it free and the postmaster binding it.
        for attempt in 1.. {
            let port = free_port();
            match Cluster::spawn(&bin, &dir, &data, port, run_as) {
                Ok(cluster) => return cluster,
                Err(error) if attempt < 3 => {
                    eprintln!("PostgreSQL did not start ({error}); retrying")
                }
                Err(error) => panic!("PostgreSQL did not start: {error}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// Starts the postmaster from a keeper thread, which lives as long as it does: the
    /// parent-death signal follows the thread that spawned it, not the process.
    fn spawn(
        bin: &Path,
        dir: &Path,
        data: &Path,
        port: u16,
        run_as: Option<(u32, u32)>,
    ) -> Result<Cluster, String> {
        let log = fs::File::create(dir.join("postgres.log")).map_err(|e| e.to_string())?;
        if let Some((uid, gid)) = run_as {
            let log_path = dir.join("postgres.log");
            std::os::unix::fs::chown(&log_path, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        }
        let mut command = as_user(run_as, &bin.join("postgres"));
        command
            .args(["-D", path_str(data), "-p", &port.to_string()])
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
            ])
            // A throwaway cluster need not survive a power cut; synchronous_commit stays on,
            // as the store expects, and only the flushes themselves are skipped.
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        let (started, pid) = mpsc::channel::<Result<u32, String>>();
        let (exited_tx, exited) = mpsc::channel();
        thread::Builder::new()
            .name("postgres-keeper".into())
            .spawn(move || {
                let mut child: Child = match command.spawn() {
                    Ok(child) => child,
                    Err(error) => {
                        let _ = started.send(Err(format!("cannot run postgres: {error}")));
                        return;
                    }
                };
                let _ = started.send(Ok(child.id()));
                let _ = child.wait();
                let _ = exited_tx.send(());
            })
            .map_err(|e| e.to_string())?;
        let pid = pid
            .recv_timeout(START_TIMEOUT)
            .map_err(|e| e.to_string())??;
        let cluster = Cluster {
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            port,
            pid,
            exited: Mutex::new(exited),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if cluster.has_exited(Duration::ZERO) {
                let log = fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
                return Err(format!("the postmaster exited: {log}"));
            }
            if cluster.try_psql("postgres", "SELECT 1").is_ok() {
                break;
            }
            if Instant::now() > deadline {
                cluster.stop();
                return Err("it did not accept connections in time".into());
            }
            thread::sleep(Duration::from_millis(50));
        }
        register_exit_handler();
        Ok(cluster)
    }

    fn has_exited(&self, wait: Duration) -> bool {
        let exited = self
            .exited
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        exited.recv_timeout(wait).is_ok()
    }

    /// Immediate shutdown, waited for (bounded), then the folder removed.
    fn stop(&self) {
        let signalled = Command::new("kill")
            .args(["-QUIT", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if signalled && !self.has_exited(STOP_TIMEOUT) {
            eprintln!("PostgreSQL (pid {}) did not stop in time", self.pid);
            return;
        }
        let _ = fs::remove_dir_all(&self.dir);
    }

    fn sql(&self, sql: &str) {
        if let Err(error) = self.try_psql("postgres", sql) {
            panic!("{sql}: {error}");
        }
    }

    fn psql(&self, database: &str, sql: &str) -> String {
        self.try_psql(database, sql)
            .unwrap_or_else(|error| panic!("{sql}: {error}"))
    }

    fn try_psql(&self, database: &str, sql: &str) -> Result<String, String> {
        try_psql_at(&self.bin, self.port, database, sql)
    }
}

/// Runs `sql` through `psql` as `postgres` in `database` of the cluster on `port`, returning
/// what it prints (unaligned, tuples only), or its error.
pub fn try_psql_at(bin: &Path, port: u16, database: &str, sql: &str) -> Result<String, String> {
    let output = Command::new(bin.join("psql"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args([
            "-d",
            database,
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .args(["-c", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run psql: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

/// Stops the cluster when the process exits, once.
fn register_exit_handler() {
    extern "C" fn stop_cluster() {
        if let Some(cluster) = CLUSTER.get() {
            cluster.stop();
        }
    }
    extern "C" {
        fn atexit(callback: extern "C" fn()) -> i32;
    }
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| {
        // SAFETY: atexit only records the function, which takes no arguments and is safe to
        // run at exit (it runs commands and removes a folder).
        unsafe {
            atexit(stop_cluster);
        }
    });
}

/// The newest PostgreSQL's programs: `/usr/lib/postgresql/<version>/bin`, else `initdb`'s
/// folder on the PATH.
pub fn bin_dir() -> Option<PathBuf> {
    let versions = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten();
    let newest = versions
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version);
    if let Some((_, bin)) = newest {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
}

/// The uid and gid to run PostgreSQL as: none unless the tests run as root.
pub fn unprivileged_user() -> Option<(u32, u32)> {
    if id(&["-u"], None)? != 0 {
        return None;
    }
    if id(&["-u"], Some(TEST_USER)).is_none() {
        // Another test process may create it at the same time: only its existence counts.
        let _ = Command::new("useradd")
            .args(["--system", "--no-create-home", "--home-dir", "/nonexistent"])
            .args(["--shell", "/usr/sbin/nologin", TEST_USER])
            .stderr(Stdio::null())
            .status();
    }
    let user = if id(&["-u"], Some(TEST_USER)).is_some() {
        TEST_USER
    } else {
        "nobody"
    };
    let uid = id(&["-u"], Some(user)).expect("the user's uid");
    let gid = id(&["-g"], Some(user)).expect("the user's gid");
    Some((uid, gid))
}

/// `id -u` or `id -g`, of `user` or the current one.
fn id(flag: &[&str], user: Option<&str>) -> Option<u32> {
    let output = Command::new("id").args(flag).args(user).output().ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

/// A command running `program` as `run_as` (through `setpriv`, which also gives it SIGQUIT
/// when its parent thread ends), or as the current user.
pub fn as_user(run_as: Option<(u32, u32)>, program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command.args(["--pdeathsig", "SIGQUIT"]);
    if let Some((uid, gid)) = run_as {
        command.args([
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".to_owned(),
        ]);
    }
    command.arg("--").arg(program);
    command
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

pub fn check(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
