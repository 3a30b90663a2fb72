//! W3C Trace Context (`traceparent`) as it travels with an event: ingest
//! takes it from the request (or starts a trace), puts it in the Kafka
//! record's [`TRACE_HEADER`], and speed, the archive and the dead-letter
//! topic carry it on, so one event can be followed across services by its
//! trace id in their logs.

use std::fmt;

/// The HTTP header and the Kafka record header.
pub const TRACE_HEADER: &str = "traceparent";

/// A parsed `traceparent`: `00-<trace id>-<parent id>-<flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: u128,
    parent_id: u64,
    flags: u8,
}

impl TraceParent {
    /// A new trace (random ids), sampled.
    pub fn start() -> Self {
        let a = uuid::Uuid::new_v4().as_u128();
        let b = uuid::Uuid::new_v4().as_u128();
        Self {
            trace_id: a.max(1),
            parent_id: (b as u64).max(1),
            flags: 1,
        }
    }

    /// Parses a header value; `None` for anything the W3C format refuses
    /// (then a service starts a new trace instead).
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        // Version ff is invalid; a future version may append fields.
        if !hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        if !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2) {
            return None;
        }
        let t = Self {
            trace_id: u128::from_str_radix(trace, 16).ok()?,
            parent_id: u64::from_str_radix(parent, 16).ok()?,
            flags: u8::from_str_radix(flags, 16).ok()?,
        };
        (t.trace_id != 0 && t.parent_id != 0).then_some(t)
    }

    /// The same trace with a new span (this service's).
    pub fn child(&self) -> Self {
        Self {
            parent_id: (uuid::Uuid::new_v4().as_u128() as u64).max(1),
            ..*self
        }
    }

    /// The trace id, 32 lowercase hex digits (what logs show).
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.parent_id, self.flags
        )
    }
}

/// The trace id in a Kafka record's headers, if it carries a valid one.
pub fn trace_id_of(header_value: Option<&[u8]>) -> Option<String> {
    let v = std::str::from_utf8(header_value?).ok()?;
    TraceParent::parse(v).map(|t| t.trace_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_w3c_example_and_refuses_malformed_values() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceParent::parse(v).unwrap();
        assert_eq!(t.to_string(), v);
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let c = t.child();
        assert_eq!(c.trace_id(), t.trace_id());
        assert_ne!(c.to_string(), v);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        // A later version may carry more fields.
        assert!(TraceParent::parse(&format!("01-{}-x", &v[3..])).is_some());
        let fresh = TraceParent::start();
        assert_eq!(TraceParent::parse(&fresh.to_string()), Some(fresh));
    }
}
