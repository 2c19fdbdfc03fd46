//! client layer (being written).
