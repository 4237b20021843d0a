//! The web console over HTTP, as a browser uses it (cookies, forms, redirects): sign-in
//! with an admin token and its refusals, the session cookie's flags, CSRF on every
//! form, creating a token (its secret shown once) that then works on the API, revoking
//! it, the audit log page with the admin's actions, its filters and exports, sign-out,
//! session expiry and the sign-in limit. `tests/console/run.sh` drives the same
//! console in headless Chromium.

use std::time::Duration;

use e2e::{Launched, create_token, launch, temp_home};
use serde_json::Value;

/// A browser-like client: no redirects followed, cookies sent by hand.
struct Client {
    agent: ureq::Agent,
    base: String,
    cookie: Option<String>,
}

/// A response: status, `Location`, `Set-Cookie`, content type and body.
struct Page {
    status: u16,
    location: String,
    set_cookie: String,
    content_type: String,
    body: String,
}

impl Client {
    fn new(server: &Launched) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Self {
            agent,
            base: server.url.clone(),
            cookie: None,
        }
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        form: Option<&[(&str, &str)]>,
        extra: &[(&str, &str)],
    ) -> Page {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("Cookie", c);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let mut resp = match form {
            Some(fields) => {
                let body: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{k}={}", urlencoding(v)))
                    .collect();
                let req = req
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(body.join("&"))
                    .expect("request");
                self.agent.run(req)
            }
            None => self.agent.run(req.body(()).expect("request")),
        }
        .expect("response");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let (location, set_cookie, content_type) = (
            header("location"),
            header("set-cookie"),
            header("content-type"),
        );
        Page {
            status: resp.status().as_u16(),
            location,
            set_cookie,
            content_type,
            body: resp.body_mut().read_to_string().unwrap_or_default(),
        }
    }

    fn get(&self, path: &str) -> Page {
        self.send("GET", path, None, &[])
    }

    fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        self.send("POST", path, Some(form), &[])
    }

    /// Signs in with `token`; keeps the session cookie.
    fn sign_in(&mut self, token: &str) -> Page {
        let page = self.post("/admin/login", &[("token", token)]);
        if let Some(pair) = page
            .set_cookie
            .split(';')
            .next()
            .filter(|p| p.contains('='))
        {
            self.cookie = Some(pair.to_string());
        }
        page
    }
}

fn urlencoding(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of the first `name="csrf"` field of a page.
fn csrf_of(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    body[at..at + 64].to_string()
}

fn api_status(server: &Launched, token: &str) -> u16 {
    e2e::request(
        "GET",
        &format!("{}/v1/models", server.url),
        Some(token),
        None,
    )
    .status
}

fn serve(
    extra_config: &str,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Launched,
    String,
    String,
) {
    let (dir, home) = temp_home();
    std::fs::write(home.join("config.toml"), extra_config).expect("config");
    let root = create_token(&home, "root", &["--role", "admin"]);
    let dev = create_token(&home, "dev", &[]);
    let server = launch(&home, &[]);
    (dir, home, server, root, dev)
}

#[test]
fn an_admin_runs_tokens_and_reads_the_audit_log_in_the_console() {
    let (_dir, _home, server, root, dev) =
        serve("[console]\nsign_in_attempts_per_minute = 4\n\n[audit]\nretention_days = 30\n");
    let mut c = Client::new(&server);

    // Not signed in: to the sign-in page.
    let page = c.get("/admin");
    assert_eq!((page.status, page.location.as_str()), (303, "/admin/login"));
    let page = c.get("/admin/login");
    assert_eq!(page.status, 200);
    assert!(
        page.content_type.starts_with("text/html"),
        "{}",
        page.content_type
    );

    // Refusals: an unknown token, a user token.
    let page = c.sign_in("sfl_not_a_token");
    assert_eq!(page.status, 401);
    assert!(page.body.contains("not valid") && page.set_cookie.is_empty());
    let page = c.sign_in(&dev);
    assert_eq!(page.status, 403);
    assert!(page.body.contains("not an admin token"));

    // An admin token: a session cookie a script cannot read, for the console only.
    let page = c.sign_in(&root);
    assert_eq!((page.status, page.location.as_str()), (303, "/admin"));
    for flag in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/admin",
        "Max-Age=43200",
    ] {
        assert!(page.set_cookie.contains(flag), "{}", page.set_cookie);
    }
    assert!(!page.set_cookie.contains("Secure"), "{}", page.set_cookie);
    let behind_tls = c.send(
        "POST",
        "/admin/login",
        Some(&[("token", root.as_str())]),
        &[("X-Forwarded-Proto", "https")],
    );
    assert!(
        behind_tls.set_cookie.contains("; Secure"),
        "{}",
        behind_tls.set_cookie
    );

    let page = c.get("/admin");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("<h1>Overview</h1>") && page.body.contains("SmolLM2"));
    assert!(page.body.contains("id=\"per-minute\""), "the request rate");
    assert!(page.body.contains("stores no code") && page.body.contains("30 days"));

    // A form without its CSRF token changes nothing.
    let refused = c.post(
        "/admin/tokens",
        &[("name", "ci-bot"), ("role", "user"), ("repos", "*")],
    );
    assert_eq!(refused.status, 403, "{}", refused.body);
    let page = c.get("/admin/tokens");
    assert!(!page.body.contains("ci-bot"));
    let csrf = csrf_of(&page.body);
    let forged = c.post(
        "/admin/tokens",
        &[
            ("csrf", &"0".repeat(64)),
            ("name", "ci-bot"),
            ("role", "user"),
            ("repos", "*"),
        ],
    );
    assert_eq!(forged.status, 403);

    // Create a token: its secret is shown once, and it works on the API.
    let page = c.post(
        "/admin/tokens",
        &[
            ("csrf", &csrf),
            ("name", "ci-bot"),
            ("role", "user"),
            ("repos", "web,api"),
            ("expires_days", "7"),
        ],
    );
    assert_eq!(page.status, 200, "{}", page.body);
    let at = page
        .body
        .find("id=\"new-secret\" readonly value=\"")
        .expect("secret shown")
        + 32;
    let secret: String = page.body[at..].chars().take_while(|c| *c != '"').collect();
    assert!(secret.starts_with("sfl_"), "{secret}");
    assert_eq!(api_status(&server, &secret), 200);
    let page = c.get("/admin/tokens");
    assert!(
        !page.body.contains(&secret),
        "the secret is shown only once"
    );
    assert!(page.body.contains("web,api"));
    let bad = c.post(
        "/admin/tokens",
        &[
            ("csrf", &csrf),
            ("name", "x"),
            ("role", "user"),
            ("repos", "*"),
            ("expires_days", "-3"),
        ],
    );
    assert_eq!(bad.status, 422);
    assert!(bad.body.contains("number of days"));

    // Revoke it: the API refuses it at once.
    let page = c.post(
        "/admin/tokens/revoke",
        &[("csrf", &csrf), ("name", "ci-bot")],
    );
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("was revoked"));
    assert_eq!(api_status(&server, &secret), 401);

    // The audit log shows who did what; filters and exports agree.
    std::thread::sleep(Duration::from_millis(500));
    let page = c.get("/admin/audit?user=root");
    assert_eq!(page.status, 200, "{}", page.body);
    for action in [
        "create token ci-bot (role user, repositories web,api, expires",
        "revoke token ci-bot",
        "sign in",
    ] {
        assert!(page.body.contains(action), "{action}: {}", page.body);
    }
    assert!(!page.body.contains("<td>dev</td>"), "filtered by user");
    let csv = c.get("/admin/audit/export?format=csv&user=root");
    assert_eq!(csv.status, 200);
    assert!(csv.content_type.starts_with("text/csv"));
    let mut lines = csv.body.lines();
    assert!(
        lines
            .next()
            .is_some_and(|h| h.starts_with("id,time_utc,token,method,path"))
    );
    let rows: Vec<&str> = lines.collect();
    assert!(
        rows.iter().all(|r| r.split(',').nth(2) == Some("root")),
        "{}",
        csv.body
    );
    assert!(rows.iter().any(|r| r.contains("revoke token ci-bot")));
    let jsonl = c.get("/admin/audit/export?format=jsonl&path=%2Fadmin%2Ftokens%2Frevoke");
    let rows: Vec<Value> = jsonl
        .body
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(rows.len(), 1, "{}", jsonl.body);
    assert_eq!(rows[0]["action"], "revoke token ci-bot");
    assert!(rows[0]["prompt"].is_null());
    assert_eq!(c.get("/admin/audit?from=yesterday").status, 422);

    // Sign out: the cookie no longer opens the console.
    let page = c.post("/admin/logout", &[("csrf", &csrf)]);
    assert_eq!((page.status, page.location.as_str()), (303, "/admin/login"));
    assert_eq!(c.get("/admin").status, 303);

    // Four failed sign-ins a minute from one address (two above), then even the right
    // token waits.
    for _ in 0..2 {
        assert_eq!(c.sign_in("sfl_wrong").status, 401);
    }
    assert_eq!(c.sign_in(&root).status, 429);
}

#[test]
fn sessions_end_when_idle_and_when_their_token_is_revoked() {
    let (_dir, home, server, root, _dev) = serve("[console]\nsession_idle_secs = 1\n");
    let mut c = Client::new(&server);
    assert_eq!(c.sign_in(&root).status, 303);
    assert_eq!(c.get("/admin").status, 200);
    std::thread::sleep(Duration::from_millis(2500));
    let page = c.get("/admin");
    assert_eq!((page.status, page.location.as_str()), (303, "/admin/login"));

    // A second admin revokes the first one's token: its session ends with it.
    let other = create_token(&home, "other-admin", &["--role", "admin"]);
    assert_eq!(c.sign_in(&root).status, 303);
    assert_eq!(c.get("/admin").status, 200);
    let mut o = Client::new(&server);
    assert_eq!(o.sign_in(&other).status, 303);
    let csrf = csrf_of(&o.get("/admin/tokens").body);
    assert_eq!(
        o.post("/admin/tokens/revoke", &[("csrf", &csrf), ("name", "root")])
            .status,
        200
    );
    assert_eq!(c.get("/admin").status, 303);
}
