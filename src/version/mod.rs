//! version layer (being written).
