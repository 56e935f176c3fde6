//! How long a spent single-use value must be remembered: RFC 7523 §3
//! item 7 (assertion `jti`), RFC 9449 §11.1 (DPoP proof `jti`), and our
//! own single-use values (registration stamps, bridge nonces).
//!
//! A spent value is kept in the replay table, which the upkeep purges of
//! rows whose time has passed. If the row goes while the value's verifier
//! would still accept it, the value can be used a second time
//! (SECURITY.md, "Single-use retention"). So every spend names its
//! retention through [`SpentUntil::new`], from the same `exp` and leeway
//! that its verifier checks against, and nothing else.

/// The last second at which a spent value must still be found: the
/// value's expiry plus every second of leeway its verifier grants past
/// it. A verifier that accepts while `now < exp + leeway` (or, at most,
/// `now <= exp + leeway`) finds the row, since the purge deletes only rows
/// whose time is strictly before `now`
/// ([`crate::store::replay::purge`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpentUntil(i64);

impl SpentUntil {
    /// A value its verifier accepts until `exp`, tolerating `leeway`
    /// seconds of clock skew past it.
    pub const fn new(exp: i64, leeway: i64) -> Self {
        Self(exp.saturating_add(leeway))
    }

    /// The time (seconds since the epoch) to store with the spent value.
    pub const fn at(self) -> i64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::SpentUntil;

    #[test]
    fn a_spent_value_outlives_its_expiry_by_the_leeway() {
        assert_eq!(SpentUntil::new(1_000, 30).at(), 1_030);
        assert_eq!(SpentUntil::new(1_000, 0).at(), 1_000);
        assert_eq!(SpentUntil::new(i64::MAX - 1, 30).at(), i64::MAX);
    }
}
