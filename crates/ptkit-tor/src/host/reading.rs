//! Bounded line reading of a PT's stdout (item H-2).

use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

pub(super) enum LineRead {
    /// A complete line (LF and one CR stripped) or the unterminated last line.
    Line,
    /// The line exceeds the limit; `rest_pending` when its end has not been consumed yet.
    TooLong { rest_pending: bool },
    /// End of stream.
    Eof,
}

/// Reads one line into `buf` (cleared first) without ever buffering more than `max + 2` bytes.
pub(super) async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<LineRead> {
    buf.clear();
    let cap = max.saturating_add(2);
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(if buf.is_empty() {
                LineRead::Eof
            } else {
                strip_line(buf, max)
            });
        }
        let newline = avail.iter().position(|&b| b == b'\n');
        let take = newline.map_or(avail.len(), |i| i + 1);
        if buf.len().saturating_add(take) > cap {
            let room = cap.saturating_sub(buf.len());
            let reached_end = newline.is_some_and(|i| i < room);
            r.consume(room);
            return Ok(LineRead::TooLong {
                rest_pending: !reached_end,
            });
        }
        buf.extend_from_slice(&avail[..take]);
        r.consume(take);
        if newline.is_some() {
            return Ok(strip_line(buf, max));
        }
    }
}

pub(super) fn strip_line(buf: &mut Vec<u8>, max: usize) -> LineRead {
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    if buf.len() > max {
        LineRead::TooLong {
            rest_pending: false,
        }
    } else {
        LineRead::Line
    }
}

/// Consumes input up to and including the next LF (or EOF).
pub(super) async fn discard_line<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<()> {
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(());
        }
        match avail.iter().position(|&b| b == b'\n') {
            Some(i) => {
                r.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = avail.len();
                r.consume(n);
            }
        }
    }
}
