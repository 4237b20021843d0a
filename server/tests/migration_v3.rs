//! `souffleur.db` made by the release before the console (schema version 3: tokens
//! and audit rows written by `souffleur token create/revoke` and `souffleur serve` of
//! commit c0ea2f4) opens with this release: it migrates to the current version, every
//! token keeps working as before (revoked stays revoked), the audit rows stay readable,
//! and the new token fields (expiry, last use) and the audit `action` work on it.

use std::path::PathBuf;

use server::store::audit::{AuditFilter, read_rows};
use server::store::tokens::{Role, TokenStore, hash_token};

/// alice's secret in the fixture (a test database; the token exists nowhere else).
const ALICE: &str = "sfl_9931f1ddc912362fa855cd241976b6f6290d79a0b20afbec";

fn fixture_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("souffleur.db");
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/souffleur-v3.db");
    std::fs::copy(&fixture, &db).expect("copy the fixture");
    (dir, db)
}

#[test]
fn a_database_of_the_previous_release_migrates_and_keeps_everything() {
    let (_dir, db) = fixture_copy();
    let store = TokenStore::open(&db).expect("open and migrate");
    let tokens = store.list().expect("list");
    let names: Vec<(&str, bool)> = tokens
        .iter()
        .map(|t| (t.name.as_str(), t.revoked_at.is_some()))
        .collect();
    assert_eq!(
        names,
        vec![("alice", false), ("ci-bot", true), ("root", false)]
    );
    assert!(
        tokens
            .iter()
            .all(|t| t.expires_at.is_none() && t.last_used_at.is_none())
    );
    let alice = store
        .find_active(&hash_token(ALICE))
        .expect("find")
        .expect("alice still works");
    assert_eq!(alice.role, Role::User);
    assert_eq!(store.active().expect("active").len(), 2);

    // The new fields work on the migrated table.
    store
        .touch(&[("alice".into(), 1_800_000_000)])
        .expect("touch");
    let alice = store
        .find_active(&hash_token(ALICE))
        .expect("find")
        .expect("alice");
    assert_eq!(alice.last_used_at, Some(1_800_000_000));

    let rows = read_rows(&db, &AuditFilter::default(), 10).expect("audit rows");
    let paths: Vec<&str> = rows.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, vec!["/metrics", "/v1/completions", "/v1/health"]);
    assert!(rows.iter().all(|r| r.action.is_none()));
    assert_eq!(rows[1].model.as_deref(), Some("SmolLM2-135M-Instruct.Q4_1"));

    // Opening again is a no-op.
    drop(store);
    let again = TokenStore::open(&db).expect("reopen");
    assert_eq!(again.list().expect("list").len(), 3);
}
