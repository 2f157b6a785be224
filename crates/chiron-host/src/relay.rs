//! The host's relay for a distributed job's enclave-to-enclave traffic.
//!
//! Workers reach their parameter server through the host, as they would through any network
//! the platform runs: the host accepts their connections and copies bytes both ways. It
//! cannot read them (TLS 1.3 between attested enclaves), but it sees what any platform sees,
//! and says so in its frame log: when each connection ends, how many TLS records went each
//! way, of which sizes, and when the first and the last passed. The non-interference tests
//! compare exactly that between twin datasets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::enclave::FRAME_LOG;

/// Relays every connection `listener` accepts to the current `server` until `stop` fires, then waits
/// for the copies under way to end (each logs as it ends). Aborting the task stops it and
/// every copy at once. Times in the log count from `since`.
pub async fn relay(
    listener: TcpListener,
    server: watch::Receiver<SocketAddr>,
    since: Instant,
    mut stop: oneshot::Receiver<()>,
) {
    let mut copies = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stop => break,
        };
        let Ok((inbound, _)) = accepted else {
            break;
        };
        // The server as it is now: a replacement listens elsewhere.
        let server = *server.borrow();
        let Ok(outbound) = TcpStream::connect(server).await else {
            continue;
        };
        let _ = inbound.set_nodelay(true);
        let _ = outbound.set_nodelay(true);
        let (from_worker, to_worker) = inbound.into_split();
        let (from_server, to_server) = outbound.into_split();
        copies.spawn(copy("worker->ps", from_worker, to_server, since));
        copies.spawn(copy("ps->worker", from_server, to_worker, since));
    }
    while copies.join_next().await.is_some() {}
}

/// Copies `from` to `to` until either ends, then logs what passed.
async fn copy(
    direction: &'static str,
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    since: Instant,
) {
    let mut buffer = vec![0u8; 64 << 10];
    let mut records = Records::default();
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        records.feed(&buffer[..read], since.elapsed().as_millis());
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
    tracing::debug!(target: FRAME_LOG, "peer {direction} {}", records.summary());
}

/// TLS records seen on one direction of a connection, from their 5-byte headers.
#[derive(Default)]
struct Records {
    /// Bytes of the current header seen so far.
    header: Vec<u8>,
    /// Body bytes of the current record still to pass.
    body_left: usize,
    sizes: BTreeMap<usize, u64>,
    first_ms: Option<u128>,
    last_ms: u128,
}

impl Records {
    fn feed(&mut self, mut bytes: &[u8], now_ms: u128) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let take = self.body_left.min(bytes.len());
                self.body_left -= take;
                bytes = &bytes[take..];
                continue;
            }
            let take = (5 - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.header.len() == 5 {
                let len = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                *self.sizes.entry(5 + len).or_default() += 1;
                self.first_ms.get_or_insert(now_ms);
                self.last_ms = now_ms;
                self.body_left = len;
                self.header.clear();
            }
        }
    }

    fn summary(&self) -> String {
        let mut out = String::from("TLS records:");
        for (size, count) in &self.sizes {
            let _ = write!(out, " {count}x{size}");
        }
        match self.first_ms {
            Some(first) => {
                // Fixed-width times: the log's size must not vary with them.
                let _ = write!(
                    out,
                    "; first at {first:>10} ms, last at {:>10} ms",
                    self.last_ms
                );
            }
            None => out.push_str(" none"),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_counted_across_reads() {
        let mut records = Records::default();
        let mut stream = Vec::new();
        for len in [3u16, 3, 300] {
            stream.extend([23, 3, 3]);
            stream.extend(len.to_be_bytes());
            stream.extend(vec![0; usize::from(len)]);
        }
        // Split at awkward points: inside a header, inside a body.
        records.feed(&stream[..2], 10);
        records.feed(&stream[2..9], 20);
        records.feed(&stream[9..], 30);
        assert_eq!(
            records.summary(),
            "TLS records: 2x8 1x305; first at         20 ms, last at         30 ms"
        );
        assert_eq!(Records::default().summary(), "TLS records: none");
    }
}
