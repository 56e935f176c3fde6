//! Injected time, so that tests can move it without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

pub trait Clock: Send + Sync + 'static {
    /// Seconds since the Unix epoch.
    fn now(&self) -> i64;

    /// Milliseconds since the Unix epoch (schedules finer than a second:
    /// the security-event backoff). A clock of whole seconds answers
    /// `now() * 1000`.
    fn now_ms(&self) -> i64 {
        self.now().saturating_mul(1000)
    }
}

pub type SharedClock = Arc<dyn Clock>;

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that stands still until told to move.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now: i64) -> Self {
        Self(AtomicI64::new(now))
    }

    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Whole seconds until a rate-limited key may try again (`Retry-After`).
pub fn retry_after(not_until: &governor::NotUntil<governor::clock::QuantaInstant>) -> u64 {
    not_until
        .wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ))
        .as_secs()
        + 1
}

/// `unix` (seconds) as `2026-12-05 12:25:00 UTC`, for people reading
/// pages and CLI output.
pub fn utc(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => unix.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_reads_like_a_date() {
        assert_eq!(super::utc(1_800_000_000), "2027-01-15 08:00:00 UTC");
        assert_eq!(super::utc(i64::MAX), i64::MAX.to_string());
    }
}
