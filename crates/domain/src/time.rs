//! Time as the store keeps it.

use chrono::{DateTime, SubsecRound, Utc};

/// Now, truncated to microseconds: PostgreSQL keeps microseconds, so truncating
/// here makes values read back equal on both backends (and cursors exact).
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}
