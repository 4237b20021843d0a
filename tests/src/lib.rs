//! Harness of the end-to-end tests: a home directory with the default model, two
//! real git repositories indexed by the real `souffleur` binary, tokens made with its
//! CLI, and a server started on a free loopback port.
//!
//! Other crates' integration tests use it too (as a dev-dependency): `lsp`'s tests
//! start their `--local` server with [`local_server`].

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The built `souffleur` binary (`SOUFFLEUR_BIN`, else the workspace's target dir).
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SOUFFLEUR_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let bin = target.join("debug").join("souffleur");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p cli` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// The catalogue name of the model the tests serve: the tiny one, since they need
/// some model, not a good one (passed as `SOUFFLEUR_MODEL` to every command).
pub const TEST_MODEL: &str = "smollm2-135m";

/// The model file the tests serve (the tiny catalogue model, [`TEST_MODEL`]), in
/// `$SOUFFLEUR_HOME` or else `~/.souffleur`.
pub fn default_model() -> PathBuf {
    let home = std::env::var_os("SOUFFLEUR_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".souffleur")))
        .expect("SOUFFLEUR_HOME or HOME");
    let path = home.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "test model missing at {}: run `souffleur model fetch smollm2-135m`",
        path.display()
    );
    path
}

/// Runs the binary with `args` in `home`; returns stdout, failing the test on error.
pub fn souffleur(home: &Path, args: &[&str]) -> String {
    let out = Command::new(binary())
        .env("SOUFFLEUR_MODEL", TEST_MODEL)
        .args(args)
        .env("SOUFFLEUR_HOME", home)
        .output()
        .expect("run souffleur");
    assert!(
        out.status.success(),
        "souffleur {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "e2e")
        .env("GIT_AUTHOR_EMAIL", "e2e@example.invalid")
        .env("GIT_COMMITTER_NAME", "e2e")
        .env("GIT_COMMITTER_EMAIL", "e2e@example.invalid")
        .status()
        .expect("run git");
    assert!(status.success(), "git {args:?} failed");
}

/// Creates a git repository at `dir` with `files` committed.
pub fn make_repo(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).expect("repo dir");
    git(dir, &["init", "-q", "-b", "main"]);
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dirs");
        std::fs::write(p, text).expect("write file");
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "initial"]);
}

/// A running server and what the tests need to talk to it.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// An admin token.
    pub admin: String,
    /// A user token that may only see the `alpha` repository.
    pub alpha_user: String,
    /// The home directory (model, index, database).
    pub home: PathBuf,
    _dir: tempfile::TempDir,
    _server: Launched,
}

/// Python source of repository `alpha`.
pub const ALPHA_BILLING: &str = "\
def compute_invoice_total(items, tax_rate):
    \"\"\"Sum of item prices plus tax.\"\"\"
    subtotal = sum(item.price * item.quantity for item in items)
    return subtotal * (1 + tax_rate)


class Invoice:
    def __init__(self, customer, items):
        self.customer = customer
        self.items = items

    def total(self, tax_rate=0.19):
        return compute_invoice_total(self.items, tax_rate)
";

/// A long Python file of repository `alpha`: a helper at the top, far more lines than
/// a prompt's window, then a function that calls the helper.
pub fn alpha_ledger() -> String {
    let mut text = String::from(
        "def balance_after_fees(entries, fee_rate):\n    \"\"\"What the ledger holds once fees are taken.\"\"\"\n    return sum(entries) * (1 - fee_rate)\n\n",
    );
    for i in 0..150 {
        text.push_str(&format!(
            "\ndef post_entry_{i}(ledger):\n    return ledger.post({i}, \"entry number {i}\")\n\n"
        ));
    }
    text.push_str("\ndef close_books(ledger):\n    fees = balance_after_fees(ledger.entries, 0.02)\n    return fees\n");
    text
}

/// Python source of repository `beta`, which the `alpha` token must never see.
pub const BETA_SECRET: &str = "\
def render_secret_banner(user, clearance_level):
    \"\"\"Only for the beta team.\"\"\"
    if clearance_level < 3:
        raise PermissionError(user)
    return f\"TOP SECRET for {user}\"
";

/// The server shared by all tests of one test binary.
pub fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(start)
}

/// Makes `home` with the default model linked into its models directory.
pub fn home_with_model(home: &Path) {
    std::fs::create_dir_all(home.join("models")).expect("models dir");
    let model = default_model();
    std::os::unix::fs::symlink(
        &model,
        home.join("models").join(model.file_name().expect("name")),
    )
    .expect("link model");
}

/// A new temporary directory and, inside it, a home (`DIR/home`) made by
/// [`home_with_model`]; the directory is removed when the `TempDir` is dropped.
pub fn temp_home() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    home_with_model(&home);
    (dir, home)
}

/// A `souffleur serve --local` (no tokens) on a temporary home of its own.
pub struct LocalServer {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// The home directory (model, database).
    pub home: PathBuf,
    _dir: tempfile::TempDir,
    _server: Launched,
}

/// The `--local` server shared by all tests of one test binary: a temporary home with
/// only the test model (no repositories, no configuration file), started with
/// `--local --exit-on-stdin-close` so it ends with the test process.
pub fn local_server() -> &'static LocalServer {
    static SERVER: OnceLock<LocalServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let (dir, home) = temp_home();
        let launched = launch(&home, &["--local", "--exit-on-stdin-close"]);
        LocalServer {
            url: launched.url.clone(),
            home,
            _dir: dir,
            _server: launched,
        }
    })
}

/// A URL on which nothing listens (a free loopback port, bound then released).
pub fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// A `souffleur serve` process of a test's own (killed when dropped).
pub struct Launched {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// The process.
    pub child: Child,
}

impl Launched {
    /// `host:port` to connect a raw socket to.
    pub fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `souffleur serve --port 0 args…` in `home` and waits for its address.
pub fn launch(home: &Path, args: &[&str]) -> Launched {
    launch_logging_to(home, args, Stdio::inherit())
}

/// [`launch`] with the server's standard error (its log) sent to `stderr`.
pub fn launch_logging_to(home: &Path, args: &[&str], stderr: Stdio) -> Launched {
    let mut child = Command::new(binary())
        .env("SOUFFLEUR_MODEL", TEST_MODEL)
        .args(["serve", "--port", "0"])
        .args(args)
        .env("SOUFFLEUR_HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start server");
    let url = read_banner(&mut child);
    Launched { url, child }
}

/// Reads the server's first line (`souffleur: serving MODEL on http://ADDR…`) and
/// returns its URL, without a trailing `/`; keeps draining stdout after.
fn read_banner(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("stdout");
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line).expect("server banner");
    // Keep draining the server's stdout so it never writes into a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    line.split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no URL in the server's first line: {line:?}"))
        .trim_end_matches('/')
        .to_string()
}

/// Creates a token in `home` with `souffleur token create --name name extra…`.
pub fn create_token(home: &Path, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["token", "create", "--name", name];
    args.extend_from_slice(extra);
    let out = souffleur(home, &args);
    out.lines().last().expect("token line").trim().to_string()
}

/// A request to any server: method, URL, optional token and body.
pub fn request(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> Reply {
    let agent = agent();
    let mut req = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("Content-Type", "application/json");
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let mut resp = match body {
        Some(b) => agent.run(req.body(b.to_string()).expect("request")),
        None => agent.run(req.body(()).expect("request")),
    }
    .expect("request");
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    Reply { status, body }
}

/// GETs `url` (any server, no token) and returns the body text; fails the test unless
/// the status is 2xx.
pub fn get_text(url: &str) -> String {
    request("GET", url, None, None).success(url).body
}

/// POSTs `body` as JSON to `url` (any server, no token) and returns the answer as JSON;
/// fails the test unless the status is 2xx.
pub fn post_json(url: &str, body: &Value) -> Value {
    request("POST", url, None, Some(&body.to_string()))
        .success(url)
        .json()
}

fn start() -> TestServer {
    let (dir, home) = temp_home();
    let alpha = dir.path().join("alpha");
    let ledger = alpha_ledger();
    make_repo(
        &alpha,
        &[
            ("billing.py", ALPHA_BILLING),
            ("ledger.py", &ledger),
            (
                "report.py",
                "from billing import Invoice\n\n\ndef monthly_report(invoices):\n    return [i.total() for i in invoices]\n",
            ),
        ],
    );
    let beta = dir.path().join("beta");
    make_repo(&beta, &[("banner.py", BETA_SECRET)]);
    for (path, name) in [(&alpha, "alpha"), (&beta, "beta")] {
        souffleur(
            &home,
            &[
                "index",
                "add",
                path.to_str().expect("utf-8 path"),
                "--name",
                name,
            ],
        );
    }
    let admin = create_token(&home, "admin", &["--role", "admin"]);
    let alpha_user = create_token(&home, "alice", &["--repos", "alpha"]);
    std::fs::write(
        home.join("config.toml"),
        "[limits]\nmax_body_bytes = 65536\nmax_prompt_tokens = 2000\nmax_tokens = 64\nmax_concurrent_per_token = 6\n\n[completion]\nmulti_line_tokens = 64\n",
    )
    .expect("config");
    let launched = launch(&home, &["--exit-on-stdin-close"]);
    TestServer {
        url: launched.url.clone(),
        admin,
        alpha_user,
        home,
        _dir: dir,
        _server: launched,
    }
}

/// A response: status and body text.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body text.
    pub body: String,
}

impl Reply {
    /// Fails the test (naming `what`) unless the status is 2xx.
    fn success(self, what: &str) -> Self {
        assert!(
            (200..300).contains(&self.status),
            "{what}: status {}: {}",
            self.status,
            self.body
        );
        self
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// POSTs `body` (raw) to `path` with an optional bearer token.
///
/// A server may answer an oversized body (413) and close the connection before the
/// client has written all of it; the write then fails with a broken pipe or reset
/// before the answer is read. Such attempts are repeated (a few times at most):
/// the answer is what the test checks.
pub fn post(path: &str, token: Option<&str>, body: &str) -> Reply {
    let s = server();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut req = agent()
            .post(format!("{}{path}", s.url))
            .header("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        match req.send(body) {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let body = resp.body_mut().read_to_string().unwrap_or_default();
                return Reply { status, body };
            }
            Err(ureq::Error::Io(e))
                if attempts < 5
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                    ) => {}
            Err(e) => panic!("request: {e:?}"),
        }
    }
}

/// GETs `path` with an optional bearer token.
pub fn get(path: &str, token: Option<&str>) -> Reply {
    let s = server();
    let mut req = agent().get(format!("{}{path}", s.url));
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let mut resp = req.call().expect("request");
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    Reply { status, body }
}

/// What a command-line run produced, whatever its exit status.
#[derive(Debug)]
pub struct CliRun {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs the binary with `args` in `home`, in directory `dir` (if given), with `stdin`
/// as standard input; never fails the test by itself.
pub fn run_cli(home: &Path, dir: Option<&Path>, args: &[&str], stdin: Option<&str>) -> CliRun {
    use std::io::Write;
    let mut cmd = Command::new(binary());
    cmd.env("SOUFFLEUR_MODEL", TEST_MODEL);
    cmd.args(args)
        .env("SOUFFLEUR_HOME", home)
        .env_remove("SOUFFLEUR_SERVER")
        .env_remove("SOUFFLEUR_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let mut child = cmd.spawn().expect("run souffleur");
    let input = stdin.unwrap_or("").to_string();
    let mut pipe = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().expect("wait for souffleur");
    let _ = writer.join();
    CliRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `git args` in `dir` with a fixed identity, failing the test on error.
pub fn git_in(dir: &Path, args: &[&str]) {
    git(dir, args);
}

/// The audit rows of a database, read with Python's sqlite3 (the tests have no SQLite).
pub fn audit_rows(db: &Path) -> Vec<Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1])\n\
             c.row_factory = sqlite3.Row\n\
             print(json.dumps([dict(r) for r in c.execute('SELECT * FROM audit ORDER BY id')]))",
        ])
        .arg(db)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("rows")
}

/// Sends signal `name` (`TERM`, `HUP`, …) to a launched server.
pub fn signal(s: &Launched, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), s.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// A diff adding `lines` to a new file `path` (lines 1..=n).
pub fn new_file_diff(path: &str, lines: &[&str]) -> String {
    let mut d = format!(
        "diff --git a/{path} b/{path}\nnew file mode 100644\nindex 0000000..1111111\n--- /dev/null\n+++ b/{path}\n@@ -0,0 +1,{} @@\n",
        lines.len()
    );
    for l in lines {
        d.push_str(&format!("+{l}\n"));
    }
    d
}
