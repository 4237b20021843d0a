//! What happens to the connection to a replica after an answer: read to its end, it is
//! kept and the next request reuses it (no new TCP handshake); dropped early (a newer
//! keystroke, post-processing cut the rest), it is closed, which is what stops the
//! upstream generating. Checked against a small HTTP/1.1 server on 127.0.0.1 that counts
//! its connections and streams llama.cpp's `/infill` events.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use server::upstream::kind::{Delta, Extras, InfillRequest, Kind};
use server::upstream::{BackendSection, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Counters of the fake replica.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    closed_early: AtomicUsize,
}

fn chunk(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n", data.len())
}

/// Serves requests on one connection until the client closes it: each answer is two
/// events, the second 300 ms after the first, then the end of the body.
async fn serve_connection(mut socket: TcpStream, seen: Arc<Seen>) {
    let mut buffer = Vec::new();
    loop {
        // Read one request: the head, then `content-length` bytes.
        let head_end = loop {
            if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut piece = [0u8; 4096];
            match socket.read(&mut piece).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&piece[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            let mut piece = [0u8; 4096];
            match socket.read(&mut piece).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&piece[..n]),
            }
        }
        buffer.drain(..head_end + length);
        let first = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{}",
            chunk("data: {\"content\":\"a\",\"stop\":false}\n\n")
        );
        if socket.write_all(first.as_bytes()).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let last = chunk(
            "data: {\"content\":\" + b\",\"stop\":true,\"stop_type\":\"eos\",\"tokens_evaluated\":5,\"tokens_predicted\":2}\n\n",
        );
        if socket.write_all(last.as_bytes()).await.is_err() {
            seen.closed_early.fetch_add(1, Ordering::SeqCst);
            return;
        }
        // The chunked encoding's end comes in a write of its own, as servers that
        // flush each event send it.
        tokio::time::sleep(Duration::from_millis(20)).await;
        if socket.write_all(b"0\r\n\r\n").await.is_err() {
            seen.closed_early.fetch_add(1, Ordering::SeqCst);
            return;
        }
        // A client that left shows as an end of input (or a reset) on the next read.
        let mut probe = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(500), socket.peek(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                seen.closed_early.fetch_add(1, Ordering::SeqCst);
                return;
            }
            _ => {}
        }
    }
}

async fn fake_replica() -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Seen::default());
    let counters = seen.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counters.connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve_connection(socket, counters.clone()));
        }
    });
    (url, seen)
}

fn request() -> InfillRequest {
    InfillRequest {
        prefix: "def add(a, b):\n    return ".into(),
        suffix: "\n".into(),
        extra: Vec::new(),
        max_tokens: 8,
        temperature: 0.0,
        seed: 0,
        stop: vec!["\n".into()],
        sampling: Extras::default(),
        plain: false,
    }
}

#[tokio::test]
async fn a_finished_answer_leaves_the_connection_for_the_next_request() {
    let (url, seen) = fake_replica().await;
    let section: BackendSection =
        serde_json::from_value(serde_json::json!({"replicas": [url]})).expect("section");
    let upstream = Upstream::new("m", Kind::LlamaCppInfill, &section).expect("upstream");

    for _ in 0..3 {
        let stream = upstream.infill(&request(), None).await.expect("answer");
        let (text, end) = stream.collect().await.expect("whole");
        assert_eq!(text, "a + b");
        assert_eq!(end.completion_tokens, Some(2));
        // The rest of the body is read in the background.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1, "not reused");
    assert_eq!(seen.closed_early.load(Ordering::SeqCst), 0);

    // Dropped after the first piece: the connection is closed and the replica sees it.
    let mut stream = upstream.infill(&request(), None).await.expect("answer");
    assert_eq!(
        stream.next().await.expect("a piece").expect("ok"),
        Delta::Text("a".into())
    );
    drop(stream);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(seen.closed_early.load(Ordering::SeqCst), 1);
    let stream = upstream.infill(&request(), None).await.expect("answer");
    assert_eq!(stream.collect().await.expect("whole").0, "a + b");
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
}
