//! Tables built on a thread of their own. Converting a large file's `.eh_frame` takes a
//! tenth of a second to seconds (a debug build of ember, `librustc_driver`); done where
//! records are processed, it held back everything after the file's mmap record — the Python
//! frames of an interpreter mapped just then, the rows of the files mapped next — and let
//! the ring buffers fill. Here the file is handed to a builder thread and the caller goes on;
//! it is told (`notify`) when a table is ready, takes it with [`Builder::take`], and the
//! table is kept in the cache on disk for the next recording.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

use super::cache;
use super::packed::{self, PackedRow};
use crate::modules::UnwindSections;

/// A table: its base (first address) and rows.
pub type Table = (u64, Vec<PackedRow>);

/// One file to build for: the caller's key for it, its sections, and where to keep the
/// table (cache directory and the file's key there).
struct Request {
    key: u64,
    sections: UnwindSections,
    keep: Option<(PathBuf, Vec<u8>)>,
}

/// A table built (`None`: the file has no table this walk can use), and the seconds it took.
pub struct Built {
    pub key: u64,
    pub table: Option<Table>,
    pub seconds: f64,
}

/// Called on the builder thread each time a table is ready.
pub type Notify = Box<dyn Fn() + Send>;

/// The builder thread (started at the first request) and the files handed to it.
#[derive(Default)]
pub struct Builder {
    requests: Option<mpsc::Sender<Request>>,
    results: Option<mpsc::Receiver<Built>>,
    notify: Option<Notify>,
    pending: HashSet<u64>,
}

impl Builder {
    /// Have `notify` called when a table is ready (before the first request).
    pub fn notify_with(&mut self, notify: Notify) {
        self.notify = Some(notify);
    }

    /// Whether the file known as `key` is being built.
    pub fn pending(&self, key: u64) -> bool {
        self.pending.contains(&key)
    }

    /// Build the table of the file known as `key` from `sections`, and keep it in `keep`
    /// (a cache directory and the file's key there).
    pub fn request(
        &mut self,
        key: u64,
        sections: UnwindSections,
        keep: Option<(PathBuf, Vec<u8>)>,
    ) {
        if !self.pending.insert(key) {
            return;
        }
        if self.requests.is_none() {
            self.start();
        }
        let sent = self.requests.as_ref().is_some_and(|tx| {
            tx.send(Request {
                key,
                sections,
                keep,
            })
            .is_ok()
        });
        if !sent {
            // The thread could not start: the file stays without rows.
            self.pending.remove(&key);
        }
    }

    /// The tables built since last asked.
    pub fn take(&mut self) -> Vec<Built> {
        let built: Vec<Built> = self
            .results
            .as_ref()
            .map(|rx| rx.try_iter().collect())
            .unwrap_or_default();
        for b in &built {
            self.pending.remove(&b.key);
        }
        built
    }

    fn start(&mut self) {
        let (tx, requests) = mpsc::channel::<Request>();
        let (results, rx) = mpsc::channel();
        let notify = self.notify.take();
        let spawned = std::thread::Builder::new()
            .name("ember-rows".into())
            .spawn(move || {
                for r in requests {
                    let began = Instant::now();
                    let table = build_and_keep(&r.sections, r.keep.as_ref());
                    let built = Built {
                        key: r.key,
                        table,
                        seconds: began.elapsed().as_secs_f64(),
                    };
                    if results.send(built).is_err() {
                        return;
                    }
                    if let Some(notify) = &notify {
                        notify();
                    }
                }
            });
        if spawned.is_ok() {
            self.requests = Some(tx);
            self.results = Some(rx);
        }
    }
}

/// The packed table of `sections`, kept in the cache where asked.
fn build_and_keep(sections: &UnwindSections, keep: Option<&(PathBuf, Vec<u8>)>) -> Option<Table> {
    let built = super::build(sections).ok()?;
    let (base, rows) = packed::pack(&built)?;
    if let Some((dir, id)) = keep {
        // Without a cache the next recording builds it again; nothing else is lost.
        let _ = cache::store(dir, id, base, &rows);
    }
    Some((base, rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_file_without_sections_is_built_as_none_and_the_caller_is_told() {
        let told = Arc::new(AtomicUsize::new(0));
        let mut b = Builder::default();
        let t = Arc::clone(&told);
        b.notify_with(Box::new(move || {
            t.fetch_add(1, Ordering::SeqCst);
        }));
        b.request(7, UnwindSections::default(), None);
        b.request(7, UnwindSections::default(), None);
        assert!(b.pending(7));
        let mut built = Vec::new();
        while built.is_empty() || told.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
            built.extend(b.take());
        }
        assert_eq!(built.len(), 1, "asked twice, built once");
        assert_eq!(built[0].key, 7);
        assert!(built[0].table.is_none());
        assert!(!b.pending(7));
        assert_eq!(told.load(Ordering::SeqCst), 1);
    }
}
