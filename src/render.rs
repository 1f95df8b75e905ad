//! Re-rendering saved profiles without recording again: `ember flamegraph`, `ember diff`,
//! `ember report`.

use std::path::{Path, PathBuf};

use crate::load::{self, LoadError, TimeRange};
use crate::output::compare::{Comparison, Gate};
use crate::output::ranking::{self, TestComparison};
use crate::output::report::{self, SortBy};
use crate::output::{self, FoldOptions, OutputError, SvgOptions};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("cannot write the report: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot read {path:?} as a ranking of tests: {reason}")]
    Ranking { path: PathBuf, reason: String },
}

impl RenderError {
    /// 2 for what the user can fix in the command line (bad input or output path), else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            RenderError::Load(_) | RenderError::Ranking { .. } => 2,
            RenderError::Output(
                OutputError::UnknownFormat { .. } | OutputError::IsDirectory { .. },
            ) => 2,
            _ => 1,
        }
    }
}

fn titled(svg: &SvgOptions, loaded: &load::Loaded, fallback: &str) -> SvgOptions {
    let mut svg = svg.clone();
    if let Some(p) = loaded.profile() {
        let (title, subtitle) = crate::record::svg_titles(&p.meta, p.total_samples());
        if svg.title.is_empty() {
            svg.title = title;
        }
        svg.subtitle = Some(subtitle);
    }
    if svg.title.is_empty() {
        svg.title = fallback.to_string();
    }
    svg
}

/// `ember flamegraph IN -o OUT...`: every output a recording could have written.
pub fn flamegraph(
    input: &Path,
    outputs: &[PathBuf],
    (fold, range): (FoldOptions, TimeRange),
    svg: &SvgOptions,
) -> Result<(), RenderError> {
    for o in outputs {
        output::check_writable(o)?;
    }
    let loaded = load::load(input)?;
    let folded = loaded.folded_in(fold, range)?;
    let svg = titled(svg, &loaded, &input.display().to_string());
    let r = output::Rendered {
        profile: loaded.profile(),
        folded: &folded,
        svg: &svg,
    };
    for o in outputs {
        output::write_output(o, &r)?;
    }
    Ok(())
}

/// What `ember diff` was asked for besides the inputs.
pub struct DiffOptions {
    /// `.svg` (differential flamegraph) and `.json` (the comparison) files to write.
    pub outputs: Vec<PathBuf>,
    /// Scale BEFORE to AFTER's total in the SVG.
    pub normalize: bool,
    pub fold: FoldOptions,
    /// Only the samples of this time range (of both profiles).
    pub range: TimeRange,
    pub svg: SvgOptions,
    /// The gate, with `--fail-over`.
    pub gate: Option<Gate>,
}

/// `ember diff BEFORE AFTER -o diff.svg -o diff.json`: writes the outputs and returns the
/// comparison (the caller prints its table and applies the gate).
pub fn diff(before: &Path, after: &Path, opts: &DiffOptions) -> Result<Comparison, RenderError> {
    for o in &opts.outputs {
        if !is_json(o) {
            output::check_writable(o)?;
        }
    }
    let b = load::load(before)?;
    let a = load::load(after)?;
    let (bf, af) = (
        b.folded_in(opts.fold, opts.range)?,
        a.folded_in(opts.fold, opts.range)?,
    );
    let comparison = Comparison::new(&bf, &af);
    let mut svg = opts.svg.clone();
    if svg.title.is_empty() {
        svg.title = format!("{} → {}", before.display(), after.display());
    }
    if svg.subtitle.is_none() {
        svg.subtitle = Some("red: grew, blue: shrank (width: after)".to_string());
    }
    let gate = opts.gate.unwrap_or_default();
    for o in &opts.outputs {
        if is_json(o) {
            output::write_atomic(o, |w| comparison.write_json(&gate, w))?;
        } else {
            output::write_atomic(o, |w| {
                output::svg::write_diff(&bf, &af, opts.normalize, &svg, w)
            })?;
        }
    }
    Ok(comparison)
}

/// `ember diff base-tests.json head-tests.json`: two rankings (`-o tests.json`) compared test
/// by test.
pub fn diff_tests(before: &Path, after: &Path) -> Result<TestComparison, RenderError> {
    let read = |path: &Path| {
        let bytes = std::fs::read(path).map_err(|e| RenderError::Ranking {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        ranking::read_json(&bytes).map_err(|reason| RenderError::Ranking {
            path: path.to_path_buf(),
            reason,
        })
    };
    Ok(TestComparison::new(read(before)?, read(after)?))
}

/// Whether `path` names a `.json` file (a ranking, or the comparison to write).
pub fn is_json(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "json")
}

/// `ember report IN --top N --by self|total`, to `w`.
pub fn report(
    input: &Path,
    (top, by): (usize, SortBy),
    range: TimeRange,
    w: impl std::io::Write,
) -> Result<(), RenderError> {
    let loaded = load::load(input)?;
    let folded = loaded.folded_in(FoldOptions::default(), range)?;
    report::write(&folded, top, by, w)?;
    Ok(())
}
