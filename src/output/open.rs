//! `--open`: show a written SVG in the user's browser.

use std::path::Path;
use std::process::{Command, Stdio};

/// `--open`: open the first `.svg` among `outputs`; `None` when there is none.
pub fn open_svg_output(outputs: &[std::path::PathBuf]) -> Option<String> {
    let svg = outputs
        .iter()
        .find(|p| matches!(super::Format::from_path(p), Ok(super::Format::Svg)))?;
    Some(open_in_browser(svg))
}

/// Open `path` with `$BROWSER` or `xdg-open`. Returns what to tell the user: where the file is
/// when there is no display or no opener, never an error.
pub fn open_in_browser(path: &Path) -> String {
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let has_display =
        std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    let browser = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.trim().is_empty());
    let opener = match (&browser, has_display) {
        (Some(b), _) => Some(b.clone()),
        (None, true) => Some("xdg-open".to_string()),
        (None, false) => None,
    };
    let Some(opener) = opener else {
        return format!(
            "no display to open a browser on; open file://{} in one",
            abs.display()
        );
    };
    // $BROWSER may hold arguments ("firefox --new-window").
    let mut parts = opener.split_whitespace();
    let program = parts.next().unwrap_or("xdg-open");
    let spawned = Command::new(program)
        .args(parts)
        .arg(&abs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match spawned {
        Ok(_) => format!("opened {} with {program}", abs.display()),
        Err(e) => format!(
            "could not start {program} ({e}); open file://{} in a browser",
            abs.display()
        ),
    }
}
