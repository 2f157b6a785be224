//! The fixed-size record layer on an in-memory stream, where raw records can be injected:
//! the wire format as documented, messages split by their public size, and every malformed,
//! replayed, reordered, dropped or oversized record refused.
#![allow(
    clippy::expect_used,
    reason = "test helpers: a failed step is a failed test"
)]

use chiron_channel::records::HEADER_LEN;
use chiron_channel::{ChannelError, Record, RecordConfig, RecordKind, RecordReader, RecordWriter};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

const SIZE: usize = 64;

fn config() -> RecordConfig {
    RecordConfig::new(SIZE).expect("config")
}

/// A record written from the specification, independently of the crate's writer.
fn raw(sequence: u64, kind: u8, length: u32, payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(SIZE);
    record.extend_from_slice(&sequence.to_be_bytes());
    record.push(kind);
    record.extend_from_slice(&length.to_be_bytes());
    record.extend_from_slice(payload);
    record.resize(SIZE, 0);
    record
}

/// A reader of `bytes`, followed by the end of the stream.
async fn reader_of(bytes: &[u8]) -> RecordReader<DuplexStream> {
    let (mut sender, receiver) = duplex(1 << 20);
    sender.write_all(bytes).await.expect("write");
    drop(sender);
    RecordReader::new(receiver, config())
}

/// What a writer puts on the wire for `messages`.
async fn wire_of(messages: &[&[u8]]) -> Vec<u8> {
    let (sender, mut receiver) = duplex(1 << 20);
    let mut writer = RecordWriter::new(sender, config());
    for message in messages {
        writer.send_message(message).await.expect("send");
    }
    drop(writer);
    let mut wire = Vec::new();
    receiver.read_to_end(&mut wire).await.expect("read");
    wire
}

#[tokio::test]
async fn the_writer_follows_the_documented_format() {
    let wire = wire_of(&[b"abc", b""]).await;
    assert_eq!(wire.len(), 2 * SIZE);
    assert_eq!(wire[..SIZE], raw(0, 1, 3, b"abc"));
    assert_eq!(wire[SIZE..], raw(1, 1, 0, b""));
}

#[tokio::test]
async fn a_message_takes_records_by_its_length_alone() {
    let capacity = config().payload_capacity();
    assert_eq!(capacity, SIZE - HEADER_LEN);
    for length in [0, 1, capacity - 1, capacity, capacity + 1, 5 * capacity + 3] {
        let zeros = wire_of(&[&vec![0; length]]).await;
        let ones = wire_of(&[&vec![0xff; length]]).await;
        assert_eq!(zeros.len(), config().records_for(length) * SIZE, "{length}");
        assert_eq!(zeros.len(), ones.len(), "{length}");
        let mut reader = reader_of(&ones).await;
        assert_eq!(
            reader.recv_message(length).await.expect("read"),
            vec![0xff; length]
        );
    }
}

#[tokio::test]
async fn cover_records_are_skipped_and_close_ends_the_channel() {
    let (sender, receiver) = duplex(1 << 20);
    let mut writer = RecordWriter::new(sender, config());
    let mut reader = RecordReader::new(receiver, config());
    writer.send_cover().await.expect("cover");
    writer.send_message(b"x").await.expect("send");
    writer.close().await.expect("close");
    assert_eq!(reader.recv_message(1).await.expect("message"), b"x");
    assert!(matches!(
        reader.recv_message(1).await,
        Err(ChannelError::Closed)
    ));
    assert!(matches!(
        reader.recv_record().await,
        Err(ChannelError::Closed)
    ));
}

#[tokio::test]
async fn records_are_read_one_by_one() {
    let mut bytes = raw(0, 2, 0, b"");
    bytes.extend(raw(1, 1, 2, b"hi"));
    bytes.extend(raw(2, 3, 0, b""));
    let mut reader = reader_of(&bytes).await;
    let kinds = [
        (RecordKind::Cover, &b""[..]),
        (RecordKind::Data, &b"hi"[..]),
        (RecordKind::Close, &b""[..]),
    ];
    for (kind, payload) in kinds {
        assert_eq!(
            reader.recv_record().await.expect("record"),
            Record {
                kind,
                payload: payload.to_vec()
            }
        );
    }
}

#[tokio::test]
async fn a_replayed_record_is_refused() {
    let record = wire_of(&[b"once"]).await;
    let mut reader = reader_of(&[record.clone(), record].concat()).await;
    reader.recv_message(4).await.expect("first");
    assert!(matches!(
        reader.recv_message(4).await,
        Err(ChannelError::OutOfSequence {
            expected: 1,
            found: 0
        })
    ));
}

#[tokio::test]
async fn a_reordered_record_is_refused() {
    let wire = wire_of(&[b"first", b"second"]).await;
    let (first, second) = wire.split_at(SIZE);
    let mut reader = reader_of(&[second, first].concat()).await;
    assert!(matches!(
        reader.recv_message(6).await,
        Err(ChannelError::OutOfSequence {
            expected: 0,
            found: 1
        })
    ));
}

#[tokio::test]
async fn a_dropped_record_is_refused() {
    let wire = wire_of(&[b"a", b"b", b"c"]).await;
    let mut reader = reader_of(&[&wire[..SIZE], &wire[2 * SIZE..]].concat()).await;
    reader.recv_message(1).await.expect("first");
    assert!(matches!(
        reader.recv_message(1).await,
        Err(ChannelError::OutOfSequence {
            expected: 1,
            found: 2
        })
    ));
}

#[tokio::test]
async fn a_payload_longer_than_the_record_is_refused() {
    let capacity = config().payload_capacity();
    for length in [capacity as u32 + 1, u32::MAX] {
        let mut reader = reader_of(&raw(0, 1, length, b"")).await;
        assert!(matches!(
            reader.recv_record().await,
            Err(ChannelError::RecordTooLong { length: l, capacity: c }) if l == length && c == capacity
        ));
    }
}

#[tokio::test]
async fn unknown_kinds_are_refused() {
    for kind in [0, 4, 0xff] {
        let mut reader = reader_of(&raw(0, kind, 0, b"")).await;
        assert!(matches!(
            reader.recv_record().await,
            Err(ChannelError::UnknownKind(k)) if k == kind
        ));
    }
}

#[tokio::test]
async fn padding_must_be_zero() {
    let mut record = raw(0, 1, 1, b"a");
    record[SIZE - 1] = 1;
    let mut reader = reader_of(&record).await;
    assert!(matches!(
        reader.recv_record().await,
        Err(ChannelError::NonZeroPadding)
    ));
}

#[tokio::test]
async fn cover_and_close_records_carry_nothing() {
    for kind in [2, 3] {
        let mut reader = reader_of(&raw(0, kind, 1, b"a")).await;
        assert!(matches!(
            reader.recv_record().await,
            Err(ChannelError::ControlPayload { length: 1, .. })
        ));
    }
}

#[tokio::test]
async fn a_message_must_have_its_public_size() {
    let capacity = config().payload_capacity();
    // Shorter than announced, in the last record and in a middle one.
    let mut reader = reader_of(&wire_of(&[b"short"]).await).await;
    assert!(matches!(
        reader.recv_message(6).await,
        Err(ChannelError::MessageLength {
            index: 0,
            expected: 6,
            found: 5
        })
    ));
    let mut bytes = raw(0, 1, 3, b"abc");
    bytes.extend(raw(1, 1, 3, b"def"));
    let mut reader = reader_of(&bytes).await;
    assert!(matches!(
        reader.recv_message(capacity + 3).await,
        Err(ChannelError::MessageLength { index: 0, .. })
    ));
}

#[tokio::test]
async fn an_early_end_is_a_truncation() {
    let wire = wire_of(&[b"a", b"b"]).await;
    // Inside a record.
    let mut reader = reader_of(&wire[..SIZE + 10]).await;
    reader.recv_message(1).await.expect("first");
    assert!(matches!(
        reader.recv_message(1).await,
        Err(ChannelError::Truncated)
    ));
    // At a record boundary, without a close record.
    let mut reader = reader_of(&wire[..SIZE]).await;
    reader.recv_message(1).await.expect("first");
    assert!(matches!(
        reader.recv_message(1).await,
        Err(ChannelError::Truncated)
    ));
}

#[tokio::test]
async fn a_reused_buffer_holds_each_message_exactly() {
    let capacity = config().payload_capacity();
    let long = vec![0xab; 3 * capacity + 7];
    let wire = wire_of(&[&long, b"xyz", b""]).await;
    let mut reader = reader_of(&wire).await;
    let mut buffer = Vec::new();
    reader
        .recv_message_into(long.len(), &mut buffer)
        .await
        .expect("long");
    assert_eq!(buffer, long);
    // A shorter message leaves nothing of the longer one behind.
    reader
        .recv_message_into(3, &mut buffer)
        .await
        .expect("short");
    assert_eq!(buffer, b"xyz");
    reader
        .recv_message_into(0, &mut buffer)
        .await
        .expect("empty");
    assert!(buffer.is_empty());
}

#[tokio::test]
async fn a_reused_buffer_refuses_what_a_fresh_one_refuses() {
    // Non-zero padding after a payload read straight into the buffer.
    let mut record = raw(0, 1, 2, b"ok");
    record[SIZE - 1] = 1;
    let mut buffer = Vec::new();
    assert!(matches!(
        reader_of(&record)
            .await
            .recv_message_into(2, &mut buffer)
            .await,
        Err(ChannelError::NonZeroPadding)
    ));
    // A payload of another length than the message's size implies.
    assert!(matches!(
        reader_of(&raw(0, 1, 3, b"abc"))
            .await
            .recv_message_into(2, &mut buffer)
            .await,
        Err(ChannelError::MessageLength { .. })
    ));
    // A cover record between parts is skipped; a close record ends the channel.
    let wire = [raw(0, 2, 0, b""), raw(1, 1, 1, b"a"), raw(2, 3, 0, b"")].concat();
    let mut reader = reader_of(&wire).await;
    reader
        .recv_message_into(1, &mut buffer)
        .await
        .expect("after cover");
    assert_eq!(buffer, b"a");
    assert!(matches!(
        reader.recv_message_into(1, &mut buffer).await,
        Err(ChannelError::Closed)
    ));
}
