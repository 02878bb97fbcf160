//! The web UI's files, compiled into the binary: nothing is fetched from
//! anywhere else (routers are often offline). That includes the map's
//! coastline, `land-110m.json` (Natural Earth, public domain; its source and
//! the script that made it are in web/tools/land-110m.mjs and web/NOTICE). Served with an ETag so browsers
//! revalidate cheaply, and with a Content-Security-Policy that allows only
//! this origin.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: [Asset; 6] = [
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../assets/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/app.js"),
    },
    Asset {
        name: "map.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/map.js"),
    },
    Asset {
        name: "land-110m.json",
        content_type: "application/json",
        body: include_bytes!("../assets/land-110m.json"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/app.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../assets/favicon.svg"),
    },
];

/// Scripts, styles, images and connections from this origin only; no frames.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// FNV-1a over the file: a stable ETag for this build.
fn etag(body: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{h:016x}\"")
}

fn etags() -> &'static [String; ASSETS.len()] {
    static ETAGS: OnceLock<[String; ASSETS.len()]> = OnceLock::new();
    ETAGS.get_or_init(|| ASSETS.each_ref().map(|a| etag(a.body)))
}

fn serve(index: usize, headers: &HeaderMap) -> Response {
    let asset = &ASSETS[index];
    let tag = &etags()[index];
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let h = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(tag) {
        h.insert(header::ETAG, value);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The single-page app's shell, for `/` and `/targets/{id}`.
pub async fn index(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

pub async fn file(Path(name): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .position(|a| a.name == name && a.name != "index.html")
        .map(|i| serve(i, &headers))
        .ok_or(ApiError::NoRoute {
            method: "GET".into(),
            path: format!("/assets/{name}"),
        })
}
