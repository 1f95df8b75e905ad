//! Re-rendering saved profiles without recording again: `ember flamegraph`, `ember diff`,
//! `ember report`.

use std::path::{Path, PathBuf};

use crate::load::{self, LoadError};
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
}

impl RenderError {
    /// 2 for what the user can fix in the command line (bad input or output path), else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            RenderError::Load(_) => 2,
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
    fold: FoldOptions,
    svg: &SvgOptions,
) -> Result<(), RenderError> {
    for o in outputs {
        output::check_writable(o)?;
    }
    let loaded = load::load(input)?;
    let folded = loaded.folded(fold);
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

/// `ember diff BEFORE AFTER -o diff.svg`.
pub fn diff(
    before: &Path,
    after: &Path,
    out: &Path,
    normalize: bool,
    fold: FoldOptions,
    svg: &SvgOptions,
) -> Result<(), RenderError> {
    output::check_writable(out)?;
    let b = load::load(before)?;
    let a = load::load(after)?;
    let mut svg = svg.clone();
    if svg.title.is_empty() {
        svg.title = format!("{} → {}", before.display(), after.display());
    }
    if svg.subtitle.is_none() {
        svg.subtitle = Some("red: grew, blue: shrank (width: after)".to_string());
    }
    let (bf, af) = (b.folded(fold), a.folded(fold));
    output::write_atomic(out, |w| {
        output::svg::write_diff(&bf, &af, normalize, &svg, w)
    })?;
    Ok(())
}

/// `ember report IN --top N --by self|total`, to `w`.
pub fn report(
    input: &Path,
    top: usize,
    by: SortBy,
    w: impl std::io::Write,
) -> Result<(), RenderError> {
    let loaded = load::load(input)?;
    let folded = loaded.folded(FoldOptions::default());
    report::write(&folded, top, by, w)?;
    Ok(())
}
