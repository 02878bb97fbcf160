//! The target page's world map in a real headless Chromium: the hops a city
//! database places are drawn where the projection puts them, joined in path
//! order on the embedded coastline; private, unknown and unanswered hops are
//! listed beside the map; and nothing is loaded from another origin.
//!
//! The page is served by the web crate's router over the fake read model of
//! its router tests (web/tests/fake), with a target whose path has public
//! addresses: the lab's own addresses are all special-purpose (198.18.0.0/15,
//! 2001:db8::/32), which are never looked up, so a daemon in the lab has no
//! hop to place. The lookup itself is tested in service/tests/enrich_city.rs.
//! The server and Chromium run inside a lab namespace (no packet leaves it).
//! Privileged, and needs Debian's chromium and chromium-driver
//! (deploy/setup-test.sh installs them); fails, never skips, without them.

#[path = "../../web/tests/fake/mod.rs"]
mod fake;

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fantoccini::{Client, Locator};
use hopwatch_lab::browser::{console, save_screenshot, wait_js, Chromium, DRIVER_PORT};
use hopwatch_lab::LabSpec;
use hopwatch_web::{AppState, Control, ReadModel, WebServer};
use serde_json::Value;

const WEB: &str = "127.0.0.1:9470";

#[track_caller]
fn must<T>(result: Result<T, impl Display>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("screenshots");
    std::fs::create_dir_all(&dir).expect("screenshots directory");
    dir
}

/// What the browser saw.
#[derive(Debug, Default)]
struct Seen {
    /// The map's `data-*`: placed points, path segments, coastline rings.
    points: u64,
    segments: u64,
    rings: u64,
    /// `ttl@x,y` per placed hop, in path order (CSS pixels).
    hops: Vec<(String, f64, f64)>,
    /// Per placed hop, whether the pixel at its position has the point's
    /// colour (the accent, or the destination's green).
    point_pixels: Vec<bool>,
    /// Share of the canvas painted in the land colour.
    land_share: f64,
    /// The list beside the map: `[ttl, reason, text]`.
    unplaced: Vec<Vec<String>>,
    /// How long the last drawing took (`data-draw-ms`), and a redraw's.
    draw_ms: [f64; 2],
    /// Every resource the page loaded.
    resources: Vec<String>,
    console: Vec<Value>,
}

/// The colour of a CSS variable at the pixels of each drawn point, and the
/// share of land-coloured pixels.
const PIXELS_JS: &str = r#"
const c = document.querySelector('#hop-map');
const dpr = window.devicePixelRatio || 1;
const ctx = c.getContext('2d');
const rgb = (v) => { const t = document.createElement('canvas').getContext('2d');
  t.fillStyle = getComputedStyle(document.documentElement).getPropertyValue(v).trim();
  t.fillRect(0, 0, 1, 1); return [...t.getImageData(0, 0, 1, 1).data].slice(0, 3); };
const close = (a, b) => a.every((x, i) => Math.abs(x - b[i]) <= 8);
const accent = rgb('--accent'), dest = rgb('--loss-0'), land = rgb('--map-land');
const points = c.dataset.hops.split('|').map((s, i, all) => {
  const [x, y] = s.split('@')[1].split(',').map(Number);
  const px = [...ctx.getImageData(Math.round(x * dpr), Math.round(y * dpr), 1, 1).data].slice(0, 3);
  return close(px, i === all.length - 1 ? dest : accent);
});
const d = ctx.getImageData(0, 0, c.width, c.height).data;
let n = 0;
for (let i = 0; i < d.length; i += 4) if (close([d[i], d[i + 1], d[i + 2]], land)) n++;
return [points, n / (c.width * c.height)];
"#;

async fn browse(client: &Client) -> anyhow::Result<Seen> {
    let mut seen = Seen::default();
    client.set_window_size(1400, 1000).await?;
    client.goto(&format!("http://{WEB}/targets/geo")).await?;
    wait_js(
        client,
        "the map with its coastline and points",
        "const c = document.querySelector('#hop-map');\
         return c && Number(c.dataset.rings || 0) > 0 && Number(c.dataset.points || 0) > 0;",
    )
    .await?;
    let data: Value = client
        .execute(
            "const d = document.querySelector('#hop-map').dataset;\
             return [Number(d.points), Number(d.segments), Number(d.rings), d.hops];",
            vec![],
        )
        .await?;
    seen.points = data[0].as_u64().unwrap_or(0);
    seen.segments = data[1].as_u64().unwrap_or(0);
    seen.rings = data[2].as_u64().unwrap_or(0);
    for hop in data[3].as_str().unwrap_or_default().split('|') {
        let (ttl, at) = hop.split_once('@').unwrap_or_default();
        let (x, y) = at.split_once(',').unwrap_or_default();
        seen.hops.push((ttl.to_owned(), x.parse()?, y.parse()?));
    }
    let times: Value = client
        .execute(
            "const c = document.querySelector('#hop-map'); const first = Number(c.dataset.drawMs);\
             window.dispatchEvent(new Event('resize'));\
             await new Promise(r => setTimeout(r, 400)); return [first, Number(c.dataset.drawMs)];",
            vec![],
        )
        .await?;
    seen.draw_ms = serde_json::from_value(times)?;
    let pixels: (Vec<bool>, f64) =
        serde_json::from_value(client.execute(PIXELS_JS, vec![]).await?)?;
    (seen.point_pixels, seen.land_share) = pixels;
    seen.unplaced = serde_json::from_value(
        client
            .execute(
                "return [...document.querySelectorAll('#map-unplaced li')]\
                 .map(li => [li.dataset.ttl, li.dataset.reason, li.textContent]);",
                vec![],
            )
            .await?,
    )?;
    seen.resources = serde_json::from_value(
        client
            .execute(
                "return performance.getEntriesByType('resource').map(e => e.name);",
                vec![],
            )
            .await?,
    )?;
    // The map panel at the top of the window (below the sticky header), for the picture.
    client
        .execute(
            "const s = document.querySelector('#hop-map').closest('section');\
             const header = document.querySelector('header.top').getBoundingClientRect().height;\
             window.scrollTo(0, s.getBoundingClientRect().top + window.scrollY - header - 12); return true;",
            vec![],
        )
        .await?;
    save_screenshot(client, &screenshots().join("target-map-desktop.png")).await?;
    // The panel alone (docs/img/ui-map.png).
    let panel = client.find(Locator::Id("map-panel")).await?;
    std::fs::write(
        screenshots().join("target-map-panel.png"),
        panel.screenshot().await?,
    )?;
    seen.console = console(client).await?;
    Ok(seen)
}

#[test]
fn headless_chromium_draws_placed_hops_on_the_map_and_lists_the_rest() {
    let chromium = must(Chromium::find());
    let lab = LabSpec::chain(1).targets(1).build().expect("lab");
    let fake = fake::Fake::new();
    fake.targets.lock().unwrap().push(fake::geo());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready, is_ready) = std::sync::mpsc::channel();
    let read = Arc::clone(&fake) as Arc<dyn ReadModel>;
    let control = Arc::clone(&fake) as Arc<dyn Control>;
    let server = must(lab.spawn_in("src", "map-web", move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let state = AppState::new(read, control, fake::settings(false, false));
            let addr: SocketAddr = WEB.parse().expect("address");
            let server = WebServer::bind(addr, state).await.expect("bind");
            ready.send(()).expect("ready");
            let _ = stopped.await;
            server.shutdown(Duration::from_secs(2)).await;
        });
    }));
    is_ready
        .recv_timeout(Duration::from_secs(10))
        .expect("the web server is up");

    let driver = must(chromium.start_driver(&lab, "src", DRIVER_PORT));
    let dir = tempfile::tempdir().expect("temp dir");
    let outcome = driver.session(&dir.path().join("chromium-profile"), async |client| {
        browse(client).await
    });
    // The server stops whatever the browser saw.
    let _ = stop.send(());
    drop(driver);
    server.join();
    let seen = outcome.unwrap_or_else(|e: anyhow::Error| panic!("browser check failed: {e:#}"));

    // Every placed hop is a point, joined in path order, on the coastline.
    let placed: Vec<String> = fake::GEO_PATH
        .iter()
        .enumerate()
        .filter(|(_, h)| h.place.is_some())
        .map(|(i, _)| (i + 1).to_string())
        .collect();
    let ttls: Vec<&str> = seen.hops.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(ttls, placed, "{seen:?}");
    assert_eq!(seen.points, placed.len() as u64, "{seen:?}");
    assert_eq!(seen.segments, placed.len() as u64 - 1, "{seen:?}");
    // Natural Earth's land rings: those in the view of Europe and North America.
    assert!(seen.rings > 30, "{seen:?}");
    assert!(
        seen.point_pixels.iter().all(|p| *p),
        "each point is painted where the map says it is: {seen:?}"
    );
    assert!(
        (0.05..0.9).contains(&seen.land_share),
        "land is drawn: {seen:?}"
    );
    // The projection keeps the places where they are relative to each
    // other: east is right, north is up.
    let at = |ttl: &str| {
        let (_, x, y) = seen.hops.iter().find(|(t, _, _)| t == ttl).expect(ttl);
        (*x, *y)
    };
    let (frankfurt, amsterdam, ashburn, chicago, sf) =
        (at("2"), at("3"), at("6"), at("7"), at("8"));
    assert!(sf.0 < chicago.0 && chicago.0 < ashburn.0, "{seen:?}");
    assert!(
        ashburn.0 < amsterdam.0 && amsterdam.0 < frankfurt.0,
        "{seen:?}"
    );
    assert!(amsterdam.1 < frankfurt.1 && chicago.1 < sf.1, "{seen:?}");
    // Same scale both ways (equirectangular): degrees per pixel agree.
    let per_px_x = (8.68 - -122.42) / (frankfurt.0 - sf.0);
    let per_px_y = (52.37 - 37.77) / (sf.1 - amsterdam.1);
    assert!(
        (per_px_x / per_px_y - 1.0).abs() < 0.02,
        "{per_px_x} vs {per_px_y} degrees per pixel"
    );
    // The hops it cannot place are listed with the reason, not guessed.
    let listed: Vec<(&str, &str)> = seen
        .unplaced
        .iter()
        .map(|l| (l[0].as_str(), l[1].as_str()))
        .collect();
    assert_eq!(
        listed,
        vec![("1", "special"), ("4", "no-answer"), ("5", "unknown")],
        "{seen:?}"
    );
    assert!(
        seen.unplaced[0][2].contains("192.168.1.1")
            && seen.unplaced[0][2].contains("private (RFC 1918)"),
        "{seen:?}"
    );
    assert!(seen.unplaced[1][2].contains("no answer"), "{seen:?}");
    assert!(
        seen.unplaced[2][2].contains("195.66.224.30")
            && seen.unplaced[2][2].contains("not in the city database"),
        "{seen:?}"
    );
    // Nothing from elsewhere: the coastline is one of the page's own files.
    assert!(
        seen.resources
            .iter()
            .any(|r| r.ends_with("/assets/land-110m.json")),
        "{seen:?}"
    );
    for r in &seen.resources {
        assert!(
            r.starts_with(&format!("http://{WEB}/")),
            "loaded from elsewhere: {r}"
        );
    }
    eprintln!(
        "the map drew in {} ms, redrew in {} ms ({} rings in view)",
        seen.draw_ms[0], seen.draw_ms[1], seen.rings
    );
    let errors: Vec<&Value> = seen
        .console
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    for name in ["target-map-desktop.png", "target-map-panel.png"] {
        let png = std::fs::read(screenshots().join(name)).expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "{name}");
    }
}
