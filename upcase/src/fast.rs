//! The transform's fast path: the same rules as [`super`] states them,
//! tuned. Runs of ASCII are mapped in vectorised segments with no branch
//! per byte, the Latin-1 letters of Spanish on their two bytes, other
//! characters of the Basic Multilingual Plane decoded inline and looked up
//! in a table built once from `char::to_uppercase` itself; only the rest
//! goes through the Unicode tables.
//!
//! Nothing here decides a rule: a change to what the transform does starts
//! in [`super`], and the tests there (every scalar value against
//! `char::to_uppercase`, any split against the whole) hold this file to it.

/// Maps the longest prefix of `bytes` made of whole, valid UTF-8
/// characters, appending their full uppercase mapping to `out`; returns the
/// prefix's length. It stops at the first byte that is not valid UTF-8 or
/// that starts a character cut by the end of `bytes`.
///
/// The hot path: runs of ASCII are mapped with no branch per byte, and the
/// Latin-1 letters of Spanish (`ñ`, `á`, `¿`…) on their two bytes; only
/// other characters are decoded, one at a time, and go through the Unicode
/// tables.
pub(super) fn upcase_valid_prefix(bytes: &[u8], out: &mut Vec<u8>) -> usize {
    let mut at = 0;
    loop {
        let rest = &bytes[at..];
        match *rest {
            [] => return at,
            [byte, ..] if byte.is_ascii() => {
                at += upcase_ascii_run(rest, out);
                continue;
            }
            [lead @ (0xC2 | 0xC3), second @ 0x80..=0xBF, ..] => {
                if let Some(mapped) = upcase_latin1(lead, second) {
                    out.extend_from_slice(&[lead, mapped]);
                    at += 2;
                    continue;
                }
            }
            _ => {}
        }
        let Some((character, width)) = decode_char(rest) else {
            return at;
        };
        match case_table().upper(character) {
            // Copied at a fixed length: a call to `memcpy` of a length
            // known only at run time costs more than the copy.
            Upper::Same => match *rest {
                [first, second, third, ..] if width == 3 => {
                    out.extend_from_slice(&[first, second, third]);
                }
                [first, second, ..] if width == 2 => out.extend_from_slice(&[first, second]),
                _ => out.extend_from_slice(&rest[..width]),
            },
            Upper::One(upper) => push_char(upper, out),
            Upper::Several => push_upper(character, out),
        }
        at += width;
    }
}

/// How many bytes at the start of `bytes` are not UTF-8 and cannot become
/// UTF-8 whatever follows them, as `str::from_utf8` counts them; `None` if
/// `bytes` starts with a valid character, the start of one cut by its end,
/// or nothing.
pub(super) fn invalid_len(bytes: &[u8]) -> Option<usize> {
    // No invalid sequence is longer than 3 bytes, so the first 4 decide.
    match std::str::from_utf8(&bytes[..bytes.len().min(4)]) {
        Err(error) if error.valid_up_to() == 0 => error.error_len(),
        _ => None,
    }
}

/// The character whose UTF-8 encoding starts `bytes`, and its length, if it
/// is whole and valid.
///
/// Two- and three-byte characters (all of the Basic Multilingual Plane) are
/// decoded here, as `str::from_utf8` would accept them: no overlong forms,
/// no surrogates. A function call to validate each character cost as much as
/// mapping it. Four-byte ones, rare, are left to `str::from_utf8`.
fn decode_char(bytes: &[u8]) -> Option<(char, usize)> {
    let continuation = |byte: u8| u32::from(byte & 0x3F);
    let (code, width) = match *bytes {
        [lead @ 0x00..=0x7F, ..] => (u32::from(lead), 1),
        [lead @ 0xC2..=0xDF, second @ 0x80..=0xBF, ..] => {
            (u32::from(lead & 0x1F) << 6 | continuation(second), 2)
        }
        [lead @ 0xE0..=0xEF, second, third @ 0x80..=0xBF, ..]
            if matches!(
                (lead, second),
                (0xE0, 0xA0..=0xBF) | (0xE1..=0xEC | 0xEE..=0xEF, 0x80..=0xBF) | (0xED, 0x80..=0x9F)
            ) =>
        {
            let code = u32::from(lead & 0x0F) << 12 | continuation(second) << 6;
            (code | continuation(third), 3)
        }
        [0xF0..=0xF4, ..] => {
            let text = std::str::from_utf8(bytes.get(..4)?).ok()?;
            return text.chars().next().map(|character| (character, 4));
        }
        _ => return None,
    };
    char::from_u32(code).map(|character| (character, width))
}

/// The second byte of the uppercase of a Latin-1 character (U+0080–U+00FF,
/// encoded `lead`, `second`), where it is a Latin-1 character too: all of
/// them but `µ` (U+00B5, to Greek `Μ`) and `ß` (U+00DF, to `SS`).
fn upcase_latin1(lead: u8, second: u8) -> Option<u8> {
    match (lead, second) {
        // U+00E0–U+00FE, lowercase à…þ but ÷: 0x20 below.
        (0xC3, 0xA0..=0xBE) if second != 0xB7 => Some(second - 0x20),
        // U+0080–U+00DE and ÷ are their own uppercase.
        (0xC2, _) if second != 0xB5 => Some(second),
        (0xC3, 0x80..=0x9E | 0xB7) => Some(second),
        _ => None,
    }
}

fn push_upper(character: char, out: &mut Vec<u8>) {
    for upper in character.to_uppercase() {
        push_char(upper, out);
    }
}

fn push_char(character: char, out: &mut Vec<u8>) {
    let mut buffer = [0; 4];
    match *character.encode_utf8(&mut buffer).as_bytes() {
        // At a fixed length, as above.
        [first, second] => out.extend_from_slice(&[first, second]),
        [first, second, third] => out.extend_from_slice(&[first, second, third]),
        ref encoded => out.extend_from_slice(encoded),
    }
}

/// The uppercase of a character, as [`CaseTable::upper`] knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upper {
    /// The character is its own uppercase (all of CJK, punctuation…).
    Same,
    /// One other character (most of Greek and Cyrillic).
    One(char),
    /// Not in the table: ask `char::to_uppercase`.
    Several,
}

/// The characters of the Basic Multilingual Plane that are their own
/// uppercase, one bit each, and the one-character uppercase of each
/// two-byte character: answers in one lookup what `char::to_uppercase`
/// finds by binary search. Built once, at first use, from
/// `char::to_uppercase` itself, so the two cannot disagree.
struct CaseTable {
    /// Bit `c % 64` of word `c / 64` is set if `c` is its own uppercase.
    same: Box<[u64]>,
    /// For U+0000–U+07FF: the uppercase if it is one character, else NUL.
    two_byte: Box<[char]>,
}

const BMP_END: u32 = 0x1_0000;
const TWO_BYTE_END: u32 = 0x800;

fn case_table() -> &'static CaseTable {
    static TABLE: std::sync::OnceLock<CaseTable> = std::sync::OnceLock::new();
    TABLE.get_or_init(CaseTable::build)
}

impl CaseTable {
    fn build() -> Self {
        let mut same = vec![0u64; (BMP_END / 64) as usize].into_boxed_slice();
        let mut two_byte = vec!['\0'; TWO_BYTE_END as usize].into_boxed_slice();
        for character in (0..BMP_END).filter_map(char::from_u32) {
            let mut upper = character.to_uppercase();
            let only = match (upper.next(), upper.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            };
            let code = character as usize;
            if only == Some(character) {
                same[code / 64] |= 1 << (code % 64);
            }
            if let (Some(slot), Some(only)) = (two_byte.get_mut(code), only) {
                *slot = only;
            }
        }
        Self { same, two_byte }
    }

    fn upper(&self, character: char) -> Upper {
        let code = character as usize;
        match self.same.get(code / 64) {
            Some(bits) if bits & (1 << (code % 64)) != 0 => Upper::Same,
            _ => match self.two_byte.get(code) {
                Some(&upper) if upper != '\0' => Upper::One(upper),
                _ => Upper::Several,
            },
        }
    }
}

/// The first segment [`upcase_ascii_run`] maps in one pass: in prose with
/// accents ASCII runs are short, so the run up to [`FIRST_SEGMENT`] bytes is
/// measured first, a word at a time; each longer segment that is all ASCII
/// doubles the next, up to [`MAX_SEGMENT`].
const FIRST_SEGMENT: usize = 64;
const MAX_SEGMENT: usize = 16 * 1024;

/// Maps the leading ASCII bytes of `bytes`, up to the first non-ASCII one;
/// returns how many it took.
///
/// Past [`FIRST_SEGMENT`], one pass per segment reads the input, ORs every
/// byte into a check and writes the mapping to `out`, with no branch per
/// byte: `Vec::extend` from a slice's `map` knows its length, so the
/// compiler makes vector instructions of it. The mapping leaves bytes above
/// 0x7F as they are, so when the check finds one, the output up to it is
/// right and only what follows is cut off again.
fn upcase_ascii_run(bytes: &[u8], out: &mut Vec<u8>) -> usize {
    let first = &bytes[..FIRST_SEGMENT.min(bytes.len())];
    let ascii = leading_ascii(first);
    out.extend(first[..ascii].iter().map(|&byte| upcase_ascii_byte(byte)));
    if ascii < FIRST_SEGMENT {
        return ascii;
    }
    let mut taken = ascii;
    let mut segment = 2 * FIRST_SEGMENT;
    loop {
        let rest = &bytes[taken..];
        let input = &rest[..segment.min(rest.len())];
        if input.is_empty() {
            return taken;
        }
        let start = out.len();
        let mut seen = 0;
        out.extend(input.iter().map(|&byte| {
            seen |= byte;
            upcase_ascii_byte(byte)
        }));
        if seen >= 0x80 {
            let ascii = leading_ascii(input);
            out.truncate(start + ascii);
            return taken + ascii;
        }
        taken += input.len();
        segment = (segment * 2).min(MAX_SEGMENT);
    }
}

/// How many bytes at the start of `bytes` are ASCII, counted eight at a
/// time.
fn leading_ascii(bytes: &[u8]) -> usize {
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let mut words = bytes.chunks_exact(8);
    let mut count = 0;
    for word in &mut words {
        let Ok(word) = <[u8; 8]>::try_from(word) else {
            break;
        };
        let high = u64::from_le_bytes(word) & HIGH_BITS;
        if high != 0 {
            return count + (high.trailing_zeros() / 8) as usize;
        }
        count += 8;
    }
    count
        + words
            .remainder()
            .iter()
            .take_while(|byte| byte.is_ascii())
            .count()
}

/// `byte - 0x20` where `byte` is `a..=z`, else `byte` (also above 0x7F), as
/// a select rather than a branch.
fn upcase_ascii_byte(byte: u8) -> u8 {
    byte - (u8::from(byte.wrapping_sub(b'a') < 26) << 5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upcase_bytes;

    #[test]
    fn decodes_every_short_sequence_as_from_utf8_does() {
        let mut bytes = [0u8; 4];
        for lead in 0..=u8::MAX {
            for second in 0..=u8::MAX {
                // The third byte matters only after a three-byte lead.
                let thirds = if (0xE0..=0xEF).contains(&lead) {
                    0..=u8::MAX
                } else {
                    0x80..=0x80
                };
                for third in thirds {
                    bytes[..3].copy_from_slice(&[lead, second, third]);
                    let expected = (1..=3).find_map(|width| {
                        let text = std::str::from_utf8(&bytes[..width]).ok()?;
                        text.chars().next().map(|character| (character, width))
                    });
                    assert_eq!(decode_char(&bytes[..3]), expected, "{bytes:x?}");
                }
            }
        }
        assert_eq!(decode_char("😀".as_bytes()), Some(('😀', 4)));
        assert_eq!(decode_char(&"😀".as_bytes()[..3]), None);
        assert_eq!(decode_char(&[0xED, 0xA0, 0x80]), None, "a surrogate");
        assert_eq!(decode_char(&[0xE0, 0x80, 0x80]), None, "overlong");
        assert_eq!(decode_char(&[0xC2]), None, "cut");
    }

    #[test]
    fn the_byte_mapping_is_to_ascii_uppercase_on_every_byte() {
        for byte in 0..=u8::MAX {
            assert_eq!(
                upcase_ascii_byte(byte),
                byte.to_ascii_uppercase(),
                "{byte:#x}"
            );
        }
    }

    #[test]
    fn ascii_runs_of_every_length_around_the_segments() {
        for ascii in (0..200).chain(FIRST_SEGMENT * 3 - 2..FIRST_SEGMENT * 3 + 2) {
            let text = format!("{}ñ{}", "a".repeat(ascii), "b".repeat(ascii));
            assert_eq!(
                upcase_bytes(text.as_bytes()),
                text.to_uppercase().as_bytes()
            );
        }
    }
}
