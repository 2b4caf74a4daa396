//! Wall-clock time as the operator counts it: milliseconds since the Unix
//! epoch, and the conversions to and from Kubernetes timestamps. Read only by
//! the I/O shell; the pure core (admission, plans, statuses) is given the time.

use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Wall-clock time in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// A Kubernetes timestamp for `ms`.
pub fn time_at(ms: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_millisecond(ms).unwrap_or_default())
}

/// Milliseconds since the Unix epoch of a Kubernetes timestamp.
pub fn ms_of(t: &Time) -> i64 {
    t.0.as_millisecond()
}
