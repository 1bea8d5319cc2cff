//! The conversation's bookkeeping, without the browser: which messages await
//! an answer, and answers assembled from WebSocket messages up to their
//! newline, however the bridge cut them.

use std::collections::VecDeque;

/// Messages that may await an answer at once.
pub const MAX_PENDING: usize = 1000;
/// The most bytes of one answer kept for display; the rest is counted.
pub const MAX_SHOWN: usize = 64 * 1024;

/// A complete answer line.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The answer as text (invalid UTF-8 shown as U+FFFD), without its
    /// newline, cut after [`MAX_SHOWN`] bytes.
    pub text: String,
    /// Bytes not shown, if it was cut.
    pub hidden: usize,
    /// Milliseconds since its message was sent, when it answers one.
    pub round_trip_ms: Option<f64>,
}

impl Answer {
    /// The log line, as the tutorial's client prints it, with the time.
    pub fn describe(&self) -> String {
        let mut line = format!("Recibido del servidor: {}", self.text);
        if self.hidden > 0 {
            line.push_str(&format!("… ({} bytes más)", self.hidden));
        }
        if let Some(ms) = self.round_trip_ms {
            line.push_str(&format!(" · {ms:.0} ms"));
        }
        line
    }
}

/// What was sent and what has come back so far.
#[derive(Debug, Default)]
pub struct Conversation {
    sent_at_ms: VecDeque<f64>,
    partial: Vec<u8>,
    hidden: usize,
}

impl Conversation {
    /// Whether another message may be sent now.
    pub fn can_send(&self) -> bool {
        self.sent_at_ms.len() < MAX_PENDING
    }

    /// Notes a message sent at `now_ms`.
    pub fn sent(&mut self, now_ms: f64) {
        self.sent_at_ms.push_back(now_ms);
    }

    /// Takes bytes from the server, returning the answers they complete.
    pub fn received(&mut self, mut bytes: &[u8], now_ms: f64) -> Vec<Answer> {
        let mut answers = Vec::new();
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.keep(&bytes[..end]);
            bytes = &bytes[end + 1..];
            let line = std::mem::take(&mut self.partial);
            answers.push(Answer {
                text: String::from_utf8_lossy(&line).into_owned(),
                hidden: std::mem::take(&mut self.hidden),
                round_trip_ms: self.sent_at_ms.pop_front().map(|at| now_ms - at),
            });
        }
        self.keep(bytes);
        answers
    }

    /// The connection ended: forgets the partial answer and returns how many
    /// messages were left without one.
    pub fn connection_lost(&mut self) -> usize {
        self.partial.clear();
        self.hidden = 0;
        let unanswered = self.sent_at_ms.len();
        self.sent_at_ms.clear();
        unanswered
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = MAX_SHOWN - self.partial.len();
        let kept = bytes.len().min(room);
        self.partial.extend_from_slice(&bytes[..kept]);
        self.hidden += bytes.len() - kept;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_in_pieces_is_assembled_and_timed() {
        let mut conversation = Conversation::default();
        conversation.sent(100.0);
        assert!(conversation.received(b"HO", 101.0).is_empty());
        let answers = conversation.received(b"LA\n", 112.5);
        assert_eq!(
            answers,
            [Answer {
                text: String::from("HOLA"),
                hidden: 0,
                round_trip_ms: Some(12.5)
            }]
        );
    }

    #[test]
    fn the_log_line_reads_like_the_tutorial() {
        let answer = Answer {
            text: String::from("HOLA"),
            hidden: 0,
            round_trip_ms: Some(2.6),
        };
        assert_eq!(answer.describe(), "Recibido del servidor: HOLA · 3 ms");
        let cut = Answer {
            text: String::from("AAA"),
            hidden: 5,
            round_trip_ms: None,
        };
        assert_eq!(cut.describe(), "Recibido del servidor: AAA… (5 bytes más)");
    }

    #[test]
    fn several_answers_in_one_message_pair_in_order() {
        let mut conversation = Conversation::default();
        conversation.sent(1.0);
        conversation.sent(2.0);
        let answers = conversation.received(b"UNO\nDOS\n", 10.0);
        let times: Vec<_> = answers.iter().map(|a| a.round_trip_ms).collect();
        assert_eq!(times, [Some(9.0), Some(8.0)]);
    }

    #[test]
    fn a_character_split_between_messages_is_whole_in_the_answer() {
        let mut conversation = Conversation::default();
        conversation.sent(0.0);
        let ene = "Ñ".as_bytes();
        assert!(conversation.received(&ene[..1], 1.0).is_empty());
        let answers = conversation.received(&[&ene[1..], b"\n"].concat(), 2.0);
        assert_eq!(answers[0].text, "Ñ");
    }

    #[test]
    fn huge_answers_are_cut_for_display() {
        let mut conversation = Conversation::default();
        conversation.sent(0.0);
        let big = vec![b'A'; MAX_SHOWN + 10];
        conversation.received(&big, 1.0);
        let answers = conversation.received(b"\n", 2.0);
        assert_eq!(answers[0].text.len(), MAX_SHOWN);
        assert_eq!(answers[0].hidden, 10);
    }

    #[test]
    fn a_lost_connection_reports_the_unanswered() {
        let mut conversation = Conversation::default();
        conversation.sent(0.0);
        conversation.sent(0.0);
        conversation.received(b"UNO\nD", 1.0);
        assert_eq!(conversation.connection_lost(), 1);
        conversation.sent(5.0);
        let answers = conversation.received(b"TRES\n", 6.0);
        assert_eq!(answers[0].text, "TRES");
    }

    #[test]
    fn pending_messages_are_bounded() {
        let mut conversation = Conversation::default();
        for _ in 0..MAX_PENDING {
            assert!(conversation.can_send());
            conversation.sent(0.0);
        }
        assert!(!conversation.can_send());
    }
}
