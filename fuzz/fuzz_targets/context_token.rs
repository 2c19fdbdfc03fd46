//! Fuzz target: the context token decoder (and the sibling-set decoder that
//! shares its varint reader). Accepted input must be canonical: re-encoding
//! gives back the same bytes.
#![no_main]

use dynakv::version::{Context, SiblingSet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(context) = Context::decode(data) {
        assert_eq!(context.encode(), data, "context decode is not canonical");
    }
    if let Ok(set) = SiblingSet::decode(data) {
        let mut out = Vec::new();
        set.encode(&mut out);
        assert_eq!(out, data, "sibling set decode is not canonical");
    }
});
