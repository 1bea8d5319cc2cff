//! Decoding a byte stream as UTF-8 without losing a byte: each chunk is cut
//! into runs of whole characters and runs of bytes that are not UTF-8, and a
//! character split across chunks is held until it completes.
//!
//! The uppercase transform uppercases the text runs; the bridge sends them
//! as WebSocket text messages. Neither may drop, replace or reorder a byte,
//! and both must give the same result however the input was cut.

/// A run of the input, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Whole, valid characters.
    Text(&'a str),
    /// Bytes that are not valid UTF-8 (or an incomplete character at the end
    /// of the stream), to be passed on unchanged.
    Invalid(&'a [u8]),
}

/// The longest prefix of a UTF-8 character that can be waiting for more bytes.
pub const MAX_PENDING: usize = 3;

/// A UTF-8 decoder for a stream of chunks. Feed it with [`Utf8Stream::feed`],
/// then call [`Utf8Stream::finish`] at end of stream.
#[derive(Debug, Default, Clone)]
pub struct Utf8Stream {
    pending: [u8; MAX_PENDING],
    pending_len: usize,
}

impl Utf8Stream {
    /// A decoder with nothing held.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes of an incomplete character held back from the last call.
    pub fn pending(&self) -> &[u8] {
        &self.pending[..self.pending_len]
    }

    /// Cuts `input` into pieces, in order, passing each to `emit`. At most 3
    /// trailing bytes of an incomplete character are held for the next call.
    pub fn feed(&mut self, input: &[u8], mut emit: impl FnMut(Piece<'_>)) {
        let Some(rest) = self.complete_pending(input, &mut emit) else {
            return;
        };
        // `str::from_utf8` skips ASCII a word at a time; `utf8_chunks` goes
        // byte by byte, ten times slower on the hot path.
        let mut rest = rest;
        while !rest.is_empty() {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    emit(Piece::Text(text));
                    return;
                }
                Err(error) => {
                    let (valid, after) = rest.split_at(error.valid_up_to());
                    // Checked again (without `unsafe` there is no unchecked
                    // conversion): a second pass only over the text before
                    // an invalid byte, never on valid input.
                    if let Ok(text) = std::str::from_utf8(valid) {
                        if !text.is_empty() {
                            emit(Piece::Text(text));
                        }
                    }
                    match error.error_len() {
                        // A character cut by the end of this input.
                        None => {
                            self.hold(after);
                            return;
                        }
                        Some(invalid_len) => {
                            let (invalid, next) = after.split_at(invalid_len);
                            emit(Piece::Invalid(invalid));
                            rest = next;
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream: an incomplete character held back is emitted as
    /// invalid bytes, and the decoder is ready for a new stream.
    pub fn finish(&mut self, mut emit: impl FnMut(Piece<'_>)) {
        if self.pending_len > 0 {
            emit(Piece::Invalid(&self.pending[..self.pending_len]));
            self.pending_len = 0;
        }
    }

    /// Resolves the held prefix with the first bytes of `input`. Returns the
    /// part of `input` still to decode, or `None` when all of it went into
    /// the held prefix.
    fn complete_pending<'a>(
        &mut self,
        input: &'a [u8],
        emit: &mut impl FnMut(Piece<'_>),
    ) -> Option<&'a [u8]> {
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
                emit(Piece::Text(character));
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
                // `input` that extended them) are not UTF-8.
                Some(invalid_len) => {
                    emit(Piece::Invalid(&joined[..invalid_len]));
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

/// The length a UTF-8 sequence starting with `lead` has when complete.
fn utf8_width(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Text that mixes ASCII, multi-byte characters and invalid bytes, so
    /// that random cuts land inside characters often.
    pub(crate) fn mixed_bytes() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            "[a-zA-Z \n]{0,12}".prop_map(String::into_bytes),
            "[ñáéßﬁΐσςж中😀]{0,6}".prop_map(String::into_bytes),
            any::<char>().prop_map(|c| c.to_string().into_bytes()),
            prop::collection::vec(any::<u8>(), 0..6),
            prop::collection::vec(0x80u8..=0xFF, 0..4),
        ];
        prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
    }

    /// Splits `input` at `cuts` (taken modulo its length, in order).
    pub(crate) fn pieces_of<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.sort_unstable();
        let mut start = 0;
        let mut parts = Vec::new();
        for cut in cuts {
            parts.push(&input[start..cut]);
            start = cut;
        }
        parts.push(&input[start..]);
        parts
    }

    /// Each input byte with whether it was decoded as part of a character.
    fn classify(parts: &[&[u8]]) -> Vec<(u8, bool)> {
        let mut decoder = Utf8Stream::new();
        let mut seen = Vec::new();
        let mut note = |piece: Piece<'_>| match piece {
            Piece::Text(text) => seen.extend(text.bytes().map(|b| (b, true))),
            Piece::Invalid(bytes) => seen.extend(bytes.iter().map(|&b| (b, false))),
        };
        for part in parts {
            decoder.feed(part, &mut note);
            assert!(decoder.pending().len() <= MAX_PENDING);
        }
        decoder.finish(&mut note);
        seen
    }

    #[test]
    fn a_split_character_is_held_then_emitted_whole() {
        let mut decoder = Utf8Stream::new();
        let mut pieces = Vec::new();
        for byte in "ñ".as_bytes() {
            decoder.feed(&[*byte], |piece| pieces.push(format!("{piece:?}")));
        }
        assert_eq!(pieces, ["Text(\"ñ\")"]);
    }

    #[test]
    fn no_empty_pieces() {
        let mut decoder = Utf8Stream::new();
        let mut count = 0;
        decoder.feed(b"", |_| count += 1);
        decoder.feed(b"\xFF", |_| count += 1);
        decoder.feed(b"a", |_| count += 1);
        assert_eq!(count, 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn lossless_and_the_same_for_any_split(
            input in mixed_bytes(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let whole = classify(&[&input]);
            let bytes: Vec<u8> = whole.iter().map(|(b, _)| *b).collect();
            prop_assert_eq!(&bytes, &input);
            prop_assert_eq!(classify(&pieces_of(&input, &cuts)), whole);
        }

        #[test]
        fn valid_utf8_is_all_text(text in any::<String>()) {
            prop_assert!(classify(&[text.as_bytes()]).iter().all(|(_, is_text)| *is_text));
        }
    }
}
