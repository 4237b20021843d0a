//! Waiting for a pause in typing.
//!
//! Every completion request (and every edit) takes a new ticket. A request waits for the
//! debounce delay and goes on only if no newer ticket was taken meanwhile; while its HTTP
//! call runs, a newer ticket abandons it (the future is dropped, which closes the
//! connection, and the server stops generating).

use std::time::Duration;

use tokio::sync::watch;

/// Hands out tickets and tells whether one is still the latest.
#[derive(Debug)]
pub struct Debouncer {
    latest: watch::Sender<u64>,
}

/// A request's place in line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

impl Default for Debouncer {
    fn default() -> Self {
        Self::new()
    }
}

impl Debouncer {
    /// A debouncer with no ticket taken.
    pub fn new() -> Self {
        Self {
            latest: watch::Sender::new(0),
        }
    }

    /// Takes a new ticket, superseding every older one.
    pub fn ticket(&self) -> Ticket {
        let mut value = 0;
        self.latest.send_modify(|latest| {
            *latest = latest.wrapping_add(1);
            value = *latest;
        });
        Ticket(value)
    }

    /// Whether `ticket` is still the latest.
    pub fn is_latest(&self, ticket: Ticket) -> bool {
        *self.latest.borrow() == ticket.0
    }

    /// Resolves once a newer ticket than `ticket` has been taken.
    pub async fn superseded(&self, ticket: Ticket) {
        let mut rx = self.latest.subscribe();
        // The sender lives in `self`, so `wait_for` can only end when the condition holds.
        let _ = rx.wait_for(|latest| *latest != ticket.0).await;
    }

    /// Waits `delay`; true if `ticket` is still the latest afterwards.
    pub async fn settle(&self, ticket: Ticket, delay: Duration) -> bool {
        if delay.is_zero() {
            return self.is_latest(ticket);
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => self.is_latest(ticket),
            () = self.superseded(ticket) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn only_the_last_of_a_burst_goes_on() {
        let debouncer = Arc::new(Debouncer::new());
        let first = debouncer.ticket();
        let d = debouncer.clone();
        let waiting = tokio::spawn(async move { d.settle(first, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let second = debouncer.ticket();
        let started = std::time::Instant::now();
        assert!(!waiting.await.expect("join"), "superseded at once");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(debouncer.settle(second, Duration::from_millis(5)).await);
        assert!(debouncer.settle(second, Duration::ZERO).await);
        assert!(!debouncer.is_latest(first));
    }
}
