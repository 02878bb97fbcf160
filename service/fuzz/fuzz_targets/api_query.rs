//! Fuzz target: the web API's query strings (`range`, `from`, `to`, `hop`,
//! `max_points`, `columns`, `format`, ...) decoded and checked exactly as each
//! endpoint's handler does (`hopwatch_web::api::check_query`: axum's `Query`
//! extractor, then the parameters' checks). Never a panic; a refusal is a 400 that
//! names one of the endpoint's parameters when it is about one; what is accepted
//! is a non-empty range of at most `MAX_SPAN` and counts within their limits.
//!
//! Input: the first byte picks the endpoint, the rest is the raw query string
//! (lossy UTF-8). The stable test `random_and_mutated_queries_are_refused_or_sane`
//! in web/src/api.rs checks the same.
#![no_main]

use hopwatch_web::api::{check_query, CheckedQuery, QueryEndpoint};
use hopwatch_web::dto::HopRef;
use hopwatch_web::query::{MAX_COLUMNS, MAX_POINTS, MAX_SPAN};
use hopwatch_web::{ApiError, HopSelection, TimeRange};
use libfuzzer_sys::fuzz_target;

/// A fixed "now" (2023-11-14), so a crash reproduces.
const NOW_MS: u64 = 1_700_000_000_000;

fn range_ok(r: &TimeRange) {
    assert!(r.from_ms < r.to_ms, "{r:?}");
    assert!(r.span_ms() <= MAX_SPAN.as_millis() as u64, "{r:?}");
}

fuzz_target!(|input: &[u8]| {
    let Some((&selector, rest)) = input.split_first() else {
        return;
    };
    let endpoint = QueryEndpoint::ALL[usize::from(selector) % QueryEndpoint::ALL.len()];
    let raw = String::from_utf8_lossy(rest);
    match check_query(endpoint, &raw, NOW_MS) {
        Err(err) => {
            assert_eq!(err.status().as_u16(), 400, "{raw:?}: {err}");
            if let ApiError::InvalidParam { name, .. } = &err {
                assert!(endpoint.params().contains(name), "{raw:?}: {err}");
            }
        }
        Ok(CheckedQuery::Range(r)) | Ok(CheckedQuery::Export(_, r)) => range_ok(&r),
        Ok(CheckedQuery::Sized(r, n)) => {
            range_ok(&r);
            let max = match endpoint {
                QueryEndpoint::Heatmap => MAX_COLUMNS,
                _ => MAX_POINTS,
            };
            assert!((1..=max).contains(&n), "{raw:?}: {n}");
        }
        Ok(CheckedQuery::Series(q)) => {
            range_ok(&q.range);
            assert!((1..=MAX_POINTS).contains(&q.max_points));
            assert_ne!(q.hops, HopSelection::One(HopRef::Ttl(0)));
        }
    }
});
