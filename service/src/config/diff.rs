//! What a reload changes: which targets to start, stop, pause, resume or
//! restart, and which global settings changed. Targets are matched by name, so
//! reordering the file or editing one target leaves the others untouched.

use super::validated::{Config, ProbeSettings, TargetConfig};
use crate::model::TargetId;

/// The difference between the running config and a reloaded one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// New names, in the new file's order. A new target may be paused already
    /// (see its `paused`); it is listed here only.
    pub added: Vec<TargetId>,
    /// Names no longer in the file, in the old file's order.
    pub removed: Vec<TargetId>,
    /// Kept targets that were running and are now paused.
    pub paused: Vec<TargetId>,
    /// Kept targets that were paused and now run again.
    pub resumed: Vec<TargetId>,
    /// Kept targets with other settings (pausing aside), in the new file's order.
    /// A target can be both here and in `paused`/`resumed`.
    pub changed: Vec<TargetChange>,
    /// Changed global keys, in file order.
    pub globals: Vec<GlobalChange>,
}

/// One kept target whose settings changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetChange {
    pub id: TargetId,
    /// The keys that changed, e.g. `["interval", "label"]`.
    pub keys: Vec<&'static str>,
    /// The most the daemon has to do to apply all of them.
    pub action: ChangeAction,
}

/// What applying a target's change takes, least to most. Only
/// [`ChangeAction::ReopenFlow`] gives the target a new flow identity (and so
/// possibly a new ECMP path); history is kept in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeAction {
    /// Label, description or tags: update what is shown, keep probing.
    Describe,
    /// Interval, first TTL, max hops or final-hop-only: restart the rounds on
    /// the same flow.
    Reschedule,
    /// Host, protocol, port, packet size or timeout: these are the engine's
    /// `FlowSpec`, fixed for a flow's life, so the flow is closed and reopened.
    ReopenFlow,
}

/// One changed global key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlobalChange {
    /// The key as `table.key`, e.g. `"service.state_dir"`.
    pub key: &'static str,
    /// The setting is read once at start (the engine and the store are opened
    /// with it): the daemon logs "restart needed for <key>" and keeps the old value.
    pub needs_restart: bool,
}

impl ConfigDiff {
    pub fn between(old: &Config, new: &Config) -> ConfigDiff {
        let mut diff = ConfigDiff {
            removed: old
                .targets
                .iter()
                .filter(|t| new.target(&t.id).is_none())
                .map(|t| t.id.clone())
                .collect(),
            globals: global_changes(old, new),
            ..ConfigDiff::default()
        };
        for target in &new.targets {
            let Some(before) = old.target(&target.id) else {
                diff.added.push(target.id.clone());
                continue;
            };
            match (before.paused, target.paused) {
                (false, true) => diff.paused.push(target.id.clone()),
                (true, false) => diff.resumed.push(target.id.clone()),
                _ => {}
            }
            if let Some(change) = target_change(before, target) {
                diff.changed.push(change);
            }
        }
        diff
    }

    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self == &ConfigDiff::default()
    }

    /// The changed keys that only take effect after a restart.
    pub fn restart_needed(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.globals
            .iter()
            .filter(|g| g.needs_restart)
            .map(|g| g.key)
    }
}

fn target_change(old: &TargetConfig, new: &TargetConfig) -> Option<TargetChange> {
    let mut keys = Vec::new();
    let mut action = ChangeAction::Describe;
    let mut note = |changed: bool, key: &'static str, needs: ChangeAction| {
        if changed {
            keys.push(key);
            action = action.max(needs);
        }
    };
    // `ip` follows `host`, so it is not compared on its own.
    note(old.host != new.host, "host", ChangeAction::ReopenFlow);
    let (a, b): (&ProbeSettings, &ProbeSettings) = (&old.probe, &new.probe);
    note(
        a.protocol != b.protocol,
        "protocol",
        ChangeAction::ReopenFlow,
    );
    note(a.port != b.port, "port", ChangeAction::ReopenFlow);
    note(
        a.packet_size != b.packet_size,
        "packet_size",
        ChangeAction::ReopenFlow,
    );
    note(a.timeout != b.timeout, "timeout", ChangeAction::ReopenFlow);
    note(
        a.interval != b.interval,
        "interval",
        ChangeAction::Reschedule,
    );
    note(
        a.first_ttl != b.first_ttl,
        "first_ttl",
        ChangeAction::Reschedule,
    );
    note(
        a.max_hops != b.max_hops,
        "max_hops",
        ChangeAction::Reschedule,
    );
    note(
        a.final_hop_only != b.final_hop_only,
        "final_hop_only",
        ChangeAction::Reschedule,
    );
    note(
        old.multipath != new.multipath,
        "multipath",
        ChangeAction::Reschedule,
    );
    note(old.label != new.label, "label", ChangeAction::Describe);
    note(
        old.description != new.description,
        "description",
        ChangeAction::Describe,
    );
    note(old.tags != new.tags, "tags", ChangeAction::Describe);
    (!keys.is_empty()).then(|| TargetChange {
        id: new.id.clone(),
        keys,
        action,
    })
}

fn global_changes(old: &Config, new: &Config) -> Vec<GlobalChange> {
    let (a, b) = (old, new);
    let checks: [(&'static str, bool, bool); 22] = [
        (
            "service.state_dir",
            a.service.state_dir != b.service.state_dir,
            true,
        ),
        (
            "service.timestamps",
            a.service.timestamps != b.service.timestamps,
            true,
        ),
        (
            "service.max_probes_per_second",
            a.service.max_probes_per_second != b.service.max_probes_per_second,
            true,
        ),
        (
            "service.source_v4",
            a.service.source.v4 != b.service.source.v4,
            true,
        ),
        (
            "service.source_v6",
            a.service.source.v6 != b.service.source.v6,
            true,
        ),
        (
            "service.interface",
            a.service.source.interface != b.service.source.interface,
            true,
        ),
        (
            "storage.flush_interval",
            a.storage.flush_interval != b.storage.flush_interval,
            false,
        ),
        (
            "storage.raw_retention",
            a.storage.raw_retention != b.storage.raw_retention,
            false,
        ),
        (
            "storage.minute_retention",
            a.storage.minute_retention != b.storage.minute_retention,
            false,
        ),
        (
            "storage.hour_retention",
            a.storage.hour_retention != b.storage.hour_retention,
            false,
        ),
        (
            "storage.event_retention",
            a.storage.event_retention != b.storage.event_retention,
            false,
        ),
        (
            "storage.raw_log",
            a.storage.raw_log != b.storage.raw_log,
            false,
        ),
        ("statistics.window", a.statistics != b.statistics, false),
        (
            "enrichment.reverse_dns",
            a.enrichment.reverse_dns != b.enrichment.reverse_dns,
            false,
        ),
        (
            "enrichment.dns_timeout",
            a.enrichment.dns_timeout != b.enrichment.dns_timeout,
            false,
        ),
        (
            "enrichment.asn_database",
            a.enrichment.asn_database != b.enrichment.asn_database,
            false,
        ),
        (
            "enrichment.city_database",
            a.enrichment.city_database != b.enrichment.city_database,
            false,
        ),
        // Thresholds (global, per target, per peer) apply live; the delivery
        // worker and its outbox queues are set up at start.
        ("alerts", a.alerts.rules_differ(&b.alerts), false),
        ("webhook", a.alerts.webhooks != b.alerts.webhooks, true),
        // The outbox's bounds are given to it and its worker at start.
        ("alerts.outbox", a.alerts.outbox != b.alerts.outbox, true),
        // The pusher is started once with its receivers and the vantage label.
        (
            "service.vantage",
            a.service.vantage != b.service.vantage,
            true,
        ),
        ("remote_write", a.remote_write != b.remote_write, true),
    ];
    checks
        .into_iter()
        .filter(|(_, changed, _)| *changed)
        .map(|(key, _, needs_restart)| GlobalChange { key, needs_restart })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        [service]
        state_dir = "/var/lib/hopwatch"

        [defaults]
        interval = "1s"

        [[target]]
        name = "gw"
        host = "198.18.0.1"

        [[target]]
        name = "core"
        host = "198.18.1.1"
        label = "Core router"

        [[target]]
        name = "far"
        host = "2001:db8::9"
        paused = true
    "#;

    fn parse(text: &str) -> Config {
        Config::parse(text, "hopwatch.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn ids(names: &[&str]) -> Vec<TargetId> {
        names.iter().map(|n| TargetId::new(*n).unwrap()).collect()
    }

    #[test]
    fn the_same_config_is_no_change() {
        let diff = ConfigDiff::between(&parse(BASE), &parse(BASE));
        assert!(diff.is_empty(), "{diff:?}");
    }

    #[test]
    fn reordering_targets_is_no_change() {
        let reordered = r#"
            [[target]]
            name = "far"
            host = "2001:db8::9"
            paused = true

            [[target]]
            name = "core"
            label = "Core router"
            host = "198.18.1.1"

            [[target]]
            name = "gw"
            host = "198.18.0.1"
        "#;
        let diff = ConfigDiff::between(&parse(BASE), &parse(reordered));
        assert!(diff.is_empty(), "{diff:?}");
    }

    #[test]
    fn added_and_removed_targets_are_named() {
        let new = BASE.replace("name = \"core\"", "name = \"core2\"");
        let diff = ConfigDiff::between(&parse(BASE), &parse(&new));
        assert_eq!(diff.added, ids(&["core2"]));
        assert_eq!(diff.removed, ids(&["core"]));
        assert!(diff.changed.is_empty() && diff.paused.is_empty() && diff.resumed.is_empty());
    }

    #[test]
    fn pausing_and_resuming_are_not_changes() {
        let new = BASE.replace("paused = true", "paused = false").replace(
            "host = \"198.18.0.1\"",
            "host = \"198.18.0.1\"\npaused = true",
        );
        let diff = ConfigDiff::between(&parse(BASE), &parse(&new));
        assert_eq!(diff.paused, ids(&["gw"]));
        assert_eq!(diff.resumed, ids(&["far"]));
        assert!(diff.changed.is_empty(), "{diff:?}");
        assert!(diff.added.is_empty() && diff.removed.is_empty());
    }

    #[test]
    fn a_schedule_change_touches_only_its_target() {
        let new = BASE.replace(
            "host = \"198.18.1.1\"",
            "host = \"198.18.1.1\"\ninterval = \"5s\"\nmax_hops = 12\nfinal_hop_only = true",
        );
        let diff = ConfigDiff::between(&parse(BASE), &parse(&new));
        assert_eq!(
            diff.changed,
            vec![TargetChange {
                id: TargetId::new("core").unwrap(),
                keys: vec!["interval", "max_hops", "final_hop_only"],
                action: ChangeAction::Reschedule,
            }]
        );
        assert!(diff.globals.is_empty());
    }

    #[test]
    fn flow_changes_need_a_reopen_and_win_over_lesser_ones() {
        let new = BASE.replace(
            "label = \"Core router\"",
            "label = \"Core\"\nprotocol = \"udp\"\ninterval = \"2s\"",
        );
        let diff = ConfigDiff::between(&parse(BASE), &parse(&new));
        assert_eq!(diff.changed.len(), 1, "{diff:?}");
        let change = &diff.changed[0];
        assert_eq!(change.keys, vec!["protocol", "port", "interval", "label"]);
        assert_eq!(change.action, ChangeAction::ReopenFlow);

        let moved = BASE.replace("198.18.0.1", "198.18.0.2");
        let diff = ConfigDiff::between(&parse(BASE), &parse(&moved));
        assert_eq!(diff.changed[0].keys, vec!["host"]);
        assert_eq!(diff.changed[0].action, ChangeAction::ReopenFlow);
    }

    #[test]
    fn label_only_changes_are_descriptive() {
        let new = BASE.replace("Core router", "Core router 2");
        let diff = ConfigDiff::between(&parse(BASE), &parse(&new));
        assert_eq!(diff.changed[0].keys, vec!["label"]);
        assert_eq!(diff.changed[0].action, ChangeAction::Describe);
    }

    #[test]
    fn a_defaults_change_reaches_only_targets_that_inherit_it() {
        let new = BASE
            .replace("interval = \"1s\"", "interval = \"3s\"")
            .replace(
                "host = \"198.18.0.1\"",
                "host = \"198.18.0.1\"\ninterval = \"1s\"",
            );
        let diff = ConfigDiff::between(&parse(BASE), &parse(&new));
        let changed: Vec<_> = diff.changed.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(changed, vec!["core", "far"], "gw kept 1s by overriding");
    }

    #[test]
    fn global_changes_say_whether_a_restart_is_needed() {
        let new = BASE
            .replace(
                "/var/lib/hopwatch",
                "/srv/hopwatch\"\ntimestamps = \"kernel",
            )
            .replace("[defaults]", "[statistics]\nwindow = 50\n\n[defaults]");
        let diff = ConfigDiff::between(&parse(BASE), &parse(&new));
        assert_eq!(
            diff.restart_needed().collect::<Vec<_>>(),
            vec!["service.state_dir", "service.timestamps"]
        );
        assert!(diff.globals.contains(&GlobalChange {
            key: "statistics.window",
            needs_restart: false
        }));
        assert!(diff.changed.is_empty() && diff.added.is_empty());
    }

    #[test]
    fn the_outbox_bounds_need_a_restart() {
        let new = BASE.replace(
            "[defaults]",
            "[alerts]\noutbox_max_age = \"1d\"\n\n[defaults]",
        );
        let diff = ConfigDiff::between(&parse(BASE), &parse(&new));
        assert_eq!(
            diff.restart_needed().collect::<Vec<_>>(),
            vec!["alerts.outbox"]
        );
    }
}
