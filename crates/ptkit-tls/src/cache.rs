//! Private files for the ACME cache: 0700 directories, 0600 files written atomically, and an
//! advisory lock so two processes don't order the same certificate.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions, TryLockError};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Mode of every directory the cache creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the cache writes.
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` (and missing parents) and makes it 0700.
pub(crate) fn private_dir(path: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .map_err(|e| Error::file(path, e))?;
    let meta = fs::metadata(path).map_err(|e| Error::file(path, e))?;
    if meta.permissions().mode() & 0o777 != DIR_MODE {
        fs::set_permissions(path, Permissions::from_mode(DIR_MODE))
            .map_err(|e| Error::file(path, e))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: a 0600 temporary file in the same directory, fsync,
/// rename over `path`, fsync the directory.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path
        .parent()
        .ok_or_else(|| Error::Config(format!("{} has no parent directory", path.display())))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Config(format!("{} has no file name", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::file(path, e));
    }
    Ok(())
}

/// Reads a file, mapping "not found" to `None`.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::file(path, e)),
    }
}

/// An exclusive advisory lock (`flock`) on a file in the cache; released on drop.
#[derive(Debug)]
pub(crate) struct CacheLock {
    _file: File,
}

impl CacheLock {
    /// Waits up to `timeout` for the lock on `path` (created 0600 if missing).
    pub(crate) async fn acquire(path: &Path, timeout: Duration) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(path)
            .map_err(|e| Error::file(path, e))?;
        let deadline = Instant::now() + timeout;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(CacheLock { _file: file }),
                Err(TryLockError::WouldBlock) => {
                    if Instant::now() >= deadline {
                        return Err(Error::LockTimeout(PathBuf::from(path)));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(TryLockError::Error(e)) => return Err(Error::file(path, e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn modes_are_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        // An existing, looser directory is tightened.
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);

        let file = dir.join("secret.pem");
        write_private(&file, b"one").unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(fs::read(&file).unwrap(), b"one");
        // Replacing keeps 0600 and leaves no temporary files behind.
        fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        write_private(&file, b"two").unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(fs::read(&file).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret.pem")]);
        assert_eq!(read_optional(&dir.join("nope")).unwrap(), None);
    }

    #[tokio::test]
    async fn lock_excludes_a_second_holder() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("lock");
        let first = CacheLock::acquire(&path, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(mode(&path), 0o600);
        let err = CacheLock::acquire(&path, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "lock_timeout");
        drop(first);
        CacheLock::acquire(&path, Duration::from_secs(1))
            .await
            .unwrap();
    }
}
