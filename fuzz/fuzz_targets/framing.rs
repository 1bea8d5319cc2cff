//! Fuzz target for `bridge::framing::Framer`, which turns the bytes the
//! bridge reads from servidor into WebSocket messages: checks what
//! framing.rs's comments promise, with reads and message kinds chosen by the
//! fuzzer.
//!
//! Input: a sequence of reads, each a header byte and then its bytes. The
//! header's high bit picks the kind the client last used (set: binary,
//! clear: text) and its low 7 bits the read's length (cut short where the
//! input ends). Seeds: `seeds/framing/`.
//!
//! Checked:
//! - the payloads, concatenated, are exactly the bytes read;
//! - no payload is empty, and the payloads of one read alternate between
//!   text and binary ("as few messages as order allows");
//! - which bytes go out as text is exactly what the comments say: in text
//!   mode the whole characters, wherever the reads cut them, and in a binary
//!   message the bytes that are not UTF-8, a character still incomplete when
//!   the client switches to binary or the stream ends included; in binary
//!   mode every byte. (A text payload is a `String`, so valid UTF-8 and
//!   whole characters by its type.)
//! - `Framer::frame_owned`, which takes the read's own buffer (the bridge's
//!   path), gives exactly the payloads `frame` gives.

#![no_main]

use bridge::framing::{Framer, Kind, Payload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let reads = reads_of(data);

    let mut framer = Framer::new();
    let mut payloads = Vec::new();
    let mut owned_framer = Framer::new();
    let mut owned_payloads = Vec::new();
    // For each byte read, whether the comments say it goes out as text.
    let mut expected = Vec::new();
    // The reads since the client last switched to text: the characters cut
    // between them are held, so they decode as one.
    let mut text_run = Vec::new();
    for &(kind, bytes) in &reads {
        let start = payloads.len();
        framer.frame(kind, bytes, &mut payloads);
        check_one_read(&payloads[start..]);
        owned_framer.frame_owned(kind, bytes.to_vec(), &mut owned_payloads);
        match kind {
            Kind::Text => text_run.extend_from_slice(bytes),
            Kind::Binary => {
                classify_text_run(&text_run, &mut expected);
                text_run.clear();
                expected.extend(std::iter::repeat_n(false, bytes.len()));
            }
        }
    }
    let start = payloads.len();
    framer.finish(&mut payloads);
    check_one_read(&payloads[start..]);
    classify_text_run(&text_run, &mut expected);
    owned_framer.finish(&mut owned_payloads);
    assert_eq!(owned_payloads, payloads, "reads {reads:x?}");

    let input: Vec<u8> = reads
        .iter()
        .flat_map(|(_, bytes)| *bytes)
        .copied()
        .collect();
    let sent: Vec<u8> = payloads
        .iter()
        .flat_map(Payload::as_bytes)
        .copied()
        .collect();
    assert_eq!(sent, input, "payloads {payloads:x?}");
    let as_text: Vec<bool> = payloads
        .iter()
        .flat_map(|payload| {
            let text = matches!(payload, Payload::Text(_));
            std::iter::repeat_n(text, payload.as_bytes().len())
        })
        .collect();
    assert_eq!(
        as_text, expected,
        "reads {reads:x?}, payloads {payloads:x?}"
    );
});

/// The reads in `data` (see the module comment).
fn reads_of(data: &[u8]) -> Vec<(Kind, &[u8])> {
    let mut reads = Vec::new();
    let mut rest = data;
    while let Some((&header, after)) = rest.split_first() {
        let kind = if header & 0x80 == 0 {
            Kind::Text
        } else {
            Kind::Binary
        };
        let (bytes, after) = after.split_at(usize::from(header & 0x7F).min(after.len()));
        reads.push((kind, bytes));
        rest = after;
    }
    reads
}

/// The payloads of one call: none empty, and never two of a kind in a row,
/// which one message would have carried.
fn check_one_read(payloads: &[Payload]) {
    for payload in payloads {
        assert!(!payload.as_bytes().is_empty(), "an empty payload");
    }
    for pair in payloads.windows(2) {
        assert_ne!(
            std::mem::discriminant(&pair[0]),
            std::mem::discriminant(&pair[1]),
            "two payloads of one kind in a row: {payloads:x?}"
        );
    }
}

/// Appends, for each byte of reads made in text mode, whether it is part of
/// a whole, valid character; `utf8_chunks` counts a character cut by the end
/// of the run as invalid, as the framer does on a switch to binary or at the
/// end of the stream.
fn classify_text_run(run: &[u8], expected: &mut Vec<bool>) {
    for chunk in run.utf8_chunks() {
        expected.extend(std::iter::repeat_n(true, chunk.valid().len()));
        expected.extend(std::iter::repeat_n(false, chunk.invalid().len()));
    }
}
