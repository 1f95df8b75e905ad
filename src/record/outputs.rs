//! What a recording writes and how it names: the options of symbolization, every output
//! written from one symbolized profile, and the files of `--every` windows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::summary::svg_titles;
use super::RecordOptions;
use crate::output::{self, Folded, OutputError};
use crate::process::ProcessTable;
use crate::profile::Profile;
use crate::python::CodeInfo;
use crate::stacks::StackProfile;
use crate::symbolize;
use crate::symbolize::debuginfo::DebugDirs;
use crate::symbolize::debuginfod::Debuginfod;
use crate::symbolize::perfmap::PerfMap;
use crate::symbolize::SymbolizeOptions;

/// How `opts` asks for names.
pub(crate) fn symbolize_options(opts: &RecordOptions) -> SymbolizeOptions {
    SymbolizeOptions {
        inline: opts.naming.inline,
        debug_dirs: DebugDirs::new(&opts.naming.debug_dirs),
        debuginfod: opts
            .naming
            .debuginfod
            .then(|| Debuginfod::from_env(opts.listeners.progress))
            .flatten()
            .map(Arc::new),
        dwarf_cache: crate::symbolize::inflated::cache_dir(),
    }
}

/// What [`name_and_write`] did.
pub(super) struct Written {
    pub folded: Folded,
    /// The debuginfod queries made, for `-v`.
    pub debuginfod: Vec<String>,
    /// When naming was done and writing began.
    pub symbolized: Instant,
    /// The gzip'd pprof, where it is to be pushed (`--push`).
    pub pprof: Option<Vec<u8>>,
}

/// Name the frames of `profile` (its warnings get what symbolizing had to say) and write it
/// to every path of `outputs`.
pub(super) fn name_and_write(
    profile: &mut Profile,
    procs: &ProcessTable,
    (perf_maps, python): (&HashMap<u32, PerfMap>, &HashMap<u32, CodeInfo>),
    opts: &RecordOptions,
    outputs: &[PathBuf],
) -> Result<Written, OutputError> {
    let sources = (&procs.modules, perf_maps, python);
    let symbols = symbolize::symbolize(profile, sources, &symbolize_options(opts));
    profile
        .meta
        .warnings
        .extend(symbols.warnings.iter().cloned());
    let symbolized = Instant::now();
    let stacks = StackProfile::from_recording(profile, &symbols, &procs.modules);
    let folded = write_outputs(&stacks, opts, outputs)?;
    let pprof = opts.output.push.as_ref().and_then(|_| {
        let mut body = Vec::new();
        output::pprof::write(&stacks, &mut body).ok().map(|()| body)
    });
    Ok(Written {
        folded,
        debuginfod: symbols.debuginfod.iter().map(|q| q.to_string()).collect(),
        symbolized,
        pprof,
    })
}

/// Write `stacks` to every path of `outputs`, in the format its extension says.
pub(crate) fn write_outputs(
    stacks: &StackProfile,
    opts: &RecordOptions,
    outputs: &[std::path::PathBuf],
) -> Result<Folded, OutputError> {
    let folded = output::folded::fold(stacks, opts.output.fold);
    let mut svg = opts.output.svg.clone();
    let (title, subtitle) = svg_titles(&stacks.meta, stacks.total_samples());
    if svg.title.is_empty() {
        svg.title = title;
    }
    svg.subtitle = Some(subtitle);
    let r = output::Rendered {
        profile: Some(stacks),
        folded: &folded,
        svg: &svg,
    };
    for path in outputs {
        output::write_output(path, &r)?;
        if let Some((uid, gid)) = opts.target.run_as {
            // Files in the user's directories belong to the user, not to root.
            let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
        }
    }
    Ok(folded)
}

/// `path` for window `n`: `{n}` in it replaced by the number, or `-N` put before the file's
/// extension (`web.pb.gz` → `web-3.pb.gz`).
pub fn window_path(path: &Path, n: u32) -> PathBuf {
    let s = path.to_string_lossy();
    if s.contains("{n}") {
        return PathBuf::from(s.replace("{n}", &n.to_string()));
    }
    let name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (stem, ext) = match name.find('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name.as_str(), ""),
    };
    path.with_file_name(format!("{stem}-{n}{ext}"))
}

/// The outputs of window `n` (all of them unchanged without windows).
pub(super) fn window_outputs(paths: &[PathBuf], n: Option<u32>) -> Vec<PathBuf> {
    match n {
        Some(n) => paths.iter().map(|p| window_path(p, n)).collect(),
        None => paths.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_numbered_in_the_name() {
        let n = |p: &str| window_path(Path::new(p), 3).display().to_string();
        assert_eq!(n("web-{n}.svg"), "web-3.svg");
        assert_eq!(n("out/web.pb.gz"), "out/web-3.pb.gz");
        assert_eq!(n("flamegraph.svg"), "flamegraph-3.svg");
        assert_eq!(n(".hidden"), ".hidden-3");
    }
}
