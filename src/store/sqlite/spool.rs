//! The SQLite backend's large contents, kept as files in a spool folder beside the database:
//! [`Spool`] is its `ContentStore`, and each [`Upload`] a `PendingContent`.
//!
//! A file message may be 4 GiB: too large to buffer, and too large for one SQLite row
//! written inside the event loop's short transactions. Its content is streamed into a spool
//! file as it arrives; the message row only names the file. The file is created before the
//! row exists and removed after the row is gone, so a crash can only leave files without
//! rows, which [`Spool::recover`] removes at start-up.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::mem;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;

use crate::store::{ContentSink, ContentStore, PendingContent, StoreError};
use crate::worker::{Jobs, Worker};

/// The spool folder of one database.
pub struct Spool {
    dir: PathBuf,
    /// Bytes that uploads in progress have announced but not yet written, on a file system
    /// that could not allocate them up front: the free space they will take.
    reserved: Arc<AtomicU64>,
    /// Free space an upload must leave on the disk, for the database and everything else.
    min_free: u64,
    durable: bool,
    jobs: SpoolJobs,
}

/// The spool's background work, which uploads reach too. Removing a file runs on the
/// `spool-remove` worker: unlinking a large file also drops its cached pages, about 200 ms
/// per GiB on the development machine, which on the event loop would stall every client (a
/// removal still pending at exit leaves a file no row names, which the next start-up
/// removes). Early writeback of uploads runs on the `spool-writeback` worker.
#[derive(Clone)]
struct SpoolJobs {
    remove: Jobs<PathBuf>,
    write_back: Jobs<WriteBack>,
}

/// An early writeback of an upload's file; `running` is cleared when it is done.
struct WriteBack {
    file: File,
    running: Arc<AtomicBool>,
}

impl SpoolJobs {
    fn start() -> io::Result<SpoolJobs> {
        let remover = Worker::start("spool-remove", |paths: Receiver<PathBuf>| {
            for path in paths {
                remove_file(&path);
            }
        })?;
        let writer = Worker::start("spool-writeback", |jobs: Receiver<WriteBack>| {
            for WriteBack { file, running } in jobs {
                // Only an early start: the final sync reports what fails.
                let _ = file.sync_data();
                running.store(false, Ordering::Release);
            }
        })?;
        // The workers end when the spool and its uploads, which hold these senders, are gone.
        Ok(SpoolJobs {
            remove: remover.jobs(),
            write_back: writer.jobs(),
        })
    }

    fn remove(&self, path: PathBuf) {
        if let Err(mpsc::SendError(path)) = self.remove.send(path) {
            remove_file(&path);
        }
    }
}

fn remove_file(path: &Path) {
    if let Err(error) = fs::remove_file(path) {
        log::warn!("cannot remove {}: {error}", path.display());
    }
}

/// The spool folder of the database at `database`: `<database>.spool`.
pub fn dir_of(database: &Path) -> PathBuf {
    let mut dir = database.as_os_str().to_owned();
    dir.push(".spool");
    PathBuf::from(dir)
}

impl Spool {
    /// Opens (creating if needed) the spool folder of the database at `database`:
    /// `<database>.spool`.
    pub fn open(database: &Path, min_free: u64, durable: bool) -> Result<Spool, StoreError> {
        let dir = dir_of(database);
        let error = |source| StoreError::File {
            path: dir.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(error)?;
        let jobs = SpoolJobs::start().map_err(error)?;
        Ok(Spool {
            dir,
            reserved: Arc::new(AtomicU64::new(0)),
            min_free,
            durable,
            jobs,
        })
    }

    #[cfg(test)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Free disk space beyond what the configured minimum and the uploads in progress need:
    /// what new data may take.
    pub fn spare_space(&self) -> Result<u64, StoreError> {
        let available = fs4::available_space(&self.dir).map_err(|source| StoreError::File {
            path: self.dir.clone(),
            source,
        })?;
        let reserved = self.reserved.load(Ordering::Relaxed);
        Ok(available.saturating_sub(reserved.saturating_add(self.min_free)))
    }

    /// Creates the file for a content of `len` bytes, if the disk can take it and still keep
    /// the configured free space.
    pub fn start(&self, len: u64) -> Result<Upload, StoreError> {
        let error = |source| StoreError::File {
            path: self.dir.clone(),
            source,
        };
        let available = self.spare_space()?;
        if len > available {
            return Err(StoreError::NoSpace { len, available });
        }
        let name = uuid::Uuid::new_v4().simple().to_string();
        let path = self.dir.join(&name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(error)?;
        let mut upload = Upload {
            file,
            name,
            path,
            dir: self.dir.clone(),
            len,
            written: 0,
            reserved: None,
            durable: self.durable,
            keep: false,
            written_back: 0,
            writing_back: Arc::new(AtomicBool::new(false)),
            jobs: self.jobs.clone(),
        };
        // Dropped on failure, the upload removes its file.
        match upload.allocate() {
            Ok(true) => {}
            Ok(false) => {
                self.reserved.fetch_add(len, Ordering::Relaxed);
                upload.reserved = Some(Arc::clone(&self.reserved));
            }
            Err(source)
                if matches!(
                    source.kind(),
                    io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
                ) =>
            {
                return Err(StoreError::NoSpace { len, available });
            }
            Err(source) => return Err(error(source)),
        }
        Ok(upload)
    }

    /// Opens the content of a stored message for reading.
    pub fn open_content(&self, name: &str) -> Result<File, StoreError> {
        let path = self.path(name)?;
        File::open(&path).map_err(|source| StoreError::File { path, source })
    }

    /// Removes the content of a deleted message, in the background; a failure only leaves
    /// a file that the next start-up removes.
    pub fn remove(&self, name: &str) {
        match self.path(name) {
            Ok(path) => self.jobs.remove(path),
            Err(error) => log::warn!("{error}"),
        }
    }

    /// A stored name as a path inside the folder; a name that is not a plain file name (from a
    /// tampered database) is refused rather than followed elsewhere.
    fn path(&self, name: &str) -> Result<PathBuf, StoreError> {
        let plain = Path::new(name).file_name().is_some_and(|file| file == name);
        if plain {
            Ok(self.dir.join(name))
        } else {
            Err(StoreError::Corrupt("spool file name"))
        }
    }

    /// Brings the folder in line with the rows that name its files (`name → size`): removes
    /// files no row names (uploads cut short by a crash, contents whose removal was cut
    /// short) and files of the wrong size, and returns the names whose file is missing or had
    /// the wrong size.
    pub fn recover(&self, referenced: &HashMap<String, u64>) -> Result<Vec<String>, StoreError> {
        let error = |source| StoreError::File {
            path: self.dir.clone(),
            source,
        };
        let mut present = HashMap::new();
        for entry in fs::read_dir(&self.dir).map_err(error)? {
            let entry = entry.map_err(error)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if referenced.contains_key(&name) {
                present.insert(name, entry.metadata().map_err(error)?.len());
            } else {
                log::info!("removing unreferenced spool file {name}");
                fs::remove_file(entry.path()).map_err(error)?;
            }
        }
        let broken: Vec<String> = referenced
            .iter()
            .filter(|(name, size)| present.get(*name) != Some(*size))
            .map(|(name, _)| name.clone())
            .collect();
        for name in broken.iter().filter(|name| present.contains_key(*name)) {
            fs::remove_file(self.dir.join(name)).map_err(error)?;
        }
        Ok(broken)
    }
}

impl ContentStore for Spool {
    fn begin_content(&mut self, len: u64) -> Result<ContentSink, StoreError> {
        self.start(len).map(ContentSink::new)
    }
}

/// A content being written to its spool file. Dropped before its message row commits, it
/// removes the file: an interrupted upload leaves nothing behind.
pub struct Upload {
    file: File,
    name: String,
    path: PathBuf,
    dir: PathBuf,
    len: u64,
    written: u64,
    /// The spool's count of announced bytes, when this upload's are in it (its blocks could
    /// not be allocated up front).
    reserved: Option<Arc<AtomicU64>>,
    durable: bool,
    keep: bool,
    /// Where the last early writeback ended.
    written_back: u64,
    /// An early writeback is running.
    writing_back: Arc<AtomicBool>,
    jobs: SpoolJobs,
}

impl Upload {
    /// Allocates the content's blocks before it arrives: another writer on the disk cannot
    /// then make the upload fail half-way, and the writes skip allocating blocks. Returns
    /// false on a file system that cannot allocate ahead (no fallocate).
    fn allocate(&self) -> io::Result<bool> {
        if self.len == 0 {
            return Ok(true);
        }
        match fs4::fs_std::FileExt::allocate(&self.file, self.len) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::Unsupported => Ok(false),
            Err(error) => Err(error),
        }
    }

    pub fn remaining(&self) -> u64 {
        self.len - self.written
    }

    fn unreserve(&self, len: u64) {
        if let Some(reserved) = &self.reserved {
            reserved.fetch_sub(len, Ordering::Relaxed);
        }
    }
}

impl PendingContent for Upload {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        self.unreserve(bytes.len() as u64);
        Ok(())
    }

    /// Starts flushing what has arrived on the `spool-writeback` worker while the rest
    /// arrives, once `step` bytes have arrived since the last start. Each writeback delays the
    /// database's log flushes by about the time it takes, hence the caller's step.
    fn write_back_early(&mut self, step: u64) {
        if !self.durable
            || self.written - self.written_back < step
            || self.writing_back.swap(true, Ordering::AcqRel)
        {
            return;
        }
        self.written_back = self.written;
        let queued = self.file.try_clone().is_ok_and(|file| {
            let running = Arc::clone(&self.writing_back);
            self.jobs
                .write_back
                .send(WriteBack { file, running })
                .is_ok()
        });
        if !queued {
            self.writing_back.store(false, Ordering::Release);
        }
    }

    /// Makes the content durable before its row is committed (with durability full): the
    /// file's data, then its directory entry.
    fn make_durable(&mut self) -> io::Result<()> {
        if self.durable {
            self.file.sync_data()?;
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }

    /// The file's name in the spool folder.
    fn key(&self) -> &str {
        &self.name
    }

    fn len(&self) -> u64 {
        self.len
    }

    /// The row naming this file has committed: the file now belongs to the message.
    fn keep(mut self: Box<Self>) {
        self.keep = true;
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        self.unreserve(self.remaining());
        if !self.keep {
            self.jobs.remove(mem::take(&mut self.path));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::eventually;

    fn spool(min_free: u64) -> (tempfile::TempDir, Spool) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("db"), min_free, true).unwrap();
        (dir, spool)
    }

    #[test]
    fn an_upload_dropped_before_it_is_kept_leaves_no_file() {
        let (_dir, spool) = spool(0);
        let mut upload = spool.start(10).unwrap();
        upload.write(b"hello").unwrap();
        assert_eq!(upload.remaining(), 5);
        // Allocated up front where the file system can (as the test folder's can), counted
        // in the spool's reservations where it cannot.
        let announced = if upload.reserved.is_some() { 5 } else { 0 };
        assert_eq!(spool.reserved.load(Ordering::Relaxed), announced);
        assert!(upload.reserved.is_some() || fs::metadata(&upload.path).unwrap().len() == 10);
        drop(upload);
        assert_eq!(spool.reserved.load(Ordering::Relaxed), 0);
        eventually("the file is removed", || {
            fs::read_dir(spool.dir()).unwrap().count() == 0
        });
    }

    #[test]
    fn a_kept_upload_is_readable_and_removable() {
        let (_dir, spool) = spool(0);
        let mut upload = spool.start(5).unwrap();
        upload.write(b"hello").unwrap();
        upload.make_durable().unwrap();
        let name = upload.key().to_owned();
        Box::new(upload).keep();
        let content = io::read_to_string(spool.open_content(&name).unwrap()).unwrap();
        assert_eq!(content, "hello");
        spool.remove(&name);
        eventually("the file is removed", || spool.open_content(&name).is_err());
    }

    #[test]
    fn early_writeback_starts_once_a_chunk_has_arrived_and_only_when_durable() {
        let (dir, spool) = spool(0);
        let step = 64 << 10;
        let chunk = vec![7; step as usize];
        let mut upload = spool.start(3 * step).unwrap();
        upload.write(&chunk[..1000]).unwrap();
        upload.write_back_early(step);
        assert_eq!(upload.written_back, 0, "less than a step waits");
        upload.write(&chunk).unwrap();
        upload.write_back_early(step);
        assert_eq!(upload.written_back, step + 1000);
        while upload.writing_back.load(Ordering::Acquire) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }

        let not_durable = Spool::open(&dir.path().join("other"), 0, false).unwrap();
        let mut upload = not_durable.start(step).unwrap();
        upload.write(&chunk).unwrap();
        upload.write_back_early(step);
        assert_eq!(upload.written_back, 0);
    }

    #[test]
    fn uploads_that_would_eat_the_free_space_are_refused() {
        let (_dir, spool) = spool(u64::MAX / 2);
        assert!(matches!(spool.start(1), Err(StoreError::NoSpace { .. })));
        assert_eq!(fs::read_dir(spool.dir()).unwrap().count(), 0);
    }

    #[test]
    fn names_that_leave_the_folder_are_refused() {
        let (_dir, spool) = spool(0);
        for name in ["../db", "/etc/passwd", "a/b", ""] {
            assert!(spool.open_content(name).is_err(), "{name}");
        }
    }

    #[test]
    fn recovery_removes_strays_and_reports_broken_contents() {
        let (_dir, spool) = spool(0);
        fs::write(spool.dir().join("stray"), b"x").unwrap();
        fs::write(spool.dir().join("good"), b"abc").unwrap();
        fs::write(spool.dir().join("short"), b"a").unwrap();
        let referenced = HashMap::from([
            ("good".to_owned(), 3),
            ("short".to_owned(), 3),
            ("missing".to_owned(), 1),
        ]);
        let mut broken = spool.recover(&referenced).unwrap();
        broken.sort();
        assert_eq!(broken, vec!["missing".to_owned(), "short".to_owned()]);
        assert!(!spool.dir().join("stray").exists());
        assert!(!spool.dir().join("short").exists());
        assert!(spool.dir().join("good").exists());
    }
}
