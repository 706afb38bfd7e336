//! Files re-read while the server runs (the per-tenant overrides, the API tokens): read only
//! when their modification time or size changed, and never half: a file that is empty, or that
//! changed while it was read (a writer still at it), is refused, so the last good one stays in
//! force. Kubernetes ConfigMaps and Secrets swap a symlink atomically; an editor or `echo >`
//! truncates first, which is what these checks catch.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use parking_lot::Mutex;

/// What identifies one version of a file: its modification time and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    modified: SystemTime,
    len: u64,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let meta = std::fs::metadata(path)?;
    Ok(Stamp {
        modified: meta.modified()?,
        len: meta.len(),
    })
}

/// A file and the version of it last taken.
#[derive(Debug)]
pub struct WatchedFile {
    path: PathBuf,
    loaded: Mutex<Option<Stamp>>,
}

impl WatchedFile {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            loaded: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's text if it changed since the last [`WatchedFile::taken`] version; `Ok(None)`
    /// if not. An empty (or whitespace-only) file and one whose size or time changed while it
    /// was read are errors: the caller keeps what it has, and the next check reads again.
    pub fn read_if_changed(&self) -> Result<Option<(String, Stamp)>, String> {
        let before = stamp(&self.path).map_err(|err| err.to_string())?;
        if *self.loaded.lock() == Some(before) {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&self.path).map_err(|err| err.to_string())?;
        let after = stamp(&self.path).map_err(|err| err.to_string())?;
        if after != before || text.len() as u64 != before.len {
            return Err("the file changed while it was read (still being written?)".into());
        }
        if text.trim().is_empty() {
            return Err("the file is empty (half-written?)".into());
        }
        Ok(Some((text, before)))
    }

    /// Marks `stamp` as the version in force.
    pub fn taken(&self, stamp: Stamp) {
        *self.loaded.lock() = Some(stamp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_changed_file_once_and_refuses_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file.yaml");
        std::fs::write(&path, "a: 1\n").unwrap();
        let file = WatchedFile::new(path.clone());
        let (text, stamp) = file.read_if_changed().unwrap().unwrap();
        assert_eq!(text, "a: 1\n");
        file.taken(stamp);
        assert_eq!(file.read_if_changed().unwrap(), None);
        std::fs::write(&path, "  \n").unwrap();
        assert!(file.read_if_changed().unwrap_err().contains("empty"));
        std::fs::write(&path, "a: 22\n").unwrap();
        assert_eq!(file.read_if_changed().unwrap().unwrap().0, "a: 22\n");
        std::fs::remove_file(&path).unwrap();
        assert!(file.read_if_changed().is_err());
    }
}
