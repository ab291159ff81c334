//! Writing a file so that it is never seen half-written: the content goes to a temporary file
//! next to the target (same directory, so the rename cannot cross file systems), is flushed to
//! disk, and is renamed over the target. On any failure the temporary file is removed and the
//! target is left as it was. One helper for every file the project writes that a later run reads
//! (models, tensors, pad files, audit reports).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Calls `write` with a fresh temporary path next to `path`, then flushes that file and renames
/// it over `path`. `io` turns an I/O error at `(path, error)` into the caller's error type.
pub fn write_with<T, E>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<T, E>,
    io: impl Fn(&Path, std::io::Error) -> E,
) -> Result<T, E> {
    let Some(name) = path.file_name() else {
        return Err(io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
        ));
    };
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut tmp = Remove(Some(path.with_file_name(tmp_name)));
    let at = tmp.0.clone().unwrap_or_default();
    let out = write(&at)?;
    std::fs::File::open(&at)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(&at, e))?;
    std::fs::rename(&at, path).map_err(|e| io(path, e))?;
    // Renamed into place: nothing to remove.
    tmp.0 = None;
    Ok(out)
}

/// Writes `bytes` to `path` atomically (see `write_with`).
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_with(path, |p| std::fs::write(p, bytes), |_, e| e)
}

/// Removes the temporary file unless the write went through (then it holds `None`).
struct Remove(Option<PathBuf>);

impl Drop for Remove {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            // Best effort: the write's own error is what the caller sees.
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("origami-atomic-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_write_replaces_the_file_and_leaves_no_temporary() {
        let d = dir("ok");
        let p = d.join("out.bin");
        std::fs::write(&p, b"old").unwrap();
        write(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_removes_the_temporary() {
        let d = dir("fail");
        let p = d.join("out.bin");
        std::fs::write(&p, b"old").unwrap();
        let r: Result<(), std::io::Error> = write_with(
            &p,
            |tmp| {
                std::fs::write(tmp, b"half")?;
                Err(std::io::Error::other("disk full"))
            },
            |_, e| e,
        );
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
