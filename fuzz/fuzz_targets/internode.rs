//! Fuzz target: every internode decoder — the runtime's framed envelope with
//! replica and gossip payloads, the bare replica and membership codecs, and
//! the flatbuffers internode protocol. Accepted replica messages must
//! re-encode to the same bytes.
#![no_main]

use bytes::{Bytes, BytesMut};
use dynakv::membership::{MembershipMessage, MembershipState};
use dynakv::protocol::{decode_internode, FrameDecoder, InternodeLimits, INTERNODE_FRAME_BYTES_MAX};
use dynakv::replica::ReplicaMessage;
use dynakv::runtime::wire_check;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 4 {
        0 => {
            let mut decoder = FrameDecoder::new(INTERNODE_FRAME_BYTES_MAX);
            let mut buffer = BytesMut::from(rest);
            while let Ok(Some(frame)) = decoder.decode(&mut buffer) {
                wire_check::decode_frame(&frame);
            }
        }
        1 => {
            if let Ok(message) = ReplicaMessage::decode(rest) {
                let mut out = Vec::new();
                message.encode(&mut out);
                assert_eq!(out, rest, "replica message decode is not canonical");
            }
        }
        2 => {
            let _ = MembershipMessage::decode(rest);
            let _ = MembershipState::decode(rest);
            wire_check::decode_gossip_payload(rest);
        }
        _ => {
            let limits = InternodeLimits::default();
            let _ = decode_internode(Bytes::copy_from_slice(rest), &limits);
        }
    }
});
