//! runtime layer (being written).
