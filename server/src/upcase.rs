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
//! gives.

/// No character's full uppercase mapping takes more than three times the
/// bytes of the character itself (`ΐ`, 2 bytes, becomes 3 two-byte
/// characters), so `MAX_GROWTH * input.len()` bounds one call's output.
pub const MAX_GROWTH: usize = 3;

/// The longest prefix of a UTF-8 character that can be waiting for more bytes.
const MAX_PENDING: usize = 3;

/// A streaming uppercaser. Feed it chunks with [`Upcase::feed`], then call
/// [`Upcase::finish`] at end of stream.
#[derive(Debug, Default, Clone)]
pub struct Upcase {
    pending: [u8; MAX_PENDING],
    pending_len: usize,
}

impl Upcase {
    /// A transform with nothing held.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes of an incomplete character held back from the last call.
    pub fn pending(&self) -> &[u8] {
        &self.pending[..self.pending_len]
    }

    /// Transforms `input`, appending to `out` everything that can be decided
    /// now. At most 3 trailing bytes of an incomplete character are held for
    /// the next call.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + self.pending_len);
        let rest = self.complete_pending(input, out);
        let Some(rest) = rest else { return };

        let mut chunks = rest.utf8_chunks().peekable();
        while let Some(chunk) = chunks.next() {
            upcase_str(chunk.valid(), out);
            let invalid = chunk.invalid();
            if chunks.peek().is_none() && is_incomplete(invalid) {
                self.hold(invalid);
            } else {
                out.extend_from_slice(invalid);
            }
        }
    }

    /// Ends the stream: an incomplete character held back is written out
    /// unchanged, and the transform is ready for a new stream.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.pending());
        self.pending_len = 0;
    }

    /// Resolves the held prefix with the first bytes of `input`. Returns the
    /// part of `input` still to transform, or `None` when all of it went into
    /// the held prefix.
    fn complete_pending<'a>(&mut self, input: &'a [u8], out: &mut Vec<u8>) -> Option<&'a [u8]> {
        if self.pending_len == 0 {
            return Some(input);
        }
        let held = self.pending_len;
        let wanted = utf8_width(self.pending[0]) - held;
        let take = wanted.min(input.len());
        let mut joined = [0u8; 4];
        joined[..held].copy_from_slice(self.pending());
        joined[held..held + take].copy_from_slice(&input[..take]);
        let joined = &joined[..held + take];

        match std::str::from_utf8(joined) {
            Ok(character) => {
                upcase_str(character, out);
                self.pending_len = 0;
                Some(&input[take..])
            }
            Err(error) => match error.error_len() {
                // Still a valid prefix, and `input` is used up.
                None => {
                    self.hold(joined);
                    None
                }
                // The held prefix cannot complete: those bytes (and any of
                // `input` that extended them) pass through as they are.
                Some(invalid_len) => {
                    out.extend_from_slice(&joined[..invalid_len]);
                    self.pending_len = 0;
                    Some(&input[invalid_len - held..])
                }
            },
        }
    }

    fn hold(&mut self, bytes: &[u8]) {
        debug_assert!(bytes.len() <= MAX_PENDING);
        self.pending[..bytes.len()].copy_from_slice(bytes);
        self.pending_len = bytes.len();
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
/// ASCII runs are copied and uppercased in bulk: per-character work is only
/// for the non-ASCII characters, which keeps mostly-ASCII text near copy speed.
fn upcase_str(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        let ascii_len = ascii_prefix_len(&bytes[at..]);
        let start = out.len();
        out.extend_from_slice(&bytes[at..at + ascii_len]);
        out[start..].make_ascii_uppercase();
        at += ascii_len;

        // An ASCII byte is never part of a multi-byte character, so the next
        // one is a character boundary.
        let rest = &text[at..];
        let non_ascii_len = rest
            .bytes()
            .position(|b| b.is_ascii())
            .unwrap_or(rest.len());
        for character in rest[..non_ascii_len].chars() {
            push_upper(character, out);
        }
        at += non_ascii_len;
    }
}

fn push_upper(character: char, out: &mut Vec<u8>) {
    let mut buffer = [0u8; 4];
    for upper in character.to_uppercase() {
        out.extend_from_slice(upper.encode_utf8(&mut buffer).as_bytes());
    }
}

/// Length of the leading run of ASCII bytes, a word at a time.
fn ascii_prefix_len(bytes: &[u8]) -> usize {
    const WORD: usize = std::mem::size_of::<u64>();
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let mut at = 0;
    while at + WORD <= bytes.len() {
        let mut word = [0u8; WORD];
        word.copy_from_slice(&bytes[at..at + WORD]);
        let high = u64::from_le_bytes(word) & HIGH_BITS;
        if high != 0 {
            return at + (high.trailing_zeros() / 8) as usize;
        }
        at += WORD;
    }
    at + bytes[at..].iter().take_while(|b| b.is_ascii()).count()
}

/// The length a UTF-8 sequence starting with `lead` has when complete.
fn utf8_width(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

/// Whether `bytes`, found at the very end of the input, is the start of a
/// character that more bytes could still complete.
fn is_incomplete(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && matches!(std::str::from_utf8(bytes), Err(error) if error.error_len().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feed_in_pieces(input: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut transform = Upcase::new();
        let mut out = Vec::new();
        let mut start = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.sort_unstable();
        for cut in cuts {
            transform.feed(&input[start..cut], &mut out);
            start = cut;
        }
        transform.feed(&input[start..], &mut out);
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
    fn ascii_prefix_len_finds_first_high_byte() {
        for len in 0..40 {
            for high in 0..=len {
                let mut bytes = vec![b'a'; len];
                if high < len {
                    bytes[high] = 0xC3;
                }
                assert_eq!(ascii_prefix_len(&bytes), high, "len {len}");
            }
        }
    }

    /// Text that mixes ASCII, multi-byte characters and invalid bytes, so
    /// that random cuts land inside characters often.
    fn mixed_bytes() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            "[a-zA-Z \n]{0,12}".prop_map(String::into_bytes),
            "[ñáéßﬁΐσςж中😀]{0,6}".prop_map(String::into_bytes),
            any::<char>().prop_map(|c| c.to_string().into_bytes()),
            prop::collection::vec(any::<u8>(), 0..6),
            prop::collection::vec(0x80u8..=0xFF, 0..4),
        ];
        prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
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
