//! A guard in front of tower-lsp-server's reader: it passes on only well-formed
//! `Content-Length` frames holding a JSON-RPC message.
//!
//! tower-lsp-server answers the first malformed message (not JSON, wrong `jsonrpc`
//! version, an id that is neither an integer nor a string) with a parse error and then
//! stops reading, which ends the session. A buggy client should cost one message, not the
//! language server, so such frames are dropped here (with a line on stderr) and the
//! session goes on.
//!
//! It also normalises what tower-lsp-server would refuse although the intent is plain:
//! `shutdown` and `exit` take no parameters, and tower-lsp-server answers any `params`
//! other than `null` with -32602 "Unexpected params". Emacs lsp-mode sends `shutdown`
//! with `"params": {}` and then waits for an answer it never accepts, so the `params` of
//! these two methods are removed before the message is passed on.

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Largest message accepted (bigger ones are skipped without being buffered).
const MAX_FRAME_BYTES: u64 = 256 << 20;
/// Longest header line read.
const MAX_HEADER_LINE: u64 = 8 << 10;

/// Methods that take no parameters: whatever `params` a client sends with them is dropped.
const METHODS_WITHOUT_PARAMS: [&str; 2] = ["shutdown", "exit"];

/// What the guard does with one message body.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Passed on as it is.
    Pass,
    /// Passed on as these bytes instead (the same message, normalised).
    Replace(Vec<u8>),
    /// Dropped: tower-lsp-server cannot decode it.
    Drop,
}

/// Decides what becomes of `body`: dropped if tower-lsp-server cannot decode it as a
/// request, notification or response; rewritten without `params` if it is `shutdown` or
/// `exit` with any `params` but `null`; passed on unchanged otherwise.
pub fn inspect(body: &[u8]) -> Verdict {
    let Ok(Value::Object(mut message)) = serde_json::from_slice::<Value>(body) else {
        return Verdict::Drop;
    };
    let version_ok = message.get("jsonrpc").and_then(Value::as_str) == Some("2.0");
    let method_ok = message.get("method").is_none_or(Value::is_string);
    let id_ok = message
        .get("id")
        .is_none_or(|id| id.is_i64() || id.is_string() || id.is_null());
    if !(version_ok && method_ok && id_ok) {
        return Verdict::Drop;
    }
    let takes_no_params = message
        .get("method")
        .and_then(Value::as_str)
        .is_some_and(|m| METHODS_WITHOUT_PARAMS.contains(&m));
    let has_params = message.get("params").is_some_and(|p| !p.is_null());
    if !(takes_no_params && has_params) {
        return Verdict::Pass;
    }
    message.remove("params");
    match serde_json::to_vec(&message) {
        Ok(bytes) => Verdict::Replace(bytes),
        // Serialising a map of JSON values does not fail; should it, the original goes
        // on and tower-lsp-server answers it as before.
        Err(_) => Verdict::Pass,
    }
}

/// Whether tower-lsp-server can decode `body` (after [`inspect`]'s normalisation).
pub fn is_acceptable(body: &[u8]) -> bool {
    inspect(body) != Verdict::Drop
}

/// Copies frames from `input` to `output` until `input` ends, dropping malformed ones.
pub async fn forward_valid_frames(
    input: impl AsyncRead + Unpin,
    mut output: impl AsyncWrite + Unpin,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(input);
    loop {
        let Some(length) = read_headers(&mut reader).await? else {
            return Ok(());
        };
        let Some(length) = length else {
            eprintln!("souffleur-lsp: dropped a message without Content-Length");
            continue;
        };
        if length > MAX_FRAME_BYTES {
            eprintln!("souffleur-lsp: dropped a message of {length} bytes");
            let skipped =
                tokio::io::copy(&mut (&mut reader).take(length), &mut tokio::io::sink()).await?;
            if skipped < length {
                return Ok(());
            }
            continue;
        }
        let mut body = Vec::new();
        (&mut reader).take(length).read_to_end(&mut body).await?;
        if (body.len() as u64) < length {
            return Ok(());
        }
        let body = match inspect(&body) {
            Verdict::Pass => body,
            Verdict::Replace(normalised) => normalised,
            Verdict::Drop => {
                eprintln!("souffleur-lsp: dropped a message that is not a JSON-RPC 2.0 message");
                continue;
            }
        };
        output
            .write_all(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes())
            .await?;
        output.write_all(&body).await?;
        output.flush().await?;
    }
}

/// Reads one header block. `None`: the input ended; `Some(None)`: no usable
/// `Content-Length`.
async fn read_headers(
    reader: &mut (impl AsyncBufReadExt + Unpin),
) -> std::io::Result<Option<Option<u64>>> {
    let mut length = None;
    let mut any = false;
    loop {
        let mut line = Vec::new();
        let n = (&mut *reader)
            .take(MAX_HEADER_LINE)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if text.is_empty() {
            if any {
                return Ok(Some(length));
            }
            // Stray blank line between messages.
            continue;
        }
        any = true;
        if let Some((name, value)) = text.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<u64>().ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_tower_lsp_server_can_decode() {
        assert!(is_acceptable(
            br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#
        ));
        assert!(is_acceptable(br#"{"jsonrpc":"2.0","method":"exit"}"#));
        assert!(is_acceptable(
            br#"{"jsonrpc":"2.0","id":"a","result":null}"#
        ));
        assert!(!is_acceptable(b"hello"));
        assert!(!is_acceptable(b"5"));
        assert!(!is_acceptable(br#"{"jsonrpc":"1.0","method":"x"}"#));
        assert!(!is_acceptable(
            br#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#
        ));
        assert!(!is_acceptable(br#"{"jsonrpc":"2.0","method":7}"#));
        assert!(!is_acceptable(b"{\"jsonrpc\":\"2.0\",\"method\":\"\xff\"}"));
    }

    /// Emacs lsp-mode's `shutdown` (issue: "Unexpected params" on `shutdown`).
    #[test]
    fn shutdown_and_exit_lose_their_params() {
        let stripped = |body: &str| match inspect(body.as_bytes()) {
            Verdict::Replace(bytes) => serde_json::from_slice::<Value>(&bytes).expect("json"),
            other => panic!("{body}: {other:?}"),
        };
        assert_eq!(
            stripped(r#"{"jsonrpc":"2.0","id":7,"method":"shutdown","params":{}}"#),
            serde_json::json!({"jsonrpc": "2.0", "id": 7, "method": "shutdown"})
        );
        assert_eq!(
            stripped(r#"{"jsonrpc":"2.0","method":"exit","params":{}}"#),
            serde_json::json!({"jsonrpc": "2.0", "method": "exit"})
        );
        assert_eq!(
            stripped(r#"{"jsonrpc":"2.0","id":"s","method":"shutdown","params":[]}"#),
            serde_json::json!({"jsonrpc": "2.0", "id": "s", "method": "shutdown"})
        );
        for unchanged in [
            r#"{"jsonrpc":"2.0","id":1,"method":"shutdown"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"shutdown","params":null}"#,
            r#"{"jsonrpc":"2.0","method":"exit","params":null}"#,
            r#"{"jsonrpc":"2.0","method":"initialized","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"params":{}}}"#,
        ] {
            assert_eq!(inspect(unchanged.as_bytes()), Verdict::Pass, "{unchanged}");
        }
        assert_eq!(
            inspect(br#"{"jsonrpc":"1.0","method":"shutdown","params":{}}"#),
            Verdict::Drop
        );
    }

    #[tokio::test]
    async fn shutdown_with_empty_params_is_forwarded_without_them() {
        let input = r#"{"jsonrpc":"2.0","id":3,"method":"shutdown","params":{}}"#;
        let input = format!("Content-Length: {}\r\n\r\n{input}", input.len());
        let mut output = Vec::new();
        forward_valid_frames(input.as_bytes(), &mut output)
            .await
            .expect("forward");
        let expected = r#"{"id":3,"jsonrpc":"2.0","method":"shutdown"}"#;
        let forwarded = String::from_utf8(output).expect("utf-8");
        let (header, body) = forwarded.split_once("\r\n\r\n").expect("header");
        assert_eq!(header, format!("Content-Length: {}", body.len()));
        assert_eq!(
            serde_json::from_str::<Value>(body).expect("json"),
            serde_json::from_str::<Value>(expected).expect("json")
        );
    }

    #[tokio::test]
    async fn malformed_frames_are_dropped_and_the_rest_pass() {
        let good = r#"{"jsonrpc":"2.0","method":"initialized","params":{}}"#;
        let input = format!(
            "Content-Length: 5\r\n\r\nhello\
             Content-Type: x\r\n\r\n\
             Content-Length: {}\r\ncontent-type: application/vscode-jsonrpc\r\n\r\n{good}\
             Content-Length: 999999999999\r\n\r\n",
            good.len()
        );
        let mut output = Vec::new();
        forward_valid_frames(input.as_bytes(), &mut output)
            .await
            .expect("forward");
        assert_eq!(
            String::from_utf8(output).expect("utf-8"),
            format!("Content-Length: {}\r\n\r\n{good}", good.len())
        );
    }
}
