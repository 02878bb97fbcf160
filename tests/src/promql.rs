//! Which metrics a PromQL expression reads, and which metrics an exposition
//! has: the two sides of the check that shipped rules and dashboards use only
//! what hopwatch exports. Expressions are parsed with `promql-parser` (the
//! Prometheus grammar), not pattern-matched, so label names, functions and
//! keywords are never mistaken for metrics; Grafana's `$variables` are
//! replaced by values of the right type first.

use std::collections::BTreeSet;

use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr};
use promql_parser::util::{walk_expr, ExprVisitor};

/// An expression the parser rejects.
#[derive(Debug, thiserror::Error)]
#[error("not valid PromQL ({message}): {expr}")]
pub struct PromqlError {
    pub expr: String,
    pub message: String,
}

/// The metric names `expr` selects (by name or by an exact `__name__` matcher).
pub fn metric_names(expr: &str) -> Result<BTreeSet<String>, PromqlError> {
    let ast = parser::parse(expr).map_err(|message| PromqlError {
        expr: expr.to_owned(),
        message,
    })?;
    let mut names = Names::default();
    // The visitor never fails and never stops the walk.
    let _ = walk_expr(&mut names, &ast);
    Ok(names.0)
}

#[derive(Default)]
struct Names(BTreeSet<String>);

impl ExprVisitor for Names {
    type Error = std::convert::Infallible;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, Self::Error> {
        let selector = match expr {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &ms.vs,
            _ => return Ok(true),
        };
        if let Some(name) = &selector.name {
            self.0.insert(name.clone());
        }
        for m in &selector.matchers.matchers {
            if m.name == "__name__" && matches!(m.op, MatchOp::Equal) {
                self.0.insert(m.value.clone());
            }
        }
        Ok(true)
    }
}

/// Grafana's template variables in a panel query replaced so the query is
/// plain PromQL: `$__rate_interval` and friends by `range`, every other
/// `$name` / `${name}` by `value` (the test's choice, e.g. `.*` inside `=~`).
pub fn expand_grafana(expr: &str, range: &str, value: &str) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').map_or(braced.len(), |e| e + 1);
            (&braced[..end.saturating_sub(1)], end + 1)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        let name = name.split(':').next().unwrap_or_default();
        if name.is_empty() {
            out.push('$');
        } else if name.starts_with("__") {
            out.push_str(range);
        } else {
            out.push_str(value);
        }
        rest = &after[len.min(after.len())..];
    }
    out.push_str(rest);
    out
}

/// The metric names of the samples in an exposition (Prometheus text or
/// OpenMetrics): what a query can select after a scrape.
pub fn exposition_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let end = line.find(['{', ' '])?;
            Some(line[..end].to_owned())
        })
        .collect()
}

/// The metric names an exposition's `# TYPE` lines declare, whether or not
/// the scrape has samples of them: a family whose series exist only for some
/// configurations (a multipath target's branches) is declared in every
/// scrape. Named as a query selects them: a counter with `_total`, an info
/// with `_info`, a histogram by its `_bucket`, `_sum` and `_count`.
pub fn declared_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .flat_map(|(name, kind)| {
            let suffixes: &[&str] = match kind.trim() {
                "counter" => &["_total"],
                "info" => &["_info"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            suffixes.iter().map(move |s| format!("{name}{s}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_selectors_only() {
        let names = metric_names(
            r#"histogram_quantile(0.95, sum by (target, le) (rate(a_bucket{target=~"x"}[5m])))
               / on (target) group_left (responder) b_info unless {__name__="c", ttl="1"}
               or label_replace(d, "hop", "0$1", "ttl", "(.)")"#,
        )
        .unwrap();
        let expected: BTreeSet<String> = ["a_bucket", "b_info", "c", "d"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(names, expected);
    }

    #[test]
    fn declared_names_include_families_without_samples() {
        let text = "# HELP a_rounds Rounds.\n# TYPE a_rounds counter\n\
                    # TYPE a_loss_ratio gauge\n# TYPE a_build info\n\
                    # TYPE a_rtt_seconds histogram\n# UNIT a_rtt_seconds seconds\n\
                    a_loss_ratio{target=\"t\"} 0.5\n# EOF\n";
        let expected: BTreeSet<String> = [
            "a_rounds_total",
            "a_loss_ratio",
            "a_build_info",
            "a_rtt_seconds_bucket",
            "a_rtt_seconds_sum",
            "a_rtt_seconds_count",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(declared_names(text), expected);
        // Only the gauge has a sample.
        assert_eq!(exposition_names(text).len(), 1);
    }

    #[test]
    fn bad_promql_is_an_error() {
        let err = metric_names("rate(a[5m]").unwrap_err();
        assert_eq!(err.expr, "rate(a[5m]");
    }

    #[test]
    fn grafana_variables_become_plain_promql() {
        assert_eq!(
            expand_grafana(
                r#"rate(x{instance=~"$instance", target=~"${target}"}[$__rate_interval])"#,
                "1m",
                ".*"
            ),
            r#"rate(x{instance=~".*", target=~".*"}[1m])"#
        );
        assert_eq!(expand_grafana("a$", "1m", "v"), "a$");
    }

    #[test]
    fn exposition_names_are_sample_names() {
        let text = "# TYPE a counter\na_total 1\nb_bucket{le=\"+Inf\"} 2\n# EOF\n";
        let names: Vec<String> = exposition_names(text).into_iter().collect();
        assert_eq!(names, ["a_total", "b_bucket"]);
    }
}
