//! Interactive flamegraph SVG through inferno.

use std::io::{self, Write};

use super::folded::Folded;

/// How the SVG looks and what it says about the recording.
#[derive(Clone, Debug, Default)]
pub struct SvgOptions {
    pub title: String,
    pub subtitle: Option<String>,
    /// Root at the top, leaves below (an icicle graph).
    pub icicle: bool,
    /// Leaves at the bottom: callers of the hottest functions grow upwards.
    pub reverse: bool,
    /// Keep the input order of stacks instead of sorting them (a flame chart, for inputs
    /// whose lines are in time order).
    pub flamechart: bool,
    /// Leave out frames narrower than this percentage of the graph.
    pub min_width: Option<f64>,
    /// inferno palette: hot, mem, io, red, green, blue, aqua, yellow, purple, orange, rust,
    /// java, js, perl, python, wakeup.
    pub colors: Option<String>,
}

fn options(opts: &SvgOptions) -> io::Result<inferno::flamegraph::Options<'static>> {
    let mut o = inferno::flamegraph::Options::default();
    o.title = crate::symbolize::sanitize(&opts.title);
    o.subtitle = opts.subtitle.as_deref().map(crate::symbolize::sanitize);
    o.count_name = "samples".to_string();
    // Colour by name hash: the same function gets the same colour in every graph.
    o.hash = true;
    if opts.icicle {
        o.direction = inferno::flamegraph::Direction::Inverted;
    }
    o.reverse_stack_order = opts.reverse;
    o.flame_chart = opts.flamechart;
    if let Some(w) = opts.min_width {
        // inferno's min_width is in pixels of its 1200-pixel-wide default image.
        o.min_width = (w / 100.0 * 1200.0).max(0.0);
    }
    if let Some(c) = &opts.colors {
        o.colors = c
            .parse()
            .map_err(|e: String| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    }
    Ok(o)
}

pub fn write(folded: &Folded, opts: &SvgOptions, w: impl Write) -> io::Result<()> {
    let mut o = options(opts)?;
    let lines: Vec<String> = folded.iter().map(|(s, c)| format!("{s} {c}")).collect();
    if lines.is_empty() {
        // inferno refuses empty input; an empty graph still says what happened.
        return inferno::flamegraph::from_lines(&mut o, ["[no samples] 1"], w);
    }
    inferno::flamegraph::from_lines(&mut o, lines.iter().map(String::as_str), w)
        .map_err(|e| io::Error::other(e.to_string()))
}

/// A differential flamegraph: the shape of `after`, red where it grew since `before`, blue
/// where it shrank. `normalize` scales `before` to the same total first.
pub fn write_diff(
    before: &Folded,
    after: &Folded,
    normalize: bool,
    opts: &SvgOptions,
    w: impl Write,
) -> io::Result<()> {
    let text = |f: &Folded| {
        let mut v = Vec::new();
        super::folded::write(f, &mut v).map(|_| v)
    };
    let (b, a) = (text(before)?, text(after)?);
    let mut diff = Vec::new();
    let dopts = inferno::differential::Options {
        normalize,
        ..Default::default()
    };
    inferno::differential::from_readers(dopts, &b[..], &a[..], &mut diff)?;
    let mut o = options(opts)?;
    let text = String::from_utf8_lossy(&diff);
    if text.trim().is_empty() {
        return inferno::flamegraph::from_lines(&mut o, ["[no samples] 1 1"], w);
    }
    inferno::flamegraph::from_lines(&mut o, text.lines(), w)
        .map_err(|e| io::Error::other(e.to_string()))
}
