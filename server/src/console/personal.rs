//! A directory user's own tokens (`/admin/me`): create personal tokens with the role
//! and repository scope their directory groups give, see and revoke them. When the
//! directory no longer finds a user (or their groups no longer map to a role), their
//! tokens are revoked and their sessions end: at sign-in, and by [`check_directory`]
//! every `auth.ldap.check_interval_secs`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::Form;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use serde_json::Value;

use super::pages::{expiry_of, layout, token_rows};
use super::session::Session;
use super::{Signed, blocking, csrf_refusal, render};
use crate::http::observe::AuditSlot;
use crate::state::AppState;
use crate::store::audit::AuditRecord;

async fn page(
    state: Arc<AppState>,
    session: Session,
    status: StatusCode,
    extra: minijinja::Value,
) -> Response {
    let worker = state.clone();
    let owner = session.user.clone();
    let tokens = blocking(move || token_rows(&worker, Some(&owner))).await;
    let base = context! {
        ..layout(&session, "me", "My tokens"),
        ..context! {
            directory_user => session.directory,
            role => session.role.as_str(),
            repos => session.repos.to_db(),
        }
    };
    match tokens {
        Ok(tokens) => render(
            status,
            "personal.html",
            context! { ..base, ..context! { tokens => tokens }, ..extra },
        ),
        Err(e) => render(
            StatusCode::INTERNAL_SERVER_ERROR,
            "personal.html",
            context! { ..base, ..context! { error => e, tokens => Vec::<Value>::new() } },
        ),
    }
}

/// `GET /admin/me`
pub async fn mine(State(state): State<Arc<AppState>>, Signed(session): Signed) -> Response {
    page(state, session, StatusCode::OK, context! {}).await
}

/// `POST /admin/me`: a personal token named `<user>-<label>`.
pub async fn create(
    State(state): State<Arc<AppState>>,
    Signed(session): Signed,
    Extension(audit): Extension<AuditSlot>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = csrf_refusal(&session, &form) {
        return refused;
    }
    if !session.directory {
        return page(
            state,
            session,
            StatusCode::FORBIDDEN,
            context! { error => "Personal tokens are for directory users." },
        )
        .await;
    }
    let label = form.get("label").map(|l| l.trim()).unwrap_or("");
    if label.is_empty()
        || label.chars().count() > 40
        || !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return page(
            state,
            session,
            StatusCode::UNPROCESSABLE_ENTITY,
            context! { error => "The label is 1 to 40 letters, digits, `-`, `_` or `.`." },
        )
        .await;
    }
    let expires_at = match expiry_of(form.get("expires_days").map(String::as_str).unwrap_or("")) {
        Ok(e) => e,
        Err(e) => {
            return page(
                state,
                session,
                StatusCode::UNPROCESSABLE_ENTITY,
                context! { error => e },
            )
            .await;
        }
    };
    let name = format!("{}-{label}", session.user);
    let worker = state.clone();
    let (n, role, repos, owner) = (
        name.clone(),
        session.role,
        session.repos.clone(),
        session.user.clone(),
    );
    let created = blocking(move || {
        worker
            .token_db
            .lock()
            .map_err(|_| "the token table is unavailable".to_string())?
            .create_owned(&n, role, &repos, expires_at, Some(&owner))
            .map_err(|e| e.to_string())
    })
    .await;
    match created {
        Ok(secret) => {
            audit.update(|a| {
                a.caller = Some(session.user.clone());
                a.action = Some(format!(
                    "create personal token {name} (role {}, repositories {})",
                    session.role.as_str(),
                    session.repos.to_db()
                ));
            });
            page(
                state,
                session,
                StatusCode::OK,
                context! { secret => secret, created => name },
            )
            .await
        }
        Err(e) => {
            page(
                state,
                session,
                StatusCode::UNPROCESSABLE_ENTITY,
                context! { error => e },
            )
            .await
        }
    }
}

/// `POST /admin/me/revoke`: one of the user's own tokens.
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    Signed(session): Signed,
    Extension(audit): Extension<AuditSlot>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = csrf_refusal(&session, &form) {
        return refused;
    }
    let name = form.get("name").cloned().unwrap_or_default();
    let worker = state.clone();
    let (n, owner) = (name.clone(), session.user.clone());
    let revoked = blocking(move || {
        let store = worker
            .token_db
            .lock()
            .map_err(|_| "the token table is unavailable".to_string())?;
        let own = store
            .list()
            .map_err(|e| e.to_string())?
            .iter()
            .any(|t| t.name == n && t.owner.as_deref() == Some(owner.as_str()));
        if !own {
            return Err(format!("You have no token named {n}."));
        }
        store.revoke(&n).map_err(|e| e.to_string())?;
        worker.refresh(&store);
        Ok(())
    })
    .await;
    match revoked {
        Ok(()) => {
            audit.update(|a| {
                a.caller = Some(session.user.clone());
                a.action = Some(format!("revoke personal token {name}"));
            });
            page(
                state,
                session,
                StatusCode::OK,
                context! { notice => format!("Token {name} was revoked.") },
            )
            .await
        }
        Err(e) => {
            page(
                state,
                session,
                StatusCode::UNPROCESSABLE_ENTITY,
                context! { error => e },
            )
            .await
        }
    }
}

/// Revokes the personal tokens of `username` and ends their directory sessions (the
/// directory no longer lets them in); writes what happened to the audit log.
pub async fn end_user(state: &Arc<AppState>, username: &str, when: &str) {
    let worker = state.clone();
    let user = username.to_string();
    let revoked = blocking(move || {
        let store = worker
            .token_db
            .lock()
            .map_err(|_| "the token table is unavailable".to_string())?;
        let names = store.revoke_owned(&user).map_err(|e| e.to_string())?;
        worker.refresh(&store);
        Ok::<_, String>(names)
    })
    .await;
    let sessions = state.console.close_user(username);
    match revoked {
        Ok(names) if names.is_empty() && sessions == 0 => {}
        Ok(names) => {
            tracing::info!(
                user = username,
                tokens = names.len(),
                sessions,
                "the directory no longer lets this user in"
            );
            state.audit.record(AuditRecord {
                at_ms: crate::store::tokens::now() * 1000,
                token: Some("directory".into()),
                method: "-".into(),
                path: "directory-check".into(),
                status: 200,
                action: Some(format!(
                    "{username} is no longer enabled in the directory ({when}): revoked tokens [{}], ended {sessions} sessions",
                    names.join(", ")
                )),
                ..AuditRecord::default()
            });
        }
        Err(e) => {
            tracing::error!(user = username, error = %e, "cannot revoke a directory user's tokens")
        }
    }
}

/// Every `check_interval_secs`: asks the directory about each user with personal
/// tokens or a directory session; those it no longer finds, or whose groups map to no
/// role, lose their tokens and sessions. An unreachable directory changes nothing (and
/// is logged).
pub fn check_directory(state: Arc<AppState>) {
    let Some(directory) = state.directory.clone() else {
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(directory.check_interval()).await;
            let worker = state.clone();
            let mut users = blocking(move || {
                worker
                    .token_db
                    .lock()
                    .map_err(|_| "the token table is unavailable".to_string())?
                    .owners()
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot list directory users' tokens");
                Vec::new()
            });
            users.extend(state.console.directory_users());
            users.sort();
            users.dedup();
            for user in users {
                match directory.lookup(&user).await {
                    Ok(Some(u)) if !u.groups.is_empty() => {}
                    Ok(_) => end_user(&state, &user, "periodic check").await,
                    Err(e) => {
                        tracing::warn!(user, error = %e, "directory check skipped");
                        break;
                    }
                }
            }
        }
    });
}
