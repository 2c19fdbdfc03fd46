//! Fuzz target: the client frame decoder and protocol validation. The input
//! is a byte stream as a socket delivers it; every whole frame is decoded as
//! a request and as a response, and whatever decodes must re-encode to the
//! same value.
#![no_main]

use bytes::{Bytes, BytesMut};
use dynakv::protocol::{
    decode_request, decode_response, encode_request, encode_response, FrameDecoder, Limits,
    FRAME_LENGTH_BYTES,
};
use libfuzzer_sys::fuzz_target;

fn limits() -> Limits {
    Limits {
        frame_bytes_max: 64 * 1024,
        key_bytes_max: 64,
        value_bytes_max: 1024,
        context_bytes_max: 512,
        siblings_max: 4,
        error_message_bytes_max: 128,
        nodes_max: 8,
        partitions_max: 64,
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = limits();
    let mut decoder = FrameDecoder::new(limits.frame_bytes_max);
    let mut buffer = BytesMut::from(data);
    while let Ok(Some(frame)) = decoder.decode(&mut buffer) {
        if let Ok(request) = decode_request(frame.clone(), &limits) {
            let mut out = Vec::new();
            encode_request(&request, &mut out);
            let again = decode_request(Bytes::from(out).slice(FRAME_LENGTH_BYTES..), &limits)
                .expect("a re-encoded request decodes");
            assert_eq!(again, request);
        }
        if let Ok((id, response)) = decode_response(frame, &limits) {
            let mut out = Vec::new();
            encode_response(id, &response, &mut out);
            let again = decode_response(Bytes::from(out).slice(FRAME_LENGTH_BYTES..), &limits)
                .expect("a re-encoded response decodes");
            assert_eq!(again, (id, response));
        }
    }
});
