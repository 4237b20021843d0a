//! Bridges the engine's thread to async handlers: events arrive on a channel, and
//! a generation is cancelled as soon as the handler (or stream) that waits for it
//! is dropped, which is what happens when the client disconnects.

use engine::{
    CancelToken, Engine, Generation, GenerationCollector, GenerationEvent, GenerationRequest,
};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use crate::error::ApiError;

/// Cancels its generation when dropped.
pub struct CancelOnDrop(pub CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// A submitted generation whose events can be awaited.
pub struct Running {
    /// The engine's events, in order.
    pub events: UnboundedReceiver<GenerationEvent>,
    /// Cancels the generation when this is dropped.
    _guard: CancelOnDrop,
}

/// Submits `request`; validation errors come back at once.
pub fn start(engine: &Engine, request: GenerationRequest) -> Result<Running, ApiError> {
    let (tx, rx) = unbounded_channel();
    let guard = CancelOnDrop(request.cancel.clone());
    engine.submit(request, Box::new(move |event| tx.send(event).is_ok()))?;
    Ok(Running {
        events: rx,
        _guard: guard,
    })
}

impl Running {
    /// Waits for the whole output.
    pub async fn collect(mut self) -> Result<Generation, ApiError> {
        let mut collector = GenerationCollector::default();
        while let Some(event) = self.events.recv().await {
            if let Some(result) = collector.push(event) {
                return Ok(result?);
            }
        }
        Err(ApiError::internal("the engine stopped during the request"))
    }
}
