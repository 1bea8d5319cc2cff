//! The `tracing` events of a daemon's library run inside the test, captured
//! as log lines a test can wait for: what an in-process `servidor::serve`
//! logs, without starting the binary.
//!
//! The lines carry the transcript's level prefixes (`aviso: `, `error: `,
//! `depuración: `) and each event's message, then its other fields as
//! ` name=value`; spans are not shown. The binary's exact format is tested
//! at process level.

use std::fmt::{self, Write as _};
use std::sync::Once;

use tracing::field::{Field, Visit};
use tracing::subscriber::DefaultGuard;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

use crate::LogBook;

/// Events captured while this lives, from the thread that made it (so from
/// every task of a `current_thread` runtime, the default of
/// `#[tokio::test]`).
pub struct CapturedLog {
    book: LogBook,
    _guard: DefaultGuard,
}

impl CapturedLog {
    /// The captured lines, to read and to wait on.
    pub fn book(&self) -> &LogBook {
        &self.book
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        self.book.text()
    }

    /// Waits until the capture contains `needle`; then everything so far.
    pub async fn wait_for(&self, needle: &str) -> String {
        self.book.wait_for(needle).await;
        self.book.text()
    }
}

/// Starts capturing this thread's events as the binaries' transcript
/// writes them (`console::transcript_subscriber`: level prefixes, the
/// `[#id]`/`[ws#id]` of the connection's span), through `filter`
/// (`RUST_LOG` syntax).
pub fn capture_transcript(filter: &str) -> CapturedLog {
    anchor();
    let book = LogBook::default();
    let writer = BookWriter(book.clone());
    let subscriber = console::transcript_subscriber(filter, move || writer.clone());
    CapturedLog {
        book,
        _guard: tracing::subscriber::set_default(subscriber),
    }
}

/// Gives every thread a subscriber, before the first capture starts.
///
/// tracing decides once per call site, for the whole process, whether any
/// subscriber wants its events, and while one dispatcher is registered it
/// asks the thread that reaches the call site first. A test running beside
/// a capturing one with no subscriber of its own would answer "no one", and
/// the capturing test would never see that line (seen: a read of servidor's
/// never logged, the wait for it timing out). With a global subscriber
/// that wants everything (and keeps nothing), no thread answers "no one";
/// call sites reached before it was in place are asked again.
fn anchor() {
    static ANCHORED: Once = Once::new();
    ANCHORED.call_once(|| {
        // A global subscriber set by someone else serves as well.
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
        tracing::callsite::rebuild_interest_cache();
    });
}

/// Writes the transcript's bytes into a [`LogBook`] (one event per write).
#[derive(Clone)]
struct BookWriter(LogBook);

impl std::io::Write for BookWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.append(&String::from_utf8_lossy(bytes));
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts capturing the `tracing` events of this thread (every level).
pub fn capture_log() -> CapturedLog {
    anchor();
    let book = LogBook::default();
    let subscriber = tracing_subscriber::registry().with(Lines { book: book.clone() });
    CapturedLog {
        book,
        _guard: tracing::subscriber::set_default(subscriber),
    }
}

/// The layer that writes each event into the book.
struct Lines {
    book: LogBook,
}

impl<S: Subscriber> Layer<S> for Lines {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut line = String::from(match *event.metadata().level() {
            Level::ERROR => "error: ",
            Level::WARN => "aviso: ",
            Level::INFO => "",
            Level::DEBUG | Level::TRACE => "depuración: ",
        });
        let mut fields = Fields::default();
        event.record(&mut fields);
        line.push_str(&fields.message);
        line.push_str(&fields.others);
        line.push('\n');
        self.book.append(&line);
    }
}

/// An event's message, and its other fields as ` name=value`.
#[derive(Default)]
struct Fields {
    message: String,
    others: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.others, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_site_first_reached_by_a_thread_without_a_subscriber_is_still_captured() {
        fn says_hola() {
            tracing::info!("hola desde un hilo");
        }
        let log = capture_log();
        // The call site's first reach, on a thread with no subscriber of its own.
        std::thread::spawn(says_hola).join().unwrap();
        says_hola();
        assert_eq!(log.text(), "hola desde un hilo\n");
    }
}
