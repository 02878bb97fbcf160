//! Tests of the whole path from text to [`Config`]: defaults, overrides, and one
//! test per error class checking the line and key in the message.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::model::TargetId;
use crate::probe::{Protocol, TimestampPreference};

fn parse(text: &str) -> Config {
    Config::parse(text, "hopwatch.toml").unwrap_or_else(|e| panic!("{e}"))
}

/// Parses `text` expecting an error, and checks that its message starts with
/// `hopwatch.toml:<line>:`, names `key`, and contains `fragment`.
fn error(text: &str, line: usize, key: &str, fragment: &str) -> ConfigError {
    let err = match Config::parse(text, "hopwatch.toml") {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(err) => err,
    };
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("hopwatch.toml:{line}: ")),
        "wrong line in {message:?} (want {line})"
    );
    assert_eq!(err.line(), Some(line), "{message}");
    assert_eq!(err.path(), Path::new("hopwatch.toml"));
    assert_eq!(err.key(), Some(key), "{message}");
    assert!(message.contains(key), "{message:?} does not name {key}");
    assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
    err
}

#[test]
fn an_empty_file_is_every_default_and_no_target() {
    let config = parse("");
    assert!(config.targets.is_empty());
    assert_eq!(config.service.state_dir, PathBuf::from("/var/lib/hopwatch"));
    assert_eq!(config.service.timestamps, TimestampPreference::Auto);
    assert_eq!(config.service.max_probes_per_second, None);
    assert_eq!(
        config.service.source,
        crate::probe::SourceSelection::default()
    );
    assert_eq!(config.storage.flush_interval, Duration::from_secs(60));
    assert_eq!(config.storage.raw_retention, Duration::from_secs(48 * 3600));
    assert_eq!(
        config.storage.minute_retention,
        Duration::from_secs(30 * 86400)
    );
    assert_eq!(
        config.storage.hour_retention,
        Duration::from_secs(365 * 86400)
    );
    assert_eq!(
        config.storage.event_retention,
        Duration::from_secs(90 * 86400)
    );
    assert_eq!(config.storage.raw_log, None);
    assert_eq!(config.statistics.window, 100);
    assert!(config.enrichment.reverse_dns);
    assert_eq!(config.enrichment.dns_timeout, Duration::from_secs(2));
    assert_eq!(config.enrichment.asn_database, None);
    assert_eq!(config.enrichment.city_database, None);
}

#[test]
fn a_bare_target_gets_every_default() {
    let config = parse("[[target]]\nname = \"gw\"\nhost = \"198.18.0.1\"\n");
    let target = &config.targets[0];
    assert_eq!(target.id.as_str(), "gw");
    assert_eq!(target.host, "198.18.0.1");
    assert_eq!(target.ip, Some(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))));
    assert_eq!(
        (target.label.as_deref(), target.description.as_deref()),
        (None, None)
    );
    assert!(target.tags.is_empty());
    assert!(!target.paused);
    let p = target.probe;
    assert_eq!(p.protocol, Protocol::Icmp);
    assert_eq!(p.port, 0);
    assert_eq!(p.interval, Duration::from_secs(1));
    assert_eq!(p.timeout, Duration::from_secs(2));
    assert_eq!((p.first_ttl.get(), p.max_hops.get()), (1, 30));
    assert_eq!(p.packet_size, 64);
    assert!(!p.final_hop_only, "every hop is probed by default");
    assert_eq!(target.display_name(), "gw");
}

#[test]
fn final_hop_only_takes_tcp_or_icmp_per_target_or_from_defaults() {
    let config = parse(
        "[defaults]\nfinal_hop_only = true\n\n\
         [[target]]\nname = \"web\"\nhost = \"198.18.0.9\"\nprotocol = \"tcp\"\nport = 443\n\n\
         [[target]]\nname = \"ping\"\nhost = \"2001:db8::9\"\n\n\
         [[target]]\nname = \"path\"\nhost = \"198.18.0.10\"\nfinal_hop_only = false\nprotocol = \"udp\"\n",
    );
    let web = &config.targets[0].probe;
    assert!(web.final_hop_only);
    assert_eq!((web.protocol, web.port), (Protocol::Tcp, 443));
    assert!(config.targets[1].probe.final_hop_only);
    assert_eq!(config.targets[1].probe.protocol, Protocol::Icmp);
    assert!(!config.targets[2].probe.final_hop_only, "its own override");
    // A TCP target without a port gets the TCP default.
    let config = parse(
        "[[target]]\nname = \"w\"\nhost = \"198.18.0.9\"\nprotocol = \"tcp\"\nfinal_hop_only = true\n",
    );
    assert_eq!(config.targets[0].probe.port, defaults::TCP_PORT);
    // max_hops stays: it is the TTL the one probe leaves with.
    let config = parse(
        "[[target]]\nname = \"w\"\nhost = \"198.18.0.9\"\nfinal_hop_only = true\nmax_hops = 64\n",
    );
    assert_eq!(config.targets[0].probe.max_hops.get(), 64);
}

#[test]
fn final_hop_only_refuses_udp_and_first_ttl_naming_the_key_to_change() {
    // Written together in the target: the mode is named.
    error(
        "[[target]]\nname = \"dns\"\nhost = \"198.18.0.53\"\nprotocol = \"udp\"\nfinal_hop_only = true\n",
        5,
        "final_hop_only",
        "needs protocol tcp (a handshake to the port) or icmp",
    );
    // The mode from [defaults], udp in the target: the target's protocol is named.
    let err = error(
        "[defaults]\nfinal_hop_only = true\n\n[[target]]\nname = \"dns\"\nhost = \"198.18.0.53\"\nprotocol = \"udp\"\n",
        7,
        "protocol",
        "a udp probe cannot tell",
    );
    assert!(err.to_string().contains("target \"dns\""), "{err}");
    // udp from [defaults], the mode in the target: the mode is named.
    error(
        "[defaults]\nprotocol = \"udp\"\n\n[[target]]\nname = \"dns\"\nhost = \"198.18.0.53\"\nfinal_hop_only = true\n",
        7,
        "final_hop_only",
        "udp",
    );
    // Both in [defaults]: reported there even with no target.
    error(
        "[defaults]\nprotocol = \"udp\"\nfinal_hop_only = true\n",
        3,
        "final_hop_only",
        "final_hop_only needs protocol tcp",
    );
    error(
        "[[target]]\nname = \"w\"\nhost = \"198.18.0.9\"\nfinal_hop_only = true\nfirst_ttl = 3\n",
        5,
        "first_ttl",
        "no meaning with final_hop_only",
    );
    // A first_ttl in [defaults] is for the other targets; it is ignored here.
    let config = parse(
        "[defaults]\nfirst_ttl = 2\n\n[[target]]\nname = \"w\"\nhost = \"198.18.0.9\"\nfinal_hop_only = true\n",
    );
    assert!(config.targets[0].probe.final_hop_only);
    // Not a bool.
    error(
        "[[target]]\nname = \"w\"\nhost = \"198.18.0.9\"\nfinal_hop_only = \"yes\"\n",
        4,
        "final_hop_only",
        "expected a boolean",
    );
}

#[test]
fn targets_override_defaults_which_override_built_ins() {
    let config = parse(
        r#"
        [defaults]
        protocol = "tcp"
        interval = "2s"
        max_hops = 20
        paused = true

        [[target]]
        name = "web"
        host = "198.18.0.9"

        [[target]]
        name = "dns"
        host = "2001:db8::53"
        protocol = "udp"
        port = 53
        interval = "500ms"
        timeout = "1s"
        first_ttl = 2
        max_hops = 16
        packet_size = 128
        paused = false
        label = "Resolver"
        description = "the lab's resolver"
        tags = ["dns", "core"]

        [[target]]
        name = "by-name"
        host = "gw.lab.example"
        "#,
    );
    let web = &config.targets[0];
    assert_eq!(web.probe.protocol, Protocol::Tcp);
    assert_eq!(web.probe.port, 80, "tcp's default port");
    assert_eq!(web.probe.interval, Duration::from_secs(2));
    assert_eq!(web.probe.max_hops.get(), 20);
    assert!(web.paused);

    let dns = &config.targets[1];
    assert_eq!(dns.probe.protocol, Protocol::Udp);
    assert_eq!(dns.probe.port, 53);
    assert_eq!(dns.probe.interval, Duration::from_millis(500));
    assert_eq!(dns.probe.timeout, Duration::from_secs(1));
    assert_eq!(
        (dns.probe.first_ttl.get(), dns.probe.max_hops.get()),
        (2, 16)
    );
    assert_eq!(dns.probe.packet_size, 128);
    assert!(!dns.paused);
    assert_eq!(dns.display_name(), "Resolver");
    assert_eq!(dns.description.as_deref(), Some("the lab's resolver"));
    assert_eq!(dns.tags, vec!["dns", "core"]);
    assert_eq!(dns.ip, Some("2001:db8::53".parse().unwrap()));

    let by_name = &config.targets[2];
    assert_eq!(by_name.host, "gw.lab.example");
    assert_eq!(by_name.ip, None, "names are resolved by the daemon");

    let flow = dns.flow_spec("2001:db8::53".parse().unwrap());
    assert_eq!(flow.dst_port, 53);
    assert_eq!(flow.packet_size, 128);
    assert_eq!(dns.probe.max_hops.get(), 16);
    assert_eq!(config.target(&dns.id), Some(dns));
}

#[test]
fn udp_gets_the_traceroute_port() {
    let config = parse("[[target]]\nname = \"u\"\nhost = \"198.18.0.1\"\nprotocol = \"UDP\"\n");
    assert_eq!(config.targets[0].probe.protocol, Protocol::Udp);
    assert_eq!(config.targets[0].probe.port, 33434);
}

#[test]
fn global_sections_are_read() {
    let config = Config::parse(
        r#"
        [service]
        state_dir = "state"
        timestamps = "kernel"
        max_probes_per_second = 500
        source_v4 = "198.18.0.2"
        source_v6 = "2001:db8::2"
        interface = "eth0"

        [storage]
        flush_interval = "30s"
        raw_retention = "24h"
        minute_retention = "7d"
        hour_retention = "90d"
        event_retention = "30d"
        raw_log = { path = "/var/log/hopwatch/probes.jsonl", max_bytes = "16MiB", keep = 5 }

        [statistics]
        window = 50

        [enrichment]
        reverse_dns = false
        dns_timeout = "500ms"
        asn_database = "GeoLite2-ASN.mmdb"
        city_database = "/var/lib/GeoIP/GeoLite2-City.mmdb"
        "#,
        "/etc/hopwatch/hopwatch.toml",
    )
    .unwrap();
    assert_eq!(
        config.service.state_dir,
        PathBuf::from("/etc/hopwatch/state")
    );
    assert_eq!(config.service.timestamps, TimestampPreference::Kernel);
    assert_eq!(
        config.service.max_probes_per_second.map(|n| n.get()),
        Some(500)
    );
    assert_eq!(config.service.source.v4, Some(Ipv4Addr::new(198, 18, 0, 2)));
    assert_eq!(
        config.service.source.v6,
        Some("2001:db8::2".parse().unwrap())
    );
    assert_eq!(config.service.source.interface.as_deref(), Some("eth0"));
    assert_eq!(config.engine_config().source, config.service.source);
    assert_eq!(config.storage.flush_interval, Duration::from_secs(30));
    assert_eq!(config.storage.raw_retention, Duration::from_secs(86400));
    assert_eq!(
        config.storage.minute_retention,
        Duration::from_secs(7 * 86400)
    );
    assert_eq!(
        config.storage.hour_retention,
        Duration::from_secs(90 * 86400)
    );
    assert_eq!(
        config.storage.event_retention,
        Duration::from_secs(30 * 86400)
    );
    assert_eq!(
        config.storage.raw_log,
        Some(RawLogConfig {
            path: PathBuf::from("/var/log/hopwatch/probes.jsonl"),
            max_bytes: 16 << 20,
            keep: 5,
        })
    );
    assert_eq!(config.statistics.window, 50);
    assert!(!config.enrichment.reverse_dns);
    assert_eq!(config.enrichment.dns_timeout, Duration::from_millis(500));
    assert_eq!(
        config.enrichment.asn_database,
        Some(PathBuf::from("/etc/hopwatch/GeoLite2-ASN.mmdb"))
    );
    assert_eq!(
        config.enrichment.city_database,
        Some(PathBuf::from("/var/lib/GeoIP/GeoLite2-City.mmdb"))
    );
}

#[test]
fn raw_log_defaults_its_size_and_rollover() {
    let config = parse("[storage.raw_log]\npath = \"/tmp/p.jsonl\"\n");
    let log = config.storage.raw_log.unwrap();
    assert_eq!((log.max_bytes, log.keep), (64 << 20, 3));
}

// ---- one test per error class: line and key in the message ----

#[test]
fn syntax_errors_have_a_line() {
    let err = Config::parse("[defaults]\ninterval = \"1s\n", "hopwatch.toml").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { line: 2, .. }), "{err}");
    assert!(err.to_string().starts_with("hopwatch.toml:2: "), "{err}");
}

#[test]
fn a_key_given_twice_is_a_syntax_error() {
    let err =
        Config::parse("[defaults]\nmax_hops = 3\nmax_hops = 4\n", "hopwatch.toml").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { line: 3, .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "hopwatch.toml:3: duplicate key (in `max_hops = 4`)"
    );
}

#[test]
fn unknown_keys_are_named_with_the_expected_ones() {
    let err = error(
        "# hopwatch\n\n[defaults]\nintervall = \"2s\"\n",
        4,
        "intervall",
        "unknown key \"intervall\" in [defaults]; expected one of protocol, port, interval",
    );
    assert!(
        err.to_string().ends_with("(did you mean \"interval\"?)"),
        "{err}"
    );

    error(
        "[[target]]\nname = \"gw\"\nhost = \"198.18.0.1\"\nhots = \"x\"\n",
        4,
        "hots",
        "unknown key \"hots\" in target \"gw\"; expected one of name, host,",
    );
    error(
        "[storage.raw_log]\npath = \"/tmp/x\"\nsize = 5\n",
        3,
        "size",
        "in [storage.raw_log]; expected one of path, max_bytes, keep",
    );
    let err = error(
        "\n[default]\nport = 1\n",
        2,
        "default",
        "in the top level; expected one of service,",
    );
    assert!(
        err.to_string().contains("did you mean \"defaults\"?"),
        "{err}"
    );
    let err = error("[service]\nxyz = 1\n", 2, "xyz", "in [service]");
    assert!(!err.to_string().contains("did you mean"), "{err}");
}

#[test]
fn wrong_types_name_the_key() {
    error(
        "[defaults]\n\ninterval = 5\n",
        3,
        "interval",
        "[defaults]: interval: invalid type",
    );
    error(
        "[[target]]\nname = \"gw\"\nhost = \"198.18.0.1\"\ntags = \"core\"\n",
        4,
        "tags",
        "target \"gw\": tags:",
    );
    error(
        "[enrichment]\nreverse_dns = \"yes\"\n",
        2,
        "reverse_dns",
        "[enrichment]",
    );
}

#[test]
fn out_of_range_values_name_the_limit() {
    error(
        "[[target]]\nname = \"gw\"\nhost = \"198.18.0.1\"\ninterval = \"50ms\"\n",
        4,
        "interval",
        "target \"gw\": interval: 50ms is below the minimum of 100ms",
    );
    error(
        "[defaults]\nmax_hops = 300\n",
        2,
        "max_hops",
        "300 is above the maximum of 255",
    );
    error(
        "[defaults]\nfirst_ttl = 0\n",
        2,
        "first_ttl",
        "0 is below the minimum of 1",
    );
    error(
        "[defaults]\nprotocol = \"udp\"\nport = 70000\n",
        3,
        "port",
        "70000 is above the maximum of 65535",
    );
    error(
        "[statistics]\nwindow = 0\n",
        2,
        "window",
        "[statistics]: window: 0 is below",
    );
    error(
        "[storage]\nflush_interval = \"10ms\"\n",
        2,
        "flush_interval",
        "below the minimum of 100ms",
    );
    error(
        "[storage]\nraw_retention = \"5\"\n",
        2,
        "raw_retention",
        "\"5\" is not a duration",
    );
    error(
        "[storage.raw_log]\npath = \"/tmp/x\"\nmax_bytes = \"1KiB\"\n",
        3,
        "max_bytes",
        "\"1KiB\" (1024 bytes) is below the minimum of 4096 bytes",
    );
    error(
        "[storage.raw_log]\npath = \"/tmp/x\"\nmax_bytes = \"big\"\n",
        3,
        "max_bytes",
        "not a size",
    );
    error(
        "[service]\nmax_probes_per_second = 0\n",
        2,
        "max_probes_per_second",
        "below the minimum of 1",
    );
    error(
        "[enrichment]\ndns_timeout = \"1m\"\n",
        2,
        "dns_timeout",
        "1m is above the maximum of 30s",
    );
}

#[test]
fn unknown_protocol_and_timestamp_source() {
    error(
        "[[target]]\nname = \"gw\"\nhost = \"198.18.0.1\"\nprotocol = \"sctp\"\n",
        4,
        "protocol",
        "unknown probe protocol \"sctp\": expected icmp, udp or tcp",
    );
    error(
        "[service]\ntimestamps = \"hardware\"\n",
        2,
        "timestamps",
        "expected auto, ebpf, kernel or userspace",
    );
}

#[test]
fn source_addresses_must_be_of_their_family() {
    error(
        "[service]\nsource_v4 = \"2001:db8::1\"\n",
        2,
        "source_v4",
        "is not an IPv4 address",
    );
    error(
        "[service]\n\nsource_v6 = \"198.18.0.1\"\n",
        3,
        "source_v6",
        "is not an IPv6 address",
    );
    error(
        "[service]\nsource_v4 = \"198.18.0.256\"\n",
        2,
        "source_v4",
        "IPv4",
    );
    error(
        "[service]\ninterface = \"a-very-long-interface\"\n",
        2,
        "interface",
        "at most 15 characters",
    );
}

#[test]
fn duplicate_names_point_at_both_lines() {
    error(
        "[[target]]\nname = \"gw\"\nhost = \"198.18.0.1\"\n\n[[target]]\nname = \"gw\"\nhost = \"198.18.0.2\"\n",
        6,
        "name",
        "target \"gw\": name: the name \"gw\" is already used by the target on line 2",
    );
}

#[test]
fn first_ttl_above_max_hops() {
    error(
        "[[target]]\nname = \"gw\"\nhost = \"198.18.0.1\"\nmax_hops = 5\nfirst_ttl = 6\n",
        5,
        "first_ttl",
        "first_ttl 6 is above max_hops 5",
    );
    // The target's own value is blamed, even when the other one is inherited.
    error(
        "[defaults]\nfirst_ttl = 4\n\n[[target]]\nname = \"gw\"\nhost = \"198.18.0.1\"\nmax_hops = 3\n",
        7,
        "max_hops",
        "first_ttl 4 is above max_hops 3",
    );
    error(
        "[defaults]\nfirst_ttl = 31\n",
        2,
        "first_ttl",
        "above max_hops 30",
    );
}

#[test]
fn names_and_hosts_are_checked() {
    error(
        "[[target]]\nname = \"has space\"\nhost = \"198.18.0.1\"\n",
        2,
        "name",
        "[[target]] #1: name: invalid target name \"has space\"",
    );
    error(
        "[[target]]\nname = \"gw\"\nhost = \"198.18.0.300\"\n",
        3,
        "host",
        "neither an IP address nor a host name",
    );
    error(
        "[[target]]\nname = \"gw\"\nhost = \" \"\n",
        3,
        "host",
        "must not be empty",
    );
    error(
        "[[target]]\nname = \"gw\"\nhost = \"h\"\nlabel = \"\"\n",
        4,
        "label",
        "must not be empty",
    );
    error(
        "[[target]]\nname = \"gw\"\nhost = \"h\"\ntags = [\"a\", \"\"]\n",
        4,
        "tags",
        "must not be empty",
    );
    error(
        "[enrichment]\ncity_database = \"\"\n",
        2,
        "city_database",
        "must not be empty",
    );
}

#[test]
fn required_keys_are_missing_at_the_table() {
    error(
        "[[target]]\nname = \"a\"\nhost = \"198.18.0.1\"\n\n[[target]]\nhost = \"198.18.0.2\"\n",
        5,
        "name",
        "[[target]] #2: the required key \"name\" is missing",
    );
    error(
        "\n[[target]]\nname = \"gw\"\n",
        2,
        "host",
        "target \"gw\": the required key \"host\" is missing",
    );
    error(
        "[storage.raw_log]\nkeep = 2\n",
        1,
        "path",
        "[storage.raw_log]: the required key \"path\"",
    );
}

#[test]
fn packet_size_must_fit_the_protocol_and_family() {
    error(
        "[[target]]\nname = \"gw\"\nhost = \"198.18.0.1\"\nprotocol = \"tcp\"\npacket_size = 40\n",
        5,
        "packet_size",
        "40 bytes is below the minimum of 44 for a tcp probe over IPv4",
    );
    // 50 is enough for ICMP over IPv4 and IPv6 (50), not TCP over IPv6 (64); the
    // culprit is the inherited value, so the line is in [defaults].
    let text = "[defaults]\npacket_size = 50\n\n[[target]]\nname = \"v6\"\nhost = \"2001:db8::1\"\nprotocol = \"tcp\"\n";
    let err = error(text, 2, "packet_size", "target \"v6\": packet_size (from [defaults]): 50 bytes is below the minimum of 64 for a tcp probe over IPv6");
    assert!(matches!(
        err,
        ConfigError::Invalid {
            inherited: true,
            ..
        }
    ));
    // A host name may resolve to IPv6, so its minimum applies.
    error(
        "[[target]]\nname = \"n\"\nhost = \"gw.lab.example\"\nprotocol = \"udp\"\npacket_size = 40\n",
        5,
        "packet_size",
        "minimum of 50 for a udp probe over IPv6",
    );
    error(
        "[defaults]\npacket_size = 70000\n",
        2,
        "packet_size",
        "above the maximum of 65535",
    );
}

#[test]
fn a_port_next_to_icmp_is_a_mistake_but_an_inherited_one_is_not() {
    error(
        "[[target]]\nname = \"gw\"\nhost = \"198.18.0.1\"\nport = 80\n",
        4,
        "port",
        "icmp probes have no port",
    );
    error(
        "[defaults]\nprotocol = \"icmp\"\nport = 80\n",
        3,
        "port",
        "icmp probes have no port",
    );
    // A default port for the targets that choose tcp, and one that stays icmp.
    let config = parse(
        "[defaults]\nport = 443\n\n[[target]]\nname = \"t\"\nhost = \"198.18.0.1\"\nprotocol = \"tcp\"\n\n[[target]]\nname = \"i\"\nhost = \"198.18.0.2\"\n",
    );
    assert_eq!(config.targets[0].probe.port, 443);
    assert_eq!(config.targets[1].probe.port, 0);
}

#[test]
fn load_names_the_file_it_could_not_read() {
    let err = Config::load("/nonexistent/hopwatch.toml").unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert_eq!(err.line(), None);
    assert!(
        err.to_string()
            .starts_with("/nonexistent/hopwatch.toml: cannot read"),
        "{err}"
    );
}

// ---- the shipped examples ----

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(name)
}

#[test]
fn the_reference_config_parses_and_probes_nothing() {
    let config = Config::load(example("hopwatch.toml")).unwrap_or_else(|e| panic!("{e}"));
    // Network safety: the shipped default must not send a single probe.
    assert!(config.targets.is_empty(), "{:?}", config.targets);
    assert_eq!(config.service.state_dir, PathBuf::from(defaults::STATE_DIR));
}

#[test]
fn the_reference_configs_commented_targets_parse_when_uncommented() {
    // The commented-out examples must stay valid, so uncommenting them works.
    let text = std::fs::read_to_string(example("hopwatch.toml")).unwrap();
    let uncommented: String = text
        .lines()
        .map(|line| {
            line.strip_prefix("# ")
                .filter(|rest| is_example_line(rest))
                .unwrap_or(line)
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config =
        Config::parse(&uncommented, example("hopwatch.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        config.targets.len() >= 2,
        "expected commented-out [[target]] examples"
    );
    for target in &config.targets {
        let safe = match target.ip {
            Some(ip) => in_lab_plan(ip),
            None => target.host.ends_with(".example"),
        };
        assert!(
            safe,
            "example target {} probes {}, a real address",
            target.id, target.host
        );
    }
    assert_eq!(config.storage.raw_log.map(|log| log.keep), Some(3));
}

/// The lab's address plan, which doubles as documentation space: 198.18.0.0/15
/// (RFC 2544) and 2001:db8::/32 (RFC 3849).
fn in_lab_plan(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 198 && (v4.octets()[1] & 0xfe) == 18,
        IpAddr::V6(v6) => v6.segments()[..2] == [0x2001, 0x0db8],
    }
}

/// A commented-out config line in the reference file: a table header or
/// `key = value`. Explanations in the file never take either form.
fn is_example_line(rest: &str) -> bool {
    (rest.starts_with('[') && rest.ends_with(']'))
        || rest.split_once(" = ").is_some_and(|(key, _)| {
            !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
}

#[test]
fn the_lab_demo_config_parses_and_stays_in_the_lab_plan() {
    let config = Config::load(example("lab-demo.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(!config.targets.is_empty());
    for target in &config.targets {
        let ip = target
            .ip
            .unwrap_or_else(|| panic!("{} is not an IP literal", target.id));
        assert!(
            in_lab_plan(ip),
            "{} probes {ip}, outside the lab address plan",
            target.id
        );
    }
}

#[test]
fn docs_document_every_key() {
    use super::raw::*;
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"),
    )
    .unwrap();
    let tables: [(&str, &[&str]); 11] = [
        ("## `[service]`", keys_of::<RawService>()),
        ("## `[storage]`", keys_of::<RawStorage>()),
        ("### `[storage.raw_log]`", keys_of::<RawRawLog>()),
        ("## `[statistics]`", keys_of::<RawStatistics>()),
        ("## `[enrichment]`", keys_of::<RawEnrichment>()),
        ("## `[defaults]`", keys_of::<RawProbe>()),
        ("## `[[target]]`", keys_of::<RawTarget>()),
        ("## `[alerts]`", keys_of::<RawAlertRules>()),
        ("## `[[webhook]]`", keys_of::<RawWebhook>()),
        ("### A peer's `alerts`", keys_of::<RawPeerAlertRules>()),
        ("## `[[remote_write]]`", keys_of::<RawRemoteWrite>()),
    ];
    for (heading, keys) in tables {
        let start = docs.find(heading).unwrap_or_else(|| panic!("no {heading}"));
        let section = &docs[start..];
        let end = section[heading.len()..]
            .find("\n## ")
            .map_or(section.len(), |e| e + heading.len());
        let section = &section[..end];
        for key in keys {
            // Target tables document only their own keys; the rest are [defaults]'.
            if heading == "## `[[target]]`" && keys_of::<RawProbe>().contains(key) {
                continue;
            }
            assert!(
                section.contains(&format!("| `{key}` |")),
                "{heading} lacks `{key}`"
            );
        }
    }
}

// ---- alerts and webhooks ----

#[test]
fn the_outbox_bounds_parse_in_alerts_only() {
    let limits = parse("").alerts.outbox;
    assert_eq!(limits.max_age, defaults::ALERT_OUTBOX_MAX_AGE);
    assert_eq!(limits.max_bytes, 16 << 20);
    assert_eq!(limits.memory_events, 1_000);
    let limits = parse(
        "[alerts]\noutbox_max_age = \"2d\"\noutbox_max_bytes = \"1MiB\"\noutbox_memory_events = 50\n",
    )
    .alerts
    .outbox;
    assert_eq!(limits.max_age, Duration::from_secs(2 * 24 * 3600));
    assert_eq!(limits.max_bytes, 1 << 20);
    assert_eq!(limits.memory_events, 50);
    error(
        "[alerts]\noutbox_max_bytes = 100\n",
        2,
        "outbox_max_bytes",
        "",
    );
    error(
        "[alerts]\noutbox_max_age = \"1m\"\n",
        2,
        "outbox_max_age",
        "",
    );
    error(
        "[[target]]\nname = \"a\"\nhost = \"198.18.0.1\"\nalerts = { outbox_max_age = \"2d\" }\n",
        4,
        "outbox_max_age",
        "set this in [alerts]",
    );
}

#[test]
fn alerts_default_and_targets_override_them() {
    let config = parse("");
    assert_eq!(config.alerts, AlertsConfig::default());
    assert_eq!(config.alerts.rules.loss_pct, defaults::ALERT_LOSS_PCT);
    let config = parse(
        r#"
        [alerts]
        loss_pct = 10
        latency_ms = 150.5
        latency_stat = "p95"
        raise_rounds = 5
        route_change = false

        [[target]]
        name = "a"
        host = "198.18.0.1"

        [[target]]
        name = "b"
        host = "198.18.0.2"
        tags = ["wan"]
        alerts = { loss_pct = 0, jitter_ms = 20 }

        [[webhook]]
        name = "ops"
        url = "https://alerts.example/hook/T0K3N"
        secret = "s3cret"
        targets = ["a"]
        tags = ["wan"]
        kinds = ["loss", "unreachable"]
        retry_initial = "100ms"
        retry_max = "1s"

        [[webhook]]
        name = "am"
        url = "http://alertmanager.example:9093/api/v2/alerts"
        format = "alertmanager"
        "#,
    );
    let a = TargetId::new("a").unwrap();
    let b = TargetId::new("b").unwrap();
    let global = config.alerts.rules;
    assert_eq!(global.loss_pct, 10.0);
    assert_eq!(global.latency_ms, 150.5);
    assert_eq!(global.latency_stat, LatencyStat::P95);
    assert_eq!(global.raise_rounds, 5);
    assert!(!global.route_change);
    assert_eq!(config.alerts.rules_for(&a), &global);
    let over_b = config.alerts.rules_for(&b);
    assert_eq!(over_b.loss_pct, 0.0, "0 turns the check off for b");
    assert_eq!(over_b.jitter_ms, 20.0);
    assert_eq!(over_b.latency_ms, 150.5, "b inherits [alerts]");
    let hooks = &config.alerts.webhooks;
    assert_eq!(hooks.len(), 2);
    assert_eq!(hooks[0].name, "ops");
    assert_eq!(hooks[0].format, WebhookFormat::Json);
    assert_eq!(hooks[0].secret, Some(crate::alerts::Secret::new("s3cret")));
    assert_eq!(
        hooks[0].filter.targets,
        vec![crate::alerts::Subject::Target(a)]
    );
    assert_eq!(hooks[0].filter.kinds.len(), 2);
    assert_eq!(hooks[0].retry_initial, Duration::from_millis(100));
    assert_eq!(hooks[0].timeout, defaults::WEBHOOK_TIMEOUT);
    assert_eq!(hooks[1].format, WebhookFormat::Alertmanager);
    // Neither the secret nor the URL's token shows in Debug output.
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("s3cret") && !debug.contains("T0K3N"),
        "{debug}"
    );
}

#[test]
fn alert_and_webhook_mistakes_name_their_line() {
    error(
        "[alerts]\nloss_pct = 120\n",
        2,
        "loss_pct",
        "above the maximum of 100",
    );
    error(
        "[alerts]\nmos_below = 0.5\n",
        2,
        "mos_below",
        "0 turns the check off",
    );
    error("[alerts]\nclear_ratio = nan\n", 2, "clear_ratio", "finite");
    error(
        "[alerts]\nlatency_stat = \"p90\"\n",
        2,
        "latency_stat",
        "avg, p50, p95, p99",
    );
    error(
        "[alerts]\nraise_rounds = 0\n",
        2,
        "raise_rounds",
        "below the minimum of 1",
    );
    let err = error("[alerts]\nloss = 5\n", 2, "loss", "unknown key");
    assert!(err.to_string().contains("[alerts]"), "{err}");
    error(
        "[[target]]\nname = \"t\"\nhost = \"198.18.0.1\"\n[target.alerts]\nloss_pct = -1\n",
        5,
        "loss_pct",
        "target \"t\"",
    );
    error(
        "[[target]]\nname = \"t\"\nhost = \"198.18.0.1\"\nalerts = { losss_pct = 1 }\n",
        4,
        "losss_pct",
        "did you mean \"loss_pct\"",
    );
    let hook = |body: &str| format!("[[webhook]]\nname = \"w\"\n{body}");
    error(
        &hook("url = \"ftp://files.example/x\"\n"),
        3,
        "url",
        "use http or https",
    );
    error(&hook("url = \"alerts.example\"\n"), 3, "url", "not a URL");
    error(&hook(""), 1, "url", "missing");
    error(
        &hook("url = \"http://a.example/\"\nformat = \"teams\"\n"),
        4,
        "format",
        "json, slack, alertmanager",
    );
    error(
        &hook("url = \"http://a.example/\"\ntargets = [\"nope\"]\n"),
        4,
        "targets",
        "no [[target]] is named \"nope\"",
    );
    error(
        &hook("url = \"http://a.example/\"\nkinds = [\"lost\"]\n"),
        4,
        "kinds",
        "not an alert kind",
    );
    error(
        &hook("url = \"http://a.example/\"\nretry_initial = \"10s\"\nretry_max = \"1s\"\n"),
        5,
        "retry_max",
        "below retry_initial",
    );
    let err = error(
        &hook("url = \"http://a.example/\"\nsecret = \"\"\n"),
        4,
        "secret",
        "empty",
    );
    assert!(err.to_string().contains("webhook \"w\""), "{err}");
    error(
        "[[webhook]]\nname = \"w\"\nurl = \"http://a.example/\"\n[[webhook]]\nname = \"w\"\nurl = \"http://b.example/\"\n",
        5,
        "name",
        "already used by the webhook on line 2",
    );
    error(
        "[[webhook]]\nname = \"w\"\nurl = \"http://a.example/\"\nsecrett = \"x\"\n",
        4,
        "secrett",
        "did you mean \"secret\"",
    );
}

#[test]
fn peers_take_the_alert_defaults_and_override_them_by_name() {
    let config = parse(
        r#"
        [alerts]
        loss_pct = 10
        latency_ms = 80
        latency_stat = "p99"
        mos_below = 3.5

        [[target]]
        name = "dc1"
        host = "198.18.0.1"
        alerts = { loss_pct = 1 }

        [[peer]]
        name = "dc1"
        address = "198.18.1.2"

        [[peer]]
        name = "dc2"
        address = "198.18.1.3"
        tags = ["wan"]
        [peer.alerts]
        loss_pct = 2.5
        jitter_ms = 3
        raise_rounds = 2
        clear_rounds = 20
        clear_ratio = 0.5

        [[webhook]]
        name = "links"
        url = "https://alerts.example/links"
        targets = ["peer:dc1", "dc1", " peer:dc2 "]
        kinds = ["loss", "jitter"]
        "#,
    );
    let dc1 = TargetId::new("dc1").unwrap();
    let dc2 = TargetId::new("dc2").unwrap();
    let global = config.alerts.rules;
    assert_eq!(
        config.alerts.rules_for_peer(&dc1),
        &global,
        "[alerts] as is"
    );
    assert_eq!(
        config.alerts.rules_for(&dc1).loss_pct,
        1.0,
        "the target of the same name has its own"
    );
    let over = config.alerts.rules_for_peer(&dc2);
    assert_eq!(
        (
            over.loss_pct,
            over.jitter_ms,
            over.raise_rounds,
            over.clear_rounds,
            over.clear_ratio
        ),
        (2.5, 3.0, 2, 20, 0.5)
    );
    assert_eq!(over.latency_ms, 80.0, "inherited from [alerts]");
    assert_eq!(
        over.latency_stat,
        LatencyStat::P99,
        "inherited from [alerts]"
    );
    use crate::alerts::Subject;
    assert_eq!(
        config.alerts.webhooks[0].filter.targets,
        vec![
            Subject::Peer(dc1.clone()),
            Subject::Target(dc1),
            Subject::Peer(dc2)
        ]
    );
}

#[test]
fn peer_alert_mistakes_name_their_line_and_key() {
    let peer = "[[peer]]\nname = \"p\"\naddress = \"198.18.1.2\"\n";
    error(
        &format!("{peer}[peer.alerts]\nloss_pct = 101\n"),
        5,
        "loss_pct",
        "peer \"p\": loss_pct: 101 is above the maximum of 100",
    );
    error(
        &format!("{peer}alerts = {{ latency_stat = \"p90\" }}\n"),
        4,
        "latency_stat",
        "avg, p50, p95, p99",
    );
    error(
        &format!("{peer}[peer.alerts]\nclear_rounds = 0\n"),
        5,
        "clear_rounds",
        "below the minimum of 1",
    );
    // Rules about a traceroute path are unknown keys for a link.
    let err = error(
        &format!("{peer}[peer.alerts]\nmos_below = 3\n"),
        5,
        "mos_below",
        "unknown key \"mos_below\" in peer \"p\"; expected one of loss_pct, latency_ms",
    );
    assert!(!err.to_string().contains("unreachable_rounds"), "{err}");
    error(
        &format!("{peer}[peer.alerts]\nlos_pct = 3\n"),
        5,
        "los_pct",
        "did you mean \"loss_pct\"",
    );
    let hook = |targets: &str| {
        format!(
            "{peer}[[webhook]]\nname = \"w\"\nurl = \"http://a.example/\"\ntargets = {targets}\n"
        )
    };
    error(
        &hook("[\"peer:q\"]"),
        7,
        "targets",
        "no [[peer]] is named \"q\"",
    );
    error(
        &hook("[\"p\"]"),
        7,
        "targets",
        "no [[target]] is named \"p\"",
    );
}

#[test]
fn peer_alert_changes_apply_live() {
    let base = "[[peer]]\nname = \"p\"\naddress = \"198.18.1.2\"\n";
    let new = format!("{base}alerts = {{ loss_pct = 1 }}\n");
    let diff = ConfigDiff::between(&parse(base), &parse(&new));
    assert!(diff.globals.contains(&GlobalChange {
        key: "alerts",
        needs_restart: false
    }));
}

#[test]
fn alert_changes_apply_live_and_webhook_changes_need_a_restart() {
    let base = "[alerts]\nloss_pct = 5\n[[webhook]]\nname = \"w\"\nurl = \"http://a.example/\"\n";
    let new = base
        .replace("loss_pct = 5", "loss_pct = 7")
        .replace("a.example", "b.example");
    let diff = ConfigDiff::between(&parse(base), &parse(&new));
    assert_eq!(diff.restart_needed().collect::<Vec<_>>(), vec!["webhook"]);
    assert!(diff.globals.contains(&GlobalChange {
        key: "alerts",
        needs_restart: false
    }));
}

// ---- [web] ----

#[test]
fn web_defaults_to_loopback_with_writes_disabled() {
    let config = parse("");
    assert!(config.web.enabled);
    assert_eq!(config.web.listen, "127.0.0.1:9470".parse().unwrap());
    assert_eq!(config.web.read_token, None);
    assert_eq!(config.web.write_token, None);
    assert_eq!(config.web.max_body_bytes, 64 * 1024);
    assert!(config.web.hop_histograms);
    assert_eq!(config.web.request_timeout, Duration::from_secs(10));
    assert_eq!(config.web.max_concurrent_reads, 8);
    assert_eq!(config.web.max_live_streams, 32);
    assert!(config.web.allowed_hosts.is_empty());
}

#[test]
fn web_limits_and_allowed_hosts_are_read_and_checked() {
    let config = parse(
        "[web]\nrequest_timeout = \"30s\"\nmax_concurrent_reads = 2\nmax_live_streams = 4\n\
         allowed_hosts = [\"Hopwatch.Lab.Example.\", \"192.0.2.7\", \"[2001:db8::1]\"]\n",
    );
    assert_eq!(config.web.request_timeout, Duration::from_secs(30));
    assert_eq!(config.web.max_concurrent_reads, 2);
    assert_eq!(config.web.max_live_streams, 4);
    assert_eq!(
        config.web.allowed_hosts,
        ["hopwatch.lab.example", "192.0.2.7", "[2001:db8::1]"]
    );
    error(
        "[web]\nrequest_timeout = \"10ms\"\n",
        2,
        "request_timeout",
        "below the minimum",
    );
    error(
        "[web]\nmax_concurrent_reads = 0\n",
        2,
        "max_concurrent_reads",
        "below the minimum",
    );
    error(
        "[web]\n\nmax_live_streams = 1000000\n",
        3,
        "max_live_streams",
        "above the maximum",
    );
    error(
        "[web]\nallowed_hosts = [\"hopwatch.example:9470\"]\n",
        2,
        "allowed_hosts",
        "neither an IP address nor a host name",
    );
    error(
        "[web]\nallowed_hosts = [\"http://hopwatch.example/\"]\n",
        2,
        "allowed_hosts",
        "neither an IP address nor a host name",
    );
}

#[test]
fn web_settings_are_read_and_tokens_never_printed() {
    let config = parse(
        "[web]\nenabled = true\nlisten = \"[::1]:8080\"\nread_token = \"read-0123456789abcdef\"\n\
         write_token = \"write-0123456789abcdef\"\nmax_body_bytes = \"16KiB\"\nhop_histograms = false\n",
    );
    assert_eq!(config.web.listen, "[::1]:8080".parse().unwrap());
    assert_eq!(
        config.web.write_token,
        Some(hopwatch_web::Token::new("write-0123456789abcdef"))
    );
    assert_eq!(config.web.max_body_bytes, 16 * 1024);
    assert!(!config.web.hop_histograms);
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("0123456789abcdef"),
        "tokens leak into Debug: {debug}"
    );
}

#[test]
fn bad_web_settings_name_their_line_and_key() {
    error(
        "[web]\nlisten = \"localhost\"\n",
        2,
        "listen",
        "not an IP:port address",
    );
    error(
        "[web]\nwrite_token = \"short\"\n",
        2,
        "write_token",
        "below the minimum of 16 characters",
    );
    error(
        "[web]\n\nread_token = \"has a space 0123456789\"\n",
        3,
        "read_token",
        "visible ASCII",
    );
    error(
        "[web]\nmax_body_bytes = \"10MiB\"\n",
        2,
        "max_body_bytes",
        "above the maximum",
    );
    let err = Config::parse("[web]\nlisen = \"127.0.0.1:1\"\n", "hopwatch.toml").unwrap_err();
    assert!(err.to_string().contains("did you mean \"listen\""), "{err}");
    // The error for a bad token does not repeat it.
    let err = Config::parse("[web]\nwrite_token = \"s3cr3t\"\n", "hopwatch.toml").unwrap_err();
    assert!(!err.to_string().contains("s3cr3t"), "{err}");
}

#[test]
fn docs_document_every_web_key() {
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"),
    )
    .unwrap();
    let heading = "## `[web]`";
    let start = docs
        .find(heading)
        .expect("docs/configuration.md has a [web] section");
    let section = &docs[start..];
    let end = section[heading.len()..]
        .find("\n## ")
        .map_or(section.len(), |e| e + heading.len());
    for key in super::raw::keys_of::<super::raw::RawWeb>() {
        assert!(
            section[..end].contains(&format!("| `{key}` |")),
            "[web] lacks `{key}`"
        );
    }
}

// ---- abuse: the fuzz target's property in the normal suite ----

/// What any outcome of [`Config::parse`] must satisfy: see
/// [`super::properties`] (the fuzz target `config_parse` checks the same).
fn check_parse(text: &str) -> Result<Config, ConfigError> {
    super::properties::parse_asserting_properties(text)
}

/// Random and mutated configs never panic the loader and satisfy [`check_parse`].
/// The seeds are the shipped examples (the reference one with its commented-out
/// examples switched on) and small configs of each section; the mutations work on
/// lines and values, where a config's meaning is, as well as on bytes.
#[test]
fn random_and_mutated_configs_keep_errors_located() {
    let reference = std::fs::read_to_string(example("hopwatch.toml")).unwrap();
    let uncommented: String = reference
        .lines()
        .map(|line| {
            line.strip_prefix("# ")
                .filter(|rest| is_example_line(rest))
                .unwrap_or(line)
        })
        .collect::<Vec<_>>()
        .join("\n");
    let seeds = [
        uncommented,
        std::fs::read_to_string(example("lab-demo.toml")).unwrap(),
        "[defaults]\ninterval = \"2s\"\n\n[[target]]\nname = \"gw\"\nhost = \"198.18.0.1\"\n"
            .to_owned(),
        "[[peer]]\nname = \"p\"\naddress = \"198.18.0.2\"\n\n[reflector]\nlisten = [\"127.0.0.1:862\"]\n"
            .to_owned(),
    ];
    let values = [
        "0",
        "-1",
        "1",
        "65536",
        "4294967296",
        "1e309",
        "nan",
        "-0.0",
        "true",
        "\"\"",
        "\"0s\"",
        "\"1ns\"",
        "\"99999999999999999999h\"",
        "\"1x\"",
        "\"64KiB\"",
        "\"1EiB\"",
        "[]",
        "{}",
        "[1, \"a\"]",
        "\"::\"",
        "\"0.0.0.0:0\"",
        "\"a/b\"",
        "\"peer:x\"",
        "\"é\"",
    ];
    let mut rng = fastrand::Rng::with_seed(0x636f_6e66_6967_7a7a);
    let (mut ok, mut errors) = (0, 0);
    for _ in 0..1_500 {
        let mut lines: Vec<String> = seeds[rng.usize(0..seeds.len())]
            .lines()
            .map(str::to_owned)
            .collect();
        for _ in 0..1 + rng.usize(0..4) {
            if lines.is_empty() {
                lines.push(String::new());
            }
            let at = rng.usize(0..lines.len());
            match rng.u8(0..7) {
                0 => drop(lines.remove(at)),
                1 => {
                    let copy = lines[rng.usize(0..lines.len())].clone();
                    lines.insert(at, copy);
                }
                2 | 3 => {
                    // A new value for a key.
                    if let Some((key, _)) = lines[at].split_once(" = ") {
                        lines[at] = format!("{key} = {}", values[rng.usize(0..values.len())]);
                    }
                }
                4 => {
                    // Cut the line short, at a character boundary.
                    let cut = rng.usize(0..=lines[at].len());
                    let cut = (0..=cut)
                        .rev()
                        .find(|&i| lines[at].is_char_boundary(i))
                        .unwrap_or(0);
                    lines[at].truncate(cut);
                }
                5 => {
                    let c = [
                        '[', ']', '"', '=', '#', '\\', '\'', '.', ',', '\0', '\u{feff}',
                    ][rng.usize(0..11)];
                    let len = lines[at].len();
                    let pos = (0..=rng.usize(0..=len))
                        .rev()
                        .find(|&i| lines[at].is_char_boundary(i))
                        .unwrap_or(0);
                    lines[at].insert(pos, c);
                }
                _ => {
                    let other = rng.usize(0..lines.len());
                    lines.swap(at, other);
                }
            }
        }
        let text = lines.join(if rng.u8(0..8) == 0 { "\r\n" } else { "\n" });
        match check_parse(&text) {
            Ok(_) => ok += 1,
            Err(_) => errors += 1,
        }
    }
    // Both outcomes must be common, or the mutations explore too little.
    assert!(ok > 200 && errors > 200, "{ok} parsed, {errors} refused");
}

// ---- remote write ----

#[test]
fn remote_write_tables_parse_with_their_defaults() {
    let config = parse(
        r#"
[service]
vantage = "paris-1"

[[remote_write]]
url = "http://198.18.9.1:9090/api/v1/write"

[[remote_write]]
name = "central"
url = "https://user:pw@prom.example/api/v1/write?x=1"
username = "hopwatch"
password = "pass"
interval = "30s"
labels = { site = "paris", region = "eu" }
series = "full"
backfill_max_age = "2h"
backfill_samples_per_second = 500
ca_file = "ca.pem"
"#,
    );
    assert_eq!(config.service.vantage, "paris-1");
    let [first, second] = config.remote_write.as_slice() else {
        panic!("two receivers: {:?}", config.remote_write)
    };
    assert_eq!(first.name, "remote_write_1");
    assert_eq!(first.auth, RemoteAuth::None);
    assert_eq!(first.interval, defaults::REMOTE_WRITE_INTERVAL);
    assert_eq!(first.series, SeriesSet::Default);
    assert_eq!(
        first.backfill_max_age,
        defaults::REMOTE_WRITE_BACKFILL_MAX_AGE
    );
    assert_eq!(second.name, "central");
    assert!(matches!(&second.auth, RemoteAuth::Basic { username, .. } if username == "hopwatch"));
    assert_eq!(second.interval, Duration::from_secs(30));
    assert_eq!(
        second.labels,
        vec![
            ("region".to_owned(), "eu".to_owned()),
            ("site".to_owned(), "paris".to_owned())
        ]
    );
    assert_eq!(second.series, SeriesSet::Full);
    assert_eq!(second.backfill_max_age, Duration::from_secs(7200));
    assert_eq!(second.backfill_samples_per_second, 500);
    assert_eq!(second.ca_file, Some(PathBuf::from("ca.pem")));
    // Neither the URL's credentials nor the password reach Debug output.
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("pw@") && !shown.contains("\"pass\""),
        "{shown}"
    );
}

#[test]
fn the_vantage_defaults_to_the_host_name() {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(parse("").service.vantage, host.trim());
}

#[test]
fn remote_write_errors_name_the_line_and_key() {
    error(
        "[[remote_write]]\nname = \"a\"\n",
        1,
        "url",
        "remote_write \"a\": the required key \"url\" is missing",
    );
    error(
        "[[remote_write]]\nurl = \"ftp://x/\"\n",
        2,
        "url",
        "[[remote_write]] #1",
    );
    error(
        "[[remote_write]]\nurl = \"http://x/\"\nintervall = \"5s\"\n",
        3,
        "intervall",
        "did you mean \"interval\"",
    );
    error(
        "[[remote_write]]\nurl = \"http://x/\"\ninterval = \"10ms\"\n",
        3,
        "interval",
        "below the minimum",
    );
    error(
        "[[remote_write]]\nurl = \"http://x/\"\nusername = \"u\"\n",
        3,
        "username",
        "needs password too",
    );
    error(
        "[[remote_write]]\nurl = \"http://x/\"\nusername = \"u\"\npassword = \"p\"\nbearer_token = \"t\"\n",
        5,
        "bearer_token",
        "not both",
    );
    error(
        "[[remote_write]]\nurl = \"http://x/\"\nlabels = { target = \"x\" }\n",
        3,
        "labels",
        "hopwatch's own",
    );
    error(
        "[[remote_write]]\nurl = \"http://x/\"\nlabels = { \"9x\" = \"x\" }\n",
        3,
        "labels",
        "not a Prometheus label name",
    );
    error(
        "[[remote_write]]\nurl = \"http://x/\"\nseries = \"all\"\n",
        3,
        "series",
        "default, full",
    );
    error(
        "[storage]\nraw_retention = \"2h\"\n\n[[remote_write]]\nurl = \"http://x/\"\nbackfill_max_age = \"3h\"\n",
        6,
        "backfill_max_age",
        "raw_retention",
    );
    error(
        "[[remote_write]]\nname = \"a\"\nurl = \"http://x/\"\n\n[[remote_write]]\nname = \"a\"\nurl = \"http://y/\"\n",
        6,
        "name",
        "already used by the remote_write on line 2",
    );
    error(
        "[service]\nvantage = \"\"\n",
        2,
        "vantage",
        "must not be empty",
    );
    error(
        &format!("[service]\nvantage = \"{}\"\n", "v".repeat(65)),
        2,
        "vantage",
        "above the maximum",
    );
}

#[test]
fn a_short_raw_retention_caps_the_default_backfill_age() {
    let config =
        parse("[storage]\nraw_retention = \"2h\"\n\n[[remote_write]]\nurl = \"http://x/\"\n");
    assert_eq!(
        config.remote_write[0].backfill_max_age,
        Duration::from_secs(7200)
    );
}

#[test]
fn remote_write_changes_need_a_restart() {
    let old = parse("[[remote_write]]\nurl = \"http://x/\"\n");
    let new = parse("[service]\nvantage = \"b\"\n\n[[remote_write]]\nurl = \"http://y/\"\n");
    let diff = ConfigDiff::between(&old, &new);
    assert_eq!(
        diff.restart_needed().collect::<Vec<_>>(),
        vec!["service.vantage", "remote_write"]
    );
}

#[test]
fn multipath_is_off_by_default_and_takes_a_table_or_an_inline_table() {
    let config = parse("[[target]]\nname = \"a\"\nhost = \"198.18.0.9\"\n");
    assert_eq!(config.targets[0].multipath, None);

    let config = parse(
        "[[target]]\nname = \"a\"\nhost = \"198.18.0.9\"\nprotocol = \"udp\"\nmultipath = {}\n",
    );
    let m = config.targets[0]
        .multipath
        .expect("an empty table turns it on");
    assert_eq!(m.max_branches, defaults::MULTIPATH_BRANCHES);
    assert_eq!(m.confidence.percent(), defaults::MULTIPATH_CONFIDENCE);
    assert_eq!(m.rediscover, defaults::MULTIPATH_REDISCOVER);
    assert_eq!(m.max_probes, defaults::MULTIPATH_MAX_PROBES);

    let config = parse(
        "[[target]]\nname = \"a\"\nhost = \"198.18.0.9\"\n\n[target.multipath]\nbranches = 2\n\
         confidence = 99\nrediscover = \"10m\"\nmax_probes = 500\n",
    );
    let m = config.targets[0].multipath.unwrap();
    assert_eq!(
        (
            m.max_branches,
            m.confidence.percent(),
            m.rediscover,
            m.max_probes
        ),
        (2, 99, Duration::from_secs(600), 500)
    );
}

#[test]
fn multipath_errors_name_the_line_and_key() {
    let target = "[[target]]\nname = \"a\"\nhost = \"198.18.0.9\"\n";
    error(
        &format!("{target}multipath = {{ branches = 9 }}\n"),
        4,
        "multipath.branches",
        "above the maximum of 8",
    );
    error(
        &format!("{target}multipath = {{ branches = 0 }}\n"),
        4,
        "multipath.branches",
        "below the minimum of 1",
    );
    error(
        &format!("{target}[target.multipath]\nconfidence = 100\n"),
        5,
        "multipath.confidence",
        "above the maximum of 99",
    );
    error(
        &format!("{target}[target.multipath]\nrediscover = \"5s\"\n"),
        5,
        "multipath.rediscover",
        "below the minimum",
    );
    let err = error(
        &format!("{target}[target.multipath]\nbranchs = 2\n"),
        5,
        "branchs",
        "unknown key",
    );
    assert!(err.to_string().contains("branches"), "{err}");
    error(
        &format!("{target}final_hop_only = true\nmultipath = {{}}\n"),
        5,
        "multipath",
        "hop by hop",
    );
}

#[test]
fn a_multipath_change_reschedules_the_target() {
    let old = parse("[[target]]\nname = \"a\"\nhost = \"198.18.0.9\"\n");
    let new = parse("[[target]]\nname = \"a\"\nhost = \"198.18.0.9\"\nmultipath = {}\n");
    let diff = ConfigDiff::between(&old, &new);
    assert_eq!(diff.changed.len(), 1);
    assert_eq!(diff.changed[0].keys, vec!["multipath"]);
    assert_eq!(diff.changed[0].action, ChangeAction::Reschedule);
}
