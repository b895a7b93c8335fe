//! [`PolicyName`]: a policy's name held inline (no allocation), at most [`PolicyName::CAPACITY`]
//! bytes — what `extends:` refers to. A tiny type of its own rather than a general-purpose
//! fixed-capacity string crate: the core needs one such field, and every dependency is paid for by
//! every service that links the core.

use core::fmt;
use core::ops::Deref;

/// A policy name of at most [`PolicyName::CAPACITY`] bytes of UTF-8, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyName {
    len: u8,
    bytes: [u8; PolicyName::CAPACITY],
}

/// The name was longer than [`PolicyName::CAPACITY`] bytes (its length is handed back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameTooLong(pub usize);

impl fmt::Display for NameTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a policy name may be at most {} bytes long, got {}",
            PolicyName::CAPACITY,
            self.0
        )
    }
}

impl PolicyName {
    /// The longest name, in bytes.
    pub const CAPACITY: usize = 64;

    /// `name`, if it fits.
    pub fn new(name: &str) -> Result<Self, NameTooLong> {
        if name.len() > Self::CAPACITY {
            return Err(NameTooLong(name.len()));
        }
        let mut bytes = [0; Self::CAPACITY];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Ok(Self {
            len: name.len() as u8,
            bytes,
        })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Only `new` writes the bytes, from a `&str`, and cuts nothing: always valid UTF-8.
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl Deref for PolicyName {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<&str> for PolicyName {
    type Error = NameTooLong;
    fn try_from(name: &str) -> Result<Self, NameTooLong> {
        Self::new(name)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for PolicyName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for PolicyName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = PolicyName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a policy name of at most {} bytes", PolicyName::CAPACITY)
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<PolicyName, E> {
                PolicyName::new(name).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    extern crate std;
    use super::*;
    use std::format;
    use std::string::String;

    #[test]
    fn names_up_to_the_capacity_round_trip_and_longer_ones_are_refused() {
        let longest: String = "x".repeat(64);
        for name in ["", "a", "critical-payments", "é∂ƒ", longest.as_str()] {
            let n = PolicyName::new(name).unwrap();
            assert_eq!(n.as_str(), name);
            assert_eq!(&*n, name);
        }
        assert_eq!(PolicyName::new(&"x".repeat(65)), Err(NameTooLong(65)));
        // 63 ASCII bytes and a 2-byte character: 65 bytes, refused whole (never cut mid-character).
        let name = format!("{}é", "x".repeat(63));
        assert_eq!(PolicyName::new(&name), Err(NameTooLong(65)));
    }
}
