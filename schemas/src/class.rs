//! How a caller should treat a failure. Every crate's error says which class
//! it is in ([`ErrorClass`]), so a service can answer 4xx or 503, a job can
//! retry or stop, and a bug is logged loudly instead of retried forever.

use std::fmt;

/// The class of a failure: what the caller can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The request, a flag or a file given was wrong: fix it and ask again;
    /// retrying unchanged fails the same way (HTTP 4xx, exit code 2).
    Input,
    /// A dependency (Kafka, Redis, the object store) is down or slow: retry
    /// with backoff (HTTP 503).
    Unavailable,
    /// Stored data is not what this code wrote (damaged, hand-edited, or from
    /// another deployment): an operator must look; retrying does not help.
    Corrupt,
    /// This code is wrong (HTTP 500): log it loudly and report it.
    Bug,
}

impl ErrorClass {
    /// Whether the same call may succeed if retried later.
    pub fn retryable(self) -> bool {
        self == ErrorClass::Unavailable
    }

    /// `input`, `unavailable`, `corrupt` or `bug` (metric labels, JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Input => "input",
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::Corrupt => "corrupt",
            ErrorClass::Bug => "bug",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
