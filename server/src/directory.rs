//! Sign-in with the company directory (LDAP): `[auth.ldap]` names the server (`ldap://`
//! with optional StartTLS, or `ldaps://`), a service account that searches, where
//! users and groups live, and which directory groups give which role and repository
//! scope. A user signs in to the console with their directory password; their personal
//! tokens get the role and scope of their groups, and stop working (are revoked) when
//! the directory no longer finds them — disabled users are excluded by `user_filter` —
//! or none of their groups maps to a role, checked every `check_interval_secs` and at
//! each sign-in.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, ldap_escape};
use serde::Deserialize;

use crate::store::tokens::{RepoScope, Role};

/// `[auth]`: ways of signing in besides tokens.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// `[auth.ldap]`: the company directory.
    pub ldap: Option<LdapSection>,
}

/// `[auth.ldap]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapSection {
    /// `ldap://host:389` or `ldaps://host:636`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS.
    #[serde(default)]
    pub starttls: bool,
    /// PEM file of the CA(s) that signed the directory's certificate (default: the
    /// system's certificate store).
    pub ca_file: Option<PathBuf>,
    /// The service account that searches users and groups.
    pub bind_dn: String,
    /// An environment variable holding its password.
    pub bind_password_env: Option<String>,
    /// A file holding its password.
    pub bind_password_file: Option<PathBuf>,
    /// Where users are searched.
    pub user_base: String,
    /// The filter finding one enabled user; `{username}` is replaced by the escaped
    /// name (e.g. `(&(objectClass=inetOrgPerson)(uid={username})(!(employeeType=disabled)))`).
    pub user_filter: String,
    /// Where groups are searched.
    pub group_base: String,
    /// The group attribute listing its members' DNs.
    #[serde(default = "default_member_attribute")]
    pub group_member_attribute: String,
    /// Seconds between checks that directory users' tokens may still work.
    #[serde(default = "default_check_secs")]
    pub check_interval_secs: u64,
    /// Most seconds for a directory operation.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Which groups give which role and repositories.
    #[serde(default)]
    pub groups: Vec<GroupMapping>,
}

fn default_member_attribute() -> String {
    "member".into()
}
fn default_check_secs() -> u64 {
    300
}
fn default_timeout_secs() -> u64 {
    5
}

/// `[[auth.ldap.groups]]`: members of `group` (a DN) get `role` and `repos`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMapping {
    /// The group's DN.
    pub group: String,
    /// `user` or `admin`.
    pub role: String,
    /// `*` or `a,b,c`.
    #[serde(default = "all_repos")]
    pub repos: String,
}

fn all_repos() -> String {
    "*".into()
}

impl LdapSection {
    /// Checks the section, naming what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.url.starts_with("ldap://") || self.url.starts_with("ldaps://")) {
            return Err(format!(
                "`auth.ldap.url` is `ldap://…` or `ldaps://…`, not `{}`",
                self.url
            ));
        }
        if self.starttls && self.url.starts_with("ldaps://") {
            return Err(
                "`auth.ldap.starttls` is for `ldap://` URLs; `ldaps://` is TLS already".into(),
            );
        }
        if self.bind_password_env.is_some() == self.bind_password_file.is_some() {
            return Err(
                "set one of `auth.ldap.bind_password_env` and `auth.ldap.bind_password_file`"
                    .into(),
            );
        }
        if !self.user_filter.contains("{username}") {
            return Err("`auth.ldap.user_filter` must contain `{username}`".into());
        }
        if self.groups.is_empty() {
            return Err("`auth.ldap` needs at least one `[[auth.ldap.groups]]` mapping".into());
        }
        for g in &self.groups {
            Role::parse(&g.role).map_err(|e| format!("auth.ldap.groups `{}`: {e}", g.group))?;
        }
        if self.check_interval_secs == 0 || self.timeout_secs == 0 {
            return Err("`auth.ldap` intervals and timeouts must be above zero".into());
        }
        Ok(())
    }
}

/// Why a directory operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// Wrong password.
    #[error("the directory did not accept that user name and password")]
    Refused,
    /// The directory does not find the user (unknown, or disabled by `user_filter`);
    /// told to the person in the same words as a wrong password.
    #[error("the directory did not accept that user name and password")]
    NotFound,
    /// The user is in no group that maps to a role.
    #[error("`{0}` is in no directory group that may use Souffleur")]
    NoGroup(String),
    /// The directory could not be asked.
    #[error("the directory is unavailable: {0}")]
    Unavailable(String),
}

/// A user as the directory describes them.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectoryUser {
    /// The name they sign in with.
    pub username: String,
    /// Their DN.
    pub dn: String,
    /// The mapped groups they are in.
    pub groups: Vec<String>,
    /// The highest role of those groups.
    pub role: Role,
    /// The union of those groups' repositories.
    pub repos: RepoScope,
}

/// The directory of `[auth.ldap]`.
pub struct Directory {
    section: LdapSection,
    password: String,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("Directory")
            .field("url", &self.section.url)
            .finish()
    }
}

/// A TLS configuration trusting the CA certificates in the PEM file `path`.
fn tls_trusting(path: &std::path::Path) -> Result<rustls::ClientConfig, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read auth.ldap.ca_file {}: {e}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .map_err(|e| format!("auth.ldap.ca_file {}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(&rustls::Certificate(cert))
            .map_err(|e| format!("auth.ldap.ca_file {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "auth.ldap.ca_file {} holds no certificate",
            path.display()
        ));
    }
    Ok(rustls::ClientConfig::builder()
        .with_safe_defaults()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Directory {
    /// The directory of `section`; reads the service account's password now.
    pub fn new(section: &LdapSection) -> Result<Self, String> {
        section.validate()?;
        let password = match (&section.bind_password_env, &section.bind_password_file) {
            (Some(var), _) => std::env::var(var).map_err(|_| {
                format!("the environment variable `{var}` (auth.ldap.bind_password_env) is not set")
            })?,
            (_, Some(file)) => std::fs::read_to_string(file)
                .map_err(|e| {
                    format!(
                        "cannot read auth.ldap.bind_password_file {}: {e}",
                        file.display()
                    )
                })?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
            (None, None) => {
                return Err(
                    "set `auth.ldap.bind_password_env` or `auth.ldap.bind_password_file`".into(),
                );
            }
        };
        let tls = match &section.ca_file {
            Some(path) => Some(std::sync::Arc::new(tls_trusting(path)?)),
            None => None,
        };
        Ok(Self {
            section: section.clone(),
            password,
            tls,
        })
    }

    /// Seconds between checks of directory users' tokens.
    pub fn check_interval(&self) -> Duration {
        Duration::from_secs(self.section.check_interval_secs)
    }

    async fn connect(&self) -> Result<ldap3::Ldap, DirectoryError> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(Duration::from_secs(self.section.timeout_secs))
            .set_starttls(self.section.starttls);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.section.url)
            .await
            .map_err(|e| DirectoryError::Unavailable(e.to_string()))?;
        ldap3::drive!(conn);
        ldap.with_timeout(Duration::from_secs(self.section.timeout_secs));
        Ok(ldap)
    }

    /// Checks `username` and `password` with the directory: the user must be found by
    /// `user_filter`, the password must bind as them, and a group must map to a role.
    pub async fn sign_in(
        &self,
        username: &str,
        password: &str,
    ) -> Result<DirectoryUser, DirectoryError> {
        // An empty password would be an "unauthenticated bind", which LDAP servers
        // answer with success.
        if password.is_empty() || username.trim().is_empty() {
            return Err(DirectoryError::Refused);
        }
        let user = self
            .lookup(username)
            .await?
            .ok_or(DirectoryError::NotFound)?;
        let mut ldap = self.connect().await?;
        let bound = ldap
            .simple_bind(&user.dn, password)
            .await
            .map_err(|e| DirectoryError::Unavailable(e.to_string()))?;
        let _ = ldap.unbind().await;
        if bound.rc != 0 {
            return Err(DirectoryError::Refused);
        }
        if user.groups.is_empty() {
            return Err(DirectoryError::NoGroup(username.to_string()));
        }
        Ok(user)
    }

    /// The enabled user `username` with their mapped groups, or `None` when the
    /// directory does not find them (unknown or disabled).
    pub async fn lookup(&self, username: &str) -> Result<Option<DirectoryUser>, DirectoryError> {
        let mut ldap = self.connect().await?;
        let bound = ldap
            .simple_bind(&self.section.bind_dn, &self.password)
            .await
            .map_err(|e| DirectoryError::Unavailable(e.to_string()))?;
        if bound.rc != 0 {
            return Err(DirectoryError::Unavailable(format!(
                "the service account could not bind: {}",
                bound.text
            )));
        }
        let filter = self
            .section
            .user_filter
            .replace("{username}", &ldap_escape(username));
        let (entries, _) = ldap
            .search(
                &self.section.user_base,
                Scope::Subtree,
                &filter,
                vec!["1.1"],
            )
            .await
            .and_then(|r| r.success())
            .map_err(|e| DirectoryError::Unavailable(e.to_string()))?;
        if entries.len() != 1 {
            let _ = ldap.unbind().await;
            return Ok(None);
        }
        let Some(dn) = entries.into_iter().next().and_then(entry_dn) else {
            let _ = ldap.unbind().await;
            return Ok(None);
        };
        let member = format!(
            "({}={})",
            self.section.group_member_attribute,
            ldap_escape(&dn)
        );
        let (groups, _) = ldap
            .search(
                &self.section.group_base,
                Scope::Subtree,
                &member,
                vec!["1.1"],
            )
            .await
            .and_then(|r| r.success())
            .map_err(|e| DirectoryError::Unavailable(e.to_string()))?;
        let _ = ldap.unbind().await;
        let in_groups: Vec<String> = groups.into_iter().filter_map(entry_dn).collect();
        let mapped: Vec<&GroupMapping> = self
            .section
            .groups
            .iter()
            .filter(|g| in_groups.iter().any(|d| d.eq_ignore_ascii_case(&g.group)))
            .collect();
        let role = if mapped
            .iter()
            .any(|g| Role::parse(&g.role).ok() == Some(Role::Admin))
        {
            Role::Admin
        } else {
            Role::User
        };
        let repos = union_scope(mapped.iter().map(|g| RepoScope::parse(&g.repos)));
        Ok(Some(DirectoryUser {
            username: username.to_string(),
            dn,
            groups: mapped.iter().map(|g| g.group.clone()).collect(),
            role,
            repos,
        }))
    }
}

/// The DN of a search result (a malformed entry from the server is skipped).
fn entry_dn(entry: ldap3::ResultEntry) -> Option<String> {
    std::panic::catch_unwind(AssertUnwindSafe(|| SearchEntry::construct(entry).dn)).ok()
}

/// The union of several repository scopes.
pub fn union_scope(scopes: impl Iterator<Item = RepoScope>) -> RepoScope {
    let mut names: Vec<String> = Vec::new();
    for s in scopes {
        match s {
            RepoScope::All => return RepoScope::All,
            RepoScope::Only(list) => {
                for n in list {
                    if !names.contains(&n) {
                        names.push(n);
                    }
                }
            }
        }
    }
    RepoScope::Only(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_checked_and_scopes_unite() {
        let section: LdapSection = toml::from_str(
            "url = \"ldap://127.0.0.1:389\"\nbind_dn = \"cn=s\"\nbind_password_env = \"P\"\nuser_base = \"ou=people\"\nuser_filter = \"(uid={username})\"\ngroup_base = \"ou=groups\"\n[[groups]]\ngroup = \"cn=devs\"\nrole = \"user\"\nrepos = \"web\"\n",
        )
        .expect("section");
        assert!(section.validate().is_ok());
        assert_eq!(section.group_member_attribute, "member");
        for (change, named) in [
            (
                LdapSection {
                    url: "http://x".into(),
                    ..section.clone()
                },
                "auth.ldap.url",
            ),
            (
                LdapSection {
                    user_filter: "(uid=x)".into(),
                    ..section.clone()
                },
                "{username}",
            ),
            (
                LdapSection {
                    groups: Vec::new(),
                    ..section.clone()
                },
                "groups",
            ),
            (
                LdapSection {
                    bind_password_env: None,
                    ..section.clone()
                },
                "bind_password",
            ),
            (
                LdapSection {
                    url: "ldaps://x".into(),
                    starttls: true,
                    ..section.clone()
                },
                "starttls",
            ),
        ] {
            let e = change.validate().expect_err(named);
            assert!(e.contains(named), "{named}: {e}");
        }
        let scope =
            union_scope([RepoScope::parse("web,api"), RepoScope::parse("api,docs")].into_iter());
        assert_eq!(
            scope,
            RepoScope::Only(vec!["web".into(), "api".into(), "docs".into()])
        );
        assert_eq!(
            union_scope([RepoScope::parse("web"), RepoScope::All].into_iter()),
            RepoScope::All
        );
    }
}
