//! Sign-in and out, the overview, and users and tokens.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Extension;
use axum::Form;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde_json::Value;

use super::clock::utc_minutes;
use super::session::{COOKIE, Session};
use super::{Signed, admin_form_refusal, blocking, csrf_refusal, is_admin, render};
use crate::http::observe::AuditSlot;
use crate::state::AppState;
use crate::store::tokens::{RepoScope, Role, hash_token};

/// What every page's layout needs (the navigation shows admins every page).
pub fn layout(session: &Session, page: &str, title: &str) -> minijinja::Value {
    context! {
        user => session.user,
        csrf => session.csrf,
        page => page,
        title => title,
        admin => is_admin(session),
    }
}

/// Records an admin's change in the request's audit row.
fn audit_action(audit: &AuditSlot, session: &Session, action: String) {
    audit.update(|a| {
        a.caller = Some(session.user.clone());
        a.action = Some(action);
    });
}

/// `GET /admin/login`
pub async fn login_page(State(state): State<Arc<AppState>>) -> Response {
    if !state.config.console.enabled {
        return StatusCode::NOT_FOUND.into_response();
    }
    if state.local {
        return Redirect::to("/admin").into_response();
    }
    render(
        StatusCode::OK,
        "login.html",
        context! { title => "Sign in", directory => state.directory.is_some() },
    )
}

/// `POST /admin/login`: an admin token opens a session.
pub async fn login(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(audit): Extension<AuditSlot>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let console = &state.config.console;
    if !console.enabled {
        return StatusCode::NOT_FOUND.into_response();
    }
    if state.local {
        return Redirect::to("/admin").into_response();
    }
    let refused = |status: StatusCode, why: &str| {
        render(
            status,
            "login.html",
            context! { title => "Sign in", error => why, directory => state.directory.is_some() },
        )
    };
    if !state
        .console
        .may_try(peer.ip(), console.sign_in_attempts_per_minute)
    {
        return refused(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed sign-ins from this address; wait a minute.",
        );
    }
    if let Some(username) = form
        .get("username")
        .map(|u| u.trim())
        .filter(|u| !u.is_empty())
    {
        let password = form.get("password").cloned().unwrap_or_default();
        return directory_sign_in(&state, peer, &audit, &headers, username, &password).await;
    }
    let secret = form.get("token").map(|t| t.trim()).unwrap_or("");
    let mut bearer = HeaderMap::new();
    let caller = match HeaderValue::from_str(&format!("Bearer {secret}")) {
        Ok(v) if !secret.is_empty() => {
            bearer.insert(header::AUTHORIZATION, v);
            state.authenticate(&bearer).await.ok()
        }
        _ => None,
    };
    let Some(caller) = caller else {
        state.console.failed(peer.ip());
        audit.update(|a| a.action = Some("sign-in refused: unknown token".into()));
        return refused(StatusCode::UNAUTHORIZED, "That token is not valid.");
    };
    if caller.role != Role::Admin {
        state.console.failed(peer.ip());
        audit_action(
            &audit,
            &Session::local(&caller.name, caller.role, RepoScope::All),
            "sign-in refused: not an admin token".into(),
        );
        return refused(StatusCode::FORBIDDEN, "That token is not an admin token.");
    }
    let Some(id) = state
        .console
        .open(&caller.name, caller.role, caller.repos, &hash_token(secret))
    else {
        return refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "No session could be opened.",
        );
    };
    audit.update(|a| {
        a.caller = Some(caller.name.clone());
        a.action = Some("sign in".into());
    });
    signed_in(&state, &headers, &id, "/admin")
}

/// The answer to a sign-in: the session cookie and a redirect to `to`.
fn signed_in(state: &AppState, headers: &HeaderMap, id: &str, to: &str) -> Response {
    let console = &state.config.console;
    let secure = console.secure_cookies
        || headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{COOKIE}={id}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={}{}",
        console.session_max_secs,
        if secure { "; Secure" } else { "" }
    );
    let mut response = Redirect::to(to).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// A sign-in with directory credentials: admins go to the overview, developers to
/// their own tokens. A user the directory no longer finds (or whose groups no longer
/// map to a role) loses their personal tokens here, as at the periodic check.
async fn directory_sign_in(
    state: &Arc<AppState>,
    peer: SocketAddr,
    audit: &AuditSlot,
    headers: &HeaderMap,
    username: &str,
    password: &str,
) -> Response {
    use crate::directory::DirectoryError;
    let refused = |status: StatusCode, why: String| {
        render(
            status,
            "login.html",
            context! { title => "Sign in", error => why, directory => state.directory.is_some() },
        )
    };
    let Some(directory) = state.directory.clone() else {
        return refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "This server has no directory sign-in; sign in with a token.".into(),
        );
    };
    let answer = directory.sign_in(username, password).await;
    let user = match answer {
        Ok(user) => user,
        Err(e @ DirectoryError::Unavailable(_)) => {
            tracing::error!(error = %e, "directory sign-in failed");
            return refused(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
        }
        Err(e) => {
            state.console.failed(peer.ip());
            if matches!(e, DirectoryError::NotFound | DirectoryError::NoGroup(_)) {
                crate::console::personal::end_user(state, username, "at sign-in").await;
            }
            audit.update(|a| {
                a.caller = Some(username.to_string());
                a.action = Some(format!("directory sign-in refused: {e}"));
            });
            let status = match e {
                DirectoryError::NoGroup(_) => StatusCode::FORBIDDEN,
                _ => StatusCode::UNAUTHORIZED,
            };
            return refused(status, e.to_string());
        }
    };
    let Some(id) = state
        .console
        .open(&user.username, user.role, user.repos.clone(), "")
    else {
        return refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "No session could be opened.".into(),
        );
    };
    audit.update(|a| {
        a.caller = Some(user.username.clone());
        a.action = Some(format!("sign in (directory: {})", user.groups.join("; ")));
    });
    let to = if user.role == Role::Admin {
        "/admin"
    } else {
        "/admin/me"
    };
    signed_in(state, headers, &id, to)
}

/// `POST /admin/logout`
pub async fn logout(
    State(state): State<Arc<AppState>>,
    Signed(session): Signed,
    Extension(audit): Extension<AuditSlot>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = csrf_refusal(&session, &form) {
        return refused;
    }
    if let Some(c) = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| super::session::cookie_value(h, COOKIE))
    {
        state.console.close(c);
    }
    audit_action(&audit, &session, "sign out".into());
    let mut response = Redirect::to("/admin/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "souffleur_session=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    response
}

/// Bytes as KiB, MiB or GiB.
fn size_text(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30)),
        b if b >= 1 << 20 => format!("{:.0} MiB", b as f64 / f64::from(1u32 << 20)),
        b => format!("{} KiB", b / 1024),
    }
}

/// Seconds as `3 d 4 h`, `5 h 12 min` or `42 s`.
fn duration_text(secs: u64) -> String {
    match secs {
        s if s >= 86_400 => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// `GET /admin`: version, uptime, requests, queue, models, index, audit settings.
pub async fn overview(State(state): State<Arc<AppState>>, Signed(session): Signed) -> Response {
    if !is_admin(&session) {
        return Redirect::to("/admin/me").into_response();
    }
    let set = state.model_set();
    let (mut waiting, mut active) = (0, 0);
    for entry in &set.entries {
        if let Some(engine) = entry.model.engine_now() {
            let c = engine.counters();
            waiting += c.waiting.load(std::sync::atomic::Ordering::Relaxed);
            active += c.active.load(std::sync::atomic::Ordering::Relaxed);
        }
    }
    let models: Vec<Value> = set
        .describe()
        .into_iter()
        .map(|mut m| {
            let memory = m["memory_bytes"]["total"]
                .as_u64()
                .filter(|b| *b > 0)
                .map(size_text)
                .unwrap_or_else(|| "—".into());
            m["memory"] = Value::from(memory);
            m
        })
        .collect();
    let repos: Vec<String> = state
        .repos
        .read()
        .map(|r| r.iter().map(|k| k.name.clone()).collect())
        .unwrap_or_default();
    let totals = state.metrics.totals();
    let mut ctx = layout(&session, "overview", "Overview");
    ctx = context! {
        ..ctx,
        ..context! {
            version => env!("CARGO_PKG_VERSION"),
            uptime => duration_text(state.started.elapsed().as_secs()),
            requests => totals.requests,
            per_minute => state.metrics.requests_per_minute().map(|r| format!("{r:.1}")).unwrap_or_else(|| "—".into()),
            server_errors => totals.server_errors,
            waiting => waiting,
            active => active,
            models => models,
            index => state.index.is_some(),
            repos => repos,
            stores_code => state.audit.stores_code(),
            retention_days => state.config.audit.retention_days,
        }
    };
    render(StatusCode::OK, "overview.html", ctx)
}

/// The tokens as the page lists them.
/// The tokens as the tokens pages list them, newest first: all of them, or those of
/// directory user `owner`.
pub fn token_rows(state: &AppState, owner: Option<&str>) -> Result<Vec<Value>, String> {
    let now = crate::store::tokens::now();
    let list = state
        .token_db
        .lock()
        .map_err(|_| "the token table is unavailable".to_string())?
        .list()
        .map_err(|e| e.to_string())?;
    Ok(list
        .into_iter()
        .rev()
        .filter(|t| owner.is_none_or(|o| t.owner.as_deref() == Some(o)))
        .map(|t| {
            let state = match (t.revoked_at, t.expired_at(now)) {
                (Some(_), _) => "revoked",
                (None, true) => "expired",
                (None, false) => "active",
            };
            serde_json::json!({
                "name": t.name,
                "role": t.role.as_str(),
                "repos": t.repos.to_db(),
                "created": utc_minutes(t.created_at),
                "expires": t.expires_at.map(utc_minutes),
                "last_used": t.last_used_at.map(utc_minutes),
                "state": state,
            })
        })
        .collect())
}

/// A token form's `expires_days` as an expiry time: empty is never, else 1 to 3650
/// days from now.
pub fn expiry_of(days: &str) -> Result<Option<i64>, &'static str> {
    match days.trim() {
        "" => Ok(None),
        d => match d.parse::<i64>() {
            Ok(n) if (1..=3650).contains(&n) => Ok(Some(crate::store::tokens::now() + n * 86_400)),
            _ => Err("The expiry is a number of days from 1 to 3650, or empty for never."),
        },
    }
}

/// The tokens page, with a notice, an error or a new token's secret.
async fn tokens_page(
    state: Arc<AppState>,
    session: Session,
    status: StatusCode,
    extra: minijinja::Value,
) -> Response {
    let worker = state.clone();
    let rows = blocking(move || token_rows(&worker, None)).await;
    let ctx = layout(&session, "tokens", "Users and tokens");
    match rows {
        Ok(tokens) => render(
            status,
            "tokens.html",
            context! { ..ctx, ..context! { tokens => tokens }, ..extra },
        ),
        Err(e) => render(
            StatusCode::INTERNAL_SERVER_ERROR,
            "tokens.html",
            context! { ..ctx, ..context! { error => e, tokens => Vec::<Value>::new() } },
        ),
    }
}

/// `GET /admin/tokens`
pub async fn tokens(State(state): State<Arc<AppState>>, Signed(session): Signed) -> Response {
    if !is_admin(&session) {
        return StatusCode::FORBIDDEN.into_response();
    }
    tokens_page(state, session, StatusCode::OK, context! {}).await
}

/// `POST /admin/tokens`: creates a token; the page shows its secret once.
pub async fn create_token(
    State(state): State<Arc<AppState>>,
    Signed(session): Signed,
    Extension(audit): Extension<AuditSlot>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = admin_form_refusal(&session, &form) {
        return refused;
    }
    let field = |k: &str| {
        form.get(k)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let name = field("name");
    let repos = RepoScope::parse(&field("repos"));
    let role = match Role::parse(&field("role")) {
        Ok(r) => r,
        Err(e) => {
            return tokens_page(
                state,
                session,
                StatusCode::UNPROCESSABLE_ENTITY,
                context! { error => e.to_string() },
            )
            .await;
        }
    };
    let expires_at = match expiry_of(&field("expires_days")) {
        Ok(e) => e,
        Err(e) => {
            return tokens_page(
                state,
                session,
                StatusCode::UNPROCESSABLE_ENTITY,
                context! { error => e },
            )
            .await;
        }
    };
    let worker = state.clone();
    let (n, r) = (name.clone(), repos.clone());
    let created = blocking(move || {
        worker
            .token_db
            .lock()
            .map_err(|_| "the token table is unavailable".to_string())?
            .create_expiring(&n, role, &r, expires_at)
            .map_err(|e| e.to_string())
    })
    .await;
    match created {
        Ok(secret) => {
            let expiry = expires_at
                .map(utc_minutes)
                .unwrap_or_else(|| "never".into());
            audit_action(
                &audit,
                &session,
                format!(
                    "create token {name} (role {}, repositories {}, expires {expiry})",
                    role.as_str(),
                    repos.to_db()
                ),
            );
            tokens_page(
                state,
                session,
                StatusCode::OK,
                context! { secret => secret, created => name },
            )
            .await
        }
        Err(e) => {
            tokens_page(
                state,
                session,
                StatusCode::UNPROCESSABLE_ENTITY,
                context! { error => e },
            )
            .await
        }
    }
}

/// `POST /admin/tokens/revoke`
pub async fn revoke_token(
    State(state): State<Arc<AppState>>,
    Signed(session): Signed,
    Extension(audit): Extension<AuditSlot>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = admin_form_refusal(&session, &form) {
        return refused;
    }
    let name = form.get("name").cloned().unwrap_or_default();
    let worker = state.clone();
    let n = name.clone();
    let revoked = blocking(move || {
        let store = worker
            .token_db
            .lock()
            .map_err(|_| "the token table is unavailable".to_string())?;
        store.revoke(&n).map_err(|e| e.to_string())?;
        // Stop accepting it now, not at the next refresh.
        worker.refresh(&store);
        Ok::<_, String>(())
    })
    .await;
    match revoked {
        Ok(()) => {
            audit_action(&audit, &session, format!("revoke token {name}"));
            tokens_page(
                state,
                session,
                StatusCode::OK,
                context! { notice => format!("Token {name} was revoked.") },
            )
            .await
        }
        Err(e) => {
            tokens_page(
                state,
                session,
                StatusCode::UNPROCESSABLE_ENTITY,
                context! { error => e },
            )
            .await
        }
    }
}
