//! Where the Souffleur server is and how the adapter behaves.
//!
//! Sources, later ones winning key by key: built-in defaults, the environment
//! (`SOUFFLEUR_URL`, `SOUFFLEUR_TOKEN`), the client's `initializationOptions`
//! (`{"url": "...", "token": "...", "debounceMs": 75}`), and the settings of
//! `workspace/didChangeConfiguration`, either nested (`{"souffleur": {"url": ...}}`) or
//! with dotted keys (`{"souffleur.url": ...}`).

use std::time::Duration;

use serde_json::Value;

/// The server URL used when nothing else is configured.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8347";
/// The default pause in typing before a request goes out.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(75);
/// The default limit on one HTTP exchange with the server.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest debounce a client may configure.
const MAX_DEBOUNCE_MS: u64 = 5_000;
/// The longest timeout a client may configure.
const MAX_TIMEOUT_MS: u64 = 600_000;

/// The adapter's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Base URL of the Souffleur server, without a trailing slash.
    pub url: String,
    /// Bearer token; `None` for a server started with `--local`.
    pub token: Option<String>,
    /// Pause in typing before an automatic request is sent.
    pub debounce: Duration,
    /// Limit on one HTTP exchange.
    pub timeout: Duration,
    /// Sends a `window/logMessage` with timings for every completion.
    pub trace: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.to_string(),
            token: None,
            debounce: DEFAULT_DEBOUNCE,
            timeout: DEFAULT_TIMEOUT,
            trace: false,
        }
    }
}

impl Config {
    /// Defaults overridden by `SOUFFLEUR_URL`, `SOUFFLEUR_TOKEN` and `SOUFFLEUR_LSP_TRACE`.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`Config::from_env`], reading variables through `var` (testable).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let mut config = Self::default();
        if let Some(url) = var("SOUFFLEUR_URL").filter(|u| !u.trim().is_empty()) {
            config.url = normalize_url(&url);
        }
        config.token = var("SOUFFLEUR_TOKEN").filter(|t| !t.trim().is_empty());
        config.trace = var("SOUFFLEUR_LSP_TRACE").is_some_and(|v| v != "0" && !v.is_empty());
        config
    }

    /// Applies `initializationOptions` (`{"url", "token", "debounceMs", "timeoutMs",
    /// "trace"}`); also accepts them nested under `"souffleur"`. Unknown keys and values
    /// of the wrong type are ignored.
    pub fn apply_init_options(&mut self, options: &Value) {
        self.apply_object(options);
        if let Some(nested) = options.get("souffleur") {
            self.apply_object(nested);
        }
    }

    /// Applies `workspace/didChangeConfiguration` settings: `{"souffleur": {...}}` or
    /// dotted keys such as `{"souffleur.url": "..."}`.
    pub fn apply_settings(&mut self, settings: &Value) {
        if let Some(nested) = settings.get("souffleur") {
            self.apply_object(nested);
        }
        if let Some(map) = settings.as_object() {
            for (key, value) in map {
                if let Some(name) = key.strip_prefix("souffleur.") {
                    self.apply_key(name, value);
                }
            }
        }
    }

    fn apply_object(&mut self, object: &Value) {
        if let Some(map) = object.as_object() {
            for (key, value) in map {
                self.apply_key(key, value);
            }
        }
    }

    fn apply_key(&mut self, key: &str, value: &Value) {
        match key {
            "url" | "endpoint" => {
                if let Some(url) = value.as_str().filter(|u| !u.trim().is_empty()) {
                    self.url = normalize_url(url);
                }
            }
            "token" => match value {
                Value::String(t) if !t.trim().is_empty() => self.token = Some(t.trim().into()),
                Value::String(_) | Value::Null => self.token = None,
                _ => {}
            },
            "debounceMs" | "debounce_ms" => {
                if let Some(ms) = value.as_u64() {
                    self.debounce = Duration::from_millis(ms.min(MAX_DEBOUNCE_MS));
                }
            }
            "timeoutMs" | "timeout_ms" => {
                if let Some(ms) = value.as_u64().filter(|ms| *ms > 0) {
                    self.timeout = Duration::from_millis(ms.min(MAX_TIMEOUT_MS));
                }
            }
            "trace" => {
                if let Some(on) = value.as_bool() {
                    self.trace = on;
                }
            }
            _ => {}
        }
    }
}

/// Trims whitespace and trailing slashes, so `{url}/v1/...` is well formed.
fn normalize_url(url: &str) -> String {
    url.trim().trim_end_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn environment_then_init_options_then_settings() {
        let mut config = Config::from_vars(|name| match name {
            "SOUFFLEUR_URL" => Some("http://10.0.0.5:9000/".into()),
            "SOUFFLEUR_TOKEN" => Some("env-token".into()),
            _ => None,
        });
        assert_eq!(config.url, "http://10.0.0.5:9000");
        assert_eq!(config.token.as_deref(), Some("env-token"));

        config.apply_init_options(&json!({"url": "http://127.0.0.1:1234", "debounceMs": 20}));
        assert_eq!(config.url, "http://127.0.0.1:1234");
        assert_eq!(config.token.as_deref(), Some("env-token"));
        assert_eq!(config.debounce, Duration::from_millis(20));

        config.apply_settings(&json!({"souffleur": {"token": "nested"}}));
        assert_eq!(config.token.as_deref(), Some("nested"));
        config.apply_settings(&json!({"souffleur.url": "http://127.0.0.1:4321", "other.url": "x"}));
        assert_eq!(config.url, "http://127.0.0.1:4321");
        config.apply_settings(&json!({"souffleur": {"token": ""}}));
        assert_eq!(config.token, None);
    }

    #[test]
    fn wrong_types_and_huge_values_are_harmless() {
        let mut config = Config::default();
        config.apply_init_options(&json!({"url": 5, "token": [1], "debounceMs": "fast"}));
        config.apply_settings(&json!("not an object"));
        config.apply_init_options(&Value::Null);
        assert_eq!(config, Config::default());
        config.apply_init_options(&json!({"debounceMs": u64::MAX, "timeoutMs": 0}));
        assert_eq!(config.debounce, Duration::from_millis(MAX_DEBOUNCE_MS));
        assert_eq!(config.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn defaults_without_environment() {
        let config = Config::from_vars(|_| None);
        assert_eq!(config.url, DEFAULT_URL);
        assert_eq!(config.token, None);
        assert_eq!(config.debounce, DEFAULT_DEBOUNCE);
    }
}
