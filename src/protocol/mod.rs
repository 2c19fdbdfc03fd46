//! protocol layer (being written).
