//! Requests on the dispatcher's stdin (ours; syntax in [`crate::lines`] and `docs/IPC.md`):
//! `STATS [transport]`, and the signals channel — `SMESSAGE` lines for a client, `CMESSAGE`
//! lines for a server — delivered to the transports that asked for it
//! (`ClientTransport::signals` / `ServerTransport::signals`).
//!
//! [`Requests::answer`] is sans-IO (a line in, at most one line out); [`serve`] is the thin
//! reader around it: lines are bounded by [`MAX_LINE_LEN`] (a longer one is skipped up to
//! its newline and answered with one `STDIN-ERROR`), and nothing on stdin is ever fatal.

use std::collections::BTreeMap;
use std::sync::Arc;

use ptkit_core::transport::SignalHandler;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::flags::IpcRole;
use crate::lines::{self, Dialect, IpcLine, LineError, MAX_LINE_LEN};
use crate::run::{IpcOut, StatsSource, stats_json};

/// What the dispatcher knows to answer requests.
pub struct Requests {
    role: IpcRole,
    /// Running transports, with their signals handler if they asked for one.
    transports: BTreeMap<String, Option<Arc<dyn SignalHandler>>>,
    stats: Option<StatsSource>,
}

impl std::fmt::Debug for Requests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requests")
            .field("role", &self.role)
            .field("transports", &self.transports.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Requests {
    /// No transports yet.
    pub fn new(role: IpcRole) -> Self {
        Requests {
            role,
            transports: BTreeMap::new(),
            stats: None,
        }
    }

    /// Records a running transport and its signals handler (`None`: not interested).
    pub fn add_transport(&mut self, name: &str, handler: Option<Arc<dyn SignalHandler>>) {
        self.transports.insert(name.to_owned(), handler);
    }

    /// Where `STATS` reads the counters.
    pub fn with_stats(mut self, stats: StatsSource) -> Self {
        self.stats = Some(stats);
        self
    }

    /// The keyword this role reads (`SMESSAGE` for a client, `CMESSAGE` for a server).
    fn reads(&self) -> &'static str {
        match self.role {
            IpcRole::Client => "SMESSAGE",
            IpcRole::Server => "CMESSAGE",
        }
    }

    fn deliver(&self, keyword: &'static str, transport: &str, payload: &[u8]) -> Option<IpcLine> {
        let error = |message: String| Some(IpcLine::RequestError { keyword, message });
        if keyword != self.reads() {
            return error(format!(
                "a {} reads {} lines, not {keyword}",
                match self.role {
                    IpcRole::Client => "client",
                    IpcRole::Server => "server",
                },
                self.reads()
            ));
        }
        match self.transports.get(transport) {
            None => error(format!("unknown transport {transport:?}")),
            Some(None) => error(format!("transport {transport:?} has no signals channel")),
            Some(Some(handler)) => {
                handler.on_message(payload);
                None
            }
        }
    }

    fn stats(&self, transport: Option<&str>) -> IpcLine {
        let mut all = self.stats.as_ref().map(|s| s()).unwrap_or_default();
        if let Some(t) = transport {
            if !self.transports.contains_key(t) {
                return IpcLine::RequestError {
                    keyword: "STATS",
                    message: format!("unknown transport {t:?}"),
                };
            }
            all.retain(|s| s.transport == t);
        }
        IpcLine::Stats(stats_json(&all))
    }

    /// Answers one stdin line (with or without its newline): the line to send back, if any.
    pub fn answer(&self, line: &str) -> Option<IpcLine> {
        match lines::parse(line) {
            Ok(Some(IpcLine::Cmessage { transport, payload })) => {
                self.deliver("CMESSAGE", &transport, &payload)
            }
            Ok(Some(IpcLine::Smessage { transport, payload })) => {
                self.deliver("SMESSAGE", &transport, &payload)
            }
            Ok(Some(IpcLine::StatsRequest(t))) => Some(self.stats(t.as_deref())),
            // Our own kinds of output, and unknown keywords: ignored.
            Ok(_) => None,
            Err(e) => {
                let keyword = match e {
                    LineError::TooLong(k)
                    | LineError::BadTransport(k)
                    | LineError::BadBase64(k)
                    | LineError::Malformed(k) => k,
                };
                match keyword {
                    "CMESSAGE" | "SMESSAGE" | "STATS" => Some(IpcLine::RequestError {
                        keyword,
                        message: e.to_string(),
                    }),
                    "IPC" => Some(IpcLine::RequestError {
                        keyword: "STDIN",
                        message: format!("line longer than {MAX_LINE_LEN} bytes"),
                    }),
                    _ => None,
                }
            }
        }
    }
}

/// Reads requests from `input` until it ends, answering each through `out`.
pub async fn serve(
    input: Box<dyn AsyncRead + Send + Unpin>,
    requests: &Requests,
    out: &IpcOut,
    dialect: Dialect,
) {
    let mut input = BufReader::new(input);
    let mut line = Vec::new();
    let mut skipping = false;
    loop {
        let buf = match input.fill_buf().await {
            Ok([]) | Err(_) => return,
            Ok(b) => b,
        };
        let (chunk, ended) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let used = chunk.len();
        if !skipping {
            if line.len() + used > MAX_LINE_LEN + 1 {
                skipping = true;
                line.clear();
                let e = IpcLine::RequestError {
                    keyword: "STDIN",
                    message: format!("line longer than {MAX_LINE_LEN} bytes"),
                };
                out.send(&e, dialect);
            } else {
                line.extend_from_slice(chunk);
            }
        }
        input.consume(used);
        if ended {
            if !skipping {
                let text = String::from_utf8_lossy(&line);
                if let Some(reply) = requests.answer(&text) {
                    out.send(&reply, dialect);
                }
            }
            line.clear();
            skipping = false;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ptkit_core::Stats;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Inbox(Mutex<Vec<Vec<u8>>>);
    impl SignalHandler for Inbox {
        fn on_message(&self, payload: &[u8]) {
            self.0.lock().unwrap().push(payload.to_vec());
        }
    }

    fn requests(role: IpcRole) -> (Requests, Arc<Inbox>) {
        let inbox = Arc::new(Inbox::default());
        let mut r = Requests::new(role);
        r.add_transport("sig", Some(inbox.clone()));
        r.add_transport("plain", None);
        let stats: StatsSource = Arc::new(|| {
            vec![
                Stats {
                    transport: "sig".into(),
                    ..Stats::default()
                },
                Stats {
                    transport: "plain".into(),
                    bytes_up: 7,
                    ..Stats::default()
                },
            ]
        });
        (r.with_stats(stats), inbox)
    }

    fn err(line: Option<IpcLine>) -> String {
        match line {
            Some(l @ IpcLine::RequestError { .. }) => l.render(Dialect::Pt2),
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn signals_reach_the_transport_that_asked() {
        let (r, inbox) = requests(IpcRole::Client);
        assert_eq!(r.answer("SMESSAGE sig aGVsbG8=\n"), None);
        assert_eq!(r.answer("SMESSAGE sig"), None);
        assert_eq!(*inbox.0.lock().unwrap(), [b"hello".to_vec(), vec![]]);
        let (r, inbox) = requests(IpcRole::Server);
        assert_eq!(r.answer("CMESSAGE sig AAEC"), None);
        assert_eq!(*inbox.0.lock().unwrap(), [vec![0, 1, 2]]);
    }

    #[test]
    fn bad_signals_get_one_error_line() {
        let (r, inbox) = requests(IpcRole::Client);
        let cases = [
            (
                "SMESSAGE nope aGk=",
                "SMESSAGE-ERROR unknown transport \"nope\"",
            ),
            (
                "SMESSAGE plain aGk=",
                "SMESSAGE-ERROR transport \"plain\" has no signals channel",
            ),
            (
                "CMESSAGE sig aGk=",
                "CMESSAGE-ERROR a client reads SMESSAGE lines, not CMESSAGE",
            ),
            (
                "SMESSAGE sig aGk",
                "SMESSAGE-ERROR SMESSAGE: payload is not base64",
            ),
            (
                "SMESSAGE 9x aGk=",
                "SMESSAGE-ERROR SMESSAGE: bad transport name",
            ),
            ("SMESSAGE", "SMESSAGE-ERROR SMESSAGE: malformed line"),
        ];
        for (line, want) in cases {
            assert_eq!(err(r.answer(line)), want, "{line}");
        }
        let big = format!(
            "SMESSAGE sig {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                vec![0; lines::MAX_MESSAGE_PAYLOAD + 1]
            )
        );
        assert_eq!(
            err(r.answer(&big)),
            "SMESSAGE-ERROR SMESSAGE line or payload too long"
        );
        assert!(inbox.0.lock().unwrap().is_empty());
        // Unknown keywords and our own output kinds are ignored.
        assert_eq!(r.answer("HELLO x"), None);
        assert_eq!(r.answer("LOG INFO x"), None);
        assert_eq!(r.answer(""), None);
    }

    #[test]
    fn stats_request_answers_with_the_json_schema() {
        let (r, _) = requests(IpcRole::Server);
        let Some(IpcLine::Stats(all)) = r.answer("STATS\n") else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_str(&all).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(v[1]["bytes_up"], 7);
        for key in [
            "transport",
            "connections_open",
            "connections_total",
            "connections_failed",
            "bytes_up",
            "bytes_down",
            "errors",
        ] {
            assert!(v[0].get(key).is_some(), "{key}");
        }
        let Some(IpcLine::Stats(one)) = r.answer("STATS plain") else {
            panic!()
        };
        assert!(one.starts_with(r#"[{"transport":"plain""#), "{one}");
        assert_eq!(
            err(r.answer("STATS nope")),
            "STATS-ERROR unknown transport \"nope\""
        );
    }

    #[tokio::test]
    async fn serve_reads_lines_bounded_and_keeps_going() {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (o, e) = (Buf::default(), Buf::default());
        let out = IpcOut::new(Box::new(o.clone()), Box::new(e.clone()));
        let (r, inbox) = requests(IpcRole::Client);
        let mut input = b"STATS plain\r\n".to_vec();
        input.extend(vec![b'x'; MAX_LINE_LEN + 10]);
        input.extend(b"\nSMESSAGE sig aGk=\nSMESSAGE nope aGk=\nSTATS sig");
        serve(
            Box::new(std::io::Cursor::new(input)),
            &r,
            &out,
            Dialect::Pt2,
        )
        .await;
        let text = |b: &Buf| String::from_utf8(b.0.lock().unwrap().clone()).unwrap();
        assert!(
            text(&o).starts_with("STATS [{\"transport\":\"plain\""),
            "{}",
            text(&o)
        );
        assert_eq!(
            text(&o).lines().count(),
            1,
            "an unterminated last line is not served"
        );
        assert_eq!(
            text(&e),
            format!(
                "STDIN-ERROR line longer than {MAX_LINE_LEN} bytes\nSMESSAGE-ERROR unknown transport \"nope\"\n"
            )
        );
        assert_eq!(*inbox.0.lock().unwrap(), [b"hi".to_vec()]);
    }
}
