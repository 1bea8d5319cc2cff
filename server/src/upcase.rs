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
//! Feeding any input in any split gives exactly the bytes feeding it whole
//! gives. The cutting into characters is [`crate::utf8_stream`]'s job.

use crate::utf8_stream::{Piece, Utf8Stream, MAX_PENDING};

/// No character's full uppercase mapping takes more than three times the
/// bytes of the character itself (`ΐ`, 2 bytes, becomes 3 two-byte
/// characters), so `MAX_GROWTH * input.len()` bounds one call's output.
pub const MAX_GROWTH: usize = 3;

/// A streaming uppercaser. Feed it chunks with [`Upcase::feed`], then call
/// [`Upcase::finish`] at end of stream.
#[derive(Debug, Default, Clone)]
pub struct Upcase {
    decoder: Utf8Stream,
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
        self.decoder.feed(input, |piece| emit_upper(piece, out));
    }

    /// Ends the stream: an incomplete character held back is written out
    /// unchanged, and the transform is ready for a new stream.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.decoder.finish(|piece| emit_upper(piece, out));
    }
}

fn emit_upper(piece: Piece<'_>, out: &mut Vec<u8>) {
    match piece {
        Piece::Text(text) => upcase_str(text, out),
        Piece::Invalid(bytes) => out.extend_from_slice(bytes),
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
///
/// The hot path: ASCII is mapped eight bytes at a time, with no branch per
/// byte, and the Latin-1 letters of Spanish (`ñ`, `á`…) are mapped on their
/// bytes; only other characters go through the Unicode tables.
fn upcase_str(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    let mut at = 0;
    loop {
        at += upcase_ascii_blocks(&bytes[at..], out);
        at += upcase_ascii_words(&bytes[at..], out);
        // Character by character, until ASCII is back for a whole word.
        loop {
            let Some(&byte) = bytes.get(at) else {
                return;
            };
            if byte.is_ascii() {
                if bytes.len() - at >= 8 {
                    break;
                }
                out.push(byte.to_ascii_uppercase());
                at += 1;
            } else {
                // `at` is on a character boundary: only whole characters
                // and ASCII bytes were consumed.
                at += upcase_char_at(&text[at..], out);
            }
        }
    }
}

/// Maps the leading 32-byte blocks of `bytes` that are all ASCII, with no
/// branch per byte (the compiler makes vector instructions of it); returns
/// how many bytes it took.
fn upcase_ascii_blocks(bytes: &[u8], out: &mut Vec<u8>) -> usize {
    const BLOCK: usize = 32;
    let mut taken = 0;
    for block in bytes.chunks_exact(BLOCK) {
        let Ok(block) = <&[u8; BLOCK]>::try_from(block) else {
            break;
        };
        if block.iter().fold(0, |seen, &b| seen | b) >= 0x80 {
            break;
        }
        out.extend_from_slice(&block.map(|b| b.to_ascii_uppercase()));
        taken += BLOCK;
    }
    taken
}

/// Maps `bytes` eight at a time up to its first non-ASCII byte (or its last
/// whole word); returns how many bytes it took.
fn upcase_ascii_words(bytes: &[u8], out: &mut Vec<u8>) -> usize {
    let mut taken = 0;
    for word in bytes.chunks_exact(8) {
        let Ok(word) = <[u8; 8]>::try_from(word) else {
            break;
        };
        let word = u64::from_le_bytes(word);
        let high = word & HIGH_BITS;
        let upper = upcase_ascii_word(word).to_le_bytes();
        if high != 0 {
            // The bytes below the first non-ASCII one are ASCII, and their
            // mapping is right: carries only move upwards.
            let ascii = (high.trailing_zeros() / 8) as usize;
            out.extend_from_slice(&upper[..ascii]);
            return taken + ascii;
        }
        out.extend_from_slice(&upper);
        taken += 8;
    }
    taken
}

const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// Uppercases the eight ASCII bytes of `word` at once: a byte's high bit is
/// set after adding 0x1F iff it is at least `a`, and after adding 0x05 iff
/// it is above `z`; where exactly one is set, 0x20 is taken away. (No byte
/// below 0x80 carries into the next.)
fn upcase_ascii_word(word: u64) -> u64 {
    let at_least_a = word.wrapping_add(0x1F1F_1F1F_1F1F_1F1F);
    let above_z = word.wrapping_add(0x0505_0505_0505_0505);
    let lowercase = (at_least_a ^ above_z) & HIGH_BITS;
    word ^ (lowercase >> 2)
}

/// Appends the uppercase of the non-ASCII character starting `text`,
/// returning its length in bytes.
///
/// Latin-1 characters (U+0080–U+00FF: `ñ`, `á`, `ü`, `¿`…), the non-ASCII
/// characters of Spanish and most Western text, are mapped on their bytes;
/// the rest goes through the full Unicode tables.
fn upcase_char_at(text: &str, out: &mut Vec<u8>) -> usize {
    if let [lead @ (0xC2 | 0xC3), second, ..] = *text.as_bytes() {
        let mapped = match (lead, second) {
            // U+00E0–U+00FE, lowercase à…þ but ÷: 0x20 below.
            (0xC3, 0xA0..=0xBE) if second != 0xB7 => Some(second - 0x20),
            // U+0080–U+00DE and ÷ are their own uppercase, but µ (U+00B5,
            // to Greek Μ) and ß (U+00DF, to SS) are not.
            (0xC2, _) if second != 0xB5 => Some(second),
            (0xC3, 0x80..=0x9E | 0xB7) => Some(second),
            _ => None,
        };
        if let Some(mapped) = mapped {
            out.extend_from_slice(&[lead, mapped]);
            return 2;
        }
    }
    match text.chars().next() {
        Some(character) => {
            push_upper(character, out);
            character.len_utf8()
        }
        None => 0,
    }
}

fn push_upper(character: char, out: &mut Vec<u8>) {
    let mut buffer = [0u8; 4];
    for upper in character.to_uppercase() {
        out.extend_from_slice(upper.encode_utf8(&mut buffer).as_bytes());
    }
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
    fn the_word_mapping_agrees_with_to_ascii_uppercase_on_every_byte() {
        for byte in 0..0x80u8 {
            for position in 0..8 {
                let mut bytes = *b"zaZA@[`{";
                bytes[position] = byte;
                let mapped = upcase_ascii_word(u64::from_le_bytes(bytes)).to_le_bytes();
                assert_eq!(mapped, bytes.map(|b| b.to_ascii_uppercase()), "{byte:#x}");
            }
        }
    }

    #[test]
    fn ascii_before_a_character_in_the_same_word_is_mapped() {
        for ascii in 0..8 {
            let text = format!("{}ñ{}", "a".repeat(ascii), "b".repeat(9));
            assert_eq!(
                upcase_bytes(text.as_bytes()),
                text.to_uppercase().as_bytes()
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

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
        fn output_growth_is_bounded(input in mixed_bytes()) {
            prop_assert!(upcase_bytes(&input).len() <= MAX_GROWTH * input.len());
        }
    }
}
