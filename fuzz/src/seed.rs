//! Writes inputs in the `arbitrary` 1.5 format, for the seed corpus.
//!
//! Lengths of `&[u8]`/`&str` values are read from the *end* of the input, and how many bytes a
//! length takes depends on how much input is left at that point, so the encoder records the
//! reads in order and lays the bytes out once the total size is known. `examples/gen_seeds.rs`
//! decodes every seed again with the real `arbitrary` and checks it got back what it meant.

enum Op {
    Front(Vec<u8>),
    Len(usize),
}

/// An input under construction.
#[derive(Default)]
pub struct Enc {
    ops: Vec<Op>,
}

impl Enc {
    /// A new, empty input.
    pub fn new() -> Self {
        Self::default()
    }

    /// Raw bytes read from the front (`u8`, arrays of `u8`, `Unstructured::bytes`).
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.ops.push(Op::Front(b.to_vec()));
        self
    }

    /// A `bool`.
    pub fn bool(&mut self, b: bool) -> &mut Self {
        self.raw(&[u8::from(b)])
    }

    /// A `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }

    /// Variant `i` of a fieldless enum with `n` variants (derived `Arbitrary`).
    pub fn variant(&mut self, i: usize, n: usize) -> &mut Self {
        let v = ((i as u64) << 32).div_ceil(n as u64);
        let v = u32::try_from(v).unwrap_or(u32::MAX);
        self.raw(&v.to_le_bytes())
    }

    /// A `&[u8]` or `&str` that is not the last field.
    pub fn slice(&mut self, b: &[u8]) -> &mut Self {
        self.ops.push(Op::Len(b.len()));
        self.raw(b)
    }

    /// "Another element follows" in a `Vec`.
    pub fn more(&mut self) -> &mut Self {
        self.bool(true)
    }

    /// "No more elements" in a `Vec` that is not the last field.
    pub fn end(&mut self) -> &mut Self {
        self.bool(false)
    }

    /// The finished input.
    pub fn finish(&self) -> Vec<u8> {
        let front: usize = self
            .ops
            .iter()
            .map(|op| match op {
                Op::Front(b) => b.len(),
                Op::Len(_) => 0,
            })
            .sum();
        let lens = self
            .ops
            .iter()
            .filter(|op| matches!(op, Op::Len(_)))
            .count();
        let mut widths = vec![1usize; lens];
        loop {
            let mut left = front + widths.iter().sum::<usize>();
            let mut new = Vec::with_capacity(lens);
            for op in &self.ops {
                match op {
                    Op::Front(b) => left -= b.len(),
                    Op::Len(_) => {
                        let w = width(left);
                        new.push(w);
                        left -= w;
                    }
                }
            }
            if new == widths {
                break;
            }
            widths = new;
        }
        // Lay out: all front bytes in order, then the length fields, last read first.
        let mut out = Vec::new();
        let mut tails: Vec<Vec<u8>> = Vec::new();
        let mut left = front + widths.iter().sum::<usize>();
        let mut wi = 0;
        for op in &self.ops {
            match op {
                Op::Front(b) => {
                    out.extend_from_slice(b);
                    left -= b.len();
                }
                Op::Len(n) => {
                    let w = widths[wi];
                    wi += 1;
                    tails.push(len_field(*n, left, w));
                    left -= w;
                }
            }
        }
        for t in tails.iter().rev() {
            out.extend_from_slice(t);
        }
        out
    }
}

/// Bytes a length read takes with `left` bytes of input left.
fn width(left: usize) -> usize {
    match left {
        0 => 0,
        1..=256 => 1,
        257..=65537 => 2,
        _ => 4,
    }
}

/// The `w` bytes that make `arbitrary_byte_size` return `n` with `left` bytes left.
fn len_field(n: usize, left: usize, w: usize) -> Vec<u8> {
    if w == 0 {
        assert_eq!(n, 0);
        return Vec::new();
    }
    let max = left - w;
    assert!(n <= max, "length {n} does not fit in {max}");
    // int_in_range_impl consumes big-endian bytes only while the range still needs them.
    let mut used = 0;
    while used < w && (max >> (used * 8)) > 0 {
        used += 1;
    }
    let mut field = vec![0u8; w];
    for (i, byte) in field.iter_mut().take(used).enumerate() {
        *byte = (n >> (8 * (used - 1 - i))) as u8;
    }
    field
}
