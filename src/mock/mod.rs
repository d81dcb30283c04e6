//! Mock upstream (being written).
