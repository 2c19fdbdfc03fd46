//! dynakv's client protocol, for `dynakv://` targets, through the crate's own
//! sans-IO protocol module (`dynakv::protocol`).
//!
//! Job: wrap `encode_request_ref`, `inspect_response`, `FrameDecoder` and
//! `decode_response` behind the benchmark's request/reply shapes, and carry
//! the per-request quorum overrides and the routing epoch. Requests are
//! written straight from the engine's key and value buffers (no copy into
//! `Bytes`, no builder), and a reply whose values are not wanted is read in
//! place in the receive buffer by `inspect_response` (no frame `Bytes`, no
//! sibling list, no allocation): the generator shares the server's cores, so
//! what it spends per request is taken from the server. Invariants: every
//! reply is verified and validated by the protocol module before use (the
//! lean reader makes the full decoder's checks, and anything it does not
//! accept goes through the full decoder, so errors are the same); replies
//! are matched by id, since a dynakv connection may answer out of order.

use super::{Outcome, ParseError, Reply, Request};
use bytes::{Buf, BytesMut};
use dynakv::protocol::{
    self, FrameDecoder, Limits, Quorum, RequestRef, Response, ResponseView, FRAME_LENGTH_BYTES,
};

pub struct DynakvCodec {
    decoder: FrameDecoder,
    limits: Limits,
    quorum: Quorum,
    /// The ring epoch the requests were routed with.
    epoch: u64,
    /// The causal context of the last get or put reply decoded, copied out
    /// of the receive buffer into this reused buffer.
    context: Vec<u8>,
    /// Whether the last reply decoded carried a context.
    has_context: bool,
}

impl std::fmt::Debug for DynakvCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynakvCodec")
            .field("quorum", &self.quorum)
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl DynakvCodec {
    pub fn new(quorum: Quorum, epoch: u64) -> DynakvCodec {
        let limits = Limits::default();
        DynakvCodec {
            decoder: FrameDecoder::new(limits.frame_bytes_max),
            limits,
            quorum,
            epoch,
            context: Vec::new(),
            has_context: false,
        }
    }

    /// The causal context of the last get or put reply `decode` returned.
    pub fn context(&self) -> Option<&[u8]> {
        self.has_context.then_some(&self.context[..])
    }

    fn set_context(&mut self, context: Option<&[u8]>) {
        self.context.clear();
        self.has_context = context.is_some();
        if let Some(context) = context {
            self.context.extend_from_slice(context);
        }
    }

    pub fn encode(&mut self, id: u64, request: &Request<'_>, out: &mut Vec<u8>) {
        let request = match *request {
            Request::Ping => RequestRef::Ping,
            Request::Get { key } => RequestRef::Get {
                key,
                quorum: self.quorum,
            },
            Request::Put {
                key,
                value,
                context,
            } => RequestRef::Put {
                key,
                value,
                context,
                quorum: self.quorum,
            },
        };
        protocol::encode_request_ref(id, self.epoch, &request, out);
    }

    /// Decodes one reply; a get reply's live values are collected only with
    /// `capture` (the cart's read-modify-write reads them; counting them
    /// needs no copy of the list). Without `capture`, a Pong, Put, Delete or
    /// Get reply is read in place by `inspect_response`; any other frame
    /// (an error reply, a routing table, a frame that fails verification)
    /// goes through `decode_response`, which says what it is.
    pub fn decode(
        &mut self,
        recv: &mut BytesMut,
        capture: bool,
    ) -> Result<Option<Reply>, ParseError> {
        let too_large = |e| match e {
            protocol::FrameError::TooLarge { bytes, .. } => ParseError::TooLarge(bytes),
        };
        if !capture {
            if self.decoder.bytes_needed(recv).map_err(too_large)? > 0 {
                return Ok(None);
            }
            // `bytes_needed` checked the prefix is there and the length is
            // within bounds, and that the whole frame is buffered.
            let mut prefix = [0; FRAME_LENGTH_BYTES];
            prefix.copy_from_slice(&recv[..FRAME_LENGTH_BYTES]);
            let end = FRAME_LENGTH_BYTES + u32::from_le_bytes(prefix) as usize;
            let frame = &recv[FRAME_LENGTH_BYTES..end];
            if let Some((id, view)) = protocol::inspect_response(frame, &self.limits) {
                let (outcome, context) = match view {
                    ResponseView::Pong => (Outcome::Pong, None),
                    ResponseView::Delete => (Outcome::Stored, None),
                    ResponseView::Put { context } => (Outcome::Stored, Some(context)),
                    ResponseView::Get {
                        found,
                        siblings,
                        context,
                    } => (get_outcome(found, siblings), Some(context)),
                };
                self.set_context(context.map(|range| &frame[range]));
                recv.advance(end);
                return Ok(Some(Reply {
                    id: Some(id),
                    outcome,
                    values: Vec::new(),
                    error: None,
                }));
            }
        }
        let frame = match self.decoder.decode(recv).map_err(too_large)? {
            Some(frame) => frame,
            None => return Ok(None),
        };
        let (id, response) = protocol::decode_response(frame, &self.limits)
            .map_err(|e| ParseError::Rejected(e.to_string()))?;
        let reply = |outcome, values| Reply {
            id: Some(id),
            outcome,
            values,
            error: None,
        };
        Ok(Some(match response {
            Response::Pong => {
                self.set_context(None);
                reply(Outcome::Pong, Vec::new())
            }
            Response::Put { context } => {
                self.set_context(Some(&context));
                reply(Outcome::Stored, Vec::new())
            }
            Response::Delete => {
                self.set_context(None);
                reply(Outcome::Stored, Vec::new())
            }
            Response::Get {
                found,
                siblings,
                context,
            } => {
                self.set_context(Some(&context));
                let outcome = get_outcome(found, siblings.len());
                let values = if capture {
                    siblings
                        .into_iter()
                        .filter(|s| !s.tombstone)
                        .map(|s| s.value)
                        .collect()
                } else {
                    Vec::new()
                };
                reply(outcome, values)
            }
            // A WrongOwner (the ring moved) and every other error reply count
            // as errors of the operation; the run does not re-route mid-way.
            Response::Error { code, message, .. } => {
                self.set_context(None);
                Reply {
                    error: Some(format!("{code} {message}")),
                    ..reply(Outcome::ErrorReply, Vec::new())
                }
            }
            Response::RoutingTable(_) => {
                return Err(ParseError::Malformed("unexpected routing table"))
            }
        }))
    }
}

/// A get reply's outcome: a hit with its sibling count (tombstones
/// included), or a miss.
fn get_outcome(found: bool, siblings: usize) -> Outcome {
    if found {
        Outcome::Hit {
            siblings: siblings as u32,
        }
    } else {
        Outcome::Miss
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use dynakv::protocol::{decode_request, encode_response, Sibling};

    #[test]
    fn requests_round_trip_through_the_protocol_module() {
        let mut codec = DynakvCodec::new(
            Quorum {
                r: Some(1),
                w: Some(2),
                dw: None,
                n: Some(3),
            },
            7,
        );
        let mut out = Vec::new();
        codec.encode(
            5,
            &Request::Get {
                key: b"key:000000000001",
            },
            &mut out,
        );
        codec.encode(
            6,
            &Request::Put {
                key: b"k",
                value: b"v",
                context: Some(b"ctx"),
            },
            &mut out,
        );
        let mut buf = BytesMut::from(&out[..]);
        let mut decoder = FrameDecoder::new(Limits::default().frame_bytes_max);
        let first = decode_request(
            decoder.decode(&mut buf).unwrap().unwrap(),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!((first.id, first.epoch), (5, 7));
        assert!(
            matches!(first.request, protocol::Request::Get { ref key, quorum } if &key[..] == b"key:000000000001" && quorum.r == Some(1))
        );
        let second = decode_request(
            decoder.decode(&mut buf).unwrap().unwrap(),
            &Limits::default(),
        )
        .unwrap();
        assert!(
            matches!(second.request, protocol::Request::Put { ref context, quorum, .. } if context.as_deref() == Some(&b"ctx"[..]) && quorum.w == Some(2))
        );
    }

    #[test]
    fn replies_decode_with_ids_siblings_and_partial_frames() {
        let mut wire = Vec::new();
        let siblings = vec![
            Sibling {
                tombstone: false,
                value: Bytes::from_static(b"i1"),
            },
            Sibling {
                tombstone: false,
                value: Bytes::from_static(b"i2"),
            },
            Sibling {
                tombstone: true,
                value: Bytes::new(),
            },
        ];
        encode_response(
            9,
            &Response::Get {
                found: true,
                siblings,
                context: Bytes::from_static(b"c"),
            },
            &mut wire,
        );
        encode_response(3, &Response::Pong, &mut wire);
        let mut codec = DynakvCodec::new(Quorum::DEFAULT, 0);
        // Byte by byte, with and without capture (the full decoder and the
        // lean reader): nothing is consumed until a whole frame is there.
        for capture in [true, false] {
            let mut buf = BytesMut::new();
            let mut replies = Vec::new();
            for b in &wire {
                buf.extend_from_slice(&[*b]);
                while let Some(r) = codec.decode(&mut buf, capture).unwrap() {
                    replies.push((r, codec.context().map(<[u8]>::to_vec)));
                }
            }
            assert!(buf.is_empty());
            assert_eq!(replies.len(), 2);
            let (get, get_context) = &replies[0];
            assert_eq!(get.id, Some(9));
            assert_eq!(get.outcome, Outcome::Hit { siblings: 3 });
            // Live values only, and only when captured.
            assert_eq!(get.values.len(), if capture { 2 } else { 0 });
            assert_eq!(get_context.as_deref(), Some(&b"c"[..]));
            let (pong, pong_context) = &replies[1];
            assert_eq!((pong.id, pong.outcome), (Some(3), Outcome::Pong));
            assert_eq!(*pong_context, None);
            let mut garbage = BytesMut::from(&[3u8, 0, 0, 0, 1, 2, 3][..]);
            assert!(matches!(
                codec.decode(&mut garbage, capture),
                Err(ParseError::Rejected(_))
            ));
            let mut huge = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xff][..]);
            assert!(matches!(
                codec.decode(&mut huge, capture),
                Err(ParseError::TooLarge(_))
            ));
        }
        // An error reply is not the lean reader's: it falls back to the
        // full decoder, which keeps the server's message.
        let mut wire = Vec::new();
        encode_response(
            4,
            &Response::Error {
                code: protocol::ErrorCode::Internal,
                message: "boom".into(),
                acks: 0,
                routing: None,
            },
            &mut wire,
        );
        let mut buf = BytesMut::from(&wire[..]);
        let error = codec.decode(&mut buf, false).unwrap().unwrap();
        assert_eq!((error.id, error.outcome), (Some(4), Outcome::ErrorReply));
        assert!(error.error.unwrap().ends_with("boom"));
        assert_eq!(codec.context(), None);
        assert!(buf.is_empty());
    }
}
