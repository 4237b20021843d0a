//! Contract checks of `souffleur review`'s CI outputs against the publishers' own
//! descriptions of what they accept (SARIF 2.1.0 is checked in tests/tests/review.rs):
//!
//! - `--format github` against GitHub's OpenAPI description of its REST API, npm
//!   `@octokit/openapi` (pinned in `tests/octokit/`, installed by scripts/test.sh with
//!   `npm ci`): the request body of the operation `pulls/create-review`
//!   (`POST /repos/{owner}/{repo}/pulls/{pull_number}/reviews`), as published and once
//!   more with its objects closed (every field we send is one GitHub describes), plus
//!   what the description says in words (the body is required with `COMMENT`, `side` is
//!   `LEFT` or `RIGHT` as `pulls/create-review-comment` defines it).
//!   Skipped (with a line on stderr) only when npm is missing; with npm present and the
//!   package not installed, the test fails and says how to install it.
//! - `--format gitlab` against `tests/schemas/gitlab-codequality.json`, written from
//!   GitLab's documented field list (GitLab publishes no machine-readable schema in a
//!   package registry; the file's `$comment` cites the page), plus the documented rules
//!   a schema cannot say (fingerprints unique, no byte order mark).
//!
//! Each is checked on a review with several findings (secrets, one spanning lines, a
//! TODO, debug output), on one with a model finding carrying a suggestion (rendered
//! from a saved report with `--from-report`: the static checks make no suggestions),
//! and on one with no findings.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use e2e::{new_file_diff, run_cli};
use serde_json::{Map, Value, json};

/// The pinned package, as `tests/octokit/package.json` names it.
const OCTOKIT_PACKAGE: &str = "@octokit/openapi";
/// GitHub's REST API description for github.com, inside the package.
const OCTOKIT_DESCRIPTION: &str = "generated/api.github.com.json";
/// The operation `--format github` is the request body of.
const CREATE_REVIEW: &str = "pulls/create-review";
const CREATE_REVIEW_PATH: &str = "/repos/{owner}/{repo}/pulls/{pull_number}/reviews";
/// The single-comment operation whose fields define `side` and `start_side`.
const CREATE_REVIEW_COMMENT: &str = "pulls/create-review-comment";

// Test secrets are assembled at run time so no scanner mistakes this file for a leak.
fn fake_aws_key() -> String {
    format!("AKIA{}", "Q7XZ".repeat(4))
}

/// A diff the static checks find a private key (lines 4–6), a token, a TODO and debug
/// output in, over two files.
fn risky_diff() -> String {
    let token = format!("TOKEN = \"{}\"", fake_aws_key());
    let app: &[&str] = &[
        "import os",
        "",
        "# TODO: read this from the vault",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ",
        "-----END OPENSSH PRIVATE KEY-----",
        &token,
        "def handler(event):",
        "    print(event)",
        "    return event",
    ];
    let mut diff = new_file_diff("app/handler.py", app);
    diff.push_str(&new_file_diff(
        "web/src/main.js",
        &["// FIXME: remove before release", "console.log(\"boot\");"],
    ));
    diff
}

/// A diff no check finds anything in.
fn clean_diff() -> String {
    new_file_diff("lib/add.py", &["def add(a, b):", "    return a + b"])
}

/// `souffleur review --no-model` of [`risky_diff`] as Souffleur's JSON report, with
/// the findings the contract checks rely on.
fn risky_report(home: &Path) -> Value {
    let r = run_cli(
        home,
        None,
        &[
            "review",
            "--diff",
            "-",
            "--no-model",
            "--fail-on",
            "never",
            "-q",
        ],
        Some(&risky_diff()),
    );
    assert_eq!(r.code, 0, "{r:?}");
    let report: Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    let rules: BTreeSet<&str> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter_map(|f| f["rule"].as_str())
        .collect();
    for want in ["secret.private-key", "secret.token", "todo", "debug-output"] {
        assert!(rules.contains(want), "{want} missing: {report:#}");
    }
    report
}

/// `report` with a model finding added that spans two lines and suggests a
/// replacement (with a code fence in it, so the comment's fence must be longer).
fn with_suggestion(mut report: Value) -> Value {
    let findings = report["findings"].as_array_mut().expect("findings");
    findings.push(json!({
        "path": "app/handler.py",
        "line": 8,
        "end_line": 9,
        "severity": "warning",
        "category": "bug",
        "message": "The handler prints the event instead of processing it.",
        "suggestion": "def handler(event):\n    # ```not a fence```\n    return process(event)",
        "source": "model",
        "confidence": 0.7,
        "rule": "model",
        "quote": "def handler(event):",
    }));
    report["summary"]["warnings"] = json!(1);
    report
}

/// A saved JSON report with a model finding that suggests a replacement, made from
/// the static review of [`risky_diff`] (kept for the whole test binary).
fn suggestion_report() -> &'static Path {
    static REPORT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &REPORT
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let home = dir.path().join("home");
            std::fs::create_dir_all(&home).expect("home");
            let risky = risky_report(&home);
            let path = dir.path().join("suggestion.json");
            std::fs::write(&path, with_suggestion(risky).to_string()).expect("write report");
            (dir, path)
        })
        .1
}

/// `--format FORMAT` of the three reviews every format is checked on: (name, output).
/// Two are direct runs on a diff; the one with a suggestion renders a saved report.
fn rendered(format: &str) -> Vec<(&'static str, String)> {
    let home = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut all = vec!["review", "--format", format, "--fail-on", "never", "-q"];
        all.extend(args);
        let r = run_cli(home.path(), None, &all, stdin);
        assert_eq!(r.code, 0, "{format}, {args:?}: {r:?}");
        r.stdout
    };
    let report = suggestion_report().to_str().expect("utf-8");
    vec![
        (
            "several findings",
            run(&["--diff", "-", "--no-model"], Some(&risky_diff())),
        ),
        ("a suggestion", run(&["--from-report", report], None)),
        (
            "no findings",
            run(&["--diff", "-", "--no-model"], Some(&clean_diff())),
        ),
    ]
}

fn errors(validator: &jsonschema::Validator, v: &Value) -> Vec<String> {
    validator
        .iter_errors(v)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}

// ---- GitHub: the create-review request body of GitHub's OpenAPI description ----

/// The package's description file, or `None` (test skipped) when npm is missing.
fn octokit_description_file() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("octokit");
    let npm = Command::new("npm")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !npm {
        eprintln!("review_contracts: GitHub check skipped, npm is not installed");
        return None;
    }
    let package = root.join("node_modules").join(OCTOKIT_PACKAGE);
    let file = package.join(OCTOKIT_DESCRIPTION);
    assert!(
        file.is_file(),
        "{} is missing: run scripts/test.sh (or `npm ci --prefix tests/octokit`)",
        file.display()
    );
    let pinned: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("package.json")).expect("tests/octokit/package.json"),
    )
    .expect("package.json");
    let installed: Value = serde_json::from_str(
        &std::fs::read_to_string(package.join("package.json")).expect("installed package.json"),
    )
    .expect("installed package.json");
    assert_eq!(
        installed["version"], pinned["dependencies"][OCTOKIT_PACKAGE],
        "{OCTOKIT_PACKAGE} installed differs from the pin: run `npm ci --prefix tests/octokit`"
    );
    Some(file)
}

/// The operation with `operation_id`: (path, method, operation).
fn operation<'a>(description: &'a Value, operation_id: &str) -> (&'a str, &'a str, &'a Value) {
    let paths = description["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for (method, op) in item.as_object().into_iter().flatten() {
            if op.get("operationId").and_then(Value::as_str) == Some(operation_id) {
                return (path, method, op);
            }
        }
    }
    panic!("the description has no operation {operation_id}");
}

/// The value a local `$ref` (`#/components/…`) points at.
fn pointee<'a>(description: &'a Value, reference: &str) -> &'a Value {
    let pointer = reference
        .strip_prefix('#')
        .unwrap_or_else(|| panic!("not a local $ref: {reference}"));
    description
        .pointer(pointer)
        .unwrap_or_else(|| panic!("dangling $ref: {reference}"))
}

/// Follows `value`'s own `$ref`s to the object they name.
fn deref<'a>(description: &'a Value, mut value: &'a Value) -> &'a Value {
    while let Some(r) = value.get("$ref").and_then(Value::as_str) {
        value = pointee(description, r);
    }
    value
}

/// The JSON schema of an operation's `application/json` request body.
fn request_schema<'a>(description: &'a Value, op: &'a Value) -> &'a Value {
    let body = deref(description, &op["requestBody"]);
    let schema = &body["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "no JSON request body: {op:#}");
    schema
}

/// Collects every `#/components/…` schema `value` needs, transitively, into `into`
/// (keyed by JSON pointer).
fn collect_refs(description: &Value, value: &Value, into: &mut Map<String, Value>) {
    match value {
        Value::Object(map) => {
            if let Some(r) = map.get("$ref").and_then(Value::as_str)
                && !into.contains_key(r)
            {
                let target = pointee(description, r);
                into.insert(r.to_string(), target.clone());
                collect_refs(description, target, into);
            }
            for v in map.values() {
                collect_refs(description, v, into);
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|v| collect_refs(description, v, into)),
        _ => {}
    }
}

/// An OpenAPI 3.0 schema object as JSON Schema draft 4: `nullable: true` becomes a
/// `null` type; with `closed`, objects that list their properties (and say nothing of
/// others) admit no others, except inside `allOf` (whose parts add up to one object).
fn to_json_schema(schema: &mut Value, closed: bool) {
    let Some(map) = schema.as_object_mut() else {
        return;
    };
    if map.remove("nullable") == Some(Value::Bool(true)) {
        match map.get("type").cloned() {
            Some(Value::String(t)) => {
                map.insert("type".into(), json!([t, "null"]));
            }
            Some(_) => {}
            None => {
                let inner = Value::Object(std::mem::take(map));
                map.insert("anyOf".into(), json!([inner, {"type": "null"}]));
            }
        }
    }
    if closed
        && map.contains_key("properties")
        && !["additionalProperties", "allOf", "anyOf", "oneOf"]
            .iter()
            .any(|k| map.contains_key(*k))
    {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    for (keyword, value) in map.iter_mut() {
        match (keyword.as_str(), value) {
            ("properties" | "patternProperties", Value::Object(schemas)) => {
                schemas.values_mut().for_each(|s| to_json_schema(s, closed))
            }
            ("items" | "additionalProperties" | "not", s @ Value::Object(_)) => {
                to_json_schema(s, closed)
            }
            ("items" | "anyOf" | "oneOf", Value::Array(schemas)) => {
                schemas.iter_mut().for_each(|s| to_json_schema(s, closed))
            }
            ("allOf", Value::Array(schemas)) => {
                schemas.iter_mut().for_each(|s| to_json_schema(s, false))
            }
            _ => {}
        }
    }
}

/// A standalone JSON Schema (draft 4) of `schema`, with the components it refers to
/// placed where its `$ref`s point.
fn standalone(description: &Value, schema: &Value, closed: bool) -> Value {
    let mut refs = Map::new();
    collect_refs(description, schema, &mut refs);
    let mut root = schema.clone();
    to_json_schema(&mut root, closed);
    for (reference, mut target) in refs {
        to_json_schema(&mut target, closed);
        let mut at = &mut root;
        for part in reference.trim_start_matches("#/").split('/') {
            let part = part.replace("~1", "/").replace("~0", "~");
            at = at
                .as_object_mut()
                .unwrap_or_else(|| panic!("{reference}: the schema is not an object"))
                .entry(part)
                .or_insert_with(|| json!({}));
        }
        *at = target;
    }
    root
}

fn draft4(schema: &Value) -> jsonschema::Validator {
    jsonschema::Validator::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("schema compiles: {e}\n{schema:#}"))
}

/// The `pulls/create-review` request body as GitHub's description has it.
struct GithubContract {
    file: PathBuf,
    as_published: jsonschema::Validator,
    closed: jsonschema::Validator,
    side: jsonschema::Validator,
    start_side: jsonschema::Validator,
}

impl GithubContract {
    /// The contract from the installed package, or `None` when npm is missing.
    fn load() -> Option<Self> {
        let file = octokit_description_file()?;
        let description: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("read the description"))
                .expect("the description is JSON");
        let (path, method, op) = operation(&description, CREATE_REVIEW);
        assert_eq!((path, method), (CREATE_REVIEW_PATH, "post"));
        let schema = request_schema(&description, op);
        // What the description says in words (checked in `violations`): the body is
        // required with COMMENT and REQUEST_CHANGES.
        let body = deref(&description, &schema["properties"]["body"]);
        let body_rule = body["description"].as_str().unwrap_or("");
        assert!(
            body_rule.contains("**Required** when using `REQUEST_CHANGES` or `COMMENT`"),
            "the description of `body` changed: {body_rule}"
        );
        // `side` and `start_side` are plain strings in create-review; the
        // single-comment operation gives their values.
        let (_, _, single) = operation(&description, CREATE_REVIEW_COMMENT);
        let single = request_schema(&description, single);
        let field = |name: &str| {
            let s = &single["properties"][name];
            assert!(s.is_object(), "{CREATE_REVIEW_COMMENT} has no `{name}`");
            draft4(&standalone(&description, s, false))
        };
        Some(Self {
            as_published: draft4(&standalone(&description, schema, false)),
            closed: draft4(&standalone(&description, schema, true)),
            side: field("side"),
            start_side: field("start_side"),
            file,
        })
    }

    /// How `v` breaks the contract, one line each.
    fn violations(&self, v: &Value) -> Vec<String> {
        let mut out = Vec::new();
        for e in errors(&self.as_published, v) {
            out.push(format!("not a {CREATE_REVIEW} request body: {e}"));
        }
        for e in errors(&self.closed, v) {
            out.push(format!("a field {CREATE_REVIEW} does not describe: {e}"));
        }
        let event = v["event"].as_str().unwrap_or("");
        if ["COMMENT", "REQUEST_CHANGES"].contains(&event)
            && v["body"].as_str().is_none_or(|b| b.trim().is_empty())
        {
            out.push(format!("`body` is required with event {event}"));
        }
        for (i, c) in v["comments"].as_array().into_iter().flatten().enumerate() {
            for (name, validator) in [("side", &self.side), ("start_side", &self.start_side)] {
                if let Some(s) = c.get(name) {
                    for e in errors(validator, s) {
                        out.push(format!("/comments/{i}/{name}: {e}"));
                    }
                }
            }
        }
        out
    }
}

#[test]
fn github_review_payload_is_a_create_review_request_body() {
    let Some(contract) = GithubContract::load() else {
        return;
    };
    let mut failures = Vec::new();
    for (name, text) in rendered("github") {
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}: {text}"));
        failures.extend(
            contract
                .violations(&v)
                .into_iter()
                .map(|e| format!("{name}: {e}")),
        );
        let comments = v["comments"].as_array().map_or(0, Vec::len);
        assert_eq!(comments == 0, name == "no findings", "{name}: {text}");
        if name != "no findings" {
            assert!(
                v["comments"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c.get("start_line").is_some())),
                "{name}: no multi-line comment to check: {text}"
            );
        }
        if name == "a suggestion" {
            assert!(text.contains("suggestion\\n"), "{name}: {text}");
        }
    }
    assert!(
        failures.is_empty(),
        "`souffleur review --format github` does not conform to {OCTOKIT_PACKAGE} ({}):\n{}",
        contract.file.display(),
        failures.join("\n")
    );
}

/// The check is not vacuous: payloads GitHub's description rules out are caught.
#[test]
fn github_contract_rejects_what_the_description_rules_out() {
    let Some(contract) = GithubContract::load() else {
        return;
    };
    let good = json!({
        "event": "COMMENT",
        "body": "review",
        "comments": [{"path": "a.py", "line": 3, "side": "RIGHT", "start_line": 2,
                      "start_side": "RIGHT", "body": "x"}],
    });
    assert_eq!(contract.violations(&good), Vec::<String>::new());
    // `value` at `pointer` (null: the field removed).
    let broken = |pointer: &str, value: Value| {
        let mut v = good.clone();
        let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
        let parent = v.pointer_mut(parent).expect("parent");
        if value.is_null() {
            parent.as_object_mut().expect("object").remove(key);
        } else {
            parent[key] = value;
        }
        v
    };
    for (pointer, value) in [
        ("/event", json!("COMMENTED")),
        ("/body", Value::Null),
        ("/comments/0/line", json!("3")),
        ("/comments/0/path", Value::Null),
        ("/comments/0/body", json!(["x"])),
        ("/comments/0/side", json!("right")),
        ("/comments/0/start_side", json!("NEW")),
        ("/comments/0/sidee", json!("RIGHT")),
        ("/summary", json!("x")),
    ] {
        let v = broken(pointer, value.clone());
        assert!(
            !contract.violations(&v).is_empty(),
            "{pointer} = {value} passed: {v}"
        );
    }
}

// ---- GitLab: Code Quality as GitLab documents it ----

/// GitLab Code Quality as `tests/schemas/gitlab-codequality.json` and the rules of
/// the documentation it cites have it.
struct GitlabContract {
    schema: jsonschema::Validator,
}

impl GitlabContract {
    fn load() -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/gitlab-codequality.json");
        let schema: Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("schema")).expect("JSON");
        Self {
            schema: jsonschema::Validator::options()
                .with_draft(jsonschema::Draft::Draft7)
                .should_validate_formats(true)
                .build(&schema)
                .expect("schema compiles"),
        }
    }

    /// How the report `text` breaks the contract, one line each.
    fn violations(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        if text.starts_with('\u{feff}') {
            out.push("GitLab's parser allows no byte order mark".to_string());
        }
        let v: Value = match serde_json::from_str(text.trim_start_matches('\u{feff}')) {
            Ok(v) => v,
            Err(e) => return vec![format!("not JSON: {e}")],
        };
        out.extend(errors(&self.schema, &v));
        let items = v.as_array().map(Vec::as_slice).unwrap_or_default();
        let prints: BTreeSet<&str> = items
            .iter()
            .filter_map(|i| i["fingerprint"].as_str())
            .collect();
        if prints.len() != items.len() {
            out.push("fingerprints are not unique".to_string());
        }
        for (i, item) in items.iter().enumerate() {
            let lines = &item["location"]["lines"];
            if let (Some(b), Some(e)) = (lines["begin"].as_u64(), lines["end"].as_u64())
                && e < b
            {
                out.push(format!("/{i}/location/lines ends before it begins"));
            }
        }
        out
    }
}

#[test]
fn gitlab_code_quality_follows_gitlabs_documented_format() {
    let contract = GitlabContract::load();
    let mut failures = Vec::new();
    for (name, text) in rendered("gitlab") {
        failures.extend(
            contract
                .violations(&text)
                .into_iter()
                .map(|e| format!("{name}: {e}")),
        );
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}: {text}"));
        match name {
            "no findings" => assert_eq!(v, json!([]), "{name}"),
            _ => assert!(
                v.as_array().is_some_and(|a| !a.is_empty()),
                "{name}: {text}"
            ),
        }
    }
    assert!(
        failures.is_empty(),
        "`souffleur review --format gitlab` does not follow GitLab's documented format:\n{}",
        failures.join("\n")
    );
}

/// The check is not vacuous: reports GitLab's documentation rules out are caught.
#[test]
fn gitlab_contract_rejects_what_the_documentation_rules_out() {
    let contract = GitlabContract::load();
    let item = json!({
        "description": "d", "check_name": "c", "fingerprint": "f", "severity": "minor",
        "location": {"path": "lib/index.js", "lines": {"begin": 42}},
    });
    let good = json!([item]);
    assert_eq!(contract.violations(&good.to_string()), Vec::<String>::new());
    let by_positions = json!([{
        "description": "d", "check_name": "c", "fingerprint": "f", "severity": "blocker",
        "location": {"path": "a.rb", "positions": {"begin": {"line": 1, "column": 2}}},
    }]);
    assert_eq!(
        contract.violations(&by_positions.to_string()),
        Vec::<String>::new()
    );
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = item.clone();
        f(&mut v);
        json!([v]).to_string()
    };
    let cases: Vec<(&str, String)> = vec![
        ("an object, not an array", item.to_string()),
        (
            "severity warning",
            with(&|v| v["severity"] = json!("warning")),
        ),
        (
            "no check_name",
            with(&|v| {
                v.as_object_mut().expect("object").remove("check_name");
            }),
        ),
        (
            "no fingerprint",
            with(&|v| {
                v.as_object_mut().expect("object").remove("fingerprint");
            }),
        ),
        (
            "no line",
            with(&|v| {
                v["location"]
                    .as_object_mut()
                    .expect("object")
                    .remove("lines");
            }),
        ),
        (
            "line as a string",
            with(&|v| v["location"]["lines"]["begin"] = json!("42")),
        ),
        (
            "absolute path",
            with(&|v| v["location"]["path"] = json!("/src/x.js")),
        ),
        (
            "unknown category",
            with(&|v| v["categories"] = json!(["Bugs"])),
        ),
        ("duplicate fingerprints", json!([item, item]).to_string()),
        ("byte order mark", format!("\u{feff}{good}")),
    ];
    for (what, text) in cases {
        assert!(
            !contract.violations(&text).is_empty(),
            "{what} passed: {text}"
        );
    }
}
