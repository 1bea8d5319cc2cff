//! The uppercase stream transform: bytes in, bytes out, in any chunking.
//!
//! This is the logic of the tutorial's `data.upper()`, made safe for a byte
//! stream. It does no I/O, so the server, the bridge and the benchmarks share
//! it and the property tests can cut its input every possible way.
//!
//! Rules:
//! - valid UTF-8 is uppercased per character with Unicode full case mapping,
//!   as Python's `str.upper()` does (`ß` → `SS`), so output can be up to
//!   [`MAX_GROWTH`] times longer than input;
//! - a character split across two calls is held (at most 3 bytes) until it
//!   completes;
//! - bytes that are not valid UTF-8 pass through unchanged;
//! - [`Upcase::finish`] flushes an incomplete tail unchanged.
//!
//! The transform counts the bytes it passed through because they were not
//! UTF-8 ([`Upcase::take_invalid`]), for the server's metrics: only where
//! such bytes are met, so valid text costs nothing more.
//!
//! Feeding any input in any split gives exactly the bytes feeding it whole
//! gives. Valid text is decoded and mapped here in one pass; what is
//! invalid or cut between chunks goes to [`crate::utf8_stream`], which
//! decides what is held and what passes through.

use crate::utf8_stream::{Piece, Utf8Stream, MAX_PENDING};

/// No character's full uppercase mapping takes more than three times the
/// bytes of the character itself (`ΐ`, 2 bytes, becomes 3 two-byte
/// characters), so `MAX_GROWTH * input.len()` bounds a whole stream's
/// output, and `MAX_GROWTH * (pending + input.len())` one call's: a call
/// may complete a character held from the last one, whose held bytes
/// ([`Upcase::pending`], at most 3) count too.
pub const MAX_GROWTH: usize = 3;

/// A streaming uppercaser. Feed it chunks with [`Upcase::feed`], then call
/// [`Upcase::finish`] at end of stream.
#[derive(Debug, Default, Clone)]
pub struct Upcase {
    decoder: Utf8Stream,
    /// Bytes passed through as not UTF-8 since the last
    /// [`Upcase::take_invalid`].
    invalid: u64,
}

impl Upcase {
    /// A transform with nothing held.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes of an incomplete character held back from the last call.
    pub fn pending(&self) -> &[u8] {
        self.decoder.pending()
    }

    /// Transforms `input`, appending to `out` everything that can be decided
    /// now. At most 3 trailing bytes of an incomplete character are held for
    /// the next call.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + MAX_PENDING);
        // Valid text is checked as it is mapped, character by character, so
        // the hot path makes one pass, and invalid bytes are passed on where
        // they are met; the decoder takes over only for a character cut by
        // the end of `input`, or one it holds from the last call.
        let mut rest = input;
        if self.decoder.pending().is_empty() {
            loop {
                rest = &rest[upcase_valid_prefix(rest, out)..];
                match invalid_len(rest) {
                    Some(invalid) => {
                        out.extend_from_slice(&rest[..invalid]);
                        self.invalid += invalid as u64;
                        rest = &rest[invalid..];
                    }
                    None => break,
                }
            }
        }
        let invalid = &mut self.invalid;
        self.decoder
            .feed(rest, |piece| emit_upper(piece, out, invalid));
    }

    /// Ends the stream: an incomplete character held back is written out
    /// unchanged (and counted as not UTF-8), and the transform is ready for
    /// a new stream.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let invalid = &mut self.invalid;
        self.decoder.finish(|piece| emit_upper(piece, out, invalid));
    }

    /// How many bytes were passed through unchanged because they were not
    /// UTF-8 (an incomplete character flushed by [`Upcase::finish`]
    /// included) since the last call; the count starts again from zero.
    /// A character held back, waiting for its last bytes, is not counted
    /// until it is known to be invalid.
    pub fn take_invalid(&mut self) -> u64 {
        std::mem::take(&mut self.invalid)
    }
}

fn emit_upper(piece: Piece<'_>, out: &mut Vec<u8>, invalid: &mut u64) {
    match piece {
        Piece::Text(text) => upcase_str(text, out),
        Piece::Invalid(bytes) => {
            out.extend_from_slice(bytes);
            *invalid += bytes.len() as u64;
        }
    }
}

/// Transforms a whole input at once (a stream of one chunk).
pub fn upcase_bytes(input: &[u8]) -> Vec<u8> {
    let mut transform = Upcase::new();
    let mut out = Vec::with_capacity(input.len());
    transform.feed(input, &mut out);
    transform.finish(&mut out);
    out
}

/// Appends the full uppercase mapping of `text` to `out`.
fn upcase_str(text: &str, out: &mut Vec<u8>) {
    let mapped = upcase_valid_prefix(text.as_bytes(), out);
    debug_assert_eq!(mapped, text.len(), "a str is valid UTF-8 to its end");
}

/// Maps the longest prefix of `bytes` made of whole, valid UTF-8
/// characters, appending their full uppercase mapping to `out`; returns the
/// prefix's length. It stops at the first byte that is not valid UTF-8 or
/// that starts a character cut by the end of `bytes`.
///
/// The hot path: runs of ASCII are mapped with no branch per byte, and the
/// Latin-1 letters of Spanish (`ñ`, `á`, `¿`…) on their two bytes; only
/// other characters are decoded, one at a time, and go through the Unicode
/// tables.
fn upcase_valid_prefix(bytes: &[u8], out: &mut Vec<u8>) -> usize {
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
fn invalid_len(bytes: &[u8]) -> Option<usize> {
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
    use crate::utf8_stream::tests::{mixed_bytes, pieces_of};
    use proptest::prelude::*;

    fn feed_in_pieces(input: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut transform = Upcase::new();
        let mut out = Vec::new();
        for part in pieces_of(input, cuts) {
            transform.feed(part, &mut out);
        }
        transform.finish(&mut out);
        out
    }

    #[test]
    fn tutorial_example() {
        assert_eq!(upcase_bytes(b"Hola"), b"HOLA");
    }

    #[test]
    fn full_case_mapping_like_python() {
        assert_eq!(
            upcase_bytes("ñandú straße".as_bytes()),
            "ÑANDÚ STRASSE".as_bytes()
        );
        assert_eq!(upcase_bytes("ﬁn".as_bytes()), "FIN".as_bytes());
        assert_eq!(
            upcase_bytes("ΐ".as_bytes()),
            "\u{399}\u{308}\u{301}".as_bytes()
        );
    }

    #[test]
    fn character_split_is_held_then_completed() {
        let mut transform = Upcase::new();
        let mut out = Vec::new();
        for byte in "ñ".as_bytes() {
            transform.feed(&[*byte], &mut out);
        }
        assert_eq!(out, "Ñ".as_bytes());
        assert!(transform.pending().is_empty());
    }

    #[test]
    fn four_byte_character_one_byte_at_a_time() {
        let emoji = "a😀b".as_bytes();
        let mut transform = Upcase::new();
        let mut out = Vec::new();
        for (fed, byte) in emoji.iter().enumerate() {
            transform.feed(&[*byte], &mut out);
            assert!(
                transform.pending().len() <= MAX_PENDING,
                "after {fed} bytes"
            );
        }
        transform.finish(&mut out);
        assert_eq!(out, "A😀B".as_bytes());
    }

    #[test]
    fn invalid_bytes_pass_through() {
        let input = [0xFF, b'a', 0xC3, b'b', 0xE2, 0x82, b'\n', 0xED, 0xA0, 0x80];
        assert_eq!(
            upcase_bytes(&input),
            [0xFF, b'A', 0xC3, b'B', 0xE2, 0x82, b'\n', 0xED, 0xA0, 0x80]
        );
    }

    #[test]
    fn incomplete_tail_is_flushed_at_finish() {
        let mut transform = Upcase::new();
        let mut out = Vec::new();
        transform.feed(&[b'a', 0xF0, 0x9F], &mut out);
        assert_eq!(out, b"A");
        assert_eq!(transform.pending(), &[0xF0, 0x9F]);
        transform.finish(&mut out);
        assert_eq!(out, [b'A', 0xF0, 0x9F]);
        assert!(transform.pending().is_empty());
    }

    #[test]
    fn invalid_bytes_are_counted_once_known() {
        let mut transform = Upcase::new();
        let mut out = Vec::new();
        transform.feed(&[b'a', 0xFF, b'b', 0xE2], &mut out);
        // 0xE2 may still start a character.
        assert_eq!(transform.take_invalid(), 1);
        assert_eq!(transform.take_invalid(), 0);
        transform.feed(&[0x82], &mut out);
        assert_eq!(transform.take_invalid(), 0);
        transform.feed(b"x", &mut out);
        assert_eq!(transform.take_invalid(), 2);
        transform.feed("ñ".as_bytes(), &mut out);
        transform.feed(&[0xF0, 0x9F], &mut out);
        transform.finish(&mut out);
        assert_eq!(transform.take_invalid(), 2);
    }

    #[test]
    fn held_prefix_broken_by_next_chunk() {
        let mut transform = Upcase::new();
        let mut out = Vec::new();
        transform.feed(&[0xE2], &mut out);
        transform.feed(&[0x82, b'x'], &mut out);
        assert_eq!(out, [0xE2, 0x82, b'X']);
    }

    #[test]
    fn every_character_maps_as_str_to_uppercase_does() {
        let mut out = Vec::new();
        for character in (0..=0x10FFFF).filter_map(char::from_u32) {
            out.clear();
            upcase_str(character.encode_utf8(&mut [0; 4]), &mut out);
            let expected = character.to_uppercase().collect::<String>();
            assert_eq!(out, expected.as_bytes(), "{character:?}");
        }
    }

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

    #[test]
    fn one_call_may_write_more_than_max_growth_times_its_input() {
        // `ΐ` held after its first byte: the one byte that completes it
        // gives six, three times the character, not three times the call's
        // input (found by fuzzing; the bound once said the latter).
        let mut transform = Upcase::new();
        let mut out = Vec::new();
        let iota = "ΐ".as_bytes();
        transform.feed(&iota[..1], &mut out);
        let held = transform.pending().len();
        transform.feed(&iota[1..], &mut out);
        assert_eq!(out, "\u{399}\u{308}\u{301}".as_bytes());
        assert!(out.len() > MAX_GROWTH * iota[1..].len());
        assert!(out.len() <= MAX_GROWTH * (held + iota[1..].len()));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn one_call_output_is_bounded_with_the_held_bytes(
            input in mixed_bytes(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut transform = Upcase::new();
            let mut out = Vec::new();
            for part in pieces_of(&input, &cuts) {
                let held = transform.pending().len();
                out.clear();
                transform.feed(part, &mut out);
                prop_assert!(out.len() <= MAX_GROWTH * (held + part.len()));
            }
        }

        #[test]
        fn any_split_gives_the_whole_input_output(
            input in mixed_bytes(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            prop_assert_eq!(feed_in_pieces(&input, &cuts), upcase_bytes(&input));
        }

        #[test]
        fn one_byte_at_a_time_gives_the_whole_input_output(input in mixed_bytes()) {
            let cuts: Vec<usize> = (0..input.len()).collect();
            prop_assert_eq!(feed_in_pieces(&input, &cuts), upcase_bytes(&input));
        }

        #[test]
        fn valid_utf8_equals_str_to_uppercase(text in any::<String>()) {
            prop_assert_eq!(upcase_bytes(text.as_bytes()), text.to_uppercase().into_bytes());
        }

        #[test]
        fn invalid_bytes_are_kept_byte_for_byte(input in mixed_bytes()) {
            let out = upcase_bytes(&input);
            // Undo the mapping chunk by chunk: the invalid sequences must
            // appear in the output, in order, exactly as they were.
            let expected: Vec<u8> = input
                .utf8_chunks()
                .flat_map(|chunk| {
                    let mut part = chunk.valid().to_uppercase().into_bytes();
                    part.extend_from_slice(chunk.invalid());
                    part
                })
                .collect();
            prop_assert_eq!(out, expected);
        }

        #[test]
        fn invalid_bytes_are_counted_as_std_counts_them_in_any_split(
            input in mixed_bytes(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let expected: usize = input.utf8_chunks().map(|chunk| chunk.invalid().len()).sum();
            let mut transform = Upcase::new();
            let mut out = Vec::new();
            let mut counted = 0;
            for part in pieces_of(&input, &cuts) {
                transform.feed(part, &mut out);
                counted += transform.take_invalid();
            }
            transform.finish(&mut out);
            counted += transform.take_invalid();
            prop_assert_eq!(counted, expected as u64);
        }

        #[test]
        fn output_growth_is_bounded(input in mixed_bytes()) {
            prop_assert!(upcase_bytes(&input).len() <= MAX_GROWTH * input.len());
        }
    }
}
