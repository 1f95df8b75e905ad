//! Interactive flamegraph SVG through inferno.

use std::collections::BTreeMap;
use std::io::{self, Write};

/// What the SVG says about the recording.
#[derive(Clone, Debug, Default)]
pub struct SvgOptions {
    pub title: String,
    pub subtitle: Option<String>,
}

pub fn write(folded: &BTreeMap<String, u64>, opts: &SvgOptions, w: impl Write) -> io::Result<()> {
    let mut o = inferno::flamegraph::Options::default();
    o.title = crate::symbolize::sanitize(&opts.title);
    o.subtitle = opts.subtitle.as_deref().map(crate::symbolize::sanitize);
    o.count_name = "samples".to_string();
    // Colour by name hash: the same function gets the same colour in every graph.
    o.hash = true;
    let lines: Vec<String> = folded.iter().map(|(s, c)| format!("{s} {c}")).collect();
    if lines.is_empty() {
        // inferno refuses empty input; an empty graph still says what happened.
        o.notes = "no samples".to_string();
        return inferno::flamegraph::from_lines(&mut o, ["[no samples] 1"], w);
    }
    inferno::flamegraph::from_lines(&mut o, lines.iter().map(String::as_str), w)
        .map_err(|e| io::Error::other(e.to_string()))
}
