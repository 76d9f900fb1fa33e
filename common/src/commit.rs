//! Group commit: one thread makes writes durable for every caller waiting.
//!
//! sled's `flush_async` runs each flush on sled's own small I/O pool; enough
//! concurrent flushes occupy every pool thread while each waits for a write
//! that needs a pool thread, and the store deadlocks (seen with 64
//! concurrent enrollments). Instead, callers here take a ticket and wait;
//! one dedicated thread runs a blocking flush that covers every ticket
//! taken before it started, so N concurrent writers cost one fsync, not N.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tokio::sync::watch;

type FlushFn = Box<dyn Fn() -> Result<(), String> + Send + 'static>;

struct Shared {
    /// (highest ticket handed out, closed).
    requested: Mutex<(u64, bool)>,
    wake: Condvar,
    /// (highest ticket covered by a finished flush, its error if any).
    done: watch::Sender<(u64, Option<String>)>,
}

/// Handle on a group-commit thread; cheap to clone. When the last handle
/// is dropped the thread is stopped and joined, so whatever its flush
/// function holds (a database handle, a file lock) is released by then.
#[derive(Clone)]
pub struct GroupCommit {
    owner: Arc<Owner>,
}

struct Owner {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        if let Ok(mut requested) = self.shared.requested.lock() {
            requested.1 = true;
        }
        self.shared.wake.notify_one();
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl GroupCommit {
    /// Starts the flushing thread. `flush` makes everything written so far
    /// durable.
    pub fn start(
        name: &str,
        flush: impl Fn() -> Result<(), String> + Send + 'static,
    ) -> std::io::Result<GroupCommit> {
        let (done, _) = watch::channel((0, None));
        let shared = Arc::new(Shared {
            requested: Mutex::new((0, false)),
            wake: Condvar::new(),
            done,
        });
        let worker = shared.clone();
        let flush: FlushFn = Box::new(flush);
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(&worker, flush))?;
        Ok(GroupCommit {
            owner: Arc::new(Owner {
                shared,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Returns once everything written before the call is durable.
    pub async fn flush(&self) -> Result<(), String> {
        let shared = &self.owner.shared;
        let mut done = shared.done.subscribe();
        let ticket = {
            let mut requested = shared.requested.lock().unwrap_or_else(|p| p.into_inner());
            requested.0 += 1;
            requested.0
        };
        shared.wake.notify_one();
        let state = done
            .wait_for(|(covered, _)| *covered >= ticket)
            .await
            .map_err(|_| "the flushing thread stopped".to_owned())?;
        match &state.1 {
            Some(err) => Err(err.clone()),
            None => Ok(()),
        }
    }
}

fn run(shared: &Arc<Shared>, flush: FlushFn) {
    let mut covered = 0;
    loop {
        let target = {
            let mut requested = shared.requested.lock().unwrap_or_else(|p| p.into_inner());
            while requested.0 == covered {
                if requested.1 {
                    return;
                }
                let (guard, _) = shared
                    .wake
                    .wait_timeout(requested, Duration::from_millis(500))
                    .unwrap_or_else(|p| p.into_inner());
                requested = guard;
            }
            requested.0
        };
        let result = flush().err();
        covered = target;
        shared.done.send_replace((covered, result));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_waiters_share_few_flushes() {
        let count = Arc::new(AtomicUsize::new(0));
        let counter = count.clone();
        let commit = GroupCommit::start("test-commit", move || {
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
            Ok(())
        })
        .expect("thread");
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let commit = commit.clone();
            tasks.push(tokio::spawn(async move { commit.flush().await }));
        }
        for task in tasks {
            task.await.expect("join").expect("flushed");
        }
        let flushes = count.load(Ordering::SeqCst);
        assert!(
            (1..200).contains(&flushes),
            "{flushes} flushes for 200 waiters"
        );
        let failing =
            GroupCommit::start("test-fail", || Err("disk on fire".into())).expect("thread");
        assert_eq!(failing.flush().await, Err("disk on fire".to_owned()));
    }
}
