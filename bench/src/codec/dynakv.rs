//! dynakv's client protocol, for `dynakv://` targets, through the crate's own
//! sans-IO protocol module (`dynakv::protocol`).
//!
//! Job: wrap `encode_request_ref`, `FrameDecoder` and `decode_response`
//! behind the benchmark's request/reply shapes, and carry the per-request
//! quorum overrides and the routing epoch. Requests are written straight
//! from the engine's key and value buffers (no copy into `Bytes`, no
//! builder): the generator shares the server's cores, so what it spends per
//! request is taken from the server. Invariants: every reply is verified and
//! validated by the protocol module before use; replies are matched by id,
//! since a dynakv connection may answer out of order.

use super::{Outcome, ParseError, Reply, Request};
use bytes::BytesMut;
use dynakv::protocol::{self, FrameDecoder, Limits, Quorum, RequestRef, Response};

pub struct DynakvCodec {
    decoder: FrameDecoder,
    limits: Limits,
    quorum: Quorum,
    /// The ring epoch the requests were routed with.
    epoch: u64,
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
    /// needs no copy of the list).
    pub fn decode(
        &mut self,
        recv: &mut BytesMut,
        capture: bool,
    ) -> Result<Option<Reply>, ParseError> {
        let frame = match self.decoder.decode(recv) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(None),
            Err(protocol::FrameError::TooLarge { bytes, .. }) => {
                return Err(ParseError::TooLarge(bytes))
            }
        };
        let (id, response) = protocol::decode_response(frame, &self.limits)
            .map_err(|e| ParseError::Rejected(e.to_string()))?;
        let reply = |outcome, values, context| Reply {
            id: Some(id),
            outcome,
            values,
            context,
            error: None,
        };
        Ok(Some(match response {
            Response::Pong => reply(Outcome::Pong, Vec::new(), None),
            Response::Put { context } => reply(Outcome::Stored, Vec::new(), Some(context)),
            Response::Delete => reply(Outcome::Stored, Vec::new(), None),
            Response::Get {
                found,
                siblings,
                context,
            } => {
                let outcome = if found {
                    Outcome::Hit {
                        siblings: siblings.len() as u32,
                    }
                } else {
                    Outcome::Miss
                };
                let values = if capture {
                    siblings
                        .into_iter()
                        .filter(|s| !s.tombstone)
                        .map(|s| s.value)
                        .collect()
                } else {
                    Vec::new()
                };
                reply(outcome, values, Some(context))
            }
            // A WrongOwner (the ring moved) and every other error reply count
            // as errors of the operation; the run does not re-route mid-way.
            Response::Error { code, message, .. } => Reply {
                error: Some(format!("{code} {message}")),
                ..reply(Outcome::ErrorReply, Vec::new(), None)
            },
            Response::RoutingTable(_) => {
                return Err(ParseError::Malformed("unexpected routing table"))
            }
        }))
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
        // Byte by byte: nothing is consumed until a whole frame is there.
        let mut buf = BytesMut::new();
        let mut replies = Vec::new();
        for b in &wire {
            buf.extend_from_slice(&[*b]);
            while let Some(r) = codec.decode(&mut buf, true).unwrap() {
                replies.push(r);
            }
        }
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[0].id, Some(9));
        assert_eq!(replies[0].outcome, Outcome::Hit { siblings: 3 });
        assert_eq!(replies[0].values.len(), 2);
        assert_eq!(replies[0].context.as_deref(), Some(&b"c"[..]));
        assert_eq!(
            (replies[1].id, replies[1].outcome),
            (Some(3), Outcome::Pong)
        );
        let mut garbage = BytesMut::from(&[3u8, 0, 0, 0, 1, 2, 3][..]);
        assert!(codec.decode(&mut garbage, true).is_err());
        // Without capture: the same outcome and sibling count, no values.
        let mut buf = BytesMut::from(&wire[..]);
        let first = codec.decode(&mut buf, false).unwrap().unwrap();
        assert_eq!(
            (first.id, first.outcome),
            (Some(9), Outcome::Hit { siblings: 3 })
        );
        assert!(first.values.is_empty());
        assert_eq!(first.context.as_deref(), Some(&b"c"[..]));
    }
}
