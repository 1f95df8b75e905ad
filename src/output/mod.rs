//! Writers: every output file chosen by its extension, every file written atomically.

pub mod compare;
pub mod firefox;
pub mod folded;
pub mod open;
pub mod pprof;
pub mod ranking;
pub mod report;
pub mod speedscope;
pub mod svg;

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub use folded::{FoldOptions, Folded, Grouping};
pub use svg::SvgOptions;

use crate::stacks::StackProfile;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(
        "don't know how to write {path:?}: use an extension ember knows \
         (.svg, .folded, .collapsed, .pb.gz, .pprof, .speedscope.json, .fxprof.json, .json)"
    )]
    UnknownFormat { path: PathBuf },
    #[error("cannot write {path:?}: it is a directory; pass a file name such as {path:?}/flamegraph.svg")]
    IsDirectory { path: PathBuf },
    #[error("cannot write {path:?}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path:?} from folded stacks: pprof, speedscope and the .json ranking need a recording or a pprof file")]
    NeedsProfile { path: PathBuf },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Svg,
    Folded,
    Pprof,
    Speedscope,
    /// The roots (tests, processes, threads) ranked by CPU time, as JSON.
    Ranking,
    /// The Firefox Profiler's processed format: the timeline.
    Firefox,
}

impl Format {
    pub fn from_path(path: &Path) -> Result<Format, OutputError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        if name.ends_with(".svg") {
            Ok(Format::Svg)
        } else if name.ends_with(".folded") || name.ends_with(".collapsed") {
            Ok(Format::Folded)
        } else if name.ends_with(".pb.gz") || name.ends_with(".pprof") || name.ends_with(".pb") {
            Ok(Format::Pprof)
        } else if name.ends_with(".speedscope.json") || name.ends_with(".speedscope") {
            Ok(Format::Speedscope)
        } else if name.ends_with(".fxprof.json") {
            Ok(Format::Firefox)
        } else if name.ends_with(".json") {
            Ok(Format::Ranking)
        } else {
            Err(OutputError::UnknownFormat {
                path: path.to_path_buf(),
            })
        }
    }
}

/// What the writers render: a whole profile, or only folded stacks (when re-rendering a
/// folded file).
pub struct Rendered<'a> {
    pub profile: Option<&'a StackProfile>,
    pub folded: &'a Folded,
    pub svg: &'a SvgOptions,
}

fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Check, before anything is started, that `path` can be written: known format, not a
/// directory, and a file can be created next to it (where the atomic rename happens).
pub fn check_writable(path: &Path) -> Result<Format, OutputError> {
    let format = Format::from_path(path)?;
    if path.is_dir() {
        return Err(OutputError::IsDirectory {
            path: path.to_path_buf(),
        });
    }
    let probe = tempfile::Builder::new()
        .prefix(".ember-check-")
        .tempfile_in(dir_of(path))
        .map_err(|e| OutputError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
    drop(probe);
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().readonly() && !running_as_root() {
            return Err(OutputError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            });
        }
    }
    Ok(format)
}

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Write `path` atomically: into a temporary file beside it, then rename over it. A reader
/// (or a crash) never sees a half-written file; an old file stays until the new one is whole.
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), OutputError> {
    let err = |source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".ember-")
        .tempfile_in(dir_of(path))
        .map_err(err)?;
    {
        let mut w = BufWriter::new(tmp.as_file_mut());
        fill(&mut w).map_err(err)?;
        w.flush().map_err(err)?;
    }
    tmp.as_file().sync_all().map_err(err)?;
    // Files are readable like any other file the user creates (tempfile makes them 0600).
    let mode = 0o666 & !current_umask();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode)).map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

fn current_umask() -> u32 {
    use nix::sys::stat::{umask, Mode};
    let old = umask(Mode::from_bits_truncate(0o022));
    umask(old);
    old.bits()
}

/// Write one output in the format its extension names.
pub fn write_output(path: &Path, r: &Rendered) -> Result<(), OutputError> {
    let needs_profile = || OutputError::NeedsProfile {
        path: path.to_path_buf(),
    };
    match Format::from_path(path)? {
        Format::Folded => write_atomic(path, |w| folded::write(r.folded, w)),
        Format::Svg => write_atomic(path, |w| svg::write(r.folded, r.svg, w)),
        Format::Pprof => {
            let p = r.profile.ok_or_else(needs_profile)?;
            write_atomic(path, |w| pprof::write(p, w))
        }
        Format::Speedscope => {
            let p = r.profile.ok_or_else(needs_profile)?;
            write_atomic(path, |w| speedscope::write(p, &r.svg.title, w))
        }
        Format::Firefox => {
            let p = r.profile.ok_or_else(needs_profile)?;
            write_atomic(path, |w| firefox::write(p, &r.svg.title, w))
        }
        Format::Ranking => {
            let frequency = r.profile.ok_or_else(needs_profile)?.meta.frequency;
            write_atomic(path, |w| ranking::write_json(r.folded, frequency, w))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_extension() {
        assert_eq!(Format::from_path(Path::new("a.svg")).unwrap(), Format::Svg);
        assert_eq!(
            Format::from_path(Path::new("x/a.FOLDED")).unwrap(),
            Format::Folded
        );
        assert!(Format::from_path(Path::new("a.png")).is_err());
        assert_eq!(
            Format::from_path(Path::new("p.pb.gz")).unwrap(),
            Format::Pprof
        );
        assert_eq!(
            Format::from_path(Path::new("p.speedscope.json")).unwrap(),
            Format::Speedscope
        );
    }

    #[test]
    fn atomic_write_replaces_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.folded");
        std::fs::write(&p, "old").unwrap();
        let r = write_atomic(&p, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("boom"))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old");
        write_atomic(&p, |w| w.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        // No temporary files left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("x.svg");
        std::fs::create_dir(&d).unwrap();
        assert!(matches!(
            check_writable(&d),
            Err(OutputError::IsDirectory { .. })
        ));
        assert!(check_writable(&dir.path().join("nope/x.svg")).is_err());
        assert!(check_writable(&dir.path().join("ok.svg")).is_ok());
    }
}
