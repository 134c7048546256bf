//! Progress bars with one look across every stage.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar for `len` items; hidden when stderr is not a terminal or `SV72_NO_PROGRESS` is set, so
/// cron logs and CI output stay clean.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if std::env::var_os("SV72_NO_PROGRESS").is_some() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .expect("valid template"),
    );
    pb.set_message(what.to_string());
    pb
}

/// A spinner for work of unknown length.
pub fn spinner(what: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    if std::env::var_os("SV72_NO_PROGRESS").is_some() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}] {pos}")
            .expect("valid template"),
    );
    pb.set_message(what.to_string());
    pb
}
