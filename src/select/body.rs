use crate::body::HoldUntilEnd;
use crate::state::SlotGuard;

/// A response body that holds its account's concurrency slot until the
/// body ends, fails, or is dropped.
pub type SlotBody = HoldUntilEnd<SlotGuard>;
