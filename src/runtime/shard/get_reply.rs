//! The reply to a get, built two ways.
//!
//! A get the shard answers alone from memory (N = 1 and R = 1) writes the
//! reply frame straight from the stored set's encoded bytes (`encode`:
//! lent by the store on a client connection, `ShardState::get_single_into`;
//! held in a `GetReply` elsewhere, `get_single_now`): the live values and the
//! context token's clock are read from the encoding in place
//! (`EncodedSiblingSet`), with no `SiblingSet`, no `Vec<Sibling>`, no token
//! buffer and no `Response` to build and drop. Every other get (the replica
//! machine's merged outcome) goes through `response_of` and the general
//! reply encoder. Both give the same bytes for the same set (the
//! differential test below).

use bytes::Bytes;

use crate::protocol::{self, Response, Sibling};
use crate::version::{
    encode_set_token_into, encode_token_into, EncodedSiblingSet, SiblingSet, Value,
};

/// Appends the reply frame of get `id` answered with `set` to `out`
/// (`GetReply::encode`; `ShardState::get_single_into` writes it while the
/// store lends it the set).
pub(crate) fn encode<B: AsRef<[u8]>>(
    id: u64,
    set: &EncodedSiblingSet<B>,
    fastest_replica: Option<u64>,
    out: &mut Vec<u8>,
) {
    // The values, their sibling tables, and a token of a few entries.
    let reserve = set.bytes().as_ref().len() + 24 * set.data_siblings() + 48;
    protocol::encode_get_reply(
        id,
        set.data_values(),
        |out| encode_set_token_into(set, fastest_replica, out),
        reserve,
        out,
    );
}

/// A get answered from the stored encoding of the key's sibling set.
pub(crate) struct GetReply {
    pub id: u64,
    pub set: EncodedSiblingSet,
    /// The context's fastest replica (`node << 32 | shard`).
    pub fastest_replica: Option<u64>,
}

impl GetReply {
    /// Appends the reply frame to `out`: the bytes `protocol::encode_response`
    /// writes for `self.into_response()`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        encode(self.id, &self.set, self.fastest_replica, out);
    }

    /// The reply as a `Response` (for the RESP front end, which converts it).
    pub(crate) fn into_response(self) -> Response {
        let mut token = Vec::new();
        encode_token_into(self.set.clock_entries(), self.fastest_replica, &mut token);
        let bytes = self.set.bytes();
        let siblings: Vec<Sibling> = self
            .set
            .data_values()
            .map(|value| Sibling {
                tombstone: false,
                value: bytes.slice_ref(value),
            })
            .collect();
        Response::Get {
            found: !siblings.is_empty(),
            siblings,
            context: Bytes::from(token),
        }
    }
}

/// The client's answer to a successful get of `siblings` with context token
/// `context`. Only live values are returned; a tombstone sibling is
/// summarised by the context, so the next put supersedes it.
pub(crate) fn response_of(siblings: &SiblingSet, context: Bytes) -> Response {
    let siblings: Vec<Sibling> = siblings
        .siblings()
        .filter_map(|(_, value)| match value {
            Value::Data(value) => Some(Sibling {
                tombstone: false,
                value: value.clone(),
            }),
            Value::Tombstone => None,
        })
        .collect();
    Response::Get {
        found: !siblings.is_empty(),
        siblings,
        context,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{Context, VersionVector};

    use crate::test_rng::Rng;

    /// A random sibling set built through the version API, as replicas
    /// build them: puts and deletes by several actors, some with the
    /// context of an earlier read (superseding), some blind (siblings),
    /// and merges of diverged copies.
    fn random_set(rng: &mut Rng) -> SiblingSet {
        let actors = 1 + rng.below(6);
        let mut copies = vec![SiblingSet::new(); 1 + rng.below(3) as usize];
        // Some keys are only ever written blind: their siblings pile up.
        let always_blind = rng.below(4) == 0;
        let writes = match rng.below(6) {
            0 => 0,
            1 => 40 + rng.below(40),
            _ => rng.below(8),
        };
        for _ in 0..writes {
            let copy = rng.below(copies.len() as u64) as usize;
            let actor = (rng.below(actors) << 16) | rng.below(3);
            let value = if rng.below(4) == 0 {
                Value::Tombstone
            } else {
                let length = match rng.below(5) {
                    0 => 0,
                    1 => 2000 + rng.below(2000),
                    _ => rng.below(150),
                };
                Value::Data(Bytes::from(
                    (0..length).map(|_| rng.next() as u8).collect::<Vec<u8>>(),
                ))
            };
            let context = if always_blind || rng.below(3) == 0 {
                VersionVector::default()
            } else {
                copies[copy].context()
            };
            // A refusal (too many siblings) leaves the copy as it was.
            let _ = copies[copy].update(&context, actor, value);
        }
        let mut set = copies.pop().expect("one copy");
        for copy in &copies {
            set.merge(copy).expect("merge within bounds");
        }
        set
    }

    /// The reply the old path writes: the set decoded, `response_of`, the
    /// token from the decoded clock, the general encoder.
    fn reference(id: u64, stored: &Bytes, fastest: Option<u64>) -> (Response, Vec<u8>) {
        let set = SiblingSet::decode_shared(stored).expect("valid set");
        let mut token = Vec::new();
        encode_token_into(set.clock_entries(), fastest, &mut token);
        let response = response_of(&set, Bytes::from(token));
        let mut frame = vec![0xee; 3]; // replies are appended after others
        protocol::encode_response(id, &response, &mut frame);
        (response, frame)
    }

    fn direct(id: u64, stored: &Bytes, fastest: Option<u64>) -> (Response, Vec<u8>) {
        let reply = GetReply {
            id,
            set: EncodedSiblingSet::validate(stored.clone()).expect("valid set"),
            fastest_replica: fastest,
        };
        let mut frame = vec![0xee; 3];
        reply.encode(&mut frame);
        // The borrowed set (`get_single_into`) writes the same bytes.
        let borrowed = EncodedSiblingSet::validate(&stored[..]).expect("valid set");
        let mut lent = vec![0xee; 3];
        encode(id, &borrowed, fastest, &mut lent);
        assert_eq!(lent, frame, "a lent set's reply is a held set's");
        (reply.into_response(), frame)
    }

    #[test]
    fn direct_reply_equals_the_decoded_reply() {
        let mut rng = Rng(0x0005_eed0_f9e7_u64);
        let (mut tombstones, mut empty, mut many) = (0, 0, 0);
        for round in 0..2000 {
            let set = random_set(&mut rng);
            let mut stored = Vec::new();
            set.encode(&mut stored);
            let stored = Bytes::from(stored);
            let id = rng.next();
            let fastest = match rng.below(3) {
                0 => None,
                1 => Some(rng.next()),
                _ => Some((rng.below(5) << 32) | rng.below(4)),
            };
            let (expected, expected_frame) = reference(id, &stored, fastest);
            let (response, frame) = direct(id, &stored, fastest);
            assert_eq!(frame, expected_frame, "round {round}: {set:?}");
            assert_eq!(response, expected, "round {round}");
            // And what a client reads back is that response, with a token
            // that decodes to the set's clock.
            let (read_id, read) =
                protocol::decode_response(Bytes::from(frame[3..][4..].to_vec()), &limits())
                    .expect("a reply decodes");
            assert_eq!((read_id, &read), (id, &expected));
            let Response::Get { context, .. } = &read else {
                unreachable!()
            };
            let context = Context::decode(context).expect("token decodes");
            assert_eq!(context.clock, set.context());
            assert_eq!(context.fastest_replica, fastest);
            tombstones += usize::from(set.values().contains(&&Value::Tombstone));
            empty += usize::from(set.is_empty());
            many += usize::from(set.sibling_count() > 8);
        }
        assert!(
            tombstones > 100 && empty > 100 && many > 20,
            "{tombstones} {empty} {many}"
        );
        // A key never written: the empty set the shard answers with.
        let empty_set = EncodedSiblingSet::empty();
        let (expected, expected_frame) = reference(7, empty_set.bytes(), Some(1 << 32));
        let (response, frame) = direct(7, empty_set.bytes(), Some(1 << 32));
        let mut lent = vec![0xee; 3];
        encode(
            7,
            &EncodedSiblingSet::empty_borrowed(),
            Some(1 << 32),
            &mut lent,
        );
        assert_eq!(lent, frame);
        assert_eq!((response, frame), (expected, expected_frame));
    }

    fn limits() -> protocol::Limits {
        protocol::Limits {
            frame_bytes_max: 64 << 20,
            value_bytes_max: 16 << 20,
            siblings_max: 4096,
            ..protocol::Limits::default()
        }
    }
}
