//! Config (in progress).
