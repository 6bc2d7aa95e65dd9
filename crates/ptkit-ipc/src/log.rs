//! `LOG` lines under `-ipcLogLevel` (spec §1.3.1, proposal 0012): a tracing layer that turns
//! events into [`IpcLine::Log`] lines on stdout, in the negotiated dialect's syntax
//! (`LOG <LEVEL> <message>` under 2.x/3.0, `LOG SEVERITY=… MESSAGE="…"` under PT 1.0), only
//! at or above the threshold. Until [`crate::run::IpcOut::set_log`] is called (the command
//! line is parsed), and at the default `NONE`, nothing is written: an old parent never sees
//! a line it does not know.
//!
//! Levels: tracing `ERROR`/`WARN`/`INFO`/`DEBUG` map to the same 2.2 words; `TRACE` is never
//! sent. Messages are cut at [`ptkit_tor::logging::MAX_LOG_MESSAGE`] bytes.

use std::fmt::Write as _;
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::lines::LogLevel;
use crate::run::IpcOut;

/// The 2.2 level of a tracing level (`None`: `TRACE`, never sent).
pub fn level_of(level: &Level) -> Option<LogLevel> {
    match *level {
        Level::ERROR => Some(LogLevel::Error),
        Level::WARN => Some(LogLevel::Warn),
        Level::INFO => Some(LogLevel::Info),
        Level::DEBUG => Some(LogLevel::Debug),
        _ => None,
    }
}

/// A tracing layer writing events as `LOG` lines through an [`IpcOut`].
#[derive(Debug, Clone)]
pub struct IpcLogLayer {
    out: Arc<IpcOut>,
}

impl IpcLogLayer {
    /// Sends events through `out` (filtered by the threshold `out` was given).
    pub fn new(out: Arc<IpcOut>) -> Self {
        IpcLogLayer { out }
    }
}

#[derive(Default)]
struct Message(String, String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.1, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.1, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for IpcLogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let Some(level) = level_of(event.metadata().level()) else {
            return;
        };
        if !self.out.logs(level) {
            return;
        }
        let mut m = Message::default();
        event.record(&mut m);
        let mut text = m.0;
        text.push_str(&m.1);
        let max = ptkit_tor::logging::MAX_LOG_MESSAGE;
        if text.len() > max {
            let mut cut = max;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str(" [truncated]");
        }
        self.out.log(level, &text);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::lines::Dialect;
    use std::io::Write;
    use std::sync::Mutex;
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn emit(setting: Option<(Dialect, Option<LogLevel>)>) -> (String, String) {
        let (o, e) = (Buf::default(), Buf::default());
        let out = Arc::new(IpcOut::new(Box::new(o.clone()), Box::new(e.clone())));
        let sub = tracing_subscriber::registry().with(IpcLogLayer::new(out.clone()));
        tracing::subscriber::with_default(sub, || {
            tracing::error!("before set");
            if let Some((d, l)) = setting {
                out.set_log(d, l);
            }
            tracing::error!(code = 5, "e\nx");
            tracing::warn!("w");
            tracing::info!("i");
            tracing::debug!("d");
            tracing::trace!("t");
        });
        let text = |b: &Buf| String::from_utf8(b.0.lock().unwrap().clone()).unwrap();
        (text(&o), text(&e))
    }

    #[test]
    fn s1_3_1_ipc_log_level_filters_both_syntaxes() {
        // Default NONE (and before the command line is parsed): nothing at all.
        assert_eq!(emit(None), (String::new(), String::new()));
        assert_eq!(
            emit(Some((Dialect::Pt2, None))),
            (String::new(), String::new())
        );
        assert_eq!(
            emit(Some((Dialect::Pt2, Some(LogLevel::Error)))).0,
            "LOG ERROR e?x code=5\n"
        );
        assert_eq!(
            emit(Some((Dialect::Pt2, Some(LogLevel::Warn)))).0,
            "LOG ERROR e?x code=5\nLOG WARN w\n"
        );
        assert_eq!(
            emit(Some((Dialect::Pt2, Some(LogLevel::Debug)))).0,
            "LOG ERROR e?x code=5\nLOG WARN w\nLOG INFO i\nLOG DEBUG d\n"
        );
        let (out, err) = emit(Some((Dialect::Pt1, Some(LogLevel::Info))));
        assert_eq!(
            out,
            "LOG SEVERITY=error MESSAGE=\"e\\nx code=5\"\nLOG SEVERITY=warning MESSAGE=\"w\"\nLOG SEVERITY=info MESSAGE=\"i\"\n"
        );
        assert_eq!(err, "");
    }
}
