//! ring layer (being written).
