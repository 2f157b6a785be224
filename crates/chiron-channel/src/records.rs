//! Fixed-size records: what a channel carries after its handshake, so that the traffic's
//! shape depends only on public sizes.
//!
//! Every record on the stream is exactly [`RecordConfig::record_size`] bytes:
//!
//! ```text
//! sequence number   u64, big-endian   0, 1, 2, … per direction
//! kind              u8                1 data, 2 cover, 3 close
//! payload length    u32, big-endian   at most record_size − 13
//! payload
//! zero padding      up to record_size
//! ```
//!
//! A message of `n` bytes (a parameter vector, a gradient) is sent as
//! [`RecordConfig::records_for`]`(n)` data records, each full but the last (one empty record
//! for an empty message). Its receiver names `n` too and accepts exactly that split: both
//! sides derive the record count from the public size, never from the data.
//!
//! The reader refuses, with a typed [`ChannelError`]: a sequence number other than the next
//! one (a record replayed, reordered or dropped), an unknown kind, a payload longer than a
//! record holds, non-zero padding, a payload on a cover or close record, and an end of
//! stream without a close record. Under TLS the record layer already rules out replay and
//! reordering; the sequence number keeps this layer correct over any stream, and makes a
//! mistake in a role's own send logic a refusal instead of misread data.
//!
//! Over a TLS stream each record is written in one piece and flushed, so it leaves as a
//! fixed pattern of TLS records: with the [`DEFAULT_RECORD_SIZE`] of 16 KiB, TLS's largest
//! plaintext, exactly one TLS record of 16 KiB + 22 bytes per record.
//!
//! Cover records carry nothing and are skipped by [`RecordReader::recv_message`]; they exist
//! for roles that send at a fixed rate whether or not they have something to say.

use std::ops::Range;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::error::ChannelError;

/// Bytes of a record's header: sequence number (8), kind (1), payload length (4).
pub const HEADER_LEN: usize = 13;

/// The smallest record size a channel allows.
pub const MIN_RECORD_SIZE: usize = 64;

/// The largest record size a channel allows.
pub const MAX_RECORD_SIZE: usize = 1 << 20;

/// The default record size: 16 KiB, TLS's largest record plaintext, so that each record is
/// one TLS record.
pub const DEFAULT_RECORD_SIZE: usize = 16 * 1024;

/// The public shape of a channel's records. Both ends must use the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordConfig {
    record_size: usize,
}

impl Default for RecordConfig {
    /// Records of [`DEFAULT_RECORD_SIZE`] bytes.
    fn default() -> Self {
        Self {
            record_size: DEFAULT_RECORD_SIZE,
        }
    }
}

impl RecordConfig {
    /// Records of `record_size` bytes, between [`MIN_RECORD_SIZE`] and [`MAX_RECORD_SIZE`].
    pub fn new(record_size: usize) -> Result<Self, ChannelError> {
        if (MIN_RECORD_SIZE..=MAX_RECORD_SIZE).contains(&record_size) {
            Ok(Self { record_size })
        } else {
            Err(ChannelError::InvalidRecordSize {
                size: record_size,
                min: MIN_RECORD_SIZE,
                max: MAX_RECORD_SIZE,
            })
        }
    }

    /// Bytes of every record on the wire.
    pub fn record_size(self) -> usize {
        self.record_size
    }

    /// Payload bytes one record holds.
    pub fn payload_capacity(self) -> usize {
        self.record_size - HEADER_LEN
    }

    /// How many records a message of `message_len` bytes takes: at least one, and only as
    /// many as its length needs.
    pub fn records_for(self, message_len: usize) -> usize {
        message_len.div_ceil(self.payload_capacity()).max(1)
    }

    /// The payload length of record `index` of a message of `message_len` bytes.
    fn part_len(self, message_len: usize, index: usize) -> usize {
        let capacity = self.payload_capacity();
        message_len
            .saturating_sub(index.saturating_mul(capacity))
            .min(capacity)
    }
}

/// What a record carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordKind {
    /// Part of a message.
    Data,
    /// Nothing: sent to keep a fixed rate; no payload.
    Cover,
    /// The sender's last record; no payload.
    Close,
}

impl RecordKind {
    /// The kind's code on the wire. Zero is no kind, so zeroed bytes are never a record.
    pub fn code(self) -> u8 {
        match self {
            Self::Data => 1,
            Self::Cover => 2,
            Self::Close => 3,
        }
    }

    /// The kind with wire code `code`, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Data),
            2 => Some(Self::Cover),
            3 => Some(Self::Close),
            _ => None,
        }
    }
}

/// One received record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The record's kind.
    pub kind: RecordKind,
    /// Its payload (empty for cover and close records).
    pub payload: Vec<u8>,
}

/// Splits `stream` into a reader and a writer of `config`'s records.
pub fn split<S: AsyncRead + AsyncWrite>(
    stream: S,
    config: RecordConfig,
) -> (RecordReader<ReadHalf<S>>, RecordWriter<WriteHalf<S>>) {
    let (read, write) = tokio::io::split(stream);
    (
        RecordReader::new(read, config),
        RecordWriter::new(write, config),
    )
}

/// Sends fixed-size records on one direction of a stream.
#[derive(Debug)]
pub struct RecordWriter<W> {
    inner: W,
    config: RecordConfig,
    next: u64,
    buffer: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> RecordWriter<W> {
    /// A writer of `config`'s records on `inner`, starting at sequence number 0.
    pub fn new(inner: W, config: RecordConfig) -> Self {
        Self {
            inner,
            config,
            next: 0,
            buffer: Vec::with_capacity(config.record_size),
        }
    }

    /// The records' shape.
    pub fn config(&self) -> RecordConfig {
        self.config
    }

    /// Sends `message` as [`RecordConfig::records_for`]`(message.len())` data records.
    pub async fn send_message(&mut self, message: &[u8]) -> Result<(), ChannelError> {
        if message.is_empty() {
            return self.send_record(RecordKind::Data, &[]).await;
        }
        for part in message.chunks(self.config.payload_capacity()) {
            self.send_record(RecordKind::Data, part).await?;
        }
        Ok(())
    }

    /// Sends one cover record (no payload).
    pub async fn send_cover(&mut self) -> Result<(), ChannelError> {
        self.send_record(RecordKind::Cover, &[]).await
    }

    /// Sends the close record and shuts the stream's sending side down.
    pub async fn close(&mut self) -> Result<(), ChannelError> {
        self.send_record(RecordKind::Close, &[]).await?;
        self.inner.shutdown().await.map_err(ChannelError::from_io)
    }

    /// Writes one record, in one piece, and flushes it.
    async fn send_record(&mut self, kind: RecordKind, payload: &[u8]) -> Result<(), ChannelError> {
        let capacity = self.config.payload_capacity();
        let length = u32::try_from(payload.len())
            .ok()
            .filter(|_| payload.len() <= capacity)
            .ok_or(ChannelError::PayloadTooLarge {
                length: payload.len(),
                capacity,
            })?;
        let sequence = self.next;
        self.next = sequence
            .checked_add(1)
            .ok_or(ChannelError::SequenceExhausted)?;
        self.buffer.clear();
        self.buffer.extend_from_slice(&sequence.to_be_bytes());
        self.buffer.push(kind.code());
        self.buffer.extend_from_slice(&length.to_be_bytes());
        self.buffer.extend_from_slice(payload);
        self.buffer.resize(self.config.record_size, 0);
        self.inner
            .write_all(&self.buffer)
            .await
            .map_err(ChannelError::from_io)?;
        self.inner.flush().await.map_err(ChannelError::from_io)
    }

    /// The stream.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

/// Receives fixed-size records from one direction of a stream.
#[derive(Debug)]
pub struct RecordReader<R> {
    inner: R,
    config: RecordConfig,
    next: u64,
    closed: bool,
    buffer: Vec<u8>,
}

impl<R: AsyncRead + Unpin> RecordReader<R> {
    /// A reader of `config`'s records from `inner`, expecting sequence number 0 first.
    pub fn new(inner: R, config: RecordConfig) -> Self {
        Self {
            inner,
            config,
            next: 0,
            closed: false,
            buffer: vec![0; config.record_size],
        }
    }

    /// The records' shape.
    pub fn config(&self) -> RecordConfig {
        self.config
    }

    /// Receives the next record, whatever its kind. After a close record, every call fails
    /// with [`ChannelError::Closed`]; after any other error the reader's place in the
    /// stream is lost, and the channel must be dropped.
    pub async fn recv_record(&mut self) -> Result<Record, ChannelError> {
        let (kind, payload) = self.next_record().await?;
        Ok(Record {
            kind,
            payload: self.buffer[payload].to_vec(),
        })
    }

    /// Receives a message of the public size `message_len`: exactly
    /// [`RecordConfig::records_for`]`(message_len)` data records, each with the payload
    /// length that size implies, skipping cover records. The caller chooses `message_len`
    /// (the size both ends agreed on), and this allocates it.
    pub async fn recv_message(&mut self, message_len: usize) -> Result<Vec<u8>, ChannelError> {
        let mut message = Vec::new();
        self.recv_message_into(message_len, &mut message).await?;
        Ok(message)
    }

    /// [`RecordReader::recv_message`] into `message`, which keeps its allocation from one
    /// message to the next. Each payload is read straight into its place in `message`, so
    /// a message crosses from the stream in one copy. On an error `message` holds no
    /// complete message.
    pub async fn recv_message_into(
        &mut self,
        message_len: usize,
        message: &mut Vec<u8>,
    ) -> Result<(), ChannelError> {
        let count = self.config.records_for(message_len);
        message.resize(message_len, 0);
        let mut index = 0;
        let mut at = 0;
        while index < count {
            let expected = self.config.part_len(message_len, index);
            let (kind, payload_len) = self.next_header().await?;
            match kind {
                RecordKind::Cover => {
                    self.finish_record(0).await?;
                    continue;
                }
                RecordKind::Close => {
                    self.finish_record(0).await?;
                    return Err(ChannelError::Closed);
                }
                RecordKind::Data => {}
            }
            if payload_len != expected {
                return Err(ChannelError::MessageLength {
                    index,
                    expected,
                    found: payload_len,
                });
            }
            self.inner
                .read_exact(&mut message[at..at + expected])
                .await
                .map_err(ChannelError::from_io)?;
            self.finish_record(expected).await?;
            at += expected;
            index += 1;
        }
        Ok(())
    }

    /// Reads and checks the next record's header: its kind and payload length. The record's
    /// sequence number is taken; its payload and padding are still to read.
    async fn next_header(&mut self) -> Result<(RecordKind, usize), ChannelError> {
        if self.closed {
            return Err(ChannelError::Closed);
        }
        let header = &mut self.buffer[..HEADER_LEN];
        self.inner
            .read_exact(header)
            .await
            .map_err(ChannelError::from_io)?;
        let (kind, payload_len) = decode_header(header, self.config, self.next)?;
        // Cannot overflow: the writer never sends sequence number u64::MAX.
        self.next = self.next.saturating_add(1);
        self.closed = kind == RecordKind::Close;
        Ok((kind, payload_len))
    }

    /// Reads and checks the padding after a payload of `payload_len` bytes.
    async fn finish_record(&mut self, payload_len: usize) -> Result<(), ChannelError> {
        let padding = &mut self.buffer[HEADER_LEN + payload_len..];
        self.inner
            .read_exact(padding)
            .await
            .map_err(ChannelError::from_io)?;
        if padding.iter().any(|&b| b != 0) {
            return Err(ChannelError::NonZeroPadding);
        }
        Ok(())
    }

    /// Reads and checks one record into the buffer; its kind and payload range.
    async fn next_record(&mut self) -> Result<(RecordKind, Range<usize>), ChannelError> {
        let (kind, payload_len) = self.next_header().await?;
        let payload = HEADER_LEN..HEADER_LEN + payload_len;
        self.inner
            .read_exact(&mut self.buffer[payload.clone()])
            .await
            .map_err(ChannelError::from_io)?;
        self.finish_record(payload_len).await?;
        Ok((kind, payload))
    }

    /// The stream.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// Checks a record's header (its first [`HEADER_LEN`] bytes) that should carry sequence
/// number `expected`; its kind and payload length.
fn decode_header(
    header: &[u8],
    config: RecordConfig,
    expected: u64,
) -> Result<(RecordKind, usize), ChannelError> {
    let header: &[u8; HEADER_LEN] = header.try_into().map_err(|_| ChannelError::Truncated)?;
    let (sequence, rest) = header
        .split_first_chunk::<8>()
        .ok_or(ChannelError::Truncated)?;
    let sequence = u64::from_be_bytes(*sequence);
    if sequence != expected {
        return Err(ChannelError::OutOfSequence {
            expected,
            found: sequence,
        });
    }
    let (&code, length) = rest.split_first().ok_or(ChannelError::Truncated)?;
    let kind = RecordKind::from_code(code).ok_or(ChannelError::UnknownKind(code))?;
    let length = u32::from_be_bytes(length.try_into().map_err(|_| ChannelError::Truncated)?);
    let capacity = config.payload_capacity();
    let payload_len = usize::try_from(length)
        .ok()
        .filter(|&l| l <= capacity)
        .ok_or(ChannelError::RecordTooLong { length, capacity })?;
    if kind != RecordKind::Data && payload_len != 0 {
        return Err(ChannelError::ControlPayload { kind, length });
    }
    Ok((kind, payload_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_counts_depend_only_on_the_length() -> Result<(), ChannelError> {
        let config = RecordConfig::new(64)?;
        let capacity = config.payload_capacity();
        assert_eq!(capacity, 51);
        assert_eq!(config.records_for(0), 1);
        assert_eq!(config.records_for(1), 1);
        assert_eq!(config.records_for(capacity), 1);
        assert_eq!(config.records_for(capacity + 1), 2);
        assert_eq!(config.records_for(10 * capacity), 10);
        assert_eq!(config.part_len(2 * capacity + 5, 0), capacity);
        assert_eq!(config.part_len(2 * capacity + 5, 2), 5);
        assert_eq!(config.part_len(0, 0), 0);
        Ok(())
    }

    #[test]
    fn record_sizes_are_bounded() {
        for size in [0, HEADER_LEN, MIN_RECORD_SIZE - 1, MAX_RECORD_SIZE + 1] {
            assert!(matches!(
                RecordConfig::new(size),
                Err(ChannelError::InvalidRecordSize { .. })
            ));
        }
        assert!(RecordConfig::new(MIN_RECORD_SIZE).is_ok());
        assert!(RecordConfig::new(MAX_RECORD_SIZE).is_ok());
    }

    #[test]
    fn kind_codes_round_trip_and_zero_is_none() {
        for kind in [RecordKind::Data, RecordKind::Cover, RecordKind::Close] {
            assert_eq!(RecordKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(RecordKind::from_code(0), None);
    }
}
