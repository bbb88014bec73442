//! Progress bars for the long stages (training, embedding, calibration), drawn on stderr.
//! indicatif draws nothing when stderr is not a terminal, so logs and CI stay clean.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` units labelled `what` (e.g. "images"); `show = false` gives a hidden one.
pub fn bar(show: bool, len: usize, what: &str) -> ProgressBar {
    let bar = if show { ProgressBar::new(len as u64) } else { ProgressBar::hidden() };
    let template = format!("{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {what} eta {{eta}} {{msg}}");
    bar.set_style(ProgressStyle::with_template(&template).expect("a valid template").progress_chars("=> "));
    bar
}
