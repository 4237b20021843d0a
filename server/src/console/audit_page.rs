//! The audit log in the console: filtered by user, route, model and time, paged back
//! 100 rows at a time, and exported (CSV or JSON Lines) with the same filter. Exports
//! hold what the log holds: code only when `audit.store_code` is on.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::context;
use serde_json::{Value, json};

use super::clock::{parse_local, to_local, utc_seconds};
use super::{Signed, is_admin, render};
use crate::state::AppState;
use crate::store::audit::{self, AuditFilter, AuditRow};

/// Rows on one page.
const PAGE: usize = 100;
/// Most rows in one export.
const EXPORT_MAX: usize = 100_000;

/// The filter of a page's query (empty fields are "any"); a time that is not one is an
/// error naming it.
fn filter_of(query: &HashMap<String, String>) -> Result<AuditFilter, String> {
    let text = |k: &str| query.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let time = |k: &str| match text(k) {
        None => Ok(None),
        Some(t) => parse_local(t)
            .map(Some)
            .ok_or_else(|| format!("`{k}` is not a date and time (YYYY-MM-DDTHH:MM, UTC)")),
    };
    Ok(AuditFilter {
        user: text("user").map(str::to_string),
        path: text("path").map(str::to_string),
        model: text("model").map(str::to_string),
        from_ms: time("from")?,
        to_ms: time("to")?,
        before_id: match text("before") {
            None => None,
            Some(b) => Some(b.parse().map_err(|_| "`before` is a row id".to_string())?),
        },
    })
}

/// The filter as a query string (for the export links and paging).
fn query_of(filter: &AuditFilter) -> String {
    let mut pairs = Vec::new();
    for (k, v) in [
        ("user", filter.user.clone()),
        ("path", filter.path.clone()),
        ("model", filter.model.clone()),
        ("from", filter.from_ms.map(to_local)),
        ("to", filter.to_ms.map(to_local)),
    ] {
        if let Some(v) = v {
            pairs.push(format!("{k}={}", urlencode(&v)));
        }
    }
    pairs.join("&")
}

/// Percent-encodes a query value.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET /admin/audit`
pub async fn audit(
    State(state): State<Arc<AppState>>,
    Signed(session): Signed,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !is_admin(&session) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let base = context! {
        admin => true, user => session.user, csrf => session.csrf, page => "audit", title => "Audit log",
        stores_code => state.audit.stores_code(),
        retention_days => state.config.audit.retention_days,
    };
    let filter = match filter_of(&query) {
        Ok(f) => f,
        Err(e) => {
            return render(
                StatusCode::UNPROCESSABLE_ENTITY,
                "audit.html",
                context! { ..base, ..context! { error => e, filter => json!({}) } },
            );
        }
    };
    let db = state.db_path.clone();
    let f = filter.clone();
    let read = tokio::task::spawn_blocking(move || {
        let rows = audit::read_rows(&db, &f, PAGE)?;
        let users = audit::distinct(&db, "token")?;
        let paths = audit::distinct(&db, "path")?;
        let models = audit::distinct(&db, "model")?;
        Ok::<_, crate::store::db::StoreError>((rows, users, paths, models))
    })
    .await;
    let (rows, users, paths, models) = match read {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the audit log could not be read");
            return render(
                StatusCode::INTERNAL_SERVER_ERROR,
                "audit.html",
                context! { ..base, ..context! { error => "The audit log could not be read; the server's log has the details.", filter => json!({}) } },
            );
        }
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let older = (rows.len() == PAGE)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let shown: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut v = json!(r);
            v["time"] = json!(utc_seconds(r.at_ms));
            v
        })
        .collect();
    let filter_view = json!({
        "user": filter.user, "path": filter.path, "model": filter.model,
        "from": filter.from_ms.map(to_local).unwrap_or_default(),
        "to": filter.to_ms.map(to_local).unwrap_or_default(),
    });
    render(
        StatusCode::OK,
        "audit.html",
        context! { ..base, ..context! {
            rows => shown, users => users, paths => paths, model_names => models,
            filter => filter_view, query => query_of(&filter), older => older,
        } },
    )
}

/// A CSV field: quoted when needed, and a leading `=`, `+`, `-`, `@` made inert so a
/// spreadsheet does not run it as a formula.
fn csv_field(text: &str) -> String {
    let inert = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if inert.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", inert.replace('"', "\"\""))
    } else {
        inert
    }
}

const CSV_COLUMNS: &[&str] = &[
    "id",
    "time_utc",
    "token",
    "method",
    "path",
    "status",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "model",
    "model_sha256",
    "request_id",
    "action",
    "prompt",
    "completion",
];

fn csv_row(r: &AuditRow) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let num = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
    [
        r.id.to_string(),
        utc_seconds(r.at_ms),
        opt(&r.token),
        r.method.clone(),
        r.path.clone(),
        r.status.to_string(),
        r.latency_ms.to_string(),
        num(r.prompt_tokens),
        num(r.completion_tokens),
        opt(&r.model),
        opt(&r.model_sha256),
        opt(&r.request_id),
        opt(&r.action),
        opt(&r.prompt),
        opt(&r.completion),
    ]
    .iter()
    .map(|f| csv_field(f))
    .collect::<Vec<_>>()
    .join(",")
}

/// `GET /admin/audit/export?format=csv|jsonl&…filter`
pub async fn export(
    State(state): State<Arc<AppState>>,
    Signed(session): Signed,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !is_admin(&session) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let format = query.get("format").map(String::as_str).unwrap_or("csv");
    if !matches!(format, "csv" | "jsonl") {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "`format` is `csv` or `jsonl`",
        )
            .into_response();
    }
    let filter = match filter_of(&query) {
        Ok(f) => f,
        Err(e) => return (StatusCode::UNPROCESSABLE_ENTITY, e).into_response(),
    };
    let db = state.db_path.clone();
    let rows = match tokio::task::spawn_blocking(move || audit::read_rows(&db, &filter, EXPORT_MAX))
        .await
    {
        Ok(Ok(rows)) => rows,
        _ => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the audit log could not be read",
            )
                .into_response();
        }
    };
    let (body, kind, ext) = if format == "csv" {
        let mut out = CSV_COLUMNS.join(",");
        out.push('\n');
        for r in &rows {
            out.push_str(&csv_row(r));
            out.push('\n');
        }
        (out, "text/csv; charset=utf-8", "csv")
    } else {
        let mut out = String::new();
        for r in &rows {
            let mut v = json!(r);
            v["time_utc"] = json!(utc_seconds(r.at_ms));
            out.push_str(&v.to_string());
            out.push('\n');
        }
        (out, "application/x-ndjson", "jsonl")
    };
    (
        [
            (header::CONTENT_TYPE, kind.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"souffleur-audit.{ext}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_read_from_the_query_and_csv_is_safe() {
        let q: HashMap<String, String> = [
            ("user", "alice"),
            ("path", ""),
            ("from", "2026-12-07T15:08"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let f = filter_of(&q).expect("filter");
        assert_eq!(f.user.as_deref(), Some("alice"));
        assert_eq!(f.path, None);
        assert_eq!(f.from_ms, Some(1_796_656_080_000));
        assert_eq!(query_of(&f), "user=alice&from=2026-12-07T15%3A08");
        let bad: HashMap<String, String> = [("to".to_string(), "yesterday".to_string())].into();
        assert!(filter_of(&bad).expect_err("bad time").contains("`to`"));
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("-1+2,3"), "\"'-1+2,3\"");
    }
}
