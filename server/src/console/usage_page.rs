//! The usage page: completions shown, accepted and dismissed, latency p50/p99 of
//! single- and multi-line completions, tokens generated, chats and reviews, over the
//! last 24 hours, 7 days or 30 days (from the per-minute counts in `usage_minutes`),
//! with acceptance by day, language and user. Plots are drawn in the browser by the
//! vendored uPlot from the page's own data.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use minijinja::context;
use serde_json::{Value, json};

use super::clock::utc_minutes;
use super::{Signed, is_admin, render};
use crate::state::AppState;
use crate::store::usage::{self, UsageCounts, UsageKey};

/// A range the page offers: its name, minutes, and minutes per plotted point.
const RANGES: &[(&str, i64, i64)] = &[
    ("24h", 24 * 60, 10),
    ("7d", 7 * 24 * 60, 60),
    ("30d", 30 * 24 * 60, 360),
];

/// Accepted completions over those the editor showed (or, without view events, over
/// those returned); `None` when there were none.
fn acceptance(c: &UsageCounts) -> Option<f64> {
    let base = if c.viewed > 0 { c.viewed } else { c.shown };
    (base > 0).then(|| c.accepted as f64 / base as f64)
}

fn percent(rate: Option<f64>) -> String {
    rate.map(|r| format!("{:.0} %", r * 100.0))
        .unwrap_or_else(|| "—".into())
}

/// One row of a table by day, language or user.
fn table_row(name: &str, c: &UsageCounts) -> Value {
    json!({
        "name": name,
        "requests": c.requests,
        "shown": c.shown,
        "viewed": c.viewed,
        "accepted": c.accepted,
        "dismissed": c.dismissed,
        "rate": percent(acceptance(c)),
    })
}

/// The plotted series and the tables of `rows` from `start` (minute) in steps of
/// `step` minutes up to `end`.
pub fn summarise(rows: &[(UsageKey, UsageCounts)], start: i64, end: i64, step: i64) -> Value {
    let points = ((end - start) / step + 1).max(1) as usize;
    let mut completions = vec![UsageCounts::default(); points];
    let mut single = vec![UsageCounts::default(); points];
    let mut multi = vec![UsageCounts::default(); points];
    let mut tokens = vec![0u64; points];
    let mut chats = vec![0u64; points];
    let mut reviews = vec![0u64; points];
    let mut by_day: BTreeMap<String, UsageCounts> = BTreeMap::new();
    let mut by_language: HashMap<String, UsageCounts> = HashMap::new();
    let mut by_user: HashMap<String, UsageCounts> = HashMap::new();
    for (k, c) in rows {
        if k.minute < start || k.minute > end {
            continue;
        }
        let i = ((k.minute - start) / step) as usize;
        let Some(slot) = completions.get_mut(i) else {
            continue;
        };
        tokens[i] += c.tokens;
        match k.kind.as_str() {
            "completion" => {
                slot.add(c);
                match k.mode.as_str() {
                    "single" => single[i].add(c),
                    "multi" => multi[i].add(c),
                    _ => {}
                }
                let day = utc_minutes(k.minute * 60)[..10].to_string();
                by_day.entry(day).or_default().add(c);
                let language = if k.language.is_empty() {
                    "(not given)".to_string()
                } else {
                    k.language.clone()
                };
                by_language.entry(language).or_default().add(c);
                by_user.entry(k.user.clone()).or_default().add(c);
            }
            "chat" => chats[i] += c.requests,
            "review" => reviews[i] += c.requests,
            _ => {}
        }
    }
    let x: Vec<i64> = (0..points as i64)
        .map(|p| (start + p * step) * 60)
        .collect();
    let quantile = |series: &[UsageCounts], q: f64| -> Vec<Option<u64>> {
        series.iter().map(|c| c.latency_quantile(q)).collect()
    };
    let sorted = |map: HashMap<String, UsageCounts>| -> Vec<Value> {
        let mut v: Vec<(String, UsageCounts)> = map.into_iter().collect();
        v.sort_by(|a, b| b.1.requests.cmp(&a.1.requests).then(a.0.cmp(&b.0)));
        v.iter().map(|(n, c)| table_row(n, c)).collect()
    };
    let mut total = UsageCounts::default();
    for c in &completions {
        total.add(c);
    }
    json!({
        "x": x,
        "shown": completions.iter().map(|c| c.shown).collect::<Vec<_>>(),
        "accepted": completions.iter().map(|c| c.accepted).collect::<Vec<_>>(),
        "dismissed": completions.iter().map(|c| c.dismissed).collect::<Vec<_>>(),
        "single_p50": quantile(&single, 0.5),
        "single_p99": quantile(&single, 0.99),
        "multi_p50": quantile(&multi, 0.5),
        "multi_p99": quantile(&multi, 0.99),
        "tokens": tokens,
        "chats": chats,
        "reviews": reviews,
        "totals": {
            "completions": total.requests,
            "shown": total.shown,
            "accepted": total.accepted,
            "dismissed": total.dismissed,
            "rate": percent(acceptance(&total)),
            "tokens": tokens.iter().sum::<u64>(),
            "chats": chats.iter().sum::<u64>(),
            "reviews": reviews.iter().sum::<u64>(),
        },
        "by_day": by_day.iter().rev().map(|(d, c)| table_row(d, c)).collect::<Vec<_>>(),
        "by_language": sorted(by_language),
        "by_user": sorted(by_user),
    })
}

/// `GET /admin/usage?range=24h|7d|30d`
pub async fn usage(
    State(state): State<Arc<AppState>>,
    Signed(session): Signed,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !is_admin(&session) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let wanted = query.get("range").map(String::as_str).unwrap_or("24h");
    let Some(&(range, minutes, step)) = RANGES.iter().find(|r| r.0 == wanted) else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "`range` is `24h`, `7d` or `30d`",
        )
            .into_response();
    };
    // What is counted in memory goes to the table first, so the page is current.
    let worker = state.clone();
    let now = crate::usage::minute_now();
    let end = now - now.rem_euclid(step) + step - 1;
    let start = end + 1 - minutes;
    let rows = tokio::task::spawn_blocking(move || {
        worker.usage.flush(&worker.db_path);
        usage::read(&worker.db_path, start)
    })
    .await;
    let rows = match rows {
        Ok(Ok(rows)) => rows,
        _ => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the usage counts could not be read",
            )
                .into_response();
        }
    };
    let data = summarise(&rows, start, end, step);
    // The data sits in a <script> element: no `<` may end it early.
    let embedded = data.to_string().replace('<', "\\u003c");
    render(
        StatusCode::OK,
        "usage.html",
        context! {
            admin => true, user => session.user, csrf => session.csrf, page => "usage", title => "Usage",
            range => range, ranges => RANGES.iter().map(|r| r.0).collect::<Vec<_>>(),
            totals => data["totals"].clone(), by_day => data["by_day"].clone(),
            by_language => data["by_language"].clone(), by_user => data["by_user"].clone(),
            data => minijinja::Value::from_safe_string(embedded),
            step => step,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_bucketed_and_tabled() {
        let key = |minute, kind: &str, language: &str, user: &str, mode: &str| UsageKey {
            minute,
            kind: kind.into(),
            language: language.into(),
            user: user.into(),
            mode: mode.into(),
        };
        let mut c = UsageCounts {
            requests: 4,
            shown: 4,
            viewed: 2,
            accepted: 1,
            tokens: 10,
            ..UsageCounts::default()
        };
        c.observe(90);
        let chat = UsageCounts {
            requests: 3,
            tokens: 5,
            ..UsageCounts::default()
        };
        let rows = vec![
            (
                key(1000, "completion", "rust", "alice", "single"),
                c.clone(),
            ),
            (key(1015, "completion", "python", "bob", "multi"), c.clone()),
            (key(1016, "chat", "", "bob", ""), chat),
            (
                key(5000, "completion", "rust", "alice", "single"),
                c.clone(),
            ),
        ];
        let s = summarise(&rows, 1000, 1029, 10);
        assert_eq!(s["x"].as_array().map(Vec::len), Some(3));
        assert_eq!(s["shown"], json!([4, 4, 0]));
        assert_eq!(s["single_p50"], json!([100, null, null]));
        assert_eq!(s["multi_p99"], json!([null, 100, null]));
        assert_eq!(s["tokens"], json!([10, 15, 0]));
        assert_eq!(s["chats"], json!([0, 3, 0]));
        assert_eq!(s["totals"]["rate"], "50 %");
        assert_eq!(s["by_language"].as_array().map(Vec::len), Some(2));
        assert_eq!(s["by_user"][0]["rate"], "50 %");
    }
}
