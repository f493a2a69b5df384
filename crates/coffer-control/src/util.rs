//! Small helpers: clocks, time formatting, ids, filesystem durability.

use std::{
    fs::File,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Now, unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 of unix milliseconds (UTC).
pub(crate) fn rfc3339_ms(ms: i64) -> String {
    let ns = i128::from(ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(ns)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// RFC 3339 of unix seconds (UTC).
pub(crate) fn rfc3339_secs(secs: i64) -> String {
    rfc3339_ms(secs.saturating_mul(1000))
}

/// Now, RFC 3339.
pub(crate) fn now_rfc3339() -> String {
    rfc3339_ms(now_ms())
}

/// ISO 8601 duration of a span in milliseconds, e.g. `PT12.345S`.
pub(crate) fn iso_duration_ms(ms: i64) -> String {
    let ms = ms.max(0);
    format!("PT{}.{:03}S", ms / 1000, ms % 1000)
}

/// A new random GUID (lowercase, hyphenated).
pub(crate) fn new_guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Fsyncs a directory so that entries created or renamed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Test-clock offset: `COFFER_TEST_CLOCK_OFFSET_SECS` moves key vault time (soft-delete
/// retention, rotation policies, key validity) forward, so tests need no long sleeps.
pub(crate) const CLOCK_OFFSET_ENV: &str = "COFFER_TEST_CLOCK_OFFSET_SECS";

/// Now, unix milliseconds, on the key vault clock (real time plus the test offset).
pub(crate) fn clock_ms() -> i64 {
    let offset = std::env::var(CLOCK_OFFSET_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(0);
    now_ms().saturating_add(offset.saturating_mul(1000))
}
