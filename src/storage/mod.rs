//! storage layer (being written).
