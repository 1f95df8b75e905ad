//! Reading saved profiles for re-rendering: pprof files (ember's or any tool's) and folded
//! stacks, from a file or standard input.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::output::firefox::{self, Timeline};
use crate::output::folded::{self, FoldOptions, Folded};
use crate::output::pprof;
use crate::stacks::StackProfile;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path:?}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "--from/--to need a recording that kept time: record with -o NAME.fxprof.json and \
         cut that file"
    )]
    NoTime,
    #[error("{path:?} is neither a pprof profile ({pprof}) nor folded stacks ({folded})")]
    Unrecognized {
        path: PathBuf,
        pprof: String,
        folded: String,
    },
}

/// A saved profile.
pub enum Loaded {
    Profile(Box<StackProfile>),
    Folded(Folded),
    /// A Firefox Profiler file: samples with their times, rooted at their thread.
    Timeline(Timeline),
}

/// A time range in seconds from the recording's start (`--from`, `--to`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TimeRange {
    pub from: Option<f64>,
    pub to: Option<f64>,
}

impl TimeRange {
    pub fn is_all(&self) -> bool {
        self.from.is_none() && self.to.is_none()
    }
}

impl Loaded {
    /// Its stacks folded; `opts` applies to pprof input (folded input is taken as it is).
    pub fn folded(&self, opts: FoldOptions) -> Folded {
        match self {
            Loaded::Profile(p) => folded::fold(p, opts),
            Loaded::Folded(f) => f.clone(),
            Loaded::Timeline(t) => t.folded(f64::MIN, f64::MAX),
        }
    }

    /// Its stacks within `range`; only a file that kept time can be cut.
    pub fn folded_in(&self, opts: FoldOptions, range: TimeRange) -> Result<Folded, LoadError> {
        if range.is_all() {
            return Ok(self.folded(opts));
        }
        match self {
            Loaded::Timeline(t) => {
                Ok(t.folded(range.from.unwrap_or(f64::MIN), range.to.unwrap_or(f64::MAX)))
            }
            _ => Err(LoadError::NoTime),
        }
    }

    pub fn profile(&self) -> Option<&StackProfile> {
        match self {
            Loaded::Profile(p) => Some(p),
            Loaded::Folded(_) | Loaded::Timeline(_) => None,
        }
    }
}

/// Read `path` (`-` for standard input) and tell pprof from folded by content.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = if path == Path::new("-") {
        let mut v = Vec::new();
        std::io::stdin().read_to_end(&mut v).map_err(io)?;
        v
    } else {
        std::fs::read(path).map_err(io)?
    };
    parse(path, &bytes)
}

pub fn parse(path: &Path, bytes: &[u8]) -> Result<Loaded, LoadError> {
    if bytes.starts_with(b"{") {
        if let Ok(t) = firefox::read(bytes) {
            return Ok(Loaded::Timeline(t));
        }
    }
    let gz = bytes.starts_with(&[0x1f, 0x8b]);
    let text = (!gz).then(|| std::str::from_utf8(bytes).ok()).flatten();
    let folded_err = match text.map(folded::parse) {
        Some(Ok(f)) => return Ok(Loaded::Folded(f)),
        Some(Err(e)) => e.to_string(),
        None => "not text".to_string(),
    };
    match pprof::read(bytes) {
        Ok(p) => Ok(Loaded::Profile(Box::new(p))),
        Err(e) => Err(LoadError::Unrecognized {
            path: path.to_path_buf(),
            pprof: e.to_string(),
            folded: folded_err,
        }),
    }
}
