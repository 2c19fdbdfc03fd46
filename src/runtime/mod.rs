//! runtime layer (being written).
pub mod disk;
