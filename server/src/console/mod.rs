//! The admins' web console at `/admin`: server-rendered pages (minijinja templates
//! compiled into the binary, one stylesheet, no external assets), signed in with an
//! admin token; a session cookie (`HttpOnly`, `SameSite=Strict`, idle and absolute
//! expiry) and a CSRF token on every form. Every request is in the audit log like any
//! other, and every change an admin makes carries its `action` there.
//!
//! - [`session`]: sessions, cookies, CSRF, the sign-in limit.
//! - [`pages`]: sign-in and out, the overview, users and tokens.
//! - [`personal`]: a directory user's own tokens.
//! - [`audit_page`]: the audit log, filtered, paged and exported.
//! - [`usage_page`]: usage plots and acceptance tables.
//! - [`repos_page`]: the code index's repositories: add, sync, remove.
//! - [`clock`]: UTC times for people.

pub mod audit_page;
pub mod clock;
pub mod pages;
pub mod personal;
pub mod repos_page;
pub mod session;
pub mod usage_page;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::Environment;

pub use session::Sessions;

use crate::state::AppState;
use crate::store::tokens::{RepoScope, Role};
use session::{COOKIE, Session, cookie_value, same_secret};

/// The console's routes (mounted by [`crate::app::app`] when `console.enabled`).
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin", get(pages::overview))
        .route("/admin/login", get(pages::login_page).post(pages::login))
        .route("/admin/logout", post(pages::logout))
        .route(
            "/admin/tokens",
            get(pages::tokens).post(pages::create_token),
        )
        .route("/admin/tokens/revoke", post(pages::revoke_token))
        .route("/admin/me", get(personal::mine).post(personal::create))
        .route("/admin/me/revoke", post(personal::revoke))
        .route("/admin/audit", get(audit_page::audit))
        .route("/admin/audit/export", get(audit_page::export))
        .route("/admin/usage", get(usage_page::usage))
        .route(
            "/admin/repos",
            get(repos_page::repos).post(repos_page::add_repo),
        )
        .route("/admin/repos/sync", post(repos_page::sync_repo))
        .route("/admin/repos/remove", post(repos_page::remove_repo))
        .route("/admin/assets/console.css", get(stylesheet))
        .route("/admin/assets/uplot.js", get(uplot_script))
        .route("/admin/assets/uplot.css", get(uplot_stylesheet))
        .route("/admin/assets/usage.js", get(usage_script))
}

/// The templates, parsed once.
fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, text) in [
            ("base.html", include_str!("templates/base.html")),
            ("login.html", include_str!("templates/login.html")),
            ("overview.html", include_str!("templates/overview.html")),
            ("tokens.html", include_str!("templates/tokens.html")),
            ("audit.html", include_str!("templates/audit.html")),
            ("usage.html", include_str!("templates/usage.html")),
            ("repos.html", include_str!("templates/repos.html")),
            ("personal.html", include_str!("templates/personal.html")),
        ] {
            if let Err(e) = env.add_template(name, text) {
                tracing::error!(template = name, error = %e, "a console template does not parse");
            }
        }
        env
    })
}

/// A page: `template` rendered with `context` (HTML-escaped), or a plain error page.
pub fn render(status: StatusCode, template: &str, context: minijinja::Value) -> Response {
    let page = templates()
        .get_template(template)
        .and_then(|t| t.render(context));
    match page {
        Ok(html) => (
            status,
            [(header::CACHE_CONTROL, "no-store")],
            [(header::X_FRAME_OPTIONS, "DENY")],
            Html(html),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(template, error = %e, "a console page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered; the server's log has the details",
            )
                .into_response()
        }
    }
}

/// A file compiled into the binary, cached by browsers for an hour.
fn asset(kind: &'static str, text: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        text,
    )
        .into_response()
}

async fn stylesheet() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    )
}

/// uPlot 1.6.32 (MIT; `assets/uplot/`).
async fn uplot_script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/uplot/uPlot.iife.min.js"),
    )
}

async fn uplot_stylesheet() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("assets/uplot/uPlot.min.css"),
    )
}

async fn usage_script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/usage.js"),
    )
}

/// A signed-in admin (the extractor of every console page but sign-in); anyone else
/// is sent to the sign-in page. In `--local` mode the console is open, as the API is.
pub struct Signed(pub Session);

impl FromRequestParts<Arc<AppState>> for Signed {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        if !state.config.console.enabled {
            return Err(StatusCode::NOT_FOUND.into_response());
        }
        if state.local {
            return Ok(Signed(state.console.local_session()));
        }
        let cookie = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|h| cookie_value(h, COOKIE).map(str::to_string));
        let console = &state.config.console;
        let session = cookie.and_then(|c| {
            state.console.find(
                &c,
                Duration::from_secs(console.session_idle_secs),
                Duration::from_secs(console.session_max_secs),
            )
        });
        match session {
            // A revoked or expired token ends its sessions; directory sessions end when
            // the directory check no longer finds their user.
            Some(s) if s.directory || state.token_is_active(&s.token_hash) => {
                // Who looked at a page (the audit log itself, too) is in its row.
                if let Some(slot) = parts.extensions.get::<crate::http::observe::AuditSlot>() {
                    slot.update(|a| a.caller = Some(s.user.clone()));
                }
                Ok(Signed(s))
            }
            _ => Err(Redirect::to("/admin/login").into_response()),
        }
    }
}

/// The refusal of a form whose CSRF token is not the session's, or `None` when it is.
pub fn csrf_refusal(session: &Session, form: &HashMap<String, String>) -> Option<Response> {
    match form.get("csrf") {
        Some(sent) if same_secret(sent, &session.csrf) => None,
        _ => Some((
            StatusCode::FORBIDDEN,
            Html("<p>This form was not sent from a page of this session (its CSRF token is missing or stale). Go back, reload the page and try again.</p>"),
        )
            .into_response()),
    }
}

/// The refusal of an admin's form: its CSRF token is not the session's, or the
/// session is not an admin's; `None` when it may go on.
pub fn admin_form_refusal(session: &Session, form: &HashMap<String, String>) -> Option<Response> {
    csrf_refusal(session, form)
        .or_else(|| (!is_admin(session)).then(|| StatusCode::FORBIDDEN.into_response()))
}

/// Runs `work` (SQLite, the index, git) on a blocking thread; a task that died is an
/// error like the others.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|_| Err("the server's task failed".into()))
}

/// The admin role, for sessions that must have it.
pub fn is_admin(session: &Session) -> bool {
    session.role == Role::Admin
}

impl Sessions {
    /// The session every `--local` request has: the local admin, with a CSRF token
    /// made once per process (a web page elsewhere cannot post forms here).
    pub fn local_session(&self) -> Session {
        self.local_or_init(|| Session::local("local", Role::Admin, RepoScope::All))
    }
}
