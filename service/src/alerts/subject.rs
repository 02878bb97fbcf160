//! What an alert is about: a `[[target]]` (its destination) or a `[[peer]]`
//! (a STAMP link). One string key names either, everywhere alerts are keyed
//! (the outbox, delivery lanes, webhook filters, the `target.name` of an
//! event): a target by its name, a peer by `peer:NAME`, the key the history
//! store already uses for peers. Target names cannot contain `:`, so the two
//! never collide, and keys stored before peers had alerts read as targets.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::{InvalidTargetId, TargetId};

/// Which kind of subject an alert is about, as events carry it
/// (`target.subject`); events stored before peers had alerts are targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    #[default]
    Target,
    Peer,
    /// The service itself: one of its components (the history store, the
    /// alert outbox), keyed `service:COMPONENT`.
    Service,
}

impl SubjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::Target => "target",
            SubjectKind::Peer => "peer",
            SubjectKind::Service => "service",
        }
    }
}

impl fmt::Display for SubjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alert subject. Serialised as its key (`NAME` or `peer:NAME`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    Target(TargetId),
    Peer(TargetId),
    /// A component of the service (`store`, `outbox`): see [`SubjectKind::Service`].
    Service(TargetId),
}

/// The prefix of a peer's key.
pub const PEER_PREFIX: &str = "peer:";
/// The prefix of a service component's key. Target and peer names cannot
/// hold a `:`, so no key is ambiguous.
pub const SERVICE_PREFIX: &str = "service:";

/// A key that names neither a target nor a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid alert subject {key:?}: {source}")]
pub struct InvalidSubject {
    pub key: String,
    #[source]
    pub source: InvalidTargetId,
}

impl Subject {
    /// Reads a key: `peer:NAME` is a peer, `service:NAME` a component of
    /// the service, anything else a target name.
    pub fn parse(key: &str) -> Result<Subject, InvalidSubject> {
        let invalid = |source| InvalidSubject {
            key: key.to_owned(),
            source,
        };
        if let Some(name) = key.strip_prefix(PEER_PREFIX) {
            return TargetId::new(name).map(Subject::Peer).map_err(invalid);
        }
        if let Some(name) = key.strip_prefix(SERVICE_PREFIX) {
            return TargetId::new(name).map(Subject::Service).map_err(invalid);
        }
        TargetId::new(key).map(Subject::Target).map_err(invalid)
    }

    /// The subject of a service component's alerts (`service:store`).
    pub fn service(component: &str) -> Subject {
        Subject::Service(TargetId::new(component).expect("component names are valid names"))
    }

    pub fn kind(&self) -> SubjectKind {
        match self {
            Subject::Target(_) => SubjectKind::Target,
            Subject::Peer(_) => SubjectKind::Peer,
            Subject::Service(_) => SubjectKind::Service,
        }
    }

    /// The configured name (without the `peer:` or `service:` prefix).
    pub fn name(&self) -> &TargetId {
        match self {
            Subject::Target(name) | Subject::Peer(name) | Subject::Service(name) => name,
        }
    }

    /// The key: the name of a target, `peer:NAME` of a peer.
    pub fn key(&self) -> String {
        self.to_string()
    }
}

impl From<TargetId> for Subject {
    fn from(id: TargetId) -> Subject {
        Subject::Target(id)
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Target(name) => f.write_str(name.as_str()),
            Subject::Peer(name) => write!(f, "{PEER_PREFIX}{name}"),
            Subject::Service(name) => write!(f, "{SERVICE_PREFIX}{name}"),
        }
    }
}

impl Serialize for Subject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Subject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Subject, D::Error> {
        let key = String::deserialize(deserializer)?;
        Subject::parse(&key).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_tell_peers_from_targets_and_round_trip() {
        let target = Subject::parse("gw").unwrap();
        let peer = Subject::parse("peer:gw").unwrap();
        assert_eq!(target, Subject::Target(TargetId::new("gw").unwrap()));
        assert_eq!(peer, Subject::Peer(TargetId::new("gw").unwrap()));
        assert_ne!(target, peer, "a peer and a target of one name differ");
        assert_eq!(
            (target.kind(), peer.kind()),
            (SubjectKind::Target, SubjectKind::Peer)
        );
        assert_eq!(peer.name().as_str(), "gw");
        assert_eq!(peer.key(), "peer:gw");
        assert_eq!(serde_json::to_value(&peer).unwrap(), "peer:gw");
        let back: Subject = serde_json::from_value(serde_json::json!("peer:gw")).unwrap();
        assert_eq!(back, peer);
        let store = Subject::parse("service:store").unwrap();
        assert_eq!(store, Subject::service("store"));
        assert_eq!(store.kind(), SubjectKind::Service);
        assert_eq!(store.key(), "service:store");
        // A target name stored before peers had alerts still reads.
        let old: Subject = serde_json::from_value(serde_json::json!("edge-1")).unwrap();
        assert_eq!(old.kind(), SubjectKind::Target);
    }

    #[test]
    fn malformed_keys_are_refused() {
        for key in [
            "",
            "peer:",
            "peer:a:b",
            "a:b",
            "peer: x",
            "service:",
            "service:a:b",
        ] {
            let err = Subject::parse(key).expect_err(key);
            assert_eq!(err.key, key);
        }
        assert!(serde_json::from_value::<Subject>(serde_json::json!("x y")).is_err());
    }
}
