//! Feeding the tracing pipeline into `LOG` lines (pt-spec §2.3, item Q-1), so tor shows our
//! messages in its own log at the right severity.

use std::fmt::Write as _;
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::lines::{Line, LineWriter, Severity};

/// Longest message sent in one `LOG` line; longer ones are cut (tor's lines stay small).
pub const MAX_LOG_MESSAGE: usize = 2048;

/// Maps tracing levels to tor's five severities.
pub fn severity(level: &Level) -> Severity {
    match *level {
        Level::ERROR => Severity::Error,
        Level::WARN => Severity::Warning,
        Level::INFO => Severity::Notice,
        Level::DEBUG => Severity::Info,
        Level::TRACE => Severity::Debug,
    }
}

/// A tracing layer that writes each event as a `LOG` line.
#[derive(Debug, Clone)]
pub struct LogLineLayer {
    writer: Arc<LineWriter>,
}

impl LogLineLayer {
    /// Sends events through `writer`.
    pub fn new(writer: Arc<LineWriter>) -> Self {
        LogLineLayer { writer }
    }
}

#[derive(Default)]
struct MessageVisitor {
    message: String,
    fields: String,
}

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for LogLineLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut v = MessageVisitor::default();
        event.record(&mut v);
        let mut text = v.message;
        text.push_str(&v.fields);
        if text.len() > MAX_LOG_MESSAGE {
            let mut cut = MAX_LOG_MESSAGE;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str(" [truncated]");
        }
        self.writer
            .send(&Line::Log(severity(event.metadata().level()), text));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;
    use std::sync::Mutex;
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn q1_events_become_quoted_log_lines() {
        let out = Shared::default();
        let writer = Arc::new(LineWriter::new(Box::new(out.clone())));
        let sub = tracing_subscriber::registry().with(LogLineLayer::new(writer));
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(code = 5, "bad \"thing\"\nhappened");
            tracing::info!("hello");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                r#"LOG SEVERITY=warning MESSAGE="bad \"thing\"\nhappened code=5""#,
                r#"LOG SEVERITY=notice MESSAGE="hello""#
            ]
        );
    }
}
