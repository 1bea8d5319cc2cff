//! The `tracing` events of a daemon's library run inside the test, captured
//! as log lines a test can wait for: what an in-process `servidor::serve`
//! logs, without starting the binary.
//!
//! The lines carry the transcript's level prefixes (`aviso: `, `error: `,
//! `depuración: `) and each event's message, then its other fields as
//! ` name=value`; spans are not shown. The binary's exact format is tested
//! at process level.

use std::fmt::{self, Write as _};

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
    let book = LogBook::default();
    let writer = BookWriter(book.clone());
    let subscriber = console::transcript_subscriber(filter, move || writer.clone());
    CapturedLog {
        book,
        _guard: tracing::subscriber::set_default(subscriber),
    }
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
