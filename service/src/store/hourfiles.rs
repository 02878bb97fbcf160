//! The naming, listing and creation of the history's append-only hourly
//! files, shared by the raw rounds' ([`super::segment`]) and the rollups'
//! ([`super::rollup_files`]): `<prefix>-<span start, Unix ms>-<n>.seg`
//! (a span is an hour, or a day for hour rollups), where `n` counts the
//! files of that span, one per process (and one more
//! after a failed append), so no file is ever appended to by two writers.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// One kind of hourly file: the prefix of its names.
#[derive(Clone, Copy, Debug)]
pub struct HourFiles(pub &'static str);

/// Where an I/O error happened: the file or directory it names.
pub type PathError = (PathBuf, io::Error);

impl HourFiles {
    /// The name of the `n`th file of `hour_ms`.
    pub fn name(self, hour_ms: u64, n: u32) -> String {
        format!("{}-{hour_ms:013}-{n:03}.seg", self.0)
    }

    /// `(hour, n)` of a file name of this kind.
    pub fn parse(self, name: &str) -> Option<(u64, u32)> {
        let rest = name.strip_prefix(self.0)?.strip_prefix('-')?;
        let (hour, n) = rest.strip_suffix(".seg")?.split_once('-')?;
        Some((hour.parse().ok()?, n.parse().ok()?))
    }

    /// Every file of this kind in `dir`, oldest hour first, then in the order
    /// they were written. A missing directory has none.
    pub fn list(self, dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry?;
            if let Some((hour, n)) = entry.file_name().to_str().and_then(|s| self.parse(s)) {
                files.push((hour, n, entry.path()));
            }
        }
        files.sort();
        Ok(files.into_iter().map(|(h, _, p)| (h, p)).collect())
    }

    /// Bytes the files of this kind in `dir` take.
    pub fn size(self, dir: &Path) -> Result<u64, PathError> {
        let mut total = 0;
        for (_, path) in self.list(dir).map_err(|e| (dir.to_path_buf(), e))? {
            total += fs::metadata(&path).map_err(|e| (path, e))?.len();
        }
        Ok(total)
    }

    /// A new, empty file for `hour` in `dir`, numbered after any earlier one
    /// of that hour, opened for appending; its name is synced so that it
    /// survives a power cut.
    pub fn create(self, dir: &Path, hour: u64) -> Result<(File, PathBuf), PathError> {
        let next = self
            .list(dir)
            .map_err(|e| (dir.to_path_buf(), e))?
            .iter()
            .filter(|(h, _)| *h == hour)
            .filter_map(|(_, p)| p.file_name()?.to_str().and_then(|s| self.parse(s)))
            .map(|(_, n)| n + 1)
            .max()
            .unwrap_or(0);
        let path = dir.join(self.name(hour, next));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| (path.clone(), e))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| (dir.to_path_buf(), e))?;
        Ok((file, path))
    }
}
