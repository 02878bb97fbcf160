//! The router over a fake read model, request by request with `oneshot`:
//! the embedded UI, every API endpoint, input validation, tokens, error
//! bodies and statuses, exports, health and live streams, and the limits
//! that keep the API up under abuse (deadlines, read and stream caps, Host).

mod fake;

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use fake::*;
use http_body_util::BodyExt;

#[tokio::test]
async fn the_ui_is_embedded_and_served_with_a_strict_policy() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(false, false));
    for path in ["/", "/targets/alpha", "/peers/branch-b"] {
        let response = send(&router, get(path)).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"),);
        let html = body_text(response).await;
        assert!(html.contains("/assets/app.js"), "{path} loads the app");
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "nothing loads from elsewhere"
        );
    }
    for (asset, kind) in [
        ("/assets/app.js", "text/javascript"),
        ("/assets/map.js", "text/javascript"),
        ("/assets/land-110m.json", "application/json"),
        ("/assets/app.css", "text/css"),
        ("/assets/favicon.svg", "image/svg+xml"),
    ] {
        let response = send(&router, get(asset)).await;
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        assert!(response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with(kind));
        let etag = response.headers()[header::ETAG].clone();
        let body = body_text(response).await;
        assert!(!body.is_empty(), "{asset} is not empty");
        for remote in ["https://", "http://", "//cdn", "fonts.googleapis"] {
            assert!(
                !body.contains(remote) || asset.ends_with(".svg") && remote == "http://",
                "{asset} refers to {remote}"
            );
        }
        let again = send(
            &router,
            Request::get(asset)
                .header(header::IF_NONE_MATCH, etag)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(
            again.status(),
            StatusCode::NOT_MODIFIED,
            "{asset} revalidates"
        );
    }
    let missing = send(&router, get("/assets/nope.js")).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(body_json(missing).await["error"]
        .as_str()
        .unwrap()
        .contains("/assets/nope.js"));
}

#[tokio::test]
async fn the_overview_lists_every_target_with_the_service() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(false, true));
    let response = send(&router, get("/api/v1/targets")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let doc = body_json(response).await;
    assert_eq!(doc["service"]["timestamp_source"], "ebpf");
    assert_eq!(doc["service"]["writes_enabled"], true);
    assert_eq!(doc["service"]["read_token_required"], false);
    let targets = doc["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2);
    assert_eq!(targets[0]["id"], "alpha");
    assert_eq!(targets[0]["hop_count"], 3);
    assert_eq!(targets[0]["latency"]["avg_ns"], 3_000_000.0);
    assert_eq!(targets[0]["mos"], 4.39);
    assert_eq!(targets[0]["state"], "running");
    assert_eq!(targets[0]["timestamp_source"], "ebpf");

    let spark = body_json(send(&router, get("/api/v1/sparklines")).await).await;
    assert_eq!(spark["sparklines"][1]["target"], "beta");
    assert_eq!(
        spark["sparklines"][1]["rtt_us"],
        serde_json::json!([3000, null, 3100])
    );
}

#[tokio::test]
async fn a_target_page_has_its_hops_and_unknown_or_bad_names_are_clear_errors() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(false, false));
    let doc = body_json(send(&router, get("/api/v1/targets/alpha")).await).await;
    assert_eq!(doc["id"], "alpha");
    let hops = doc["hops"].as_array().unwrap();
    assert_eq!(hops.len(), 3);
    assert_eq!(hops[1]["rate_limited"], true);
    assert_eq!(hops[0]["responders"][0]["hostname"], "r1.lab.example");
    assert_eq!(hops[2]["is_destination"], true);
    assert_eq!(doc["destination"]["mos"], 4.39);

    let missing = send(&router, get("/api/v1/targets/gamma")).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        body_json(missing).await,
        serde_json::json!({"error": "no target named \"gamma\""})
    );
    let bad = send(&router, get("/api/v1/targets/a%20b")).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(body_json(bad).await["error"]
        .as_str()
        .unwrap()
        .contains("invalid target name"));
    let no_route = send(&router, get("/api/v1/nothing")).await;
    assert_eq!(no_route.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        body_json(no_route).await["error"],
        "no such endpoint: GET /api/v1/nothing"
    );
    let wrong_method = send(
        &router,
        Request::put("/api/v1/targets/alpha/pause")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    // Writes are checked first: with writes disabled every non-GET is 403.
    assert_eq!(wrong_method.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn series_are_validated_and_fitted_to_the_screen() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(false, false));
    let doc = body_json(
        send(
            &router,
            get("/api/v1/targets/alpha/series?hop=destination&range=15m&max_points=90"),
        )
        .await,
    )
    .await;
    let series = doc["series"].as_array().unwrap();
    assert_eq!(series.len(), 1);
    let points = series[0]["points"].as_array().unwrap();
    assert!(points.len() <= 90 && points.len() >= 89, "{}", points.len());
    assert_eq!(series[0]["bucket_ms"], 10_000);
    let sent: u64 = points.iter().map(|p| p["sent"].as_u64().unwrap()).sum();
    let lost: u64 = points.iter().map(|p| p["lost"].as_u64().unwrap()).sum();
    assert_eq!((sent, lost), (900, 90), "every probe is in some bucket");
    // A bucket of ten single probes has a real distribution.
    let p = &points[1];
    assert!(p["min_ns"].as_u64() < p["max_ns"].as_u64(), "{p}");
    assert!(p["p50_ns"].as_u64() <= p["p95_ns"].as_u64(), "{p}");

    let all = body_json(
        send(
            &router,
            get("/api/v1/targets/alpha/series?hop=all&range=15m"),
        )
        .await,
    )
    .await;
    let hops: Vec<&serde_json::Value> = all["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["hop"])
        .collect();
    assert_eq!(
        hops,
        [
            &serde_json::json!(1),
            &serde_json::json!(2),
            &serde_json::json!(3),
            &serde_json::json!("destination")
        ]
    );

    for (query, needle) in [
        ("hop=0", "`hop`"),
        ("hop=x", "`hop`"),
        ("range=2h", "`range`"),
        ("range=1h&from=1", "either range"),
        ("from=10&to=5", "before"),
        ("max_points=0", "`max_points`"),
        ("max_points=99999", "`max_points`"),
        ("bogus=1", "unknown field `bogus`"),
    ] {
        let response = send(
            &router,
            get(&format!("/api/v1/targets/alpha/series?{query}")),
        )
        .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let error = body_json(response).await["error"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(error.contains(needle), "{query}: {error}");
    }
}

#[tokio::test]
async fn a_branch_of_a_multipath_target_has_its_own_history_and_bad_branches_are_named() {
    let fake = Fake::new();
    {
        let mut targets = fake.targets.lock().unwrap();
        let alpha = targets
            .iter_mut()
            .find(|t| t.summary.id == "alpha")
            .unwrap();
        *alpha = multipath(alpha.clone());
    }
    let (router, _) = app(&fake, settings(false, false));
    let p50 = |doc: &serde_json::Value| doc["series"][0]["points"][0]["p50_ns"].as_u64().unwrap();
    let own = body_json(
        send(
            &router,
            get("/api/v1/targets/alpha/series?hop=destination&range=15m"),
        )
        .await,
    )
    .await;
    assert!(own.get("branch").is_none(), "{own}");
    let two = body_json(
        send(
            &router,
            get("/api/v1/targets/alpha/series?hop=destination&range=15m&branch=2"),
        )
        .await,
    )
    .await;
    assert_eq!(two["branch"], 2, "{two}");
    assert_eq!(p50(&two), p50(&own) + 200_000, "branch 2's own series");
    let heat = send(
        &router,
        get("/api/v1/targets/alpha/heatmap?range=15m&branch=1"),
    )
    .await;
    assert_eq!(heat.status(), StatusCode::OK);
    assert_eq!(body_json(heat).await["branch"], 1);
    let export = send(
        &router,
        get("/api/v1/targets/alpha/export?format=csv&from=1700000000000&to=1700003600000&branch=2"),
    )
    .await;
    assert_eq!(export.status(), StatusCode::OK);
    assert_eq!(
        export.headers()[header::CONTENT_DISPOSITION],
        "attachment; filename=\"hopwatch-alpha-branch2-1700000000000-1700003600000.csv\""
    );
    let csv = body_text(export).await;
    assert!(
        csv.contains("# target: alpha\n# branch: 2\n# from:"),
        "{csv}"
    );
    let json = body_json(
        send(
            &router,
            get("/api/v1/targets/alpha/export?format=json&range=1h&branch=1"),
        )
        .await,
    )
    .await;
    assert_eq!(json["meta"]["branch"], 1, "{json}");
    let plain = body_json(
        send(
            &router,
            get("/api/v1/targets/alpha/export?format=json&range=1h"),
        )
        .await,
    )
    .await;
    assert!(plain["meta"].get("branch").is_none(), "{plain}");

    for (path, status, needle) in [
        ("alpha/series?branch=x", StatusCode::BAD_REQUEST, "invalid query parameter `branch`: \"x\" is not a branch number"),
        ("alpha/series?branch=0", StatusCode::BAD_REQUEST, "`branch`"),
        ("alpha/heatmap?branch=-1", StatusCode::BAD_REQUEST, "`branch`"),
        ("alpha/export?branch=256", StatusCode::BAD_REQUEST, "`branch`"),
        ("alpha/series?branch=3", StatusCode::NOT_FOUND, "invalid query parameter `branch`: target \"alpha\" has no branch 3; its branches: 1, 2"),
        ("alpha/export?branch=3", StatusCode::NOT_FOUND, "no branch 3"),
        ("beta/series?branch=1", StatusCode::BAD_REQUEST, "invalid query parameter `branch`: target \"beta\" is not a multipath target"),
        ("beta/heatmap?branch=1", StatusCode::BAD_REQUEST, "not a multipath target"),
        ("nosuch/series?branch=1", StatusCode::NOT_FOUND, "no target named \"nosuch\""),
    ] {
        let response = send(&router, get(&format!("/api/v1/targets/{path}"))).await;
        assert_eq!(response.status(), status, "{path}");
        let error = body_json(response).await["error"].as_str().unwrap().to_owned();
        assert!(error.contains(needle), "{path}: {error}");
    }
}

#[tokio::test]
async fn the_heatmap_puts_every_hop_on_one_time_axis() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(false, false));
    let doc = body_json(
        send(
            &router,
            get("/api/v1/targets/beta/heatmap?from=0&to=120000&columns=12"),
        )
        .await,
    )
    .await;
    let map = &doc["heatmap"];
    assert_eq!(map["columns"], 12);
    assert_eq!(map["bucket_ms"], 10_000);
    let rows = map["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "two TTLs and the destination");
    for row in rows {
        assert_eq!(row["p50_ns"].as_array().unwrap().len(), 12);
        assert_eq!(row["loss"][0], 0.1, "one lost probe in ten");
    }
    assert!(rows[0]["p50_ns"][0].as_u64() < rows[1]["p50_ns"][0].as_u64());
}

#[tokio::test]
async fn exports_record_how_the_data_was_measured() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(false, false));
    let response = send(
        &router,
        get("/api/v1/targets/alpha/export?format=csv&from=1700000000000&to=1700003600000"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert!(response.headers()[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .contains("hopwatch-alpha-1700000000000-1700003600000.csv"));
    let csv = body_text(response).await;
    let lines: Vec<&str> = csv.lines().collect();
    for expected in [
        "# target: alpha",
        "# from: 2023-11-14T22:13:20.000Z",
        "# to_ms: 1700003600000",
        "# probe_interval_ms: 1000",
        "# protocol: icmp",
        "# packet_size: 64",
        "# sample_count: 600",
        "# window_probes: 100",
        "# window_ms: 100000",
        "# timestamp_source: ebpf",
    ] {
        assert!(lines.contains(&expected), "missing {expected:?} in\n{csv}");
    }
    let header_at = lines.iter().position(|l| l.starts_with("hop,")).unwrap();
    let rows = &lines[header_at + 1..];
    assert_eq!(rows.len(), 4, "three TTLs and the destination");
    assert_eq!(
        rows[0],
        "1,198.18.1.2,r1.lab.example,600,6,1.00,0.900,1.000,1.900,0.050,1.000,1.500,1.800"
    );
    assert!(rows[3].starts_with("destination,198.18.3.2,,600,6,"));

    let json = body_json(
        send(
            &router,
            get("/api/v1/targets/alpha/export?format=json&range=24h"),
        )
        .await,
    )
    .await;
    assert_eq!(json["meta"]["protocol"], "icmp");
    assert_eq!(json["meta"]["sample_count"], 600);
    assert_eq!(
        json["meta"]["to_ms"].as_u64().unwrap() - json["meta"]["from_ms"].as_u64().unwrap(),
        86_400_000
    );
    assert_eq!(json["hops"][3]["hop"], "destination");
    assert_eq!(json["hops"][0]["p95_ns"], 1_500_000);

    let bad = send(&router, get("/api/v1/targets/alpha/export?format=xml")).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn exports_carry_the_as_columns_only_when_asked() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(false, false));
    let range = "from=1700000000000&to=1700003600000";
    let plain = body_text(
        send(
            &router,
            get(&format!("/api/v1/targets/alpha/export?format=csv&{range}")),
        )
        .await,
    )
    .await;
    assert!(
        !plain.contains("asn") && !plain.contains("Transit"),
        "{plain}"
    );

    let response = send(
        &router,
        get(&format!(
            "/api/v1/targets/alpha/export?format=csv&{range}&asn=true"
        )),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let csv = body_text(response).await;
    let lines: Vec<&str> = csv.lines().collect();
    let header_at = lines.iter().position(|l| l.starts_with("hop,")).unwrap();
    assert_eq!(
        lines[header_at],
        "hop,responder,hostname,asn,as_org,sent,lost,loss_pct,min_ms,avg_ms,max_ms,stddev_ms,p50_ms,p95_ms,p99_ms"
    );
    let rows = &lines[header_at + 1..];
    assert_eq!(
        rows[0],
        "1,198.18.1.2,r1.lab.example,64500,\"Example \"\"Transit\"\", Inc.\",600,6,1.00,0.900,1.000,1.900,0.050,1.000,1.500,1.800",
        "the organisation is one quoted cell"
    );
    assert!(
        rows[1].starts_with("2,198.18.2.2,r2.lab.example,,,600,6,"),
        "an unknown AS leaves both cells empty: {}",
        rows[1]
    );

    let json = body_json(
        send(
            &router,
            get(&format!(
                "/api/v1/targets/alpha/export?format=json&{range}&asn=true"
            )),
        )
        .await,
    )
    .await;
    assert_eq!(json["hops"][0]["asn"], 64_500);
    assert_eq!(json["hops"][0]["as_org"], "Example \"Transit\", Inc.");
    assert_eq!(json["hops"][0]["p95_ns"], 1_500_000, "the totals stay");
    assert!(json["hops"][1]["asn"].is_null());
    let without = body_json(
        send(
            &router,
            get(&format!("/api/v1/targets/alpha/export?format=json&{range}")),
        )
        .await,
    )
    .await;
    assert!(
        without["hops"][0].get("asn").is_none(),
        "the old shape without asn=true"
    );

    let bad = send(&router, get("/api/v1/targets/alpha/export?asn=yes")).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let error = body_json(bad).await;
    let message = error["error"].as_str().unwrap();
    assert!(
        message.contains("`asn`") && message.contains("yes"),
        "{message}"
    );
}

#[tokio::test]
async fn hops_and_route_history_carry_as_numbers_and_organisations() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(false, false));
    // What the hop table renders: every responder with its AS.
    let detail = body_json(send(&router, get("/api/v1/targets/alpha")).await).await;
    let first = &detail["hops"][0]["responders"][0];
    assert_eq!(first["asn"], 64_500);
    assert_eq!(first["as_org"], "Example \"Transit\", Inc.");
    assert!(detail["hops"][1]["responders"][0]["asn"].is_null());
    // What the route history renders: the AS of the addresses in before/after.
    let events = body_json(send(&router, get("/api/v1/targets/alpha/events?range=1h")).await).await;
    let event = &events["events"][0];
    assert_eq!(event["kind"], "route_changed");
    assert_eq!(
        event["as_info"],
        serde_json::json!([{"address": "198.18.1.2", "asn": 64500, "as_org": "Example \"Transit\", Inc."}])
    );
    // The UI draws both: an AS label by each responder in the hop table, and
    // by each address of the route table.
    let js = body_text(send(&router, get("/assets/app.js")).await).await;
    for needle in [
        "function asLabel(",
        "asLabel(r.asn, r.as_org)",
        "routeTable(e.detail, e.as_info)",
    ] {
        assert!(js.contains(needle), "app.js lacks {needle:?}");
    }
}

#[tokio::test]
async fn hops_carry_their_positions_and_the_map_and_coastline_are_embedded() {
    let fake = Fake::new();
    fake.targets.lock().unwrap().push(fake::geo());
    let (router, _) = app(&fake, settings(false, false));
    let service = body_json(send(&router, get("/api/v1/service")).await).await;
    assert_eq!(service["city_database"], true, "{service}");
    let detail = body_json(send(&router, get("/api/v1/targets/geo")).await).await;
    let hops = detail["hops"].as_array().expect("hops");
    assert_eq!(hops.len(), fake::GEO_PATH.len());
    for (hop, want) in hops.iter().zip(&fake::GEO_PATH) {
        let responders = hop["responders"].as_array().expect("responders");
        let Some(address) = want.address else {
            assert!(responders.is_empty(), "an unanswered hop: {hop}");
            continue;
        };
        let r = &responders[0];
        assert_eq!(r["address"], address, "{hop}");
        match want.place {
            Some((lat, lon, city, country)) => {
                assert_eq!(r["latitude"], lat, "{r}");
                assert_eq!(r["longitude"], lon, "{r}");
                assert_eq!(r["city"], city, "{r}");
                assert_eq!(r["country"], country, "{r}");
            }
            None => {
                // Present and null: not placed, and not guessed.
                for key in ["latitude", "longitude", "city", "country"] {
                    assert!(
                        r.as_object().unwrap().contains_key(key) && r[key].is_null(),
                        "{key}: {r}"
                    );
                }
            }
        }
        match want.special {
            Some(block) => assert_eq!(r["special_purpose"], block, "{r}"),
            None => assert!(r["special_purpose"].is_null(), "{r}"),
        }
    }
    // The live stream sends the same hop objects.
    let alpha = body_json(send(&router, get("/api/v1/targets/alpha")).await).await;
    assert_eq!(
        alpha["hops"][0]["responders"][0]["special_purpose"],
        "benchmarking (RFC 2544)"
    );
    // The page loads the map module beside the app, and the coastline is
    // served from the binary: Natural Earth land rings, with its source.
    let html = body_text(send(&router, get("/targets/geo")).await).await;
    assert!(html.contains("/assets/map.js"), "{html}");
    let land = body_json(send(&router, get("/assets/land-110m.json")).await).await;
    assert!(land["source"].as_str().unwrap().contains("Natural Earth"));
    assert!(land["licence"].as_str().unwrap().contains("public domain"));
    let rings = land["rings"].as_array().expect("rings");
    assert!(rings.len() > 100, "{} rings", rings.len());
    let points: usize = rings.iter().map(|r| r.as_array().unwrap().len() / 2).sum();
    assert!((4_000..8_000).contains(&points), "{points} points");
    let js = body_text(send(&router, get("/assets/app.js")).await).await;
    assert!(
        js.contains("HopMap.create("),
        "the target page draws the map"
    );
}

#[tokio::test]
async fn ninety_days_and_a_year_are_presets_served_from_hour_rollups() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(false, false));
    let service = body_json(send(&router, get("/api/v1/service")).await).await;
    assert_eq!(
        service["ranges"],
        serde_json::json!(["15m", "1h", "6h", "24h", "7d", "30d", "90d", "1y"])
    );
    for (preset, days) in [("90d", 90u64), ("1y", 365)] {
        fake.series_ranges.lock().unwrap().clear();
        let series = send(
            &router,
            get(&format!(
                "/api/v1/targets/alpha/series?hop=destination&range={preset}&max_points=400"
            )),
        )
        .await;
        assert_eq!(series.status(), StatusCode::OK, "{preset}");
        let series = body_json(series).await;
        let heat = send(
            &router,
            get(&format!(
                "/api/v1/targets/alpha/heatmap?range={preset}&columns=300"
            )),
        )
        .await;
        assert_eq!(heat.status(), StatusCode::OK, "{preset}");
        let heat = body_json(heat).await;
        // The read model was asked for the whole span, which it answers from
        // hour rollups (the service's rule, tested in its webapi::history).
        let asked = fake.series_ranges.lock().unwrap().clone();
        assert_eq!(asked.len(), 2, "{preset}: {asked:?}");
        for range in &asked {
            assert_eq!(range.span_ms(), days * 86_400_000, "{preset}");
            assert!(
                range.span_ms() > MINUTE_UP_TO_MS,
                "{preset}: beyond minute rollups"
            );
        }
        let s = &series["series"][0];
        assert_eq!(s["resolution"], "1h", "{preset}");
        let points = s["points"].as_array().unwrap();
        assert!(
            !points.is_empty() && points.len() <= 400,
            "{preset}: {} points",
            points.len()
        );
        assert!(s["bucket_ms"].as_u64().unwrap() >= 3_600_000, "{preset}");
        let map = &heat["heatmap"];
        assert_eq!(map["resolution"], "1h", "{preset}");
        let columns = map["columns"].as_u64().unwrap();
        assert!((1..=300).contains(&columns), "{preset}: {columns}");
        let rows = map["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 4, "{preset}: three TTLs and the destination");
        let filled = rows[0]["p50_ns"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| !v.is_null())
            .count();
        assert!(
            filled as u64 >= columns - 1,
            "{preset}: every column of the heatmap has data ({filled} of {columns})"
        );
        // The export and the events take the presets too.
        for path in ["export?format=json", "events?x=1"] {
            let uri = format!("/api/v1/targets/alpha/{path}&range={preset}").replace("?x=1&", "?");
            let response = send(&router, get(&uri)).await;
            assert_eq!(response.status(), StatusCode::OK, "{uri}");
        }
    }
    let bad = body_json(send(&router, get("/api/v1/targets/alpha/series?range=2y")).await).await;
    let message = bad["error"].as_str().unwrap();
    assert!(
        message.contains("90d, 1y"),
        "the error lists the presets: {message}"
    );
}

#[tokio::test]
async fn webhooks_show_their_delivery_health() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(false, false));
    let response = send(&router, get("/api/v1/webhooks")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CACHE_CONTROL],
        "no-store",
        "delivery health is live data"
    );
    let doc = body_json(response).await;
    let hooks = doc["webhooks"].as_array().expect("a webhooks array");
    assert_eq!(hooks.len(), 2, "{doc}");
    assert_eq!(hooks[0]["name"], "ops");
    assert_eq!(hooks[0]["failing"], false);
    assert_eq!(hooks[0]["next_retry_at_ms"], serde_json::Value::Null);
    let am = &hooks[1];
    assert_eq!(am["format"], "alertmanager");
    assert_eq!(am["url"], "http://127.0.0.1:9093/…");
    assert_eq!(am["failing"], true);
    assert_eq!(am["pending"], 3);
    assert_eq!(am["failed_attempts"], 7);
    assert_eq!(am["consecutive_failures"], 4);
    assert_eq!(am["last_error"], "the receiver answered HTTP 500");
    assert_eq!(am["last_error_at_ms"], 8_000);
    assert_eq!(am["last_success_at_ms"], 2_000);
    assert_eq!(am["next_retry_at_ms"], 10_000);
    assert_eq!(am["retrying_targets"], serde_json::json!(["alpha"]));
    assert_eq!(am["resent"], 5);
    assert_eq!(
        (am["dropped_age"].clone(), am["dropped_bytes"].clone()),
        (1.into(), 0.into())
    );
    // Exactly the DTO's fields: nothing else (a secret) can slip in.
    let mut keys: Vec<&str> = am.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "consecutive_failures",
            "delivered",
            "dropped_age",
            "dropped_bytes",
            "failed_attempts",
            "failing",
            "format",
            "last_error",
            "last_error_at_ms",
            "last_success_at_ms",
            "name",
            "next_retry_at_ms",
            "pending",
            "resent",
            "retrying_targets",
            "signed",
            "url"
        ]
    );

    // None configured: an empty list, not an error.
    fake.webhooks.lock().unwrap().clear();
    let doc = body_json(send(&router, get("/api/v1/webhooks")).await).await;
    assert_eq!(doc, serde_json::json!({ "webhooks": [] }));

    let listed = body_json(send(&router, get("/api/v1")).await).await;
    assert!(
        listed["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "GET /api/v1/webhooks"),
        "{listed}"
    );
    let (writable, _) = app(&fake, settings(false, true));
    let post = send(
        &writable,
        post_json("/api/v1/webhooks", Some(WRITE_TOKEN), "{}"),
    )
    .await;
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED, "read-only");
    // The overview's webhooks panel reads this endpoint.
    let js = body_text(send(&router, get("/assets/app.js")).await).await;
    assert!(js.contains("/api/v1/webhooks"));
}

#[tokio::test]
async fn a_read_token_protects_data_but_not_the_ui_or_health() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(true, true));
    for path in [
        "/api/v1/targets",
        "/api/v1/targets/alpha",
        "/api/v1/webhooks",
        "/api/v1/alerts",
        "/api/v1/incidents",
        "/api/v1/peers",
        "/api/v1/peers/branch-b",
        "/api/v1/peers/branch-b/history",
        "/metrics",
        "/api/v1/live",
    ] {
        let response = send(&router, get(path)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
        assert!(body_json(response).await["error"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer"));
        let wrong = send(&router, with_token("GET", path, "not-the-token-at-all")).await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let ok = send(&router, with_token("GET", "/api/v1/targets", READ_TOKEN)).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let ok = send(&router, with_token("GET", "/api/v1/targets", WRITE_TOKEN)).await;
    assert_eq!(ok.status(), StatusCode::OK, "the write token also reads");
    for open in ["/", "/assets/app.js", "/healthz", "/readyz"] {
        assert_eq!(
            send(&router, get(open)).await.status(),
            StatusCode::OK,
            "{open}"
        );
    }
}

#[tokio::test]
async fn writes_need_the_write_token_and_are_refused_without_one_configured() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(false, false));
    let refused = send(
        &router,
        with_token("POST", "/api/v1/targets/alpha/pause", WRITE_TOKEN),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(body_json(refused).await["error"]
        .as_str()
        .unwrap()
        .contains("write_token"));
    assert!(fake.calls.lock().unwrap().is_empty());

    let (router, _) = app(&fake, settings(false, true));
    let missing = send(
        &router,
        Request::post("/api/v1/targets/alpha/pause")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    let wrong = send(
        &router,
        with_token("POST", "/api/v1/targets/alpha/pause", READ_TOKEN),
    )
    .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(fake.calls.lock().unwrap().is_empty());

    let paused = send(
        &router,
        with_token("POST", "/api/v1/targets/alpha/pause", WRITE_TOKEN),
    )
    .await;
    assert_eq!(paused.status(), StatusCode::OK);
    let outcome = body_json(paused).await;
    assert_eq!(outcome["action"], "paused");
    assert_eq!(outcome["changed"], true);
    let again = body_json(
        send(
            &router,
            with_token("POST", "/api/v1/targets/alpha/pause", WRITE_TOKEN),
        )
        .await,
    )
    .await;
    assert_eq!(again["changed"], false, "pausing twice changes nothing");
    let resumed = body_json(
        send(
            &router,
            with_token("POST", "/api/v1/targets/alpha/resume", WRITE_TOKEN),
        )
        .await,
    )
    .await;
    assert_eq!(resumed["action"], "resumed");
    let removed = send(
        &router,
        with_token("DELETE", "/api/v1/targets/beta", WRITE_TOKEN),
    )
    .await;
    assert_eq!(removed.status(), StatusCode::OK);
    let gone = send(
        &router,
        with_token("DELETE", "/api/v1/targets/beta", WRITE_TOKEN),
    )
    .await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        *fake.calls.lock().unwrap(),
        vec![
            Call::Pause("alpha".into(), true),
            Call::Pause("alpha".into(), true),
            Call::Pause("alpha".into(), false),
            Call::Remove("beta".into()),
        ]
    );

    // A failure to save is a 500 whose body does not leak the path.
    let broken = send(
        &router,
        with_token("POST", "/api/v1/targets/broken/pause", WRITE_TOKEN),
    )
    .await;
    assert_eq!(broken.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let text = body_text(broken).await;
    assert!(
        !text.contains("/etc/hopwatch") && !text.contains("permission"),
        "{text}"
    );
    assert!(text.contains("log"), "{text}");
}

#[tokio::test]
async fn new_targets_are_validated_and_bodies_are_limited() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(false, true));
    let created = send(
        &router,
        post_json(
            "/api/v1/targets",
            Some(WRITE_TOKEN),
            r#"{"name":"gamma","host":"198.18.5.2","label":"Gamma","protocol":"udp","port":33434,"interval":"500ms","tags":["lab"]}"#,
        ),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(body_json(created).await["action"], "added");
    let listed = body_json(send(&router, get("/api/v1/targets")).await).await;
    assert_eq!(listed["targets"].as_array().unwrap().len(), 3);

    for (body, status, needle) in [
        (
            r#"{"name":"gamma","host":"198.18.5.2"}"#,
            StatusCode::CONFLICT,
            "already exists",
        ),
        (
            r#"{"name":"bad name","host":"198.18.5.2"}"#,
            StatusCode::BAD_REQUEST,
            "`name`",
        ),
        (
            r#"{"name":"d","host":"a b"}"#,
            StatusCode::BAD_REQUEST,
            "`host`",
        ),
        (
            r#"{"name":"d","host":"198.18.5.2","protocol":"sctp"}"#,
            StatusCode::BAD_REQUEST,
            "`protocol`",
        ),
        (
            r#"{"name":"d","host":"198.18.5.2","interval":"1ms"}"#,
            StatusCode::BAD_REQUEST,
            "100ms",
        ),
        (
            r#"{"name":"d","host":"198.18.5.2","label":"x\u0007"}"#,
            StatusCode::BAD_REQUEST,
            "control",
        ),
        (
            r#"{"name":"d","host":"198.18.5.2","colour":"red"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `colour`",
        ),
        (
            r#"{"name":"d","#,
            StatusCode::BAD_REQUEST,
            "invalid request body",
        ),
        (
            r#"{"name":"d","host":"198.18.5.2","port":70000}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "port",
        ),
    ] {
        let response = send(
            &router,
            post_json("/api/v1/targets", Some(WRITE_TOKEN), body),
        )
        .await;
        assert_eq!(response.status(), status, "{body}");
        let error = body_json(response).await["error"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(error.contains(needle), "{body}: {error}");
    }
    let huge = format!(
        r#"{{"name":"d","host":"198.18.5.2","description":"{}"}}"#,
        "x".repeat(10_000)
    );
    let response = send(
        &router,
        post_json("/api/v1/targets", Some(WRITE_TOKEN), &huge),
    )
    .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body_json(response).await["error"].is_string());
    let no_type = send(
        &router,
        Request::post("/api/v1/targets")
            .header("authorization", format!("Bearer {WRITE_TOKEN}"))
            .body(Body::from(r#"{"name":"d","host":"198.18.5.2"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(no_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(fake.calls.lock().unwrap().len(), 1, "only gamma was added");
}

#[tokio::test]
async fn a_list_of_targets_is_added_whole() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(false, true));
    let list = r#"[
        {"name": "gamma", "host": "198.18.5.2", "label": "Gamma"},
        {"name": "delta", "host": "198.18.6.2", "protocol": "tcp", "port": 443}
    ]"#;
    let created = send(
        &router,
        post_json("/api/v1/targets", Some(WRITE_TOKEN), list),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let added = body_json(created).await;
    let added = added["added"].as_array().unwrap();
    assert_eq!(added.len(), 2);
    assert_eq!(added[0]["target"], "gamma");
    assert_eq!(added[1]["target"], "delta");
    assert_eq!(added[1]["action"], "added");
    let listed = body_json(send(&router, get("/api/v1/targets")).await).await;
    assert_eq!(listed["targets"].as_array().unwrap().len(), 4);
    assert_eq!(fake.calls.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_list_with_bad_entries_adds_nothing_and_names_each() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(false, true));
    // Shape errors, found by the router before the control is asked.
    let list = r#"[
        {"name": "ok-1", "host": "198.18.5.2"},
        {"name": "bad name", "host": "198.18.5.3"},
        {"name": "ok-2", "host": "198.18.5.4", "colour": "red"},
        {"name": "ok-3", "host": "198.18.5.5", "port": "https"},
        {"host": "198.18.5.6"},
        "alpha",
        {"name": "ok-1", "host": "198.18.5.7"}
    ]"#;
    let response = send(
        &router,
        post_json("/api/v1/targets", Some(WRITE_TOKEN), list),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = body_json(response).await;
    let errors = body["errors"].as_array().unwrap();
    let found: Vec<(u64, Option<&str>)> = errors
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["field"].as_str()))
        .collect();
    assert_eq!(
        found,
        vec![
            (1, Some("name")),
            (2, Some("colour")),
            (3, Some("port")),
            (4, Some("name")),
            (5, None),
            (6, Some("name")),
        ],
        "{body}"
    );
    assert!(
        errors[5]["reason"].as_str().unwrap().contains("entry 0"),
        "{body}"
    );
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("6 of the targets are invalid; nothing was added")
            && message.contains("entry 2, `colour`"),
        "{message}"
    );
    // Errors only the service can find (an existing name, a value out of
    // range) are per entry too.
    let list = r#"[
        {"name": "ok-1", "host": "198.18.5.2"},
        {"name": "alpha", "host": "198.18.5.3"},
        {"name": "ok-2", "host": "198.18.5.4", "interval": "1ms"}
    ]"#;
    let response = send(
        &router,
        post_json("/api/v1/targets", Some(WRITE_TOKEN), list),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = body_json(response).await;
    assert_eq!(
        body["errors"],
        serde_json::json!([
            {"index": 1, "field": "name", "reason": "a target named \"alpha\" already exists"},
            {"index": 2, "field": "interval", "reason": "1ms is below the minimum of 100ms"},
        ])
    );
    // Nothing was added by either.
    assert!(fake.calls.lock().unwrap().is_empty());
    let listed = body_json(send(&router, get("/api/v1/targets")).await).await;
    assert_eq!(listed["targets"].as_array().unwrap().len(), 2);
    // An empty list is a clear error.
    let empty = send(
        &router,
        post_json("/api/v1/targets", Some(WRITE_TOKEN), "[]"),
    )
    .await;
    assert_eq!(empty.status(), StatusCode::BAD_REQUEST);
    assert!(body_json(empty).await["error"]
        .as_str()
        .unwrap()
        .contains("empty"));
}

#[tokio::test]
async fn a_list_of_targets_needs_the_write_token() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(true, true));
    let list = r#"[{"name": "gamma", "host": "198.18.5.2"}]"#;
    for (token, status) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some(READ_TOKEN), StatusCode::UNAUTHORIZED),
        (Some(WRITE_TOKEN), StatusCode::CREATED),
    ] {
        let response = send(&router, post_json("/api/v1/targets", token, list)).await;
        assert_eq!(response.status(), status, "{token:?}");
    }
    assert_eq!(fake.calls.lock().unwrap().len(), 1);
    // Without a write token configured, writes are off altogether.
    let (read_only, _) = app(&fake, settings(false, false));
    let list = r#"[{"name": "delta", "host": "198.18.6.2"}]"#;
    let response = send(
        &read_only,
        post_json("/api/v1/targets", Some(WRITE_TOKEN), list),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(fake.calls.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn the_configuration_is_served_redacted_behind_the_read_token() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(true, true));
    let refused = send(&router, get("/api/v1/config")).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let bad = send(
        &router,
        with_token("GET", "/api/v1/config", "not-the-token-000000"),
    )
    .await;
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    for token in [READ_TOKEN, WRITE_TOKEN] {
        let response = send(&router, with_token("GET", "/api/v1/config", token)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let doc = body_json(response).await;
        assert_eq!(doc["path"], "/etc/hopwatch/hopwatch.toml");
        assert_eq!(doc["redacted"][0], "web.write_token");
        assert_eq!(doc["config"]["web"]["write_token"], "<redacted>");
        assert!(
            doc.get("toml").is_none(),
            "the TOML text only with format=toml"
        );
    }
    let file = send(
        &router,
        with_token("GET", "/api/v1/config?format=toml", READ_TOKEN),
    )
    .await;
    assert_eq!(file.status(), StatusCode::OK);
    assert!(file.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/toml"));
    assert!(file.headers()[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .contains("hopwatch-config.toml"));
    assert!(body_text(file)
        .await
        .contains("write_token = \"<redacted>\""));
    let yaml = send(
        &router,
        with_token("GET", "/api/v1/config?format=yaml", READ_TOKEN),
    )
    .await;
    assert_eq!(yaml.status(), StatusCode::BAD_REQUEST);
    assert!(body_json(yaml).await["error"]
        .as_str()
        .unwrap()
        .contains("`format`"));
}

#[tokio::test]
async fn the_ui_downloads_the_config_and_imports_a_list() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(false, false));
    let html = body_text(send(&router, get("/")).await).await;
    assert!(html.contains("id=\"dlg-import\""), "the import dialog");
    let js = body_text(send(&router, get("/assets/app.js")).await).await;
    for needle in [
        "id: 'btn-config'",
        "'/api/v1/config?format=toml'",
        "id: 'btn-import'",
        "Array.isArray(list)",
        "api('/api/v1/targets', { method: 'POST', json: list, write: true })",
        "err.errors = (doc && doc.errors) || []",
    ] {
        assert!(js.contains(needle), "app.js lacks {needle:?}");
    }
}

#[tokio::test]
async fn events_come_from_history_and_store_failures_hide_their_details() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(false, false));
    let doc = body_json(send(&router, get("/api/v1/targets/alpha/events?range=7d")).await).await;
    assert_eq!(doc["events"][0]["kind"], "route_changed");
    assert_eq!(doc["events"][0]["detail"]["first_changed_ttl"], 2);
    assert_eq!(
        doc["to_ms"].as_u64().unwrap() - doc["from_ms"].as_u64().unwrap(),
        7 * 86_400_000
    );
    *fake.fail_store.lock().unwrap() = true;
    let failed = send(&router, get("/api/v1/targets/alpha/events")).await;
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let text = body_text(failed).await;
    assert!(
        !text.contains("sled") && !text.contains("/var/lib"),
        "{text}"
    );
}

#[tokio::test]
async fn readiness_says_which_timestamp_source_probes_use() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(true, false));
    let health = send(&router, get("/healthz")).await;
    assert_eq!(health.status(), StatusCode::OK);
    let ready = send(&router, get("/readyz")).await;
    assert_eq!(ready.status(), StatusCode::OK);
    let doc = body_json(ready).await;
    assert_eq!(doc["ready"], true);
    assert_eq!(doc["timestamp_source"], "ebpf");
    assert_eq!(doc["store"]["ok"], true);
    assert_eq!(doc["targets"]["running"], 2);
    *fake.engine_running.lock().unwrap() = false;
    let not_ready = send(&router, get("/readyz")).await;
    assert_eq!(not_ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let doc = body_json(not_ready).await;
    assert_eq!(doc["ready"], false);
    assert_eq!(doc["reason"], "the probe engine is not running");
}

/// The families of an OpenMetrics text: name -> (type, help, samples).
fn families(text: &str) -> std::collections::BTreeMap<String, (String, String, Vec<String>)> {
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            out.entry(name.to_owned())
                .or_insert_with(|| (String::new(), String::new(), Vec::new()))
                .0 = kind.to_owned();
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            out.entry(name.to_owned())
                .or_insert_with(|| (String::new(), String::new(), Vec::new()))
                .1 = help.to_owned();
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = out
                .keys()
                .filter(|f| name.starts_with(f.as_str()))
                .max_by_key(|f| f.len())
                .unwrap_or_else(|| panic!("sample {name} before its TYPE"))
                .clone();
            out.get_mut(&family).unwrap().2.push(line.to_owned());
        }
    }
    out
}

#[tokio::test]
async fn metrics_follow_prometheus_conventions() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(false, false));
    let response = send(&router, get("/metrics")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = body_text(response).await;
    assert!(text.ends_with("# EOF\n"));
    // The read model hears that the scrape is done, once the whole body is out.
    assert_eq!(*fake.scrapes_done.lock().unwrap(), 1);
    let families = families(&text);
    for (name, (kind, help, samples)) in &families {
        assert!(name.starts_with("hopwatch_"), "{name}");
        assert!(!help.is_empty(), "{name} has HELP");
        assert!(!kind.is_empty(), "{name} has TYPE");
        for sample in samples {
            let sample_name = sample.split(['{', ' ']).next().unwrap();
            match kind.as_str() {
                "counter" => assert!(sample_name.ends_with("_total"), "{sample}"),
                "info" => assert!(sample_name.ends_with("_info"), "{sample}"),
                "histogram" => assert!(
                    ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| sample_name.ends_with(s)),
                    "{sample}"
                ),
                _ => {}
            }
            // Base units only: no milliseconds or percentages anywhere.
            assert!(
                !sample_name.contains("_ms") && !sample_name.contains("_pct"),
                "{sample}"
            );
        }
    }
    for expected in [
        "hopwatch_probes_sent_total 1000",
        "hopwatch_kernel_parse_failures_total 4",
        "hopwatch_kernel_ringbuf_drops_total 5",
        "hopwatch_kernel_ingress_tc_clock_total 6",
        "hopwatch_store_write_bytes_total 4096",
        "hopwatch_webhook_delivery_failures_total 2",
        "hopwatch_timestamp_source_info{source=\"ebpf\"} 1",
        "hopwatch_target_hop_count{target=\"alpha\"} 2",
        "hopwatch_target_mos{target=\"alpha\"} 4.4",
        "hopwatch_target_route_changes_total{target=\"alpha\"} 1",
        "hopwatch_target_state{target=\"alpha\",state=\"running\"} 1",
        "hopwatch_target_state{target=\"alpha\",state=\"paused\"} 0",
        "hopwatch_alert_firing{target=\"alpha\",subject=\"target\",alert=\"loss\"} 1",
        "hopwatch_hop_probes_sent_total{target=\"alpha\",ttl=\"1\"} 100",
        "hopwatch_hop_probes_received_total{target=\"alpha\",ttl=\"1\"} 5",
        "hopwatch_hop_loss_ratio{target=\"alpha\",ttl=\"2\"} 1.0",
        "hopwatch_hop_rate_limited{target=\"alpha\",ttl=\"2\"} 1",
        "hopwatch_hop_responder_info{target=\"alpha\",ttl=\"1\",responder=\"198.18.1.2\"} 1",
        "hopwatch_hop_rtt_seconds_count{target=\"alpha\",ttl=\"1\"} 5",
        "hopwatch_hop_rtt_seconds_bucket{le=\"+Inf\",target=\"alpha\",ttl=\"1\"} 5",
        "hopwatch_hop_rtt_seconds_bucket{le=\"0.005\",target=\"alpha\",ttl=\"1\"} 3",
    ] {
        assert!(
            text.lines()
                .any(|l| l == expected || l.replace(".0 ", " ") == expected),
            "missing `{expected}` in\n{text}"
        );
    }
    // The responder is a label of the info series only, so a path change
    // replaces one series instead of adding a family of them.
    for line in text.lines().filter(|l| l.contains("responder=")) {
        assert!(line.starts_with("hopwatch_hop_responder_info{"), "{line}");
    }
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("hopwatch_hop_responder_info"))
            .count(),
        1,
        "a hop that never answered has no responder series"
    );
    // Histogram buckets are cumulative and end at the count.
    let buckets: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with("hopwatch_target_rtt_seconds_bucket"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(buckets.len(), 16);
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(*buckets.last().unwrap(), 5);
}

/// Reads server-sent events until `want` of them arrived (comments skipped).
async fn read_events(body: &mut Body, want: usize) -> Vec<(String, String)> {
    let mut events = Vec::new();
    let mut buffer = String::new();
    while events.len() < want {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("an event within 5 s")
            .expect("the stream is open")
            .expect("a frame");
        if let Ok(data) = frame.into_data() {
            buffer.push_str(std::str::from_utf8(&data).unwrap());
        }
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ").or(line.strip_prefix("event:")) {
                    name = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ").or(line.strip_prefix("data:")) {
                    data.push_str(v);
                }
            }
            if !name.is_empty() {
                events.push((name, data));
            }
        }
    }
    events
}

#[tokio::test]
async fn the_live_overview_sends_everything_then_only_what_changed() {
    let fake = Fake::new();
    let (router, state) = app(&fake, settings(false, false));
    let response = send(&router, get("/api/v1/live")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = response.into_body();
    let first = read_events(&mut body, 1).await;
    assert_eq!(first[0].0, "targets");
    let rows: serde_json::Value = serde_json::from_str(&first[0].1).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2, "everything first");

    fake.bump("beta");
    let next = read_events(&mut body, 1).await;
    let rows: serde_json::Value = serde_json::from_str(&next[0].1).unwrap();
    assert_eq!(next[0].0, "targets");
    assert_eq!(rows.as_array().unwrap().len(), 1, "only the changed row");
    assert_eq!(rows[0]["id"], "beta");
    assert_eq!(rows[0]["rounds"], 21);

    fake.events
        .send(hopwatch_web::dto::EventDto {
            target: "alpha".into(),
            at_ms: 5,
            kind: "route_changed".into(),
            summary: "route changed at hop 2".into(),
            detail: serde_json::Value::Null,
            as_info: Vec::new(),
        })
        .unwrap();
    let event = read_events(&mut body, 1).await;
    assert_eq!(event[0].0, "event");
    assert!(event[0].1.contains("route changed at hop 2"));

    fake.targets
        .lock()
        .unwrap()
        .retain(|t| t.summary.id != "alpha");
    let removed = read_events(&mut body, 1).await;
    assert_eq!(removed[0], ("removed".to_owned(), "[\"alpha\"]".to_owned()));

    // Stopping the server ends the stream, so a graceful shutdown never waits on it.
    state.stop_live_streams();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(frame) = body.frame().await {
            frame.expect("frame");
        }
    })
    .await;
    assert!(end.is_ok(), "the stream ended");
}

#[tokio::test]
async fn the_live_target_stream_follows_one_target() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(false, false));
    assert_eq!(
        send(&router, get("/api/v1/targets/nope/live"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let mut body = send(&router, get("/api/v1/targets/alpha/live"))
        .await
        .into_body();
    let first = read_events(&mut body, 1).await;
    assert_eq!(first[0].0, "target");
    let detail: serde_json::Value = serde_json::from_str(&first[0].1).unwrap();
    assert_eq!(detail["hops"].as_array().unwrap().len(), 3);
    fake.bump("alpha");
    let next = read_events(&mut body, 1).await;
    let detail: serde_json::Value = serde_json::from_str(&next[0].1).unwrap();
    assert_eq!(detail["rounds"], 11);
    fake.targets
        .lock()
        .unwrap()
        .retain(|t| t.summary.id != "alpha");
    let removed = read_events(&mut body, 1).await;
    assert_eq!(removed[0].0, "removed");
}

#[tokio::test]
async fn the_server_stops_gracefully_with_live_streams_open() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fake = Fake::new();
    let state = hopwatch_web::AppState::new(
        fake.clone() as std::sync::Arc<dyn hopwatch_web::ReadModel>,
        std::sync::Arc::new(hopwatch_web::NoControl),
        settings(false, false),
    );
    let server = hopwatch_web::WebServer::bind("127.0.0.1:0".parse().unwrap(), state)
        .await
        .expect("bind on loopback");
    let addr = server.local_addr();
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /api/v1/live HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 256];
    let n = client.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));

    let grace = Duration::from_secs(30);
    let started = std::time::Instant::now();
    server.shutdown(grace).await;
    assert!(
        started.elapsed() < grace / 2,
        "the open stream did not hold up the shutdown ({:?})",
        started.elapsed()
    );
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the server closed the stream");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn peers_are_listed_and_served_one_by_one() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(false, false));
    let list = body_json(send(&router, get("/api/v1/peers")).await).await;
    let peers = list["peers"].as_array().expect("a peers array");
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0]["name"], "branch-b");
    assert_eq!(peers[0]["state"], "running");
    assert_eq!(peers[0]["window"]["backward"]["loss_pct"], 10.0);
    assert_eq!(peers[0]["window"]["forward"]["owd"]["mean_ns"], 25e6);

    let one = send(&router, get("/api/v1/peers/branch-b")).await;
    assert_eq!(one.status(), StatusCode::OK);
    let one = body_json(one).await;
    assert_eq!(one["address"], "198.18.2.2");
    assert_eq!(one["mode"], "udp");

    let missing = send(&router, get("/api/v1/peers/nope")).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let bad = send(&router, get("/api/v1/peers/no%20spaces")).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn peer_history_is_served_per_series_and_fitted() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(false, false));
    let response = send(
        &router,
        get("/api/v1/peers/branch-b/history?from=1700000000000&to=1700003600000&max_points=60"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let doc = body_json(response).await;
    assert_eq!(doc["peer"], "branch-b");
    assert_eq!(doc["resolution"], "raw");
    assert_eq!(doc["from_ms"], 1_700_000_000_000u64);
    let series = doc["series"].as_array().expect("a series array");
    let names: Vec<&str> = series.iter().filter_map(|s| s["series"].as_str()).collect();
    assert_eq!(names, ["rtt", "forward", "backward"]);
    // 3,600 stored points fitted into 60 one-minute buckets.
    let points = series[1]["points"].as_array().unwrap();
    assert_eq!(points.len(), 60);
    assert_eq!(series[1]["bucket_ms"], 60_000);
    assert_eq!(points[0]["sent"], 60);
    assert_eq!(points[0]["lost"], 6);
    assert!(points[0]["min_ns"].as_u64().unwrap() >= 25_000_000);

    let missing = send(&router, get("/api/v1/peers/nope/history")).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let bad = send(&router, get("/api/v1/peers/branch-b/history?from=5&to=4")).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let unknown = send(&router, get("/api/v1/peers/branch-b/history?hop=1")).await;
    assert_eq!(
        unknown.status(),
        StatusCode::BAD_REQUEST,
        "unknown parameters are refused"
    );
    // The peer page's chart reads it.
    let js = body_text(send(&router, get("/assets/app.js")).await).await;
    assert!(js.contains("/history?range=1h"));
}

#[tokio::test]
async fn peer_metrics_have_bounded_labels_and_directions() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(false, false));
    let text = body_text(send(&router, get("/metrics")).await).await;
    for expected in [
        "hopwatch_peer_state{peer=\"branch-b\",state=\"running\"} 1",
        "hopwatch_peer_rtt_seconds{peer=\"branch-b\"} 0.03",
        "hopwatch_peer_owd_seconds{peer=\"branch-b\",direction=\"forward\"} 0.025",
        "hopwatch_peer_owd_seconds{peer=\"branch-b\",direction=\"backward\"} 0.005",
        "hopwatch_peer_owd_reliable{peer=\"branch-b\"} 1",
        "hopwatch_peer_loss_ratio{peer=\"branch-b\"} 0.1",
        "hopwatch_peer_loss_ratio{peer=\"branch-b\",direction=\"backward\"} 0.1",
        "hopwatch_peer_loss_ratio{peer=\"branch-b\",direction=\"forward\"} 0.0",
        "hopwatch_peer_probes_sent_total{peer=\"branch-b\"} 500",
        "hopwatch_peer_reordered_total{peer=\"branch-b\",direction=\"backward\"} 2",
        "hopwatch_peer_duplicates_total{peer=\"branch-b\",direction=\"backward\"} 3",
    ] {
        assert!(
            text.lines().any(|l| l == expected),
            "missing `{expected}` in\n{text}"
        );
    }
}

#[tokio::test]
async fn firing_alerts_of_targets_and_peers_are_listed_with_their_subject() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(false, false));
    let response = send(&router, get("/api/v1/alerts")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let doc = body_json(response).await;
    let alerts = doc["alerts"].as_array().expect("an alerts array");
    // Oldest first: the peer's (5 s) before alpha's (7 s).
    let keys: Vec<(&str, &str)> = alerts
        .iter()
        .map(|a| {
            (
                a["subject"].as_str().unwrap(),
                a["target"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(keys, [("peer", "peer:branch-b"), ("target", "alpha")]);
    let peer = &alerts[0];
    assert_eq!(peer["name"], "loss");
    assert_eq!(peer["since_ms"], 5_000);
    assert_eq!(peer["value"], 20.0);
    assert_eq!(peer["threshold"], 10.0);
    assert_eq!(peer["unit"], "pct");
    assert_eq!(peer["localisation"]["direction"], "backward");
    assert!(
        peer["summary"]
            .as_str()
            .unwrap()
            .contains("on the backward path"),
        "{peer}"
    );

    // The peer's own document carries the same alert.
    let one = body_json(send(&router, get("/api/v1/peers/branch-b")).await).await;
    assert_eq!(one["alerts"], serde_json::json!([peer]));
    let list = body_json(send(&router, get("/api/v1/peers")).await).await;
    assert_eq!(list["peers"][0]["alerts"][0]["id"], peer["id"]);
    // And a target's its own, as before, now with its subject.
    let target = body_json(send(&router, get("/api/v1/targets/alpha")).await).await;
    assert_eq!(target["alerts"][0]["subject"], "target");
    assert_eq!(target["alerts"][0]["target"], "alpha");
    assert_eq!(target["alerts"][0]["localisation"]["ttl"], 2);
    let beta = body_json(send(&router, get("/api/v1/targets/beta")).await).await;
    assert_eq!(beta["alerts"], serde_json::json!([]));

    let index = body_json(send(&router, get("/api/v1")).await).await;
    assert!(index["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "GET /api/v1/alerts"));
    // The UI links a peer's alert to the peer's page, not a target's.
    let js = body_text(send(&router, get("/assets/app.js")).await).await;
    assert!(
        js.contains("function alertPage("),
        "the UI has one place for alert links"
    );
}

#[tokio::test]
async fn peer_alerts_are_exported_with_the_alertmanager_labels() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(false, false));
    let text = body_text(send(&router, get("/metrics")).await).await;
    for expected in [
        "hopwatch_alert_firing{target=\"peer:branch-b\",subject=\"peer\",alert=\"loss\"} 1",
        "hopwatch_alert_firing{target=\"alpha\",subject=\"target\",alert=\"loss\"} 1",
        "hopwatch_peer_alerts_firing{peer=\"branch-b\"} 1",
        "hopwatch_target_alerts_firing{target=\"alpha\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == expected),
            "missing `{expected}` in\n{text}"
        );
    }
    // One family for both kinds of subject.
    assert_eq!(
        text.lines()
            .filter(|l| *l == "# TYPE hopwatch_alert_firing gauge")
            .count(),
        1,
        "{text}"
    );
}

#[tokio::test]
async fn the_incident_history_filters_by_range_and_target_newest_first() {
    let fake = Fake::new();
    let (router, _) = app(&fake, settings(false, false));
    let doc = body_json(send(&router, get("/api/v1/incidents")).await).await;
    let ids: Vec<&str> = doc["incidents"]
        .as_array()
        .expect("an incidents array")
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["i-3", "i-2", "i-1"], "the last 30 days, newest first");
    let first = &doc["incidents"][2];
    assert_eq!(first["name"], "loss");
    assert_eq!(first["clear_reason"], "recovered");
    assert_eq!(first["duration_ms"], 25 * 60_000);
    assert_eq!(first["updates"], 1);
    assert_eq!(first["localisation"]["ttl"], 2);
    assert_eq!(
        doc["incidents"][0]["cleared_at_ms"],
        serde_json::Value::Null
    );

    let doc = body_json(send(&router, get("/api/v1/incidents?range=24h&target=alpha")).await).await;
    let ids: Vec<&str> = doc["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["i-2"], "alpha's within a day");
    assert_eq!(doc["target"], "alpha");

    let bad = send(&router, get("/api/v1/incidents?range=2y")).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let unknown = send(&router, get("/api/v1/incidents?targets=alpha")).await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
}

// ---- limits ----

fn with_host(uri: &str, host: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::HOST, host)
        .body(Body::empty())
        .unwrap()
}

async fn assert_refused(response: axum::http::Response<Body>, status: StatusCode, says: &str) {
    assert_eq!(response.status(), status);
    let retry: u32 = response.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0);
    let error = body_json(response).await["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains(says), "{error}");
}

#[tokio::test]
async fn a_read_slower_than_the_deadline_gets_503_with_retry_after() {
    let fake = Fake::new();
    *fake.read_delay.lock().unwrap() = Duration::from_millis(800);
    let mut settings = settings(false, false);
    settings.request_timeout = Duration::from_millis(100);
    let (router, _) = app(&fake, settings);
    let started = std::time::Instant::now();
    let response = send(&router, get("/api/v1/targets/alpha/events?range=1h")).await;
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "answered at the deadline"
    );
    assert_refused(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "took longer than 100ms",
    )
    .await;
    // Cheap reads are still answered.
    let ok = send(&router, get("/api/v1/targets/alpha")).await;
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn history_reads_beyond_the_limit_wait_briefly_then_get_503() {
    let fake = Fake::new();
    *fake.read_delay.lock().unwrap() = Duration::from_millis(600);
    let mut settings = settings(false, false);
    settings.max_concurrent_reads = 2;
    settings.read_queue_wait = Duration::from_millis(100);
    let (router, _) = app(&fake, settings);
    let requests: Vec<_> = (0..3)
        .map(|_| {
            let router = router.clone();
            tokio::spawn(async move {
                send(&router, get("/api/v1/targets/alpha/series?range=1h")).await
            })
        })
        .collect();
    let mut ok = 0;
    let mut refused = Vec::new();
    for request in requests {
        let response = request.await.unwrap();
        if response.status() == StatusCode::OK {
            ok += 1;
        } else {
            refused.push(response);
        }
    }
    assert_eq!((ok, refused.len()), (2, 1), "two slots, three reads");
    assert_refused(
        refused.pop().unwrap(),
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
    )
    .await;
    // Slots are given back: the next read is served.
    *fake.read_delay.lock().unwrap() = Duration::ZERO;
    let again = send(&router, get("/api/v1/targets/alpha/series?range=1h")).await;
    assert_eq!(again.status(), StatusCode::OK);
}

#[tokio::test]
async fn live_streams_beyond_the_cap_get_429_and_closing_one_frees_its_place() {
    let fake = Fake::new();
    let mut settings = settings(false, false);
    settings.max_live_streams = 2;
    let (router, _) = app(&fake, settings);
    let first = send(&router, get("/api/v1/live")).await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = send(&router, get("/api/v1/targets/alpha/live")).await;
    assert_eq!(second.status(), StatusCode::OK);
    for path in ["/api/v1/live", "/api/v1/targets/beta/live"] {
        let third = send(&router, get(path)).await;
        assert_refused(third, StatusCode::TOO_MANY_REQUESTS, "at most 2").await;
    }
    // Other requests are not affected by the cap.
    assert_eq!(
        send(&router, get("/api/v1/targets")).await.status(),
        StatusCode::OK
    );
    drop(first);
    let reopened = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let response = send(&router, get("/api/v1/live")).await;
            if response.status() == StatusCode::OK {
                return response;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(reopened.is_ok(), "a closed stream gives back its place");
}

#[tokio::test]
async fn on_loopback_only_local_names_and_the_allow_list_are_answered() {
    let fake = Fake::new();
    let mut settings = settings(true, false);
    settings.hosts = hopwatch_web::HostCheck::for_listen(
        "127.0.0.1:9470".parse().unwrap(),
        &["hopwatch.lab.example".to_owned()],
    );
    let (router, _) = app(&fake, settings);
    for host in [
        "localhost:9470",
        "127.0.0.1:9470",
        "[::1]:9470",
        "hopwatch.lab.example:9470",
    ] {
        let response = send(&router, with_host("/", host)).await;
        assert_eq!(response.status(), StatusCode::OK, "{host}");
    }
    // A rebinding page: its own name, our address. Refused before the token
    // check, so it learns nothing; the UI is refused too.
    for path in ["/", "/api/v1/targets", "/healthz"] {
        let response = send(&router, with_host(path, "evil.example:9470")).await;
        assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST, "{path}");
        assert!(response
            .headers()
            .contains_key(header::X_CONTENT_TYPE_OPTIONS));
        let error = body_json(response).await["error"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(error.contains("\"evil.example:9470\""), "{error}");
        assert!(error.contains("allowed_hosts"), "{error}");
    }
    // A host in the request line (HTTP/2 style) is checked the same way.
    let absolute = send(&router, get("http://evil.example/healthz")).await;
    assert_eq!(absolute.status(), StatusCode::MISDIRECTED_REQUEST);
}

#[tokio::test]
async fn off_loopback_hosts_are_checked_only_with_an_allow_list() {
    let fake = Fake::new();
    let any: std::net::SocketAddr = "0.0.0.0:9470".parse().unwrap();
    let mut open = settings(false, false);
    open.hosts = hopwatch_web::HostCheck::for_listen(any, &[]);
    let (router, _) = app(&fake, open);
    let response = send(&router, with_host("/healthz", "mon.example")).await;
    assert_eq!(response.status(), StatusCode::OK);

    let mut listed = settings(false, false);
    listed.hosts = hopwatch_web::HostCheck::for_listen(any, &["mon.example".to_owned()]);
    let (router, _) = app(&fake, listed);
    let response = send(&router, with_host("/healthz", "mon.example")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = send(&router, with_host("/healthz", "other.example")).await;
    assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST);
}
