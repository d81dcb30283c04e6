//! AWS event-stream framing (`application/vnd.amazon.eventstream`): an
//! incremental decoder, and an encoder for the mock and tests.
//!
//! A message is a 12-byte prelude (total length, headers length, CRC32 of
//! those 8 bytes), the headers, the payload, and a CRC32 of everything
//! before it. Both CRCs are checked: a stream that fails one cannot be
//! resynchronised, so the decoder reports it and the caller ends the
//! stream.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

/// Prelude (12) plus message CRC (4).
const OVERHEAD: usize = 16;
/// AWS caps a message at 16 MiB; anything larger is a broken length, and
/// must not make the relay buffer without limit.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// One header value. Only strings are read by the relay; the other types
/// are decoded so that a message carrying them still parses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderValue {
    Bool(bool),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Bytes(Bytes),
    String(String),
    Timestamp(i64),
    Uuid(u128),
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) headers: Vec<(String, HeaderValue)>,
    pub(crate) payload: Bytes,
}

impl Message {
    /// The string header `name`, if present.
    pub(crate) fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|(n, v)| match v {
            HeaderValue::String(s) if n == name => Some(s.as_str()),
            _ => None,
        })
    }
}

/// Why a stream could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The prelude's lengths are impossible (too small, too large).
    Length,
    /// The prelude's CRC does not match.
    PreludeCrc,
    /// The message's CRC does not match.
    MessageCrc,
    /// A header is malformed (truncated, unknown type, bad UTF-8).
    Header,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Length => "event-stream frame has an invalid length",
            Self::PreludeCrc => "event-stream prelude checksum mismatch",
            Self::MessageCrc => "event-stream message checksum mismatch",
            Self::Header => "event-stream frame has a malformed header",
        })
    }
}

impl std::error::Error for DecodeError {}

/// Decodes messages from bytes that arrive split anywhere.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    /// Appends received bytes.
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Whether no partial message is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next complete message, `None` until one has fully arrived.
    pub(crate) fn next_message(&mut self) -> Result<Option<Message>, DecodeError> {
        if self.buf.len() < 12 {
            return Ok(None);
        }
        let total = read_u32(&self.buf[0..4]) as usize;
        let headers_len = read_u32(&self.buf[4..8]) as usize;
        // The prelude is checked before trusting its lengths.
        if crc32fast::hash(&self.buf[0..8]) != read_u32(&self.buf[8..12]) {
            return Err(DecodeError::PreludeCrc);
        }
        if !(OVERHEAD..=MAX_MESSAGE).contains(&total) || headers_len > total - OVERHEAD {
            return Err(DecodeError::Length);
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let frame = self.buf.split_to(total).freeze();
        let body_end = total - 4;
        if crc32fast::hash(&frame[..body_end]) != read_u32(&frame[body_end..]) {
            return Err(DecodeError::MessageCrc);
        }
        let headers = decode_headers(frame.slice(12..12 + headers_len))?;
        let payload = frame.slice(12 + headers_len..body_end);
        Ok(Some(Message { headers, payload }))
    }
}

fn read_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn decode_headers(mut b: Bytes) -> Result<Vec<(String, HeaderValue)>, DecodeError> {
    let mut headers = Vec::new();
    let need = |b: &Bytes, n: usize| {
        if b.remaining() < n {
            Err(DecodeError::Header)
        } else {
            Ok(())
        }
    };
    while b.has_remaining() {
        let name_len = usize::from(b.get_u8());
        need(&b, name_len + 1)?;
        let name =
            String::from_utf8(b.split_to(name_len).to_vec()).map_err(|_| DecodeError::Header)?;
        let value = match b.get_u8() {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => {
                need(&b, 1)?;
                HeaderValue::Byte(b.get_i8())
            }
            3 => {
                need(&b, 2)?;
                HeaderValue::Short(b.get_i16())
            }
            4 => {
                need(&b, 4)?;
                HeaderValue::Int(b.get_i32())
            }
            5 => {
                need(&b, 8)?;
                HeaderValue::Long(b.get_i64())
            }
            kind @ (6 | 7) => {
                need(&b, 2)?;
                let len = usize::from(b.get_u16());
                need(&b, len)?;
                let bytes = b.split_to(len);
                if kind == 6 {
                    HeaderValue::Bytes(bytes)
                } else {
                    HeaderValue::String(
                        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Header)?,
                    )
                }
            }
            8 => {
                need(&b, 8)?;
                HeaderValue::Timestamp(b.get_i64())
            }
            9 => {
                need(&b, 16)?;
                HeaderValue::Uuid(b.get_u128())
            }
            _ => return Err(DecodeError::Header),
        };
        headers.push((name, value));
    }
    Ok(headers)
}

/// One event-stream message with string headers, as Bedrock frames its
/// events: prelude, headers, payload and both CRC32 checksums. A header
/// name longer than 255 bytes or a value longer than 65535 bytes is cut to
/// that length (the format allows no more).
///
/// # Examples
///
/// ```
/// use tower_llm_relay::bedrock::encode_frame;
///
/// let frame = encode_frame(&[(":message-type", "event")], b"{}");
/// // Total length first, big-endian: 12 prelude + 2 payload + 4 CRC + headers.
/// let headers = 1 + 13 + 1 + 2 + 5;
/// assert_eq!(u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize, 18 + headers);
/// ```
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    use bytes::BufMut;

    let mut encoded_headers = BytesMut::new();
    for (name, value) in headers {
        let name = &name.as_bytes()[..name.len().min(usize::from(u8::MAX))];
        let value = &value.as_bytes()[..value.len().min(usize::from(u16::MAX))];
        encoded_headers.put_u8(name.len() as u8);
        encoded_headers.put_slice(name);
        encoded_headers.put_u8(7);
        encoded_headers.put_u16(value.len() as u16);
        encoded_headers.put_slice(value);
    }
    let total = OVERHEAD + encoded_headers.len() + payload.len();
    let mut out = BytesMut::with_capacity(total);
    out.put_u32(total as u32);
    out.put_u32(encoded_headers.len() as u32);
    let prelude_crc = crc32fast::hash(&out[..8]);
    out.put_u32(prelude_crc);
    out.put_slice(&encoded_headers);
    out.put_slice(payload);
    let message_crc = crc32fast::hash(&out);
    out.put_u32(message_crc);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: usize) -> Bytes {
        encode(
            &[
                (":event-type", "chunk"),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            format!(r#"{{"bytes":"event number {n}"}}"#).as_bytes(),
        )
    }

    fn decode_all(decoder: &mut Decoder) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(m) = decoder.next_message().unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn a_message_round_trips() {
        let mut d = Decoder::default();
        d.push(&chunk(1));
        let messages = decode_all(&mut d);
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].header_str(":event-type"), Some("chunk"));
        assert_eq!(messages[0].header_str(":message-type"), Some("event"));
        assert_eq!(&messages[0].payload[..], br#"{"bytes":"event number 1"}"#);
        assert!(d.is_empty());
    }

    #[test]
    fn known_vector_from_the_aws_spec_decodes() {
        // AWS's `all_headers` test vector: one of each header type and the
        // payload `{'foo':'bar'}`.
        // From the AWS SDKs' shared fixtures (`encoded/positive/all_headers`).
        let frame: [u8; 204] = [
            0, 0, 0, 204, 0, 0, 0, 175, 15, 174, 100, 202, 10, 101, 118, 101, 110, 116, 45, 116,
            121, 112, 101, 4, 0, 0, 160, 12, 12, 99, 111, 110, 116, 101, 110, 116, 45, 116, 121,
            112, 101, 7, 0, 16, 97, 112, 112, 108, 105, 99, 97, 116, 105, 111, 110, 47, 106, 115,
            111, 110, 10, 98, 111, 111, 108, 32, 102, 97, 108, 115, 101, 1, 9, 98, 111, 111, 108,
            32, 116, 114, 117, 101, 0, 4, 98, 121, 116, 101, 2, 207, 8, 98, 121, 116, 101, 32, 98,
            117, 102, 6, 0, 20, 73, 39, 109, 32, 97, 32, 108, 105, 116, 116, 108, 101, 32, 116,
            101, 97, 112, 111, 116, 33, 9, 116, 105, 109, 101, 115, 116, 97, 109, 112, 8, 0, 0, 0,
            0, 0, 132, 95, 237, 5, 105, 110, 116, 49, 54, 3, 0, 42, 5, 105, 110, 116, 54, 52, 5, 0,
            0, 0, 0, 2, 135, 87, 178, 4, 117, 117, 105, 100, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
            12, 13, 14, 15, 16, 123, 39, 102, 111, 111, 39, 58, 39, 98, 97, 114, 39, 125, 171, 165,
            241, 12,
        ];
        let mut d = Decoder::default();
        d.push(&frame);
        let m = d.next_message().unwrap().unwrap();
        assert_eq!(&m.payload[..], b"{'foo':'bar'}");
        assert_eq!(m.header_str("content-type"), Some("application/json"));
        assert!(m
            .headers
            .contains(&("event-type".into(), HeaderValue::Int(40972))));
        assert!(m
            .headers
            .contains(&("bool false".into(), HeaderValue::Bool(false))));
        assert!(m
            .headers
            .contains(&("int16".into(), HeaderValue::Short(42))));
        assert!(m.headers.contains(&(
            "byte buf".into(),
            HeaderValue::Bytes("I'm a little teapot!".into())
        )));
        assert!(m.headers.contains(&(
            "uuid".into(),
            HeaderValue::Uuid(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10)
        )));
        assert!(d.is_empty());
    }

    #[test]
    fn every_split_of_a_stream_decodes_the_same_messages() {
        let stream: Vec<u8> = (0..3).flat_map(|n| chunk(n).to_vec()).collect();
        let whole = {
            let mut d = Decoder::default();
            d.push(&stream);
            decode_all(&mut d)
        };
        assert_eq!(whole.len(), 3);
        // One cut anywhere, and two cuts anywhere.
        for a in 0..=stream.len() {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            d.push(&stream[..a]);
            got.extend(decode_all(&mut d));
            d.push(&stream[a..]);
            got.extend(decode_all(&mut d));
            assert_eq!(got, whole, "split at {a}");
            assert!(d.is_empty());
        }
        for a in (0..stream.len()).step_by(7) {
            for b in (a..=stream.len()).step_by(5) {
                let mut d = Decoder::default();
                let mut got = Vec::new();
                for part in [&stream[..a], &stream[a..b], &stream[b..]] {
                    d.push(part);
                    got.extend(decode_all(&mut d));
                }
                assert_eq!(got, whole, "split at {a}, {b}");
            }
        }
        // Byte by byte.
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for byte in &stream {
            d.push(std::slice::from_ref(byte));
            got.extend(decode_all(&mut d));
        }
        assert_eq!(got, whole);
    }

    #[test]
    fn a_corrupt_prelude_is_refused() {
        let mut frame = chunk(1).to_vec();
        frame[2] ^= 0x01;
        let mut d = Decoder::default();
        d.push(&frame);
        assert_eq!(d.next_message(), Err(DecodeError::PreludeCrc));
    }

    #[test]
    fn a_corrupt_payload_is_refused() {
        let mut frame = chunk(1).to_vec();
        let at = frame.len() - 6;
        frame[at] ^= 0x20;
        let mut d = Decoder::default();
        d.push(&frame);
        assert_eq!(d.next_message(), Err(DecodeError::MessageCrc));
    }

    #[test]
    fn a_corrupt_message_crc_is_refused() {
        let mut frame = chunk(1).to_vec();
        let last = frame.len() - 1;
        frame[last] ^= 0xff;
        let mut d = Decoder::default();
        d.push(&frame);
        assert_eq!(d.next_message(), Err(DecodeError::MessageCrc));
    }

    #[test]
    fn impossible_lengths_are_refused_before_buffering() {
        let mut prelude = Vec::new();
        prelude.extend_from_slice(&(u32::MAX).to_be_bytes());
        prelude.extend_from_slice(&0u32.to_be_bytes());
        let crc = crc32fast::hash(&prelude);
        prelude.extend_from_slice(&crc.to_be_bytes());
        let mut d = Decoder::default();
        d.push(&prelude);
        assert_eq!(d.next_message(), Err(DecodeError::Length));
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_without_buffering_it() {
        let total = (MAX_MESSAGE + 1) as u32;
        let mut prelude = Vec::new();
        prelude.extend_from_slice(&total.to_be_bytes());
        prelude.extend_from_slice(&0u32.to_be_bytes());
        let crc = crc32fast::hash(&prelude);
        prelude.extend_from_slice(&crc.to_be_bytes());
        let mut d = Decoder::default();
        d.push(&prelude);
        // Refused on its prelude alone: the relay never waits for 16 MiB.
        assert_eq!(d.next_message(), Err(DecodeError::Length));
        // At the limit, a frame is only waited for.
        let mut prelude = Vec::new();
        prelude.extend_from_slice(&(MAX_MESSAGE as u32).to_be_bytes());
        prelude.extend_from_slice(&0u32.to_be_bytes());
        let crc = crc32fast::hash(&prelude);
        prelude.extend_from_slice(&crc.to_be_bytes());
        let mut d = Decoder::default();
        d.push(&prelude);
        assert_eq!(d.next_message(), Ok(None));
    }

    #[test]
    fn a_header_with_an_unknown_type_is_refused() {
        let mut frame = encode(&[("a", "b")], b"{}").to_vec();
        // name len, name, then the type byte at 12 + 2.
        frame[14] = 42;
        let body_end = frame.len() - 4;
        let crc = crc32fast::hash(&frame[..body_end]);
        frame[body_end..].copy_from_slice(&crc.to_be_bytes());
        let mut d = Decoder::default();
        d.push(&frame);
        assert_eq!(d.next_message(), Err(DecodeError::Header));
    }

    #[test]
    fn a_partial_frame_waits() {
        let frame = chunk(1);
        let mut d = Decoder::default();
        d.push(&frame[..frame.len() - 1]);
        assert_eq!(d.next_message(), Ok(None));
        assert!(!d.is_empty());
    }
}
