//! Record framing shared by topic logs and channel journals, and a scanner that finds valid
//! records in a file, skipping corruption.
//!
//! ```text
//! +------------+------------+------------+------+-----------------+
//! | magic u32  |  len u32   |  crc u32   | kind | payload         |
//! | "NSQ1"     | = 1 + |payload|         |  u8  | (len - 1 bytes) |
//! +------------+------------+------------+------+-----------------+
//!                            crc = CRC-32 (IEEE) over kind..end
//! ```
//!
//! All integers are big-endian, like the NSQ wire protocol.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use bytes::{Bytes, BytesMut};

/// `"NSQ1"` as a big-endian `u32`: the first four bytes of every record.
pub const MAGIC: u32 = 0x4E53_5131;
const MAGIC_BYTES: [u8; 4] = MAGIC.to_be_bytes();

/// Bytes before the kind: magic, len, crc.
pub const HEADER_LEN: usize = 12;

/// Starts a record in `buf`: reserves the header and writes the kind. Finish with [`finish`].
#[inline]
pub(crate) fn begin(buf: &mut Vec<u8>, kind: u8) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; HEADER_LEN]);
    buf.push(kind);
    start
}

/// Fills in the header of the record started at `start` (everything after it is its payload).
#[inline]
pub(crate) fn finish(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start - HEADER_LEN) as u32;
    let crc = crc32fast::hash(&buf[start + HEADER_LEN..]);
    buf[start..start + 4].copy_from_slice(&MAGIC_BYTES);
    buf[start + 4..start + 8].copy_from_slice(&len.to_be_bytes());
    buf[start + 8..start + 12].copy_from_slice(&crc.to_be_bytes());
}

/// Something we can `pread` from.
pub(crate) trait Source {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize>;
}

impl Source for File {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, off)
    }
}

/// What the scanner found next.
#[derive(Debug)]
pub(crate) enum Item {
    /// A valid record starting at file offset `off`; `payload` excludes the kind byte.
    Record { off: u64, kind: u8, payload: Bytes },
    /// Bytes `[from, to)` hold no valid record; a valid one starts at `to`.
    Skipped { from: u64, to: u64 },
    /// No valid record starts anywhere in `[at, limit)`.
    Torn { at: u64 },
}

/// Walks the records of one file from `off` up to `limit` (file offsets), reading `chunk`
/// bytes at a time. Payloads are slices of the read window (no copy), so they keep that
/// window alive.
pub(crate) struct Scanner<'a, S: Source> {
    src: &'a S,
    off: u64,
    limit: u64,
    max_len: u32,
    chunk: usize,
    win: Bytes,
    win_off: u64,
}

impl<'a, S: Source> Scanner<'a, S> {
    /// `max_len` bounds the `len` field: anything larger is corruption.
    pub(crate) fn new(src: &'a S, off: u64, limit: u64, max_len: u32, chunk: usize) -> Self {
        Scanner {
            src,
            off,
            limit,
            max_len,
            chunk: chunk.max(4096),
            win: Bytes::new(),
            win_off: off,
        }
    }

    /// The offset of the next record to parse.
    pub(crate) fn offset(&self) -> u64 {
        self.off
    }

    /// The end bound, lowered if the file turned out shorter.
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Makes the window cover `[o, o + n)` if the data exists; returns how many bytes from `o`
    /// are available (less than `n` at the limit or end of file).
    fn ensure(&mut self, o: u64, n: usize) -> io::Result<usize> {
        let win_end = self.win_off + self.win.len() as u64;
        if o >= self.win_off && o + n as u64 <= win_end {
            return Ok(n);
        }
        if o >= self.limit {
            return Ok(0);
        }
        let want = (n.max(self.chunk) as u64).min(self.limit - o) as usize;
        let mut buf = BytesMut::zeroed(want);
        let mut got = 0;
        while got < want {
            match self.src.read_at(&mut buf[got..], o + got as u64) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if got < want {
            // The file is shorter than the limit: treat its end as the limit.
            self.limit = o + got as u64;
        }
        buf.truncate(got);
        self.win = buf.freeze();
        self.win_off = o;
        Ok(n.min(got))
    }

    fn slice(&self, o: u64, n: usize) -> &[u8] {
        let s = (o - self.win_off) as usize;
        &self.win[s..s + n]
    }

    /// Is there a complete, checksum-valid record at `o`? Returns its kind and total length.
    fn check(&mut self, o: u64) -> io::Result<Option<(u8, usize)>> {
        if self.ensure(o, HEADER_LEN + 1)? < HEADER_LEN + 1 {
            return Ok(None);
        }
        let h = self.slice(o, HEADER_LEN + 1);
        if h[0..4] != MAGIC_BYTES {
            return Ok(None);
        }
        let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let crc = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        let kind = h[12];
        if len == 0 || len > self.max_len {
            return Ok(None);
        }
        let total = HEADER_LEN + len as usize;
        if self.ensure(o, total)? < total {
            return Ok(None);
        }
        if crc32fast::hash(self.slice(o + HEADER_LEN as u64, len as usize)) != crc {
            return Ok(None);
        }
        Ok(Some((kind, total)))
    }

    /// The next record, or what stands in the way of it; `None` at the limit.
    pub(crate) fn next_item(&mut self) -> io::Result<Option<Item>> {
        if self.off >= self.limit {
            return Ok(None);
        }
        let o = self.off;
        if let Some((kind, total)) = self.check(o)? {
            let s = (o - self.win_off) as usize;
            let payload = self.win.slice(s + HEADER_LEN + 1..s + total);
            self.off = o + total as u64;
            return Ok(Some(Item::Record {
                off: o,
                kind,
                payload,
            }));
        }
        if self.off >= self.limit {
            // `check` found the file ends before `o`.
            return Ok(None);
        }
        match self.resync(o + 1)? {
            Some(c) => {
                self.off = c;
                Ok(Some(Item::Skipped { from: o, to: c }))
            }
            None => {
                self.off = self.limit;
                Ok(Some(Item::Torn { at: o }))
            }
        }
    }

    /// The first offset `>= c` where a valid record starts.
    fn resync(&mut self, mut c: u64) -> io::Result<Option<u64>> {
        loop {
            if c + (HEADER_LEN as u64) >= self.limit {
                return Ok(None);
            }
            let want = (self.chunk as u64).min(self.limit - c) as usize;
            let avail = self.ensure(c, want)?;
            if avail < 4 {
                return Ok(None);
            }
            let found = self
                .slice(c, avail)
                .windows(4)
                .position(|w| w == MAGIC_BYTES);
            match found {
                None => c += (avail - 3) as u64,
                Some(i) => {
                    let cand = c + i as u64;
                    if self.check(cand)?.is_some() {
                        return Ok(Some(cand));
                    }
                    c = cand + 1;
                }
            }
        }
    }
}
