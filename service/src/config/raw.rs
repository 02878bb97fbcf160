//! The config file exactly as written: serde structs that mirror the TOML, with
//! every value wrapped in [`Spanned`] so validation can name the line it came from.
//!
//! Nothing here checks meaning; [`super::resolve`] turns these into the typed
//! [`super::Config`]. Values that need parsing (durations, sizes, protocols,
//! addresses) stay strings here so their errors carry our wording and a line.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub service: RawService,
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(default)]
    pub statistics: RawStatistics,
    #[serde(default)]
    pub enrichment: RawEnrichment,
    #[serde(default)]
    pub web: RawWeb,
    #[serde(default)]
    pub defaults: RawProbe,
    #[serde(default)]
    pub target: Vec<Spanned<RawTarget>>,
    #[serde(default)]
    pub alerts: RawAlertRules,
    #[serde(default)]
    pub webhook: Vec<Spanned<RawWebhook>>,
    #[serde(default)]
    pub peer: Vec<Spanned<RawPeer>>,
    pub reflector: Option<Spanned<RawReflector>>,
    #[serde(default)]
    pub remote_write: Vec<Spanned<RawRemoteWrite>>,
}

/// One `[[remote_write]]`: a Prometheus remote-write receiver hopwatch pushes to.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRemoteWrite {
    pub name: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    pub username: Option<Spanned<String>>,
    pub password: Option<Spanned<RawSecret>>,
    pub bearer_token: Option<Spanned<RawSecret>>,
    pub ca_file: Option<Spanned<String>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub labels: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    pub series: Option<Spanned<String>>,
    pub backfill_max_age: Option<Spanned<String>>,
    pub backfill_samples_per_second: Option<Spanned<i64>>,
}

/// `[reflector]`: the daemon's own STAMP Session-Reflector, for peers that
/// measure towards this box.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReflector {
    pub listen: Option<Spanned<Vec<String>>>,
    pub allow: Option<Spanned<Vec<String>>>,
    pub per_source_pps: Option<Spanned<i64>>,
    pub global_pps: Option<Spanned<i64>>,
    pub tcp: Option<Spanned<bool>>,
}

/// One `[[peer]]`: a STAMP session to another hopwatch (or any STAMP reflector).
/// `interval`, `timeout` and `paused` fall back to `[defaults]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPeer {
    pub name: Option<Spanned<String>>,
    pub address: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub mode: Option<Spanned<String>>,
    pub label: Option<Spanned<String>>,
    pub description: Option<Spanned<String>>,
    pub tags: Option<Spanned<Vec<String>>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub packet_size: Option<Spanned<i64>>,
    pub clock: Option<Spanned<String>>,
    pub paused: Option<Spanned<bool>>,
    /// Overrides of `[alerts]` for this peer.
    pub alerts: Option<Spanned<RawPeerAlertRules>>,
}

/// A peer's `alerts` table: the `[alerts]` keys that apply to a link (loss,
/// latency, jitter and the hysteresis); the others are unknown keys here.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPeerAlertRules {
    pub loss_pct: Option<Spanned<f64>>,
    pub latency_ms: Option<Spanned<f64>>,
    pub latency_stat: Option<Spanned<String>>,
    pub jitter_ms: Option<Spanned<f64>>,
    pub raise_rounds: Option<Spanned<i64>>,
    pub clear_rounds: Option<Spanned<i64>>,
    pub clear_ratio: Option<Spanned<f64>>,
}

impl RawPeerAlertRules {
    /// The same keys as an `[alerts]` table, the others unset.
    pub fn rules(&self) -> RawAlertRules {
        RawAlertRules {
            loss_pct: self.loss_pct.clone(),
            latency_ms: self.latency_ms.clone(),
            latency_stat: self.latency_stat.clone(),
            jitter_ms: self.jitter_ms.clone(),
            raise_rounds: self.raise_rounds.clone(),
            clear_rounds: self.clear_rounds.clone(),
            clear_ratio: self.clear_ratio.clone(),
            ..RawAlertRules::default()
        }
    }
}

/// `[service]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub state_dir: Option<Spanned<String>>,
    pub timestamps: Option<Spanned<String>>,
    pub max_probes_per_second: Option<Spanned<i64>>,
    pub source_v4: Option<Spanned<String>>,
    pub source_v6: Option<Spanned<String>>,
    pub interface: Option<Spanned<String>>,
    pub vantage: Option<Spanned<String>>,
}

/// `[storage]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStorage {
    pub flush_interval: Option<Spanned<String>>,
    pub raw_retention: Option<Spanned<String>>,
    pub minute_retention: Option<Spanned<String>>,
    pub hour_retention: Option<Spanned<String>>,
    pub event_retention: Option<Spanned<String>>,
    pub raw_log: Option<Spanned<RawRawLog>>,
}

/// `[storage.raw_log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRawLog {
    pub path: Option<Spanned<String>>,
    pub max_bytes: Option<Spanned<RawSize>>,
    pub keep: Option<Spanned<i64>>,
}

/// `[statistics]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStatistics {
    pub window: Option<Spanned<i64>>,
}

/// `[enrichment]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEnrichment {
    pub reverse_dns: Option<Spanned<bool>>,
    pub dns_timeout: Option<Spanned<String>>,
    pub asn_database: Option<Spanned<String>>,
    pub city_database: Option<Spanned<String>>,
}

/// `[web]`: the status pages, JSON API and /metrics.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWeb {
    pub enabled: Option<Spanned<bool>>,
    pub listen: Option<Spanned<String>>,
    pub read_token: Option<Spanned<String>>,
    pub write_token: Option<Spanned<String>>,
    pub max_body_bytes: Option<Spanned<RawSize>>,
    pub hop_histograms: Option<Spanned<bool>>,
    pub request_timeout: Option<Spanned<String>>,
    pub max_concurrent_reads: Option<Spanned<i64>>,
    pub max_live_streams: Option<Spanned<i64>>,
    pub allowed_hosts: Option<Spanned<Vec<String>>>,
}

/// `[defaults]`: the probe settings every target inherits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProbe {
    pub protocol: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub first_ttl: Option<Spanned<i64>>,
    pub max_hops: Option<Spanned<i64>>,
    pub packet_size: Option<Spanned<i64>>,
    pub paused: Option<Spanned<bool>>,
    pub final_hop_only: Option<Spanned<bool>>,
}

/// One `[[target]]`: its identity and description, then overrides of every
/// `[defaults]` key. The probe keys are repeated rather than `#[serde(flatten)]`ed
/// because flatten turns off `deny_unknown_fields`; a test keeps the two lists equal.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTarget {
    pub name: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub label: Option<Spanned<String>>,
    pub description: Option<Spanned<String>>,
    pub tags: Option<Spanned<Vec<String>>>,
    pub protocol: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub first_ttl: Option<Spanned<i64>>,
    pub max_hops: Option<Spanned<i64>>,
    pub packet_size: Option<Spanned<i64>>,
    pub paused: Option<Spanned<bool>>,
    pub final_hop_only: Option<Spanned<bool>>,
    /// Overrides of `[alerts]` for this target.
    pub alerts: Option<Spanned<RawAlertRules>>,
    /// Opt-in ECMP branch monitoring for this target.
    pub multipath: Option<Spanned<RawMultipath>>,
}

/// A target's `multipath` table: discover its load-balanced branches and
/// probe one flow along each. Present means on.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMultipath {
    pub branches: Option<Spanned<i64>>,
    pub confidence: Option<Spanned<i64>>,
    pub rediscover: Option<Spanned<String>>,
    pub max_probes: Option<Spanned<i64>>,
}

impl RawTarget {
    /// The probe overrides, in the same shape as `[defaults]`.
    pub fn probe(&self) -> RawProbe {
        RawProbe {
            protocol: self.protocol.clone(),
            port: self.port.clone(),
            interval: self.interval.clone(),
            timeout: self.timeout.clone(),
            first_ttl: self.first_ttl.clone(),
            max_hops: self.max_hops.clone(),
            packet_size: self.packet_size.clone(),
            paused: self.paused.clone(),
            final_hop_only: self.final_hop_only.clone(),
        }
    }
}

/// `[alerts]`, and a target's `alerts` table: alert thresholds. Numbers may be
/// written as integers or floats.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAlertRules {
    pub loss_pct: Option<Spanned<f64>>,
    pub latency_ms: Option<Spanned<f64>>,
    pub latency_stat: Option<Spanned<String>>,
    pub jitter_ms: Option<Spanned<f64>>,
    pub branch_latency_ms: Option<Spanned<f64>>,
    pub mos_below: Option<Spanned<f64>>,
    pub unreachable_rounds: Option<Spanned<i64>>,
    pub route_change: Option<Spanned<bool>>,
    pub hop_count_change: Option<Spanned<bool>>,
    pub return_path_change: Option<Spanned<bool>>,
    pub raise_rounds: Option<Spanned<i64>>,
    pub clear_rounds: Option<Spanned<i64>>,
    pub clear_ratio: Option<Spanned<f64>>,
    pub mos_clear_margin: Option<Spanned<f64>>,
    /// The outbox's bounds: `[alerts]` only (one outbox serves every target).
    pub outbox_max_age: Option<Spanned<String>>,
    pub outbox_max_bytes: Option<Spanned<RawSize>>,
    pub outbox_memory_events: Option<Spanned<i64>>,
}

/// One `[[webhook]]`: where alerts are delivered, in which format, and which.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    pub name: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
    pub secret: Option<Spanned<RawSecret>>,
    pub targets: Option<Spanned<Vec<String>>>,
    pub tags: Option<Spanned<Vec<String>>>,
    pub kinds: Option<Spanned<Vec<String>>>,
    pub timeout: Option<Spanned<String>>,
    pub retry_initial: Option<Spanned<String>>,
    pub retry_max: Option<Spanned<String>>,
}

/// A webhook secret as written; its `Debug` never shows it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub(crate) struct RawSecret(pub String);

impl fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A byte count as written: a bare integer (bytes) or a string with a unit
/// (`"64MiB"`). A hand-written visitor, because an untagged enum would turn a
/// wrong type into "did not match any variant".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawSize {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte count such as 67108864 or \"64MiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                i64::try_from(v)
                    .map(RawSize::Bytes)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_owned()))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// The keys serde's derive accepts for `T`, read from the field list it passes to
/// `deserialize_struct`. Unknown-key errors list these, so the list can never
/// drift from the structs above.
pub(crate) fn keys_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct FieldList(Option<&'static [&'static str]>);

    #[derive(Debug)]
    struct Captured;
    impl fmt::Display for Captured {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("field list captured")
        }
    }
    impl std::error::Error for Captured {}
    impl de::Error for Captured {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Captured
        }
    }

    impl<'de> Deserializer<'de> for &mut FieldList {
        type Error = Captured;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Captured> {
            Err(Captured)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Captured> {
            self.0 = Some(fields);
            Err(Captured)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut list = FieldList(None);
    let _ = T::deserialize(&mut list);
    list.0.unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_lists_come_from_the_derive() {
        assert_eq!(
            keys_of::<RawStatistics>(),
            &["window"],
            "the derive's field list"
        );
        assert!(keys_of::<RawConfig>().contains(&"target"));
        assert!(keys_of::<String>().is_empty());
    }

    #[test]
    fn peer_alert_keys_are_alerts_keys() {
        let alerts = keys_of::<RawAlertRules>();
        for key in keys_of::<RawPeerAlertRules>() {
            assert!(alerts.contains(key), "{key} is not an [alerts] key");
        }
    }

    #[test]
    fn targets_accept_every_defaults_key() {
        let target = keys_of::<RawTarget>();
        for key in keys_of::<RawProbe>() {
            assert!(
                target.contains(key),
                "[[target]] lacks the [defaults] key {key}"
            );
        }
    }
}
