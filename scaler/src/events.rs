//! What happened to replicas, with timestamps: kept (the last 1000) for `/events` and
//! `/status`, broadcast to live listeners, and counted as metrics.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Started,
    Ready,
    Unhealthy,
    Healthy,
    Ejected,
    Exited,
    Killed,
    Replaced,
    Stopped,
    Scaled,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u128,
    pub service: String,
    pub replica: String,
    pub kind: Kind,
    pub detail: String,
}

const KEEP: usize = 1000;

#[derive(Debug)]
pub struct Events {
    log: Mutex<VecDeque<Event>>,
    live: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            log: Mutex::default(),
            live: broadcast::channel(1024).0,
        }
    }
}

impl Events {
    pub fn record(&self, service: &str, replica: &str, kind: Kind, detail: impl Into<String>) {
        let event = Event {
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
            service: service.to_owned(),
            replica: replica.to_owned(),
            kind,
            detail: detail.into(),
        };
        tracing::info!(service, replica, kind = ?kind, detail = %event.detail, "replica event");
        let _ = self.live.send(event.clone());
        let mut log = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if log.len() == KEEP {
            log.pop_front();
        }
        log.push_back(event);
    }

    pub fn recent(&self) -> Vec<Event> {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }
}
