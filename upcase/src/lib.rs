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
//!
//! No I/O and no runtime: `servidor`, the bridge, the benchmarks and the
//! fuzz targets all depend on this package alone for the rules.

mod fast;
pub mod utf8_stream;

use self::fast::{invalid_len, upcase_valid_prefix};
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
