//! Saving the UI's and API's writes (pause, resume, add, remove a target) in
//! the config file itself, so they survive a restart and the file stays the
//! one source of truth.
//!
//! Each write reads the file, edits it with `toml_edit` (comments, order and
//! layout elsewhere are kept), validates the whole result as a config, and
//! replaces the file atomically: a temporary file in the same directory with
//! the original's permissions, fsynced, renamed over it, then the directory
//! fsynced. A symlinked config is written through to its target. The caller
//! then applies the returned config as a reload.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use hopwatch_web::dto::{EntryError, NewTarget};
use hopwatch_web::ControlError;
use toml_edit::{value, Array, ArrayOfTables, DocumentMut, Item, Table};

use crate::config::{Config, ConfigError};
use crate::model::TargetId;

/// A config file and the edits the web layer may make to it.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
}

/// Why an edited config was not saved.
enum SaveError {
    /// The edit made the config invalid.
    Invalid(ConfigError),
    Write(std::io::Error),
}

/// The file as read: its parsed document and its validated config.
struct Loaded {
    doc: DocumentMut,
    config: Config,
}

fn persist_error(path: &Path, source: impl Into<hopwatch_web::model::Source>) -> ControlError {
    ControlError::Persist {
        path: path.to_owned(),
        source: source.into(),
    }
}

/// A config error without its `file:line: ` prefix: the client named a field,
/// not a line of a file it has never seen.
fn reason(err: &ConfigError) -> String {
    let text = err.to_string();
    match err.line() {
        Some(line) => {
            let prefix = format!("{}:{line}: ", err.path().display());
            text.strip_prefix(&prefix).unwrap_or(&text).to_owned()
        }
        None => text,
    }
}

impl ConfigFile {
    pub fn new(path: impl Into<PathBuf>) -> ConfigFile {
        ConfigFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&self) -> Result<Loaded, ControlError> {
        let text = fs::read_to_string(&self.path).map_err(|e| persist_error(&self.path, e))?;
        let config = Config::parse(&text, &self.path).map_err(|err| ControlError::Conflict {
            reason: format!(
                "the config file on disk does not validate, so it cannot be changed from here; \
                 fix it first ({err})"
            ),
        })?;
        let doc = text
            .parse::<DocumentMut>()
            .map_err(|err| persist_error(&self.path, err))?;
        Ok(Loaded { doc, config })
    }

    /// The `[[target]]` tables, or a conflict when targets are written some
    /// other way (an inline array) that cannot be edited without rewriting it.
    fn targets(doc: &mut DocumentMut) -> Result<&mut ArrayOfTables, ControlError> {
        if doc.get("target").is_none() {
            doc.insert("target", Item::ArrayOfTables(ArrayOfTables::new()));
        }
        doc.get_mut("target")
            .and_then(Item::as_array_of_tables_mut)
            .ok_or_else(|| ControlError::Conflict {
                reason: "the config file writes its targets as an inline array; \
                         change them there by hand, or use [[target]] tables"
                    .to_owned(),
            })
    }

    fn index_of(tables: &ArrayOfTables, id: &str) -> Option<usize> {
        tables
            .iter()
            .position(|t| t.get("name").and_then(|n| n.as_str()) == Some(id))
    }

    /// Validates the edited document and writes it; returns the new config.
    fn save(&self, doc: &DocumentMut) -> Result<Config, SaveError> {
        let text = doc.to_string();
        let config = Config::parse(&text, &self.path).map_err(SaveError::Invalid)?;
        self.write_atomically(&text).map_err(SaveError::Write)?;
        Ok(config)
    }

    fn write_atomically(&self, text: &str) -> std::io::Result<()> {
        let real = fs::canonicalize(&self.path)?;
        let dir = real.parent().unwrap_or(Path::new("/"));
        let name = real
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "hopwatch.toml".into());
        let temp = dir.join(format!(".{name}.hopwatch-{}.tmp", std::process::id()));
        let permissions = fs::metadata(&real)?.permissions();
        let result = (|| {
            let mut file = fs::File::create(&temp)?;
            file.write_all(text.as_bytes())?;
            file.set_permissions(permissions)?;
            file.sync_all()?;
            fs::rename(&temp, &real)?;
            fs::File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    /// Sets `paused` in the target's table. `Ok(None)` when it already is so.
    pub fn set_paused(&self, id: &str, paused: bool) -> Result<Option<Config>, ControlError> {
        let mut loaded = self.load()?;
        let tid = TargetId::new(id).map_err(|_| ControlError::UnknownTarget { id: id.into() })?;
        let current = loaded
            .config
            .target(&tid)
            .ok_or_else(|| ControlError::UnknownTarget { id: id.into() })?;
        if current.paused == paused {
            return Ok(None);
        }
        let tables = Self::targets(&mut loaded.doc)?;
        let index = Self::index_of(tables, id)
            .ok_or_else(|| ControlError::UnknownTarget { id: id.into() })?;
        let table = tables
            .get_mut(index)
            .ok_or_else(|| ControlError::UnknownTarget { id: id.into() })?;
        // Set even when [defaults] would give the same value: the target's own
        // table says what the UI did.
        table["paused"] = value(paused);
        self.save(&loaded.doc)
            .map(Some)
            .map_err(|err| self.unexpected(err))
    }

    /// The `[[target]]` table of a new target.
    fn target_table(new: &NewTarget) -> Table {
        let mut table = Table::new();
        table["name"] = value(new.name.as_str());
        table["host"] = value(new.host.trim());
        let text = |t: &mut Table, key: &str, v: &Option<String>| {
            if let Some(v) = v {
                t[key] = value(v.trim());
            }
        };
        text(&mut table, "label", &new.label);
        text(&mut table, "description", &new.description);
        if !new.tags.is_empty() {
            let tags: Array = new.tags.iter().map(|t| t.trim()).collect();
            table["tags"] = value(tags);
        }
        text(&mut table, "protocol", &new.protocol);
        if let Some(port) = new.port {
            table["port"] = value(i64::from(port));
        }
        text(&mut table, "interval", &new.interval);
        text(&mut table, "timeout", &new.timeout);
        if let Some(size) = new.packet_size {
            table["packet_size"] = value(i64::from(size));
        }
        if let Some(hops) = new.max_hops {
            table["max_hops"] = value(i64::from(hops));
        }
        if let Some(only) = new.final_hop_only {
            table["final_hop_only"] = value(only);
        }
        if let Some(paused) = new.paused {
            table["paused"] = value(paused);
        }
        table
    }

    /// Whether `new` may be added to the file as loaded: a valid name not
    /// taken yet, and a table that keeps the config valid. The error names
    /// the field.
    fn check_new(loaded: &Loaded, new: &NewTarget) -> Result<(), ControlError> {
        let id = TargetId::new(new.name.clone()).map_err(|err| ControlError::Invalid {
            field: "name".into(),
            reason: err.to_string(),
        })?;
        if loaded.config.target(&id).is_some() {
            return Err(ControlError::TargetExists {
                id: new.name.clone(),
            });
        }
        Ok(())
    }

    /// A config error of a new table, by the field it names.
    fn invalid(err: &ConfigError) -> ControlError {
        ControlError::Invalid {
            field: err.key().unwrap_or("target").to_owned(),
            reason: reason(err),
        }
    }

    /// Appends a `[[target]]` table.
    pub fn add_target(&self, new: &NewTarget) -> Result<Config, ControlError> {
        let mut loaded = self.load()?;
        Self::check_new(&loaded, new)?;
        Self::targets(&mut loaded.doc)?.push(Self::target_table(new));
        self.save(&loaded.doc).map_err(|err| match err {
            // The file validated before the new table: the new table is wrong.
            SaveError::Invalid(err) => Self::invalid(&err),
            other => self.unexpected(other),
        })
    }

    /// Appends a `[[target]]` table for each of `list`, or none: every entry
    /// is first checked alone against the file (each one's errors, by index
    /// and field, in [`ControlError::Entries`]), then all are saved at once.
    pub fn add_targets(&self, list: &[NewTarget]) -> Result<Config, ControlError> {
        let mut loaded = self.load()?;
        let mut errors = Vec::new();
        for (index, new) in list.iter().enumerate() {
            let checked = Self::check_new(&loaded, new).and_then(|()| {
                let mut doc = loaded.doc.clone();
                Self::targets(&mut doc)?.push(Self::target_table(new));
                Config::parse(&doc.to_string(), &self.path)
                    .map(drop)
                    .map_err(|err| Self::invalid(&err))
            });
            let (field, reason) = match checked {
                Ok(()) => continue,
                Err(ControlError::Invalid { field, reason }) => (Some(field), reason),
                Err(err @ ControlError::TargetExists { .. }) => {
                    (Some("name".to_owned()), err.to_string())
                }
                // The file itself (inline targets): not about this entry.
                Err(other) => return Err(other),
            };
            errors.push(EntryError {
                index,
                field,
                reason,
            });
        }
        if !errors.is_empty() {
            return Err(ControlError::Entries { errors });
        }
        let tables = Self::targets(&mut loaded.doc)?;
        for new in list {
            tables.push(Self::target_table(new));
        }
        self.save(&loaded.doc).map_err(|err| match err {
            // Each was valid alone; together they are not (a repeated name).
            SaveError::Invalid(err) => ControlError::Conflict {
                reason: format!(
                    "the targets are valid one by one but not together: {}",
                    reason(&err)
                ),
            },
            other => self.unexpected(other),
        })
    }

    /// Deletes the target's `[[target]]` table.
    pub fn remove_target(&self, id: &str) -> Result<Config, ControlError> {
        let mut loaded = self.load()?;
        let tables = Self::targets(&mut loaded.doc)?;
        let index = Self::index_of(tables, id)
            .ok_or_else(|| ControlError::UnknownTarget { id: id.into() })?;
        tables.remove(index);
        self.save(&loaded.doc).map_err(|err| self.unexpected(err))
    }

    /// An edit that should always validate did not, or the write failed.
    fn unexpected(&self, err: SaveError) -> ControlError {
        match err {
            SaveError::Write(source) => persist_error(&self.path, source),
            SaveError::Invalid(err) => ControlError::Conflict {
                reason: format!("the change would make the config invalid: {}", reason(&err)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"# hopwatch config — comments must survive edits.
[service]
state_dir = "state"

[defaults]
interval = "1s"   # one round a second

# The gateway.
[[target]]
name = "gw"
host = "198.18.0.1"

# The far end.
[[target]]
name = "far"
host = "198.18.100.1"
label = "Far end"
"#;

    fn file(text: &str) -> (tempfile::TempDir, ConfigFile) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hopwatch.toml");
        fs::write(&path, text).unwrap();
        (dir, ConfigFile::new(path))
    }

    fn read(f: &ConfigFile) -> String {
        fs::read_to_string(f.path()).unwrap()
    }

    #[test]
    fn pausing_edits_only_that_table_and_keeps_comments() {
        let (_dir, f) = file(BASE);
        let config = f.set_paused("far", true).unwrap().expect("a change");
        assert!(
            config
                .target(&TargetId::new("far").unwrap())
                .unwrap()
                .paused
        );
        assert!(!config.target(&TargetId::new("gw").unwrap()).unwrap().paused);
        let text = read(&f);
        for kept in [
            "# hopwatch config",
            "# one round a second",
            "# The gateway.",
            "# The far end.",
        ] {
            assert!(text.contains(kept), "lost {kept:?}:\n{text}");
        }
        assert!(
            text.contains("label = \"Far end\"\npaused = true"),
            "{text}"
        );
        // Pausing again changes nothing and does not write.
        assert!(f.set_paused("far", true).unwrap().is_none());
        // Resuming writes `paused = false` in place.
        f.set_paused("far", false).unwrap().unwrap();
        assert!(read(&f).contains("paused = false"));
        assert!(matches!(
            f.set_paused("nope", true),
            Err(ControlError::UnknownTarget { .. })
        ));
    }

    #[test]
    fn adding_appends_a_validated_table_and_removing_deletes_it() {
        let (_dir, f) = file(BASE);
        let new = NewTarget {
            name: "edge".into(),
            host: "198.18.5.2".into(),
            label: Some("Edge \"quoted\"".into()),
            tags: vec!["lab".into(), "new".into()],
            protocol: Some("udp".into()),
            port: Some(33434),
            interval: Some("500ms".into()),
            ..NewTarget::default()
        };
        let config = f.add_target(&new).unwrap();
        let edge = config.target(&TargetId::new("edge").unwrap()).unwrap();
        assert_eq!(edge.label.as_deref(), Some("Edge \"quoted\""));
        assert_eq!(edge.probe.port, 33434);
        assert_eq!(edge.tags, ["lab", "new"]);
        assert!(read(&f).contains("# The far end."));
        assert!(matches!(
            f.add_target(&new),
            Err(ControlError::TargetExists { .. })
        ));

        // Invalid settings are refused by the config's own rules, naming the key.
        let bad = NewTarget {
            name: "bad".into(),
            host: "198.18.5.3".into(),
            interval: Some("5ms".into()),
            ..NewTarget::default()
        };
        match f.add_target(&bad) {
            Err(ControlError::Invalid { field, reason }) => {
                assert_eq!(field, "interval");
                assert!(reason.contains("below the minimum"), "{reason}");
                assert!(!reason.contains("hopwatch.toml:"), "{reason}");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
        assert!(!read(&f).contains("\"bad\""), "nothing written");

        let config = f.remove_target("gw").unwrap();
        assert!(config.target(&TargetId::new("gw").unwrap()).is_none());
        assert_eq!(config.targets.len(), 2);
        assert!(!read(&f).contains("198.18.0.1"));
        assert!(matches!(
            f.remove_target("gw"),
            Err(ControlError::UnknownTarget { .. })
        ));
    }

    #[test]
    fn a_list_is_added_whole_or_not_at_all() {
        let (_dir, f) = file(BASE);
        let target = |name: &str, host: &str| NewTarget {
            name: name.into(),
            host: host.into(),
            ..NewTarget::default()
        };
        let before = read(&f);
        // One bad value, one taken name: each named, nothing written.
        let list = [
            target("a1", "198.18.5.2"),
            NewTarget {
                interval: Some("5ms".into()),
                ..target("a2", "198.18.5.3")
            },
            target("gw", "198.18.5.4"),
            NewTarget {
                port: Some(80),
                ..target("a3", "198.18.5.5")
            },
        ];
        match f.add_targets(&list) {
            Err(ControlError::Entries { errors }) => {
                let found: Vec<(usize, Option<&str>)> = errors
                    .iter()
                    .map(|e| (e.index, e.field.as_deref()))
                    .collect();
                assert_eq!(
                    found,
                    [(1, Some("interval")), (2, Some("name")), (3, Some("port"))],
                    "{errors:?}"
                );
                assert!(errors[0].reason.contains("below the minimum"), "{errors:?}");
                assert!(errors[1].reason.contains("already exists"), "{errors:?}");
                assert!(
                    errors.iter().all(|e| !e.reason.contains("hopwatch.toml:")),
                    "{errors:?}"
                );
            }
            other => panic!("expected Entries, got {other:?}"),
        }
        assert_eq!(read(&f), before, "nothing written");

        // All valid: one write, comments kept.
        let config = f
            .add_targets(&[target("a1", "198.18.5.2"), target("a2", "198.18.5.3")])
            .unwrap();
        assert_eq!(config.targets.len(), 4);
        assert!(config.target(&TargetId::new("a2").unwrap()).is_some());
        assert!(read(&f).contains("# The far end."));
        // Valid alone, not together: the same new name twice.
        match f.add_targets(&[target("b", "198.18.6.2"), target("b", "198.18.6.3")]) {
            Err(ControlError::Conflict { reason }) => {
                assert!(reason.contains("not together"), "{reason}")
            }
            other => panic!("expected Conflict, got {other:?}"),
        }
        assert_eq!(f.add_targets(&[]).unwrap().targets.len(), 4);
    }

    #[test]
    fn a_file_without_targets_gets_its_first_table() {
        let (_dir, f) = file("[service]\nstate_dir = \"s\"\n");
        let config = f
            .add_target(&NewTarget {
                name: "a".into(),
                host: "198.18.0.1".into(),
                ..NewTarget::default()
            })
            .unwrap();
        assert_eq!(config.targets.len(), 1);
        assert!(
            read(&f).contains("[[target]]\nname = \"a\""),
            "{}",
            read(&f)
        );
    }

    #[test]
    fn an_invalid_file_or_inline_targets_are_conflicts_and_left_alone() {
        let (_dir, f) = file("[defaults]\nintervall = \"1s\"\n");
        assert!(matches!(
            f.set_paused("gw", true),
            Err(ControlError::Conflict { .. })
        ));
        assert_eq!(read(&f), "[defaults]\nintervall = \"1s\"\n");
        let inline = "target = [{ name = \"a\", host = \"198.18.0.1\" }]\n";
        let (_dir2, f) = file(inline);
        let err = f.set_paused("a", true).unwrap_err();
        assert!(err.to_string().contains("inline"), "{err}");
        assert_eq!(read(&f), inline);
    }

    #[cfg(unix)]
    #[test]
    fn permissions_and_symlinks_are_kept() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, f) = file(BASE);
        fs::set_permissions(f.path(), fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(f.path(), &link).unwrap();
        let through_link = ConfigFile::new(&link);
        through_link.set_paused("gw", true).unwrap().unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(read(&f).contains("paused = true"));
        let mode = fs::metadata(f.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
