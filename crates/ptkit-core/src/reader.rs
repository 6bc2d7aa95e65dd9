//! A bounded cursor over borrowed bytes (the rustls `Reader` idiom): every read checks what is
//! left, length prefixes become sub-readers, and running short is a value, never a panic.

/// Not enough bytes for the requested item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unexpected end of input")]
pub struct UnexpectedEnd;

/// A cursor over a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], UnexpectedEnd> {
        let end = self.pos.checked_add(n).ok_or(UnexpectedEnd)?;
        let out = self.buf.get(self.pos..end).ok_or(UnexpectedEnd)?;
        self.pos = end;
        Ok(out)
    }

    /// Takes one byte.
    pub fn u8(&mut self) -> Result<u8, UnexpectedEnd> {
        Ok(self.take(1)?[0])
    }

    /// Takes a big-endian u16.
    pub fn u16_be(&mut self) -> Result<u16, UnexpectedEnd> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Takes bytes up to (not including) the next `byte`, and consumes that byte too.
    pub fn until(&mut self, byte: u8) -> Result<&'a [u8], UnexpectedEnd> {
        let rest = &self.buf[self.pos..];
        let idx = rest.iter().position(|b| *b == byte).ok_or(UnexpectedEnd)?;
        self.pos += idx + 1;
        Ok(&rest[..idx])
    }

    /// A sub-reader over the next `n` bytes (for length-prefixed items).
    pub fn sub(&mut self, n: usize) -> Result<Reader<'a>, UnexpectedEnd> {
        Ok(Reader::new(self.take(n)?))
    }

    /// Bytes consumed so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }

    /// Bytes not yet read.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// True when everything was read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn short_reads_are_errors() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16_be(), Ok(0x0102));
        assert_eq!(r.u16_be(), Err(UnexpectedEnd));
        assert_eq!(r.take(usize::MAX), Err(UnexpectedEnd));
        assert_eq!(r.u8(), Ok(3));
        assert!(r.is_empty());
        let mut r = Reader::new(b"abc\0de");
        assert_eq!(r.until(0).unwrap(), b"abc");
        assert_eq!(r.until(0), Err(UnexpectedEnd));
    }
}
