//! Files the pipeline writes: whole or not at all.
//!
//! Every output goes through [`write_atomic`]: a uniquely named temporary file in the target's
//! folder, written, flushed to disk (`fsync`), renamed over the target, and the folder flushed,
//! so that a kill or a power cut leaves the old file or the new one, never a mix. A write that
//! fails (a full disk) deletes its temporary file; one killed outright leaves it behind, and
//! [`clean_stale`] removes such leftovers when a run starts again.

use anyhow::Context;
use std::io::Write;
use std::path::Path;

/// Names of temporary files start with this and end with [`TEMP_SUFFIX`]: unique per write
/// (two outputs in one folder never share one), and recognisable as ours to clean.
const TEMP_PREFIX: &str = ".dim-edge-";
const TEMP_SUFFIX: &str = ".tmp";

/// Writes `bytes` to `path` atomically and durably (see the module doc); the folder is created
/// when missing.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(TEMP_PREFIX).suffix(TEMP_SUFFIX);
    // A temporary file is private (0600) by default; the output is an ordinary file, created
    // like `std::fs::write` creates one (0666 less the umask).
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder.tempfile_in(dir).with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    // On error `tmp` is dropped here, which deletes it: a full disk keeps no partial file.
    tmp.write_all(bytes).and_then(|()| tmp.as_file().sync_all()).with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path).map_err(|e| e.error).with_context(|| format!("cannot write {}", path.display()))?;
    sync_dir(dir);
    Ok(())
}

/// Flushes a folder's entries (a rename in it) to disk. Best effort: some systems cannot open
/// a folder as a file, and there the rename is as durable as they make it.
pub fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Removes the temporary files a killed [`write_atomic`] left in `dir`; returns how many.
/// Call it where one process owns the folder (a run's output folder when `fit` starts).
pub fn clean_stale(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(TEMP_PREFIX) && n.ends_with(TEMP_SUFFIX)))
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).collect();
        v.sort();
        v
    }

    #[test]
    fn writes_whole_files_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("y.csv"), dir.path().join("y.npy"));
        write_atomic(&a, b"first").unwrap();
        write_atomic(&b, b"sibling").unwrap();
        write_atomic(&a, b"second").unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"second");
        assert_eq!(std::fs::read(&b).unwrap(), b"sibling");
        assert_eq!(names(dir.path()), ["y.csv", "y.npy"]);
        // Ordinary permissions, as `std::fs::write` gives (not a temporary file's 0600).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let plain = dir.path().join("plain");
            std::fs::write(&plain, b"").unwrap();
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode();
            assert_eq!(mode(&a), mode(&plain));
            std::fs::remove_file(plain).unwrap();
        }
        // A folder that does not exist yet is made.
        write_atomic(&dir.path().join("sub/z.json"), b"{}").unwrap();
        assert_eq!(std::fs::read(dir.path().join("sub/z.json")).unwrap(), b"{}");
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("report.json");
        write_atomic(&target, b"old").unwrap();
        // The target is a folder now: the rename fails after the temporary file was written.
        std::fs::remove_file(&target).unwrap();
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), b"x").unwrap();
        assert!(write_atomic(&target, b"new").is_err());
        assert_eq!(names(dir.path()), ["report.json"]);
        assert_eq!(names(&target), ["keep"]);
    }

    #[test]
    fn clean_stale_removes_only_our_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        for n in [".dim-edge-abc123.tmp", ".dim-edge-x.tmp", "metrics.jsonl", ".other.tmp", "notes.tmp"] {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        assert_eq!(clean_stale(dir.path()), 2);
        assert_eq!(names(dir.path()), [".other.tmp", "metrics.jsonl", "notes.tmp"]);
        assert_eq!(clean_stale(&dir.path().join("missing")), 0);
    }
}
