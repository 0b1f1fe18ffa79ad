//! Graceful shutdown: one signal fans out to every task, and the owner waits until every task
//! that watched it has finished (each task holds a [`DrainWatch`]; dropping it reports done).

use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// The owner's side: signals shutdown and waits for the watchers.
#[derive(Debug)]
pub struct Drain {
    signal: watch::Sender<bool>,
    finished_tx: mpsc::Sender<()>,
    finished_rx: mpsc::Receiver<()>,
}

/// A task's side: resolves when shutdown starts; dropping it tells the owner the task is done.
#[derive(Debug, Clone)]
pub struct DrainWatch {
    signal: watch::Receiver<bool>,
    // Never sent on; its drop is the message.
    _finished: mpsc::Sender<()>,
}

impl Drain {
    /// A drain with no watchers yet.
    pub fn new() -> Self {
        let (signal, _) = watch::channel(false);
        let (finished_tx, finished_rx) = mpsc::channel(1);
        Self {
            signal,
            finished_tx,
            finished_rx,
        }
    }

    /// A watch for one more task.
    pub fn watch(&self) -> DrainWatch {
        DrainWatch {
            signal: self.signal.subscribe(),
            _finished: self.finished_tx.clone(),
        }
    }

    /// Signals shutdown and waits until every watch is dropped, at most `deadline`.
    /// Returns false when tasks were still running at the deadline.
    pub async fn drain(self, deadline: Duration) -> bool {
        let Self {
            signal,
            finished_tx,
            mut finished_rx,
        } = self;
        signal.send_replace(true);
        drop(finished_tx);
        // recv() yields None once every sender (every watch) is gone.
        tokio::time::timeout(deadline, finished_rx.recv())
            .await
            .is_ok()
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl DrainWatch {
    /// Resolves once shutdown has been signalled (immediately if it already was).
    pub async fn signaled(&mut self) {
        // An error means the owner is gone, which is shutdown as well.
        let _ = self.signal.wait_for(|started| *started).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_watchers_that_finish() {
        let drain = Drain::new();
        let mut watch = drain.watch();
        let task = tokio::spawn(async move {
            watch.signaled().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        assert!(drain.drain(Duration::from_secs(1)).await);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn drain_gives_up_at_the_deadline() {
        let drain = Drain::new();
        let stuck = drain.watch();
        assert!(!drain.drain(Duration::from_millis(100)).await);
        drop(stuck);
    }
}
