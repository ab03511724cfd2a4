//! A request body the engine answered without reading is read to its end
//! (and discarded) after the answer, within bounds.
//!
//! Credentials are checked before the body is read (see `auth`), so a
//! refused upload is answered while its client is still sending. If the
//! connection were closed then with the rest of the body unread, the kernel
//! would reset it (RST) and the client could lose the answer it was about to
//! read: an `IncompleteMessage` or `connection reset` instead of `401`. The
//! same holds for a `413`, a `404` with a body, and any refusal before the
//! body. So an unfinished body is handed to a task that reads and drops it,
//! as HTTP servers' "lingering close" does: nothing is buffered, and the
//! connection can even be kept alive. At most `bytes_max` bytes and
//! `UNREAD_BODY_DRAIN_MS_MAX` of time are spent on one; past either, the
//! connection closes as before.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body::{Body as _, Frame, SizeHint};

/// Time spent reading what is left of one unread body.
pub const UNREAD_BODY_DRAIN_MS_MAX: u64 = 10_000;

/// A request body that, dropped before its end, has the rest read and
/// discarded by a task of its own.
pub struct DrainOnDrop {
    /// `None` once handed to the draining task.
    inner: Option<Body>,
    /// Bytes the handler has read so far (counted against `bytes_max`).
    read_bytes: u64,
    finished: bool,
    bytes_max: u64,
}

impl DrainOnDrop {
    pub fn wrap(body: Body, bytes_max: u64) -> Body {
        Body::new(DrainOnDrop { inner: Some(body), read_bytes: 0, finished: false, bytes_max })
    }
}

impl http_body::Body for DrainOnDrop {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finished = true,
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                self.read_bytes = self.read_bytes.saturating_add(len);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.finished || self.inner.as_ref().is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), http_body::Body::size_hint)
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        if self.is_end_stream() {
            return;
        }
        let (Some(body), Ok(runtime)) = (self.inner.take(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        let left_bytes_max = self.bytes_max.saturating_sub(self.read_bytes);
        runtime.spawn(drain(body, left_bytes_max, Duration::from_millis(UNREAD_BODY_DRAIN_MS_MAX)));
    }
}

/// Reads `body` to its end, or until `bytes_max` bytes or `time_max` have
/// gone by, whichever comes first, and drops what it reads.
async fn drain(mut body: Body, bytes_max: u64, time_max: Duration) {
    let read = async {
        let mut read_bytes = 0u64;
        while read_bytes <= bytes_max {
            match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                Some(Ok(frame)) => read_bytes = read_bytes.saturating_add(frame.data_ref().map_or(0, |d| d.len() as u64)),
                None | Some(Err(_)) => return,
            }
        }
    };
    let _ = tokio::time::timeout(time_max, read).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::sync::mpsc;

    /// A body fed by the test, one chunk at a time; reports how many chunks were taken.
    fn fed_body() -> (mpsc::Sender<Bytes>, Body, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let (tx, rx) = mpsc::channel::<Bytes>(1);
        let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = taken.clone();
        let stream = tokio_stream_from(rx).map(move |chunk| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, std::io::Error>(chunk)
        });
        (tx, Body::from_stream(stream), taken)
    }

    fn tokio_stream_from(mut rx: mpsc::Receiver<Bytes>) -> impl futures::Stream<Item = Bytes> {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    #[tokio::test]
    async fn a_body_dropped_unread_is_read_to_its_end_after_the_drop() {
        let (tx, body, taken) = fed_body();
        drop(DrainOnDrop::wrap(body, 1 << 20));
        for _ in 0..5 {
            // Each send waits for room: it completes only because the dropped body is still being read.
            tokio::time::timeout(Duration::from_secs(5), tx.send(Bytes::from_static(b"0123456789"))).await.unwrap().unwrap();
        }
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), async {
            while taken.load(std::sync::atomic::Ordering::SeqCst) < 5 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn draining_stops_past_its_byte_bound() {
        let (tx, body, _) = fed_body();
        drop(DrainOnDrop::wrap(body, 25));
        let mut sent = 0;
        while tokio::time::timeout(Duration::from_millis(500), tx.send(Bytes::from_static(b"0123456789"))).await.is_ok_and(|r| r.is_ok()) {
            sent += 1;
            assert!(sent <= 10, "the drain read far past its 25-byte bound");
        }
        // 3 chunks pass the bound (30 bytes); the channel holds one more.
        assert!(sent <= 5, "sent {sent} chunks");
    }
}
