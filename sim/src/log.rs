//! Showing and capturing `tracing` events during a run.
//!
//! Two layers: one prints events to stderr, filtered by `RUST_LOG` (default: errors only, madsim's off); the other records
//! every event whose target starts with `dosim` (other than the sim's own, `dosim::sim`, which are recorded
//! directly) into the run's trace, whatever `RUST_LOG` says. That is how the runtime's events reach the trace
//! without the runtime knowing the simulation exists.

use std::fmt::Write as _;
use std::io;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::Registry;

use crate::context;
use crate::trace::EventKind;

/// The target prefix of events that are captured into the trace.
pub(crate) const CAPTURED_PREFIX: &str = "dosim";
/// The sim's own target: recorded directly, so not captured again.
pub(crate) const SIM_TARGET: &str = "dosim::sim";

/// What is shown when `RUST_LOG` is unset: errors, and nothing of madsim's own.
pub(crate) const DEFAULT_FILTER: &str = "error,madsim=off";

struct FieldText(String);

impl Visit for FieldText {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, "{}={value}", field.name());
        }
    }
}

struct Capture;

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let Some(run) = context::try_current() else { return };
        let mut text = FieldText(String::new());
        event.record(&mut text);
        let node = run.current_node();
        run.record(node, EventKind::Log { target: event.metadata().target().to_string(), text: text.0 });
    }
}

struct Stderr;

impl io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // eprint! goes through the test harness's output capture; raw stderr would not.
        eprint!("{}", String::from_utf8_lossy(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether stderr lines get ANSI colour codes: only on a terminal, and not if `NO_COLOR` is set to anything
/// but the empty string (no-color.org).
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// The subscriber a run installs on its thread.
pub(crate) fn subscriber() -> impl Subscriber + Send + Sync {
    // madsim opens a span per task; with its target on, every message costs a span. Off unless asked for.
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let show = tracing_subscriber::fmt::layer()
        .with_writer(|| Stderr)
        .with_target(true)
        .with_ansi(colour(std::io::IsTerminal::is_terminal(&io::stderr()), std::env::var_os("NO_COLOR")))
        .with_filter(env);
    let capture = Capture.with_filter(filter_fn(|meta| {
        let t = meta.target();
        meta.is_event() && t.starts_with(CAPTURED_PREFIX) && !t.starts_with(SIM_TARGET)
    }));
    Registry::default().with(show).with(capture)
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(!colour(false, None), "a file gets no escape codes");
        assert!(!colour(true, Some("1".into())), "NO_COLOR turns colour off");
        assert!(colour(true, Some("".into())), "an empty NO_COLOR does not");
    }
}
