//! `[[peer]]`s as the daemon runs them: one STAMP session each (see
//! docs/peer.md), and what a reload changes about them. Peers are matched by
//! name, so editing one leaves the others' sessions running.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use ipnet::IpNet;

use crate::model::TargetId;
use crate::peer::{AllowList, ClockTrust, RateLimits, ReflectorConfig, SenderConfig, Transport};

/// `[reflector]`, resolved: where the daemon's STAMP reflector listens, whom
/// it serves and how fast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReflectorSettings {
    /// Specific addresses with ports (862 when written without one).
    pub listen: Vec<SocketAddr>,
    /// Allowed source prefixes; empty allows anyone who can reach `listen`.
    pub allow: Vec<IpNet>,
    pub per_source_pps: NonZeroU32,
    pub global_pps: NonZeroU32,
    /// Also serve STAMP over TCP on the same addresses.
    pub tcp: bool,
}

impl ReflectorSettings {
    pub fn reflector_config(&self) -> ReflectorConfig {
        let mut config = ReflectorConfig::new(self.listen.clone());
        if !self.allow.is_empty() {
            config.allow = AllowList::Prefixes(self.allow.clone());
        }
        // Bursts of a tenth of a second, as the built-in defaults.
        let burst = |pps: NonZeroU32| NonZeroU32::new((pps.get() / 10).max(1)).expect("at least 1");
        config.limits = RateLimits {
            per_source_pps: self.per_source_pps,
            per_source_burst: burst(self.per_source_pps),
            global_pps: self.global_pps,
            global_burst: burst(self.global_pps),
        };
        config.tcp = self.tcp;
        config
    }
}

/// How a peer's probes travel.
pub type PeerMode = Transport;

/// One `[[peer]]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Unique among peers; the same rules as target names.
    pub name: TargetId,
    pub address: IpAddr,
    pub port: u16,
    pub mode: PeerMode,
    pub label: Option<String>,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Whole IP packet, headers included.
    pub packet_size: u16,
    pub clock: ClockTrust,
    /// A paused peer has no session.
    pub paused: bool,
}

impl PeerConfig {
    /// The reflector's socket address.
    pub fn reflector(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }

    /// What the label shows: the label, else the name.
    pub fn display_name(&self) -> &str {
        self.label.as_deref().unwrap_or(self.name.as_str())
    }

    /// The session this peer runs (until stopped).
    pub fn sender_config(&self) -> SenderConfig {
        let mut config = SenderConfig::new(self.reflector());
        config.transport = self.mode;
        config.interval = self.interval;
        config.timeout = self.timeout;
        config.packet_size = usize::from(self.packet_size);
        config.clock = self.clock;
        config
    }

    /// True when the running session must be replaced to apply `new`
    /// (anything but the description).
    pub fn needs_new_session(&self, new: &PeerConfig) -> bool {
        self.reflector() != new.reflector()
            || self.mode != new.mode
            || self.interval != new.interval
            || self.timeout != new.timeout
            || self.packet_size != new.packet_size
            || self.clock != new.clock
    }
}

/// What a reload changes about the peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerDiff {
    /// New names, in the new file's order.
    pub added: Vec<TargetId>,
    /// Names no longer in the file.
    pub removed: Vec<TargetId>,
    /// Kept peers whose settings changed (pausing included).
    pub changed: Vec<PeerChange>,
}

/// One kept peer whose settings changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerChange {
    pub name: TargetId,
    /// The session is stopped and started again (or just stopped, if paused).
    pub restart: bool,
}

impl PeerDiff {
    pub fn between(old: &[PeerConfig], new: &[PeerConfig]) -> PeerDiff {
        let find = |list: &[PeerConfig], name: &TargetId| -> Option<PeerConfig> {
            list.iter().find(|p| &p.name == name).cloned()
        };
        let mut diff = PeerDiff {
            removed: old
                .iter()
                .filter(|p| find(new, &p.name).is_none())
                .map(|p| p.name.clone())
                .collect(),
            ..PeerDiff::default()
        };
        for peer in new {
            match find(old, &peer.name) {
                None => diff.added.push(peer.name.clone()),
                Some(before) if before != *peer => diff.changed.push(PeerChange {
                    name: peer.name.clone(),
                    restart: before.needs_new_session(peer) || before.paused != peer.paused,
                }),
                Some(_) => {}
            }
        }
        diff
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;

    const BASE: &str = "[defaults]\ninterval = \"500ms\"\ntimeout = \"3s\"\n";

    fn parse(peers: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(&format!("{BASE}{peers}"), "hopwatch.toml")
    }

    #[test]
    fn peers_take_defaults_and_override_them() {
        let config = parse(
            "[[peer]]\nname = \"b\"\naddress = \"198.18.2.2\"\n\n\
             [[peer]]\nname = \"c\"\naddress = \"2001:db8::2\"\nport = 4862\nmode = \"tcp\"\n\
             interval = \"1ms\"\npacket_size = 200\nclock = \"shared\"\nlabel = \"C\"\n\
             tags = [\"wan\"]\npaused = true\n",
        )
        .expect("valid");
        let b = &config.peers[0];
        assert_eq!(b.reflector(), "198.18.2.2:862".parse().unwrap());
        assert_eq!(b.mode, PeerMode::Udp);
        assert_eq!(b.interval, Duration::from_millis(500), "from [defaults]");
        assert_eq!(b.timeout, Duration::from_secs(3), "from [defaults]");
        // IPv4 + UDP + the 44-byte STAMP packet.
        assert_eq!(b.packet_size, 72);
        assert_eq!(b.clock, ClockTrust::FromSyncState);
        let c = &config.peers[1];
        assert_eq!(c.reflector(), "[2001:db8::2]:4862".parse().unwrap());
        assert_eq!(c.mode, PeerMode::Tcp);
        assert_eq!(c.interval, Duration::from_millis(1));
        assert_eq!((c.packet_size, c.paused), (200, true));
        assert_eq!(c.clock, ClockTrust::SharedClock);
        assert_eq!(c.display_name(), "C");
        assert_eq!(c.tags, ["wan"]);
        let sender = c.sender_config();
        assert_eq!(sender.packet_size, 200);
        assert_eq!(sender.transport, Transport::Tcp);
    }

    #[test]
    fn bad_peers_are_reported_with_line_and_key() {
        let cases = [
            (
                "[[peer]]\nname = \"b\"\naddres = \"198.18.2.2\"\n",
                "hopwatch.toml:6: unknown key \"addres\" in peer \"b\"",
            ),
            (
                "[[peer]]\nname = \"b\"\naddress = \"gw.example\"\n",
                "hopwatch.toml:6:",
            ),
            (
                "[[peer]]\nname = \"b\"\naddress = \"198.18.2.2\"\ninterval = \"500us\"\n",
                "hopwatch.toml:7:",
            ),
            (
                "[[peer]]\nname = \"b\"\naddress = \"198.18.2.2\"\nmode = \"sctp\"\n",
                "hopwatch.toml:7:",
            ),
            (
                "[[peer]]\nname = \"b\"\naddress = \"198.18.2.2\"\npacket_size = 60\n",
                "hopwatch.toml:7:",
            ),
            (
                "[[peer]]\nname = \"b\"\naddress = \"198.18.2.2\"\n[[peer]]\nname = \"b\"\naddress = \"198.18.2.3\"\n",
                "hopwatch.toml:8:",
            ),
            ("[[peer]]\nname = \"b\"\n", "hopwatch.toml:4:"),
        ];
        for (text, start) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.starts_with(start), "{text:?} gave {err:?}");
        }
        let err = parse("[[peer]]\nname = \"b\"\naddress = \"198.18.2.2\"\nmode = \"sctp\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mode") && err.contains("udp, tcp"), "{err}");
        let err = parse("[[peer]]\nname = \"b\"\naddress = \"gw.example\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("address") && err.contains("IP"), "{err}");
    }

    #[test]
    fn the_reflector_section_is_checked() {
        assert_eq!(parse("").unwrap().reflector, None);
        let config = parse(
            "[reflector]\nlisten = [\"198.18.2.2\", \"[2001:db8::2]:4862\"]\n\
             allow = [\"198.18.0.0/15\", \"2001:db8::1\"]\nper_source_pps = 100\ntcp = false\n",
        )
        .unwrap();
        let r = config.reflector.expect("configured");
        assert_eq!(
            r.listen,
            [
                "198.18.2.2:862".parse().unwrap(),
                "[2001:db8::2]:4862".parse().unwrap()
            ]
        );
        assert_eq!(r.allow.len(), 2);
        let built = r.reflector_config();
        assert!(built.allow.allows("198.19.1.1".parse().unwrap()));
        assert!(!built.allow.allows("192.0.2.1".parse().unwrap()));
        assert_eq!(built.limits.per_source_pps.get(), 100);
        assert_eq!(built.limits.per_source_burst.get(), 10);
        assert_eq!(built.limits.global_pps.get(), 50_000);
        assert!(!built.tcp);

        for (text, start) in [
            ("[reflector]\nlisten = [\"0.0.0.0\"]\n", "hopwatch.toml:5:"),
            ("[reflector]\nlisten = [\"nope\"]\n", "hopwatch.toml:5:"),
            (
                "[reflector]\nlisten = [\"198.18.2.2\"]\nallow = [\"10/8x\"]\n",
                "hopwatch.toml:6:",
            ),
            (
                "[reflector]\nlisten = [\"198.18.2.2\"]\nglobal_pps = 0\n",
                "hopwatch.toml:6:",
            ),
            (
                "[reflector]\nlistn = [\"198.18.2.2\"]\n",
                "hopwatch.toml:5: unknown key \"listn\" in [reflector]",
            ),
            ("[reflector]\ntcp = true\n", "hopwatch.toml:4:"),
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.starts_with(start), "{text:?} gave {err:?}");
        }
    }

    #[test]
    fn the_diff_restarts_only_what_changed() {
        let old = parse(
            "[[peer]]\nname = \"a\"\naddress = \"198.18.2.2\"\n\
             [[peer]]\nname = \"b\"\naddress = \"198.18.2.3\"\n\
             [[peer]]\nname = \"c\"\naddress = \"198.18.2.4\"\n",
        )
        .unwrap();
        let new = parse(
            "[[peer]]\nname = \"a\"\naddress = \"198.18.2.2\"\ndescription = \"x\"\n\
             [[peer]]\nname = \"b\"\naddress = \"198.18.2.3\"\ninterval = \"5ms\"\n\
             [[peer]]\nname = \"d\"\naddress = \"198.18.2.5\"\n",
        )
        .unwrap();
        let diff = PeerDiff::between(&old.peers, &new.peers);
        let name = |n: &str| TargetId::new(n).unwrap();
        assert_eq!(diff.added, [name("d")]);
        assert_eq!(diff.removed, [name("c")]);
        assert_eq!(
            diff.changed,
            [
                PeerChange {
                    name: name("a"),
                    restart: false
                },
                PeerChange {
                    name: name("b"),
                    restart: true
                },
            ]
        );
        assert!(PeerDiff::between(&new.peers, &new.peers).is_empty());
    }
}

#[cfg(test)]
mod docs {
    use std::path::Path;

    #[test]
    fn every_peer_key_is_documented() {
        let docs = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"),
        )
        .expect("docs/configuration.md");
        let heading = "## `[[peer]]`";
        let start = docs.find(heading).expect("a [[peer]] section");
        let section = &docs[start..];
        let end = section[heading.len()..]
            .find("\n## ")
            .map_or(section.len(), |e| e + heading.len());
        for key in super::super::raw::keys_of::<super::super::raw::RawPeer>() {
            assert!(
                section[..end].contains(&format!("| `{key}` |")),
                "[[peer]] lacks `{key}`"
            );
        }
        let heading = "## `[reflector]`";
        let start = docs.find(heading).expect("a [reflector] section");
        let section = &docs[start..];
        let end = section[heading.len()..]
            .find("\n## ")
            .map_or(section.len(), |e| e + heading.len());
        for key in super::super::raw::keys_of::<super::super::raw::RawReflector>() {
            assert!(
                section[..end].contains(&format!("| `{key}` |")),
                "[reflector] lacks `{key}`"
            );
        }
    }
}
