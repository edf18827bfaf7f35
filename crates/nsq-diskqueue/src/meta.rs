//! The metadata file: `"%d\n%d,%d\n%d,%d\n"` = depth, readFileNum,readPos, writeFileNum,writePos.

/// Largest file number metadata may name. No real queue comes near 2^48 files (each holds at
/// least one record); the bound keeps `file number + 1` far from overflowing. Found by the
/// `diskqueue` fuzz target: `i64::MAX` as the write file number overflowed at open.
pub const MAX_FILE_NUM: i64 = 1 << 48;

/// Largest position metadata may name (a 256 TiB file).
pub const MAX_POS: i64 = 1 << 48;

/// The five numbers go-diskqueue persists in `<name>.diskqueue.meta.dat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Metadata {
    /// Number of records not yet read (may be wrong after a crash; see the crate docs).
    pub depth: i64,
    /// File number the reader is in.
    pub read_file_num: i64,
    /// Byte offset of the next record to read in that file.
    pub read_pos: i64,
    /// File number the writer appends to.
    pub write_file_num: i64,
    /// Byte offset where the next record will be written.
    pub write_pos: i64,
}

impl Metadata {
    /// The exact text Go's `persistMetaData` writes (`fmt.Fprintf(f, "%d\n%d,%d\n%d,%d\n", ...)`).
    pub fn to_text(&self) -> String {
        format!(
            "{}\n{},{}\n{},{}\n",
            self.depth, self.read_file_num, self.read_pos, self.write_file_num, self.write_pos
        )
    }

    /// Parses what Go's `fmt.Fscanf(f, "%d\n%d,%d\n%d,%d\n", ...)` accepts: decimal numbers with
    /// an optional sign, blanks around them ignored, `\r\n` treated as `\n`, anything after the
    /// third line ignored. On top of Go we reject positions that cannot be right (negative
    /// numbers, reader ahead of the writer), since continuing from them only loses data later.
    pub fn parse(text: &str) -> Result<Metadata, String> {
        let mut lines = text.split('\n');
        let mut line = |what: &str| {
            lines
                .next()
                .map(|l| l.trim_matches([' ', '\t', '\r']))
                .ok_or_else(|| format!("missing {what} line"))
        };
        let depth_line = line("depth")?;
        let read_line = line("read position")?;
        let write_line = line("write position")?;

        let depth = parse_num(depth_line, "depth")?;
        let (read_file_num, read_pos) = parse_pair(read_line, "read")?;
        let (write_file_num, write_pos) = parse_pair(write_line, "write")?;
        let m = Metadata {
            depth,
            read_file_num,
            read_pos,
            write_file_num,
            write_pos,
        };
        if read_file_num < 0 || read_pos < 0 || write_file_num < 0 || write_pos < 0 {
            return Err(format!("negative file number or position in {m:?}"));
        }
        if write_file_num > MAX_FILE_NUM || write_pos > MAX_POS || read_pos > MAX_POS {
            return Err(format!("file number or position out of range in {m:?}"));
        }
        if read_file_num > write_file_num
            || (read_file_num == write_file_num && read_pos > write_pos)
        {
            return Err(format!("read position is ahead of write position in {m:?}"));
        }
        Ok(m)
    }
}

fn parse_num(s: &str, what: &str) -> Result<i64, String> {
    let s = s.trim_matches([' ', '\t']);
    s.parse::<i64>()
        .map_err(|e| format!("bad {what} {s:?}: {e}"))
}

fn parse_pair(line: &str, what: &str) -> Result<(i64, i64), String> {
    let (a, b) = line
        .split_once(',')
        .ok_or_else(|| format!("bad {what} line {line:?}: expected \"fileNum,pos\""))?;
    Ok((
        parse_num(a, &format!("{what} file number"))?,
        parse_num(b, &format!("{what} position"))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_byte_identical_to_go() {
        let m = Metadata {
            depth: 121,
            read_file_num: 0,
            read_pos: 0,
            write_file_num: 2,
            write_pos: 1655,
        };
        assert_eq!(m.to_text(), "121\n0,0\n2,1655\n");
        assert_eq!(Metadata::parse(&m.to_text()).unwrap(), m);
    }

    #[test]
    fn parse_is_lenient_like_fscanf() {
        let m = Metadata::parse("+3\r\n0, 10\r\n1,5").unwrap();
        assert_eq!(
            m,
            Metadata {
                depth: 3,
                read_file_num: 0,
                read_pos: 10,
                write_file_num: 1,
                write_pos: 5
            }
        );
        // negative depth is legal (Go's eventually consistent depth)
        assert_eq!(Metadata::parse("-1\n0,0\n0,0\n").unwrap().depth, -1);
        // trailing junk after the third line is ignored by Go too
        assert!(Metadata::parse("0\n0,0\n0,0\nextra").is_ok());
    }

    #[test]
    fn parse_rejects_garbage() {
        for bad in [
            "",
            "x\n0,0\n0,0\n",
            "1\n0,0\n",
            "1\n0;0\n0,0\n",
            "1\n0,0\n0,\n",
            "1\n-1,0\n0,0\n",
            "1\n2,0\n1,0\n",
            "1\n1,50\n1,10\n",
            "\u{0}\u{0}\u{0}",
            // found by fuzzing: overflowed `write_file_num + 1`
            "0\n0,0\n9223372036854775807,5\n",
            "0\n0,0\n0,9223372036854775807\n",
        ] {
            assert!(Metadata::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
