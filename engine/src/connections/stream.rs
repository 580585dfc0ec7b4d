//! The stream under one HTTP/1.1 connection, as hyper sees it: the bytes the accept side read
//! ahead (to check the first request's head) put back in front, and hyper's own answers to
//! requests it could not parse (a bodiless 400 or 431 for a later request on a keep-alive
//! connection) rewritten into the engine's JSON, so that every refusal reads the same.
//!
//! How an answer of hyper's own is told apart from the router's: the service counts each
//! response it hands back ([`Answers::owe`]); the first write of each response head spends one.
//! A response head written with nothing owed can only be hyper's own.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http_error::ApiError;

/// Responses the service handed to hyper whose heads have not been written yet.
#[derive(Debug, Default, Clone)]
pub struct Answers(Arc<AtomicUsize>);

impl Answers {
    /// The service hands hyper a response.
    pub fn owe(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    /// A response head is being written; `false` when none was owed.
    fn spend(&self) -> bool {
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// `prefix`, then whatever `inner` reads; writes go to `inner`, hyper's own refusals rewritten.
#[derive(Debug)]
pub struct Stream<S> {
    prefix: BytesMut,
    inner: S,
    answers: Answers,
    /// A rewritten refusal still being written, and how many of hyper's bytes it stands for.
    replacing: Option<(BytesMut, usize)>,
}

impl<S> Stream<S> {
    /// Reads `prefix` before `inner`; `answers` is shared with the connection's service.
    pub fn new(prefix: BytesMut, inner: S, answers: Answers) -> Self {
        Stream {
            prefix,
            inner,
            answers,
            replacing: None,
        }
    }
}

/// The engine's answer for a head hyper wrote on its own, if `head` is one: hyper answers a
/// request it cannot parse with a bodiless 400, 414 or 431 and closes.
fn rewritten(head: &[u8]) -> Option<BytesMut> {
    let line = head.split(|&b| b == b'\r').next()?;
    let status = line.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
    let error = match status {
        b"431" => ApiError::HeadersTooLarge {
            limit: super::MAX_HEAD_BYTES,
        },
        b"414" => ApiError::MalformedRequest("the request target is too long".to_owned()),
        b"400" => {
            ApiError::MalformedRequest("the request line or headers cannot be read".to_owned())
        }
        _ => return None,
    };
    Some(BytesMut::from(&error.to_http1_close()[..]))
}

impl<S: AsyncRead + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> Stream<S> {
    /// Whether `first` (the start of a write) begins a response head nobody owed, which is then
    /// replaced: its bytes count as written once the replacement is.
    fn intercept(&mut self, first: &[u8], total: usize) {
        if self.replacing.is_none() && first.starts_with(b"HTTP/1.") && !self.answers.spend() {
            if let Some(replacement) = rewritten(first) {
                self.replacing = Some((replacement, total));
            }
        }
    }

    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<usize>>> {
        let Some((bytes, stands_for)) = self.replacing.as_mut() else {
            return Poll::Ready(Ok(None));
        };
        while !bytes.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, bytes) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => bytes.advance(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let written = *stands_for;
        self.replacing = None;
        Poll::Ready(Ok(Some(written)))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.intercept(buf, buf.len());
        match this.poll_replacement(cx) {
            Poll::Ready(Ok(Some(n))) => Poll::Ready(Ok(n)),
            Poll::Ready(Ok(None)) => Pin::new(&mut this.inner).poll_write(cx, buf),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        let total = bufs.iter().map(|b| b.len()).sum();
        this.intercept(first, total);
        match this.poll_replacement(cx) {
            Poll::Ready(Ok(Some(n))) => Poll::Ready(Ok(n)),
            Poll::Ready(Ok(None)) => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn the_prefix_is_read_before_the_stream() {
        let inner = &b"HTTP/1.1\r\n"[..];
        let mut reader = Stream::new(BytesMut::from(&b"GET / "[..]), inner, Answers::default());
        let mut all = String::new();
        reader.read_to_string(&mut all).await.expect("reads");
        assert_eq!(all, "GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn an_answer_nobody_owed_is_rewritten_and_owed_ones_pass() {
        let answers = Answers::default();
        let mut stream = Stream::new(BytesMut::new(), Vec::new(), answers.clone());
        answers.owe();
        let owed = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(stream.write(owed).await.expect("writes"), owed.len());
        let own = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(stream.write(own).await.expect("writes"), own.len());
        let written = String::from_utf8(stream.inner.clone()).expect("utf-8");
        let (first, rewritten) = written.split_at(owed.len());
        assert_eq!(first.as_bytes(), owed);
        assert!(rewritten.starts_with("HTTP/1.1 431 "), "{rewritten}");
        assert!(
            rewritten.contains("\"error\":\"headers_too_large\""),
            "{rewritten}"
        );
        assert!(rewritten.contains("connection: close"), "{rewritten}");
        // Body bytes that happen to follow are never taken for a head.
        let mut stream = Stream::new(BytesMut::new(), Vec::new(), Answers::default());
        stream.write_all(b"{\"ok\":true}").await.expect("writes");
        assert_eq!(stream.inner, b"{\"ok\":true}");
    }
}
