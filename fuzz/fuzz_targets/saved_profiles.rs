//! Saved profiles ember re-renders: folded text and pprof (gzip'd or not), then every writer.
#![no_main]

use ember::output::folded::{fold, FoldOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(loaded) = ember::load::parse(std::path::Path::new("fuzz"), data) {
        let folded = loaded.folded(FoldOptions::default());
        let _ = ember::output::report::rows(&folded, Default::default());
        if let Some(p) = loaded.profile() {
            let _ = fold(
                p,
                FoldOptions {
                    lines: true,
                    ..Default::default()
                },
            );
            let _ = ember::output::speedscope::write(p, "fuzz", std::io::sink());
            let _ = ember::output::pprof::write(p, std::io::sink());
        }
    }
});
