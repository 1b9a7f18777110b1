//! Why a database cannot be opened, in words. SQLite reports a read-only folder or file, a
//! missing folder or a folder in place of the file as "unable to open database file" or
//! "disk I/O error", without the reason; these checks find it after such a failure.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Inaccessible {
    #[error("folder {0} does not exist")]
    MissingFolder(PathBuf),
    #[error("{0} is not a folder")]
    NotAFolder(PathBuf),
    #[error("{0} is a folder")]
    IsAFolder(PathBuf),
    #[error("cannot write {}: {}", path.display(), cause(source))]
    Unwritable { path: PathBuf, source: io::Error },
    #[error("cannot create files in folder {}: {}", path.display(), cause(source))]
    FolderUnwritable { path: PathBuf, source: io::Error },
}

/// An I/O error's cause in plain words.
pub fn cause(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        io::ErrorKind::ReadOnlyFilesystem => "read-only file system".to_owned(),
        io::ErrorKind::StorageFull => "no space left on the device".to_owned(),
        _ => error.to_string(),
    }
}

/// Why the database at `path`, with its spool folder `spool`, cannot be written: `None` if
/// the folders and the file look writable, and the failure lies elsewhere.
pub fn diagnose(path: &Path, spool: &Path) -> Option<Inaccessible> {
    let folder = folder_of(path);
    match fs::metadata(folder) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Some(Inaccessible::MissingFolder(folder.to_owned()))
        }
        Err(source) => return Some(folder_unwritable(folder, source)),
        Ok(metadata) if !metadata.is_dir() => {
            return Some(Inaccessible::NotAFolder(folder.to_owned()))
        }
        Ok(_) => {}
    }
    if let Ok(metadata) = fs::metadata(path) {
        if metadata.is_dir() {
            return Some(Inaccessible::IsAFolder(path.to_owned()));
        }
        if let Err(source) = OpenOptions::new().read(true).write(true).open(path) {
            return Some(Inaccessible::Unwritable {
                path: path.to_owned(),
                source,
            });
        }
    }
    // SQLite creates its log beside the database, and the spool keeps files in its folder.
    if let Some(problem) = probe(folder) {
        return Some(problem);
    }
    match fs::metadata(spool) {
        Ok(metadata) if !metadata.is_dir() => Some(Inaccessible::NotAFolder(spool.to_owned())),
        Ok(_) => probe(spool),
        Err(_) => None,
    }
}

/// The folder holding `path`: `.` for a bare file name.
pub fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Creates and removes a file in `folder`, to learn whether and why that fails.
fn probe(folder: &Path) -> Option<Inaccessible> {
    tempfile::Builder::new()
        .prefix(".messageu-probe")
        .tempfile_in(folder)
        .err()
        .map(|source| folder_unwritable(folder, source))
}

fn folder_unwritable(folder: &Path, source: io::Error) -> Inaccessible {
    Inaccessible::FolderUnwritable {
        path: folder.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_named_in_plain_words() {
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(cause(&denied), "permission denied");
        // EROFS, as open(2) reports it.
        assert_eq!(
            cause(&io::Error::from_raw_os_error(30)),
            "read-only file system"
        );
        let other = io::Error::other("something else");
        assert_eq!(cause(&other), "something else");
        let problem = Inaccessible::FolderUnwritable {
            path: PathBuf::from("/srv/db"),
            source: io::Error::from_raw_os_error(13),
        };
        assert_eq!(
            problem.to_string(),
            "cannot create files in folder /srv/db: permission denied"
        );
    }

    #[test]
    fn a_missing_folder_a_file_for_a_folder_and_a_folder_for_the_file_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("x.spool");
        let missing = dir.path().join("missing");
        assert!(matches!(
            diagnose(&missing.join("x.db"), &spool),
            Some(Inaccessible::MissingFolder(folder)) if folder == missing
        ));
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        assert!(matches!(
            diagnose(&file.join("x.db"), &spool),
            Some(Inaccessible::NotAFolder(folder)) if folder == file
        ));
        assert!(matches!(
            diagnose(dir.path(), &spool),
            Some(Inaccessible::IsAFolder(_))
        ));
        fs::write(&spool, "").unwrap();
        assert!(matches!(
            diagnose(&dir.path().join("x.db"), &spool),
            Some(Inaccessible::NotAFolder(folder)) if folder == spool
        ));
    }

    #[test]
    fn a_writable_place_has_no_diagnosis_and_the_probe_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let spool = dir.path().join("x.db.spool");
        assert!(diagnose(&db, &spool).is_none());
        fs::write(&db, "").unwrap();
        fs::create_dir(&spool).unwrap();
        assert!(diagnose(&db, &spool).is_none());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
        assert_eq!(fs::read_dir(&spool).unwrap().count(), 0);
    }
}
