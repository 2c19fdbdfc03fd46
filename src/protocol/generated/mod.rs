//! Generated flatbuffers bindings; do not edit.
//!
//! Produced by `tools/gen-flatbuffers.sh` from `schema/*.fbs` with flatc
//! 25.12.19 and checked for freshness by `tools/check-generated.sh`. Only
//! `crate::protocol` may use these types; everything else sees the domain
//! types of `protocol::message`.

#[rustfmt::skip]
#[allow(
    clippy::all,
    clippy::pedantic,
    dead_code,
    deprecated,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unused_extern_crates,
    unused_imports,
    unsafe_op_in_unsafe_fn,
    unknown_lints,
    mismatched_lifetime_syntaxes,
    rustdoc::all
)]
mod dynakv_generated;

#[rustfmt::skip]
#[allow(
    clippy::all,
    clippy::pedantic,
    dead_code,
    deprecated,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unused_extern_crates,
    unused_imports,
    unsafe_op_in_unsafe_fn,
    unknown_lints,
    mismatched_lifetime_syntaxes,
    rustdoc::all
)]
mod internode_generated;

/// The client protocol (`schema/dynakv.fbs`).
pub use dynakv_generated::dynakv::wire;

/// The internode protocol (`schema/internode.fbs`).
#[allow(unused_imports)]
pub use internode_generated::dynakv::internode;
