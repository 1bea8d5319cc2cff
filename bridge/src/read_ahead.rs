//! The client's connection as tungstenite reads it: small reads while
//! messages are small, big ones while a burst lasts, and no buffer of its
//! own in between.
//!
//! tungstenite reads at most its `read_buffer_size` at a time, and every
//! session holds that buffer for its whole life. A small one keeps idle
//! sessions small (most of a bridge's sessions are idle, and a browser's
//! lines are short), but then a big message takes a system call for every
//! few hundred bytes. [`ReadAhead`] lets both hold: it reads straight into
//! tungstenite's buffer until a read fills it (a sign that more is
//! waiting); from then on it reads [`CHUNK`] bytes at a time into a buffer
//! of its own and hands them over from there, and it frees that buffer as
//! soon as it is emptied (while the target holds the session back in the
//! middle of a burst, at most [`CHUNK`] bytes wait in it). Only the bytes
//! are buffered, never a frame: the WebSocket protocol stays tungstenite's.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

/// The most bytes read ahead at once.
pub const CHUNK: usize = 64 * 1024;

/// A connection whose reads grow while a burst lasts; writes pass through.
#[derive(Debug)]
pub struct ReadAhead<S> {
    inner: S,
    /// Bytes read ahead, of which `ahead[taken..]` are not handed over yet.
    /// Empty, with nothing allocated, outside a burst.
    ahead: Vec<u8>,
    taken: usize,
    /// The last read filled all it was offered: more is probably waiting.
    bursting: bool,
}

impl<S> ReadAhead<S> {
    /// Wraps `inner`, with nothing read ahead yet.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            ahead: Vec::new(),
            taken: 0,
            bursting: false,
        }
    }

    /// Moves what was read ahead into `buf`, and frees the buffer once it is
    /// empty. Whether anything was moved.
    fn hand_over(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let waiting = &self.ahead[self.taken..];
        if waiting.is_empty() {
            return false;
        }
        let n = waiting.len().min(buf.remaining());
        buf.put_slice(&waiting[..n]);
        self.taken += n;
        if self.taken == self.ahead.len() {
            self.ahead = Vec::new();
            self.taken = 0;
        }
        true
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 || this.hand_over(buf) {
            return Poll::Ready(Ok(()));
        }
        if !this.bursting || buf.remaining() >= CHUNK {
            let offered = buf.remaining();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            this.bursting = offered - buf.remaining() == offered;
            return Poll::Ready(Ok(()));
        }
        let mut ahead = Vec::with_capacity(CHUNK);
        match poll_read_buf(Pin::new(&mut this.inner), cx, &mut ahead) {
            // The burst is over: the buffer goes, and the next read is a
            // small one again.
            Poll::Pending => {
                this.bursting = false;
                Poll::Pending
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            // The end of the stream: nothing to keep.
            Poll::Ready(Ok(0)) => {
                this.bursting = false;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(read)) => {
                this.bursting = read == CHUNK;
                this.ahead = ahead;
                this.hand_over(buf);
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Reads everything through a `ReadAhead` with reads of `window` bytes,
    /// as tungstenite does, while the far end writes `writes` one by one.
    async fn read_through(writes: Vec<Vec<u8>>, window: usize, pipe: usize) -> (Vec<u8>, usize) {
        let (near, mut far) = tokio::io::duplex(pipe);
        let writer = tokio::spawn(async move {
            for write in writes {
                far.write_all(&write).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut reader = ReadAhead::new(near);
        let (mut got, mut most_held) = (Vec::new(), 0);
        let mut window_buf = vec![0; window];
        loop {
            let n = reader.read(&mut window_buf).await.unwrap();
            most_held = most_held.max(reader.ahead.capacity());
            if n == 0 {
                break;
            }
            got.extend_from_slice(&window_buf[..n]);
        }
        writer.await.unwrap();
        assert!(reader.ahead.capacity() == 0, "a buffer left behind");
        (got, most_held)
    }

    #[tokio::test]
    async fn small_reads_take_no_buffer_and_a_burst_is_read_in_chunks() {
        let (got, most_held) = read_through(vec![b"hola\n".to_vec()], 256, 64).await;
        assert_eq!(got, b"hola\n");
        assert_eq!(most_held, 0);

        let burst: Vec<u8> = (0..=255).cycle().take(3 * CHUNK + 17).collect();
        let (got, most_held) = read_through(vec![burst.clone()], 256, 4 * CHUNK).await;
        assert_eq!(got, burst);
        assert_eq!(most_held, CHUNK);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// However the bytes are cut and however small the window, every
        /// byte arrives once, in order.
        #[test]
        fn any_cut_and_window_delivers_every_byte_in_order(
            writes in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..3000), 0..20),
            window in 1usize..2048,
            pipe in 1usize..100_000,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let expected: Vec<u8> = writes.concat();
            let (got, _) = runtime.block_on(read_through(writes, window, pipe));
            prop_assert_eq!(got, expected);
        }
    }
}
