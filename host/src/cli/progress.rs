//! The progress bar of the long commands, fed by the daemon's `progress`
//! lines.
//!
//! The bar counts pages: pre-copy sends every page once and then the pages
//! dirtied meanwhile, so its length is what is known to need sending so far
//! (`pages_sent + dirty_pages`, at least the guest's size) and it is full
//! when nothing dirty is left. Its message names the phase, the round, the
//! dirty pages, the bandwidth and the downtime a stop-and-copy would take
//! now. It is drawn on stderr, and only when stderr is a terminal and
//! `--json` is not given.

use super::summary::format_count;
use crate::api::{Phase, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What the bar shows for one progress line.
#[derive(Clone, Debug, PartialEq)]
pub struct BarState {
    /// Pages done.
    pub position: u64,
    /// Pages known to need sending (0: unknown, the bar spins).
    pub length: u64,
    /// The text beside the bar.
    pub message: String,
}

/// The phase as the bar names it.
pub fn phase_label(phase: Phase) -> &'static str {
    match phase {
        Phase::Connecting => "connecting",
        Phase::Negotiating => "negotiating",
        Phase::Precopy => "pre-copy",
        Phase::StopAndCopy => "stop-and-copy",
        Phase::Committing => "committing",
        Phase::Transfer => "transfer",
        Phase::Other => "working",
    }
}

/// The bar's state after `p` (pure, for tests).
pub fn bar_state(p: &Progress) -> BarState {
    let mut message = phase_label(p.phase).to_owned();
    if p.round > 0 {
        message.push_str(&format!(" round {}", p.round));
    }
    if p.dirty_pages > 0 || p.phase == Phase::Precopy {
        message.push_str(&format!(" · {} dirty", format_count(p.dirty_pages)));
    }
    if p.bandwidth_mib_s > 0.0 {
        message.push_str(&format!(" · {:.1} MiB/s", p.bandwidth_mib_s));
    }
    if let Some(ms) = p.projected_downtime_ms {
        message.push_str(&format!(" · downtime ≈ {}", super::summary::format_ms(ms)));
    }
    if let Some(text) = &p.message {
        message.push_str(" · ");
        message.push_str(text);
    }
    let known = p.pages_sent.saturating_add(p.dirty_pages);
    let length = if p.pages_total == 0 && known == 0 {
        0
    } else {
        p.pages_total.max(known)
    };
    BarState {
        position: p.pages_sent.min(length),
        length,
        message,
    }
}

/// The progress display of one command.
#[derive(Debug)]
pub struct ProgressView {
    bar: ProgressBar,
}

impl ProgressView {
    /// A bar labelled `label`; drawn on stderr when `visible`, else hidden
    /// (updates cost next to nothing).
    pub fn new(label: &str, visible: bool) -> ProgressView {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(spinner_style());
        bar.set_prefix(label.to_owned());
        bar.set_message("connecting");
        if visible {
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
        }
        ProgressView { bar }
    }

    /// The bar, for printing around it (`suspend`).
    pub fn bar(&self) -> &ProgressBar {
        &self.bar
    }

    /// Shows one progress line.
    pub fn update(&mut self, p: &Progress) {
        let state = bar_state(p);
        if state.length > 0 {
            if self.bar.length().is_none() {
                self.bar.set_style(bar_style());
            }
            self.bar.set_length(state.length);
            self.bar.set_position(state.position);
        }
        self.bar.set_message(state.message);
    }

    /// Removes the bar (the summary follows on stdout).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed}]")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix} [{bar:30}] {percent:>3}% {human_pos}/{human_len} pages · {msg} [{elapsed}]",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn precopy(round: u32, sent: u64, dirty: u64) -> Progress {
        Progress {
            round,
            pages_sent: sent,
            pages_total: 1000,
            dirty_pages: dirty,
            bandwidth_mib_s: 800.0,
            projected_downtime_ms: Some(4.0),
            ..Progress::phase(Phase::Precopy)
        }
    }

    #[test]
    fn bar_follows_precopy_rounds() {
        let first = bar_state(&precopy(1, 400, 0));
        assert_eq!((first.position, first.length), (400, 1000));
        assert_eq!(
            first.message,
            "pre-copy round 1 · 0 dirty · 800.0 MiB/s · downtime ≈ 4.0 ms"
        );
        // Round 2: everything sent once, 300 dirtied meanwhile.
        let second = bar_state(&precopy(2, 1000, 300));
        assert_eq!((second.position, second.length), (1000, 1300));
        let done = bar_state(&precopy(3, 1300, 0));
        assert_eq!((done.position, done.length), (1300, 1300));
    }

    #[test]
    fn early_phases_have_no_length() {
        let s = bar_state(&Progress {
            message: Some("hostb:8002".into()),
            ..Progress::phase(Phase::Connecting)
        });
        assert_eq!((s.position, s.length), (0, 0));
        assert_eq!(s.message, "connecting · hostb:8002");
    }

    #[test]
    fn hidden_view_takes_updates() {
        let mut view = ProgressView::new("migrate web1", false);
        assert!(view.bar().is_hidden());
        view.update(&precopy(1, 10, 0));
        assert_eq!(view.bar().length(), Some(1000));
        assert_eq!(view.bar().position(), 10);
        view.finish();
        assert!(view.bar().is_finished());
    }
}
