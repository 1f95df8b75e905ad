//! Opening each file as soon as the reader sees it mapped: a short program whose binary is
//! deleted as it ends (a test harness's, `go run`'s) is gone before the processing thread
//! gets to its mmap record, and could then no longer be opened
//! ([`crate::modules::EarlyFiles`] keeps what is opened here until the modules take it).

use std::collections::HashSet;
use std::sync::Arc;

use crate::model::Event;
use crate::modules::{is_file_name, DevIno, EarlyFiles};
use crate::sampler::records::{RecordHeader, PERF_RECORD_MMAP2};
use crate::sampler::{RecordBatch, SampleLayout};

/// Files met at most before the set of those met is emptied (each is opened early once).
const SEEN_MAX: usize = 8192;

pub(super) struct EarlyOpener {
    files: Arc<EarlyFiles>,
    layout: SampleLayout,
    /// Files opened early already (later mappings of them are the modules' to find).
    seen: HashSet<(String, Option<DevIno>)>,
}

impl EarlyOpener {
    pub(super) fn new(files: Arc<EarlyFiles>, layout: SampleLayout) -> EarlyOpener {
        EarlyOpener {
            files,
            layout,
            seen: HashSet::new(),
        }
    }

    /// Open the files that `batch`'s records map executable, first met now. Returns how
    /// many executable mappings of files the batch holds.
    pub(super) fn scan(&mut self, batch: &RecordBatch) -> usize {
        let mut mapped = 0;
        for (_, rec) in batch.records() {
            if RecordHeader::parse(rec).is_none_or(|h| h.kind != PERF_RECORD_MMAP2) {
                continue;
            }
            let Ok(Some(Event::Mmap(m))) = self.layout.parse(rec) else {
                continue;
            };
            let name = String::from_utf8_lossy(m.filename);
            if !m.executable || !is_file_name(&name) {
                continue;
            }
            mapped += 1;
            if self.seen.len() >= SEEN_MAX {
                self.seen.clear();
            }
            if self.seen.insert((name.to_string(), m.dev_ino)) {
                let end = m.start.saturating_add(m.len);
                self.files.open(&name, m.dev_ino, m.pid, m.start, end);
            }
        }
        mapped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::ModuleTable;
    use crate::sampler::records::tests::mmap2_record;
    use std::os::unix::fs::MetadataExt;

    /// A program seen mapped, then deleted before its mmap record is processed: its module
    /// is read from the file opened early.
    #[test]
    fn a_file_deleted_after_it_was_seen_mapped_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short-lived");
        std::fs::copy(std::env::current_exe().unwrap(), &path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let dev_ino = (libc::major(meta.dev()), libc::minor(meta.dev()), meta.ino());
        let name = path.to_str().unwrap();
        let mut batch = RecordBatch::new();
        batch.push(99, &mmap2_record(name, dev_ino), &[]);
        let files = Arc::new(EarlyFiles::default());
        EarlyOpener::new(Arc::clone(&files), SampleLayout::recorded(true)).scan(&batch);
        std::fs::remove_file(&path).unwrap();
        // (pid 5 of the record is not that process: only the early file can be read.)
        let mut late = ModuleTable::new();
        let id = late.open(name, Some(dev_ino), 5, 0x5000, 0x6000);
        assert!(late.get(id).data.is_none(), "read without the early file?");
        let mut modules = ModuleTable::new();
        modules.open_early_from(files);
        let id = modules.open(name, Some(dev_ino), 5, 0x5000, 0x6000);
        assert!(
            modules.get(id).data.is_some(),
            "{:?}",
            modules.get(id).error
        );
        assert!(modules.get(id).unwind.eh_frame.is_some());
    }
}
