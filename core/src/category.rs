//! Error categories: what kind of failure an attempt ended in.
//!
//! The seed fixes eight names — four retryable, four not. Two more carry information the
//! decision needs: `RateLimited` (the server may say how long to wait) and `AuthExpired` (retried
//! once, and only when the host reports that it refreshed the token). Hosts map their own errors
//! onto these; the core never sees an error type, only a category.

use core::fmt;

/// The category of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCategory {
    /// The connection could not be made or broke (seed: retryable).
    Connection,
    /// The attempt took too long (seed: retryable).
    Timeout,
    /// The service said it is unavailable, e.g. HTTP 502/503/504 (seed: retryable).
    ServiceUnavailable,
    /// The service's rate limit was exceeded (seed: retryable).
    RateLimitExceeded,
    /// Credentials were rejected for good (seed: not retryable).
    Authentication,
    /// The request was invalid (seed: not retryable).
    Validation,
    /// The resource does not exist (seed: not retryable).
    ResourceNotFound,
    /// The service refused for a business reason (seed: not retryable).
    BusinessLogic,
    /// Throttled, with an optional server delay (`Retry-After`): always retryable.
    RateLimited,
    /// Credentials expired: retried once, only after the host refreshed the token.
    AuthExpired,
}

/// Every category, in declaration order (the bit order of [`CategorySet`]).
const ALL: [ErrorCategory; 10] = [
    ErrorCategory::Connection,
    ErrorCategory::Timeout,
    ErrorCategory::ServiceUnavailable,
    ErrorCategory::RateLimitExceeded,
    ErrorCategory::Authentication,
    ErrorCategory::Validation,
    ErrorCategory::ResourceNotFound,
    ErrorCategory::BusinessLogic,
    ErrorCategory::RateLimited,
    ErrorCategory::AuthExpired,
];

impl ErrorCategory {
    /// Every category.
    pub const ALL: [ErrorCategory; 10] = ALL;

    /// The canonical name: the seed's class name, or `RateLimited` / `AuthExpired`.
    /// This is the `error_type` label of `retry_failure_total`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Connection => "ConnectionError",
            Self::Timeout => "TimeoutError",
            Self::ServiceUnavailable => "ServiceUnavailableError",
            Self::RateLimitExceeded => "RateLimitExceededError",
            Self::Authentication => "AuthenticationError",
            Self::Validation => "ValidationError",
            Self::ResourceNotFound => "ResourceNotFoundError",
            Self::BusinessLogic => "BusinessLogicError",
            Self::RateLimited => "RateLimited",
            Self::AuthExpired => "AuthExpired",
        }
    }

    /// The snake_case alias accepted in config files (`connection_error`, `rate_limited`, …).
    pub const fn snake_name(self) -> &'static str {
        match self {
            Self::Connection => "connection_error",
            Self::Timeout => "timeout_error",
            Self::ServiceUnavailable => "service_unavailable_error",
            Self::RateLimitExceeded => "rate_limit_exceeded_error",
            Self::Authentication => "authentication_error",
            Self::Validation => "validation_error",
            Self::ResourceNotFound => "resource_not_found_error",
            Self::BusinessLogic => "business_logic_error",
            Self::RateLimited => "rate_limited",
            Self::AuthExpired => "auth_expired",
        }
    }

    /// Looks a category up by its canonical or snake_case name.
    pub fn from_name(name: &str) -> Result<Self, UnknownCategory<'_>> {
        ALL.iter()
            .copied()
            .find(|c| c.name() == name || c.snake_name() == name)
            .ok_or(UnknownCategory { name })
    }

    /// Whether the seed lists this category as retryable (the default `retry_on`).
    pub const fn retryable_by_default(self) -> bool {
        matches!(
            self,
            Self::Connection
                | Self::Timeout
                | Self::ServiceUnavailable
                | Self::RateLimitExceeded
                | Self::RateLimited
        )
    }

    const fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for ErrorCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not an error category; hands the rejected name back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownCategory<'a> {
    /// The name that was not recognised.
    pub name: &'a str,
}

impl fmt::Display for UnknownCategory<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown error category `{}`, expected one of ",
            self.name
        )?;
        for (i, c) in ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(c.name())?;
        }
        Ok(())
    }
}

/// A set of categories, as a bit set (no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CategorySet(u16);

impl CategorySet {
    /// No category.
    pub const EMPTY: Self = Self(0);

    /// The seed's retryable categories plus `RateLimited`.
    pub const SEED_RETRYABLE: Self = {
        let mut bits = 0;
        let mut i = 0;
        while i < ALL.len() {
            if ALL[i].retryable_by_default() {
                bits |= ALL[i].bit();
            }
            i += 1;
        }
        Self(bits)
    };

    /// This set with `category` added.
    #[must_use]
    pub const fn with(self, category: ErrorCategory) -> Self {
        Self(self.0 | category.bit())
    }

    /// Whether `category` is in the set.
    pub const fn contains(self, category: ErrorCategory) -> bool {
        self.0 & category.bit() != 0
    }

    /// The raw bits (bit i = `ErrorCategory::ALL[i]`), for compact transport.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// A set from raw bits; bits beyond the known categories are dropped.
    pub const fn from_bits(bits: u16) -> Self {
        Self(bits & ((1 << ALL.len()) - 1))
    }

    /// The categories in the set.
    pub fn iter(self) -> impl Iterator<Item = ErrorCategory> {
        ALL.into_iter().filter(move |c| self.contains(*c))
    }
}

impl Default for CategorySet {
    fn default() -> Self {
        Self::SEED_RETRYABLE
    }
}

impl fmt::Debug for CategorySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(ErrorCategory::name))
            .finish()
    }
}

#[cfg(feature = "serde")]
mod serde_impls {
    use super::{CategorySet, ErrorCategory};
    use core::fmt;
    use serde::de::{self, SeqAccess, Visitor};
    use serde::ser::SerializeSeq;

    impl serde::Serialize for ErrorCategory {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(self.name())
        }
    }

    struct CategoryVisitor;

    impl Visitor<'_> for CategoryVisitor {
        type Value = ErrorCategory;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an error category name such as ConnectionError")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<ErrorCategory, E> {
            ErrorCategory::from_name(v).map_err(E::custom)
        }
    }

    impl<'de> serde::Deserialize<'de> for ErrorCategory {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_str(CategoryVisitor)
        }
    }

    impl serde::Serialize for CategorySet {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(None)?;
            for c in self.iter() {
                seq.serialize_element(c.name())?;
            }
            seq.end()
        }
    }

    struct SetVisitor;

    impl<'de> Visitor<'de> for SetVisitor {
        type Value = CategorySet;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of error category names")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CategorySet, A::Error> {
            let mut set = CategorySet::EMPTY;
            while let Some(c) = seq.next_element::<ErrorCategory>()? {
                set = set.with(c);
            }
            Ok(set)
        }
    }

    impl<'de> serde::Deserialize<'de> for CategorySet {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_seq(SetVisitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in ErrorCategory::ALL {
            assert_eq!(ErrorCategory::from_name(c.name()), Ok(c));
            assert_eq!(ErrorCategory::from_name(c.snake_name()), Ok(c));
        }
        assert_eq!(
            ErrorCategory::from_name("Teapot"),
            Err(UnknownCategory { name: "Teapot" })
        );
    }

    #[test]
    fn seed_retryable_set_is_the_seeds() {
        let set = CategorySet::SEED_RETRYABLE;
        for c in [
            ErrorCategory::Connection,
            ErrorCategory::Timeout,
            ErrorCategory::ServiceUnavailable,
            ErrorCategory::RateLimitExceeded,
            ErrorCategory::RateLimited,
        ] {
            assert!(set.contains(c), "{c}");
        }
        for c in [
            ErrorCategory::Authentication,
            ErrorCategory::Validation,
            ErrorCategory::ResourceNotFound,
            ErrorCategory::BusinessLogic,
            ErrorCategory::AuthExpired,
        ] {
            assert!(!set.contains(c), "{c}");
        }
        assert_eq!(CategorySet::from_bits(set.bits()), set);
    }
}
