//! Source lines from a code object's location table (`co_linetable`, CPython 3.11 and
//! later): for each run of instructions, how the line moves from the one before. The format
//! is CPython's `Objects/locations.md`.

/// The line of the instruction at `offset` (in code units) of a code object whose first line
/// is `first_line`; `None` where the table gives it no line or ends before it.
pub fn line_at(table: &[u8], first_line: i32, offset: u32) -> Option<u32> {
    let mut line = first_line;
    let mut at = 0u32;
    let mut i = 0;
    while i < table.len() {
        let head = table[i];
        if head & 0x80 == 0 {
            return None; // not the first byte of an entry: a table ember cannot read
        }
        i += 1;
        let code = (head >> 3) & 15;
        let units = u32::from(head & 7) + 1;
        let delta = match code {
            15 => None, // no location
            14 => {
                let d = signed_varint(table, &mut i)?;
                for _ in 0..3 {
                    varint(table, &mut i)?; // end line, column, end column
                }
                Some(d)
            }
            13 => Some(signed_varint(table, &mut i)?),
            10..=12 => {
                i += 2; // start and end column
                Some(i32::from(code) - 10)
            }
            _ => {
                i += 1; // column
                Some(0)
            }
        };
        if let Some(d) = delta {
            line += d;
        }
        if offset < at + units {
            return delta.and_then(|_| u32::try_from(line).ok());
        }
        at += units;
    }
    None
}

/// An unsigned varint: 6 bits a byte, low first, bit 6 set where more follow.
fn varint(table: &[u8], i: &mut usize) -> Option<u32> {
    let mut value = 0u32;
    let mut shift = 0;
    loop {
        let b = *table.get(*i)?;
        *i += 1;
        value |= u32::from(b & 63) << shift;
        if b & 64 == 0 {
            return Some(value);
        }
        shift += 6;
        if shift > 30 {
            return None;
        }
    }
}

/// A signed varint: the sign in the lowest bit.
fn signed_varint(table: &[u8], i: &mut usize) -> Option<i32> {
    let v = varint(table, i)?;
    let magnitude = (v >> 1) as i32;
    Some(if v & 1 != 0 { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One entry: `code`, covering `units` instructions, with its extra bytes.
    fn entry(code: u8, units: u8, extra: &[u8]) -> Vec<u8> {
        let mut v = vec![0x80 | (code << 3) | (units - 1)];
        v.extend_from_slice(extra);
        v
    }

    #[test]
    fn lines_follow_each_kind_of_entry() {
        let mut table = Vec::new();
        // 2 units on the first line (short form), then +1 (one-line form), then +3 (no
        // columns: signed varint 6), then -2 (long form: varint 5, then three varints), then
        // 1 unit without a location.
        table.extend(entry(0, 2, &[0]));
        table.extend(entry(11, 1, &[0, 0]));
        table.extend(entry(13, 3, &[6]));
        table.extend(entry(14, 1, &[5, 0, 0, 0]));
        table.extend(entry(15, 1, &[]));
        let at = |offset| line_at(&table, 10, offset);
        assert_eq!((at(0), at(1)), (Some(10), Some(10)));
        assert_eq!(at(2), Some(11));
        assert_eq!((at(3), at(5)), (Some(14), Some(14)));
        assert_eq!(at(6), Some(12));
        assert_eq!(at(7), None);
        assert_eq!(at(8), None);
    }

    #[test]
    fn a_broken_table_gives_no_line_and_no_panic() {
        assert_eq!(line_at(&[0x68], 1, 0), None); // a long form cut short
        assert_eq!(line_at(&[0x05], 1, 0), None); // not an entry's first byte
        assert_eq!(
            line_at(&[0xe8, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f], 1, 0),
            None
        );
    }
}
