//! Fuzz target for `upcase::Upcase`, the transform servidor
//! applies to every byte it reads: checks it against the rules in
//! upcase.rs's module comment, with the stream cut where the fuzzer says.
//!
//! Input: byte 0 modulo 16 is a count `k`; the next `k` bytes are the
//! lengths of the first `k` pieces the stream is fed in (cut short where the
//! stream ends); the rest of the input is the stream, and what the pieces
//! leave of it is fed last. A seed is therefore a header and then readable
//! text: `seeds/upcase/`.
//!
//! Checked:
//! - fed in those pieces, the output is exactly the output of feeding the
//!   stream whole;
//! - that output is [`reference`]: each valid run uppercased by
//!   `str::to_uppercase`, every other byte (an incomplete character at the
//!   end of the stream included) copied as it is; for valid UTF-8 this is
//!   `str::to_uppercase` of the whole text;
//! - what is held between calls is a character's incomplete start, at most
//!   `MAX_PENDING` bytes, and nothing after `finish`;
//! - the growth bounds `MAX_GROWTH` documents;
//! - after `finish` the same transform gives the same output for a new
//!   stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use upcase::{upcase_bytes, Upcase, MAX_GROWTH};
use upcase::utf8_stream::MAX_PENDING;

fuzz_target!(|data: &[u8]| {
    let (pieces, stream) = pieces_of(data);

    let mut transform = Upcase::new();
    let mut fed = Vec::new();
    for piece in &pieces {
        let before = fed.len();
        let held_before = transform.pending().len();
        transform.feed(piece, &mut fed);
        let written = fed.len() - before;
        assert!(
            written <= MAX_GROWTH * (held_before + piece.len()),
            "{written} bytes out for {} in and {held_before} held",
            piece.len()
        );
        let held = transform.pending();
        assert!(held.len() <= MAX_PENDING, "holds {held:x?}");
        assert!(is_incomplete_character(held), "holds {held:x?}");
    }
    transform.finish(&mut fed);
    assert!(transform.pending().is_empty(), "holds after finish");

    let whole = upcase_bytes(stream);
    assert_eq!(fed, whole, "cut as {pieces:x?}, the output differs");
    assert_eq!(whole, reference(stream), "not the reference");
    if let Ok(text) = std::str::from_utf8(stream) {
        assert_eq!(whole, text.to_uppercase().as_bytes());
    }
    assert!(whole.len() <= MAX_GROWTH * stream.len());

    let mut again = Vec::new();
    transform.feed(stream, &mut again);
    transform.finish(&mut again);
    assert_eq!(again, whole, "a transform reused after finish differs");
});

/// The stream in `data` and the pieces it is fed in (see the module
/// comment).
fn pieces_of(data: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let Some((&count, rest)) = data.split_first() else {
        return (Vec::new(), &[]);
    };
    let (lengths, stream) = rest.split_at(usize::from(count % 16).min(rest.len()));
    let mut pieces = Vec::with_capacity(lengths.len() + 1);
    let mut left = stream;
    for &length in lengths {
        let (piece, after) = left.split_at(usize::from(length).min(left.len()));
        pieces.push(piece);
        left = after;
    }
    pieces.push(left);
    (pieces, stream)
}

/// The module comment's rules, written the plainest way. `utf8_chunks`
/// counts an incomplete character at the end of the input as invalid, so it
/// is copied unchanged, as `finish` documents; how the stream was cut does
/// not enter (any split gives the output of the whole).
fn reference(stream: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in stream.utf8_chunks() {
        out.extend_from_slice(chunk.valid().to_uppercase().as_bytes());
        out.extend_from_slice(chunk.invalid());
    }
    out
}

/// Whether `bytes` is nothing or the start of a character that more bytes
/// could complete.
fn is_incomplete_character(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.is_empty(),
        Err(error) => error.valid_up_to() == 0 && error.error_len().is_none(),
    }
}
