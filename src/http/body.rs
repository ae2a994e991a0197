//! Reading a request body under limits: whole within `maxBodyBytes` and
//! [`BODY_TIMEOUT`], or not at all; and draining, boundedly, a body nobody will read.

use http::header;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use std::time::{Duration, Instant};

/// A body must arrive within this long, so a slow sender cannot hold a request open.
pub(super) const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// After an error, up to this much of an unread body is read and dropped before the
/// answer, so the client sees the answer instead of a connection reset.
const DRAIN_BYTES: usize = 4 * 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// A request's body while it may still be unread. A refusal drains whatever is left of
/// it before answering (see [`Unread::drain`]); once the body has been read, or its
/// reading timed out or failed, there is nothing left to drain.
pub(super) struct Unread(Option<Incoming>);

/// A body read whole.
pub(super) struct Body {
    /// Empty unless the body was kept: see [`Unread::read`].
    pub(super) bytes: Vec<u8>,
    pub(super) read: Read,
}

/// How long a body was and when it had been read: what a failed authentication's
/// answer is timed from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Read {
    pub(super) at: Instant,
    pub(super) len: usize,
}

pub(super) enum BodyError {
    /// Over `limit` bytes; with the `Content-Length` that declared it so, if that is how
    /// it was.
    TooLarge {
        declared: Option<u64>,
        limit: usize,
    },
    TimedOut,
    Read(hyper::Error),
}

impl Unread {
    pub(super) fn new(body: Incoming) -> Unread {
        Unread(Some(body))
    }

    /// Reads the whole body, refusing past `limit` bytes (declared or sent) and after
    /// [`BODY_TIMEOUT`]; a body over the limit stays here to be drained, so the 413
    /// reaches the client. Unless `keep`, the bytes are only counted and dropped.
    pub(super) async fn read(
        &mut self,
        headers: &http::HeaderMap,
        limit: usize,
        keep: bool,
    ) -> Result<Body, BodyError> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(BodyError::TooLarge { declared, limit });
        }
        let mut body = self.0.take().expect("a body is read once");
        let read = async {
            let mut buf = Vec::new();
            let mut len = 0;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(BodyError::Read)?;
                if let Ok(data) = frame.into_data() {
                    len += data.len();
                    if len > limit {
                        return Err(BodyError::TooLarge {
                            declared: None,
                            limit,
                        });
                    }
                    if keep {
                        buf.extend_from_slice(&data);
                    }
                }
            }
            Ok((buf, len))
        };
        let result = tokio::time::timeout(BODY_TIMEOUT, read)
            .await
            .unwrap_or(Err(BodyError::TimedOut));
        if matches!(result, Err(BodyError::TooLarge { .. })) {
            self.0 = Some(body);
        }
        let (bytes, len) = result?;
        Ok(Body {
            bytes,
            read: Read {
                at: Instant::now(),
                len,
            },
        })
    }

    /// Reads and drops what is left of the body, within a byte and time bound.
    pub(super) async fn drain(self) {
        let Some(mut body) = self.0 else {
            return;
        };
        if body.is_end_stream() {
            return;
        }
        let read = async {
            let mut seen = 0;
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    seen += data.len();
                    if seen > DRAIN_BYTES {
                        break;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, read).await;
    }
}
