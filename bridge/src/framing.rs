//! Target → client framing: bytes read from the TCP target become WebSocket
//! messages, with no I/O here.
//!
//! A text message may only carry whole, valid UTF-8 characters, but a TCP
//! read can end inside a character and a target can send any bytes. So, in
//! text mode, characters split across reads are held until complete, and
//! bytes that are not UTF-8 go out in a binary message of their own. Nothing
//! is dropped, replaced or reordered: the payloads, concatenated, are exactly
//! the bytes the target sent.

use upcase::utf8_stream::{Piece, Utf8Stream};

/// The message type the client last used, which answers follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text messages (the default, as a browser's `ws.send("hola")`).
    Text,
    /// Binary messages.
    Binary,
}

/// One WebSocket message's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Whole, valid UTF-8 characters.
    Text(String),
    /// Any bytes.
    Binary(Vec<u8>),
}

impl Payload {
    /// The bytes carried.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Payload::Text(text) => text.as_bytes(),
            Payload::Binary(bytes) => bytes,
        }
    }
}

/// Turns the target's byte stream into message payloads.
#[derive(Debug, Default)]
pub struct Framer {
    decoder: Utf8Stream,
}

impl Framer {
    /// A framer with nothing held.
    pub fn new() -> Self {
        Self::default()
    }

    /// Frames `input` as `kind` messages, appending them to `out`.
    pub fn frame(&mut self, kind: Kind, input: &[u8], out: &mut Vec<Payload>) {
        let mut batch = Batch::default();
        match kind {
            Kind::Text => self.decoder.feed(input, |piece| batch.add(piece)),
            Kind::Binary => {
                // A character held from text mode goes first, as bytes.
                self.decoder.finish(|piece| batch.add(piece));
                batch.add(Piece::Invalid(input));
            }
        }
        batch.end(out);
    }

    /// Like [`Framer::frame`], but takes the read's own buffer: when it can
    /// go out whole as one message (nothing held, and in text mode all of
    /// it whole, valid characters: the usual case), it becomes that message
    /// without being copied.
    pub fn frame_owned(&mut self, kind: Kind, input: Vec<u8>, out: &mut Vec<Payload>) {
        if input.is_empty() || !self.decoder.pending().is_empty() {
            return self.frame(kind, &input, out);
        }
        match kind {
            Kind::Binary => out.push(Payload::Binary(input)),
            Kind::Text => match String::from_utf8(input) {
                Ok(text) => out.push(Payload::Text(text)),
                Err(not_text) => self.frame(kind, not_text.as_bytes(), out),
            },
        }
    }

    /// Ends the stream: a held incomplete character goes out as binary.
    pub fn finish(&mut self, out: &mut Vec<Payload>) {
        let mut batch = Batch::default();
        self.decoder.finish(|piece| batch.add(piece));
        batch.end(out);
    }
}

/// Pieces of one read being grouped into as few messages as order allows.
#[derive(Default)]
struct Batch {
    done: Vec<Payload>,
    text: String,
    binary: Vec<u8>,
}

impl Batch {
    fn add(&mut self, piece: Piece<'_>) {
        match piece {
            Piece::Text(text) => {
                if !self.binary.is_empty() {
                    self.done
                        .push(Payload::Binary(std::mem::take(&mut self.binary)));
                }
                self.text.push_str(text);
            }
            Piece::Invalid(bytes) => {
                if !self.text.is_empty() {
                    self.done
                        .push(Payload::Text(std::mem::take(&mut self.text)));
                }
                self.binary.extend_from_slice(bytes);
            }
        }
    }

    fn end(mut self, out: &mut Vec<Payload>) {
        out.append(&mut self.done);
        if !self.text.is_empty() {
            out.push(Payload::Text(self.text));
        }
        if !self.binary.is_empty() {
            out.push(Payload::Binary(self.binary));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame_all(parts: &[(Kind, Vec<u8>)]) -> Vec<Payload> {
        let mut framer = Framer::new();
        let mut out = Vec::new();
        for (kind, bytes) in parts {
            framer.frame(*kind, bytes, &mut out);
        }
        framer.finish(&mut out);
        out
    }

    fn frame_all_owned(parts: &[(Kind, Vec<u8>)]) -> Vec<Payload> {
        let mut framer = Framer::new();
        let mut out = Vec::new();
        for (kind, bytes) in parts {
            framer.frame_owned(*kind, bytes.clone(), &mut out);
        }
        framer.finish(&mut out);
        out
    }

    #[test]
    fn a_four_byte_character_written_one_byte_at_a_time_arrives_whole() {
        let parts: Vec<_> = "😀".bytes().map(|b| (Kind::Text, vec![b])).collect();
        assert_eq!(frame_all(&parts), [Payload::Text("😀".into())]);
    }

    #[test]
    fn invalid_bytes_go_out_in_a_binary_message() {
        let out = frame_all(&[(Kind::Text, b"ab\xFF\xFEcd".to_vec())]);
        assert_eq!(
            out,
            [
                Payload::Text("ab".into()),
                Payload::Binary(vec![0xFF, 0xFE]),
                Payload::Text("cd".into())
            ]
        );
    }

    #[test]
    fn binary_mode_sends_bytes_as_they_are() {
        let out = frame_all(&[(Kind::Binary, "ñ".as_bytes()[..1].to_vec())]);
        assert_eq!(out, [Payload::Binary(vec![0xC3])]);
    }

    #[test]
    fn a_character_held_in_text_mode_is_not_lost_on_switching_to_binary() {
        let ene = "ñ".as_bytes();
        let out = frame_all(&[
            (Kind::Text, ene[..1].to_vec()),
            (Kind::Binary, ene[1..].to_vec()),
        ]);
        assert_eq!(out, [Payload::Binary(ene.to_vec())]);
    }

    #[test]
    fn an_incomplete_tail_is_flushed_as_binary() {
        let out = frame_all(&[(Kind::Text, b"fin\xF0\x9F".to_vec())]);
        assert_eq!(
            out,
            [
                Payload::Text("fin".into()),
                Payload::Binary(vec![0xF0, 0x9F])
            ]
        );
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![3 => Just(Kind::Text), 1 => Just(Kind::Binary)]
    }

    proptest! {
        #[test]
        fn payloads_concatenate_to_the_input(
            parts in prop::collection::vec((kind(), prop::collection::vec(any::<u8>(), 0..12)), 0..12),
        ) {
            let input: Vec<u8> = parts.iter().flat_map(|(_, bytes)| bytes.clone()).collect();
            let out = frame_all(&parts);
            let joined: Vec<u8> = out.iter().flat_map(|p| p.as_bytes().to_vec()).collect();
            prop_assert_eq!(joined, input);
            prop_assert!(out.iter().all(|p| !p.as_bytes().is_empty()));
        }

        #[test]
        fn framing_the_reads_own_buffer_gives_the_same_messages(
            parts in prop::collection::vec(
                (kind(), prop_oneof![
                    prop::collection::vec(any::<u8>(), 0..12),
                    any::<String>().prop_map(String::into_bytes),
                ]),
                0..12),
        ) {
            prop_assert_eq!(frame_all_owned(&parts), frame_all(&parts));
        }

        #[test]
        fn valid_text_in_text_mode_is_only_text_messages(
            text in any::<String>(),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            cuts.push(bytes.len());
            let mut start = 0;
            let mut parts = Vec::new();
            for cut in cuts {
                parts.push((Kind::Text, bytes[start..cut].to_vec()));
                start = cut;
            }
            let out = frame_all(&parts);
            let mut joined = String::new();
            for payload in out {
                match payload {
                    Payload::Text(part) => joined.push_str(&part),
                    Payload::Binary(bytes) => prop_assert!(false, "binary {:?}", bytes),
                }
            }
            prop_assert_eq!(joined, text);
        }
    }
}
