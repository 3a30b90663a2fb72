//! Request body decoding for `POST /v1/events` (DESIGN §6), free of I/O: a JSON object, a JSON array, or NDJSON
//! become a list of per-event JSON values (or per-line parse failures).

use serde_json::Value;

/// The body formats ingest understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json`: one event object or an array of them.
    Json,
    /// `application/x-ndjson`: one event object per line.
    Ndjson,
}

/// Why a body as a whole cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Content type missing or not one we read.
    #[error(
        "content type {0:?} is not supported; send application/json (an event or an array of events) or application/x-ndjson (one event per line)"
    )]
    UnsupportedMediaType(String),
    /// The body is not JSON (or no NDJSON line is).
    #[error("{0}")]
    Unparseable(String),
    /// The body holds no event at all.
    #[error("the body holds no events; send one event object, an array of events, or NDJSON lines")]
    Empty,
    /// More events than one request may carry.
    #[error("the body holds {count} events, more than the limit of {max} per request; split it")]
    TooManyEvents {
        /// Events found.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// One event slot of a request: its JSON, or why its NDJSON line did not parse.
pub type Slot = Result<Value, String>;

/// Picks the format from a `Content-Type` header value.
pub fn body_format(content_type: Option<&str>) -> Result<BodyFormat, DecodeError> {
    let raw = content_type.unwrap_or("");
    let essence = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(BodyFormat::Json),
        "application/x-ndjson" | "application/ndjson" => Ok(BodyFormat::Ndjson),
        _ if raw.is_empty() => Err(DecodeError::UnsupportedMediaType("(none)".into())),
        _ => Err(DecodeError::UnsupportedMediaType(raw.to_owned())),
    }
}

/// Splits a body into event slots, at most `max_events` of them.
pub fn decode_body(
    format: BodyFormat,
    body: &[u8],
    max_events: usize,
) -> Result<Vec<Slot>, DecodeError> {
    let slots = match format {
        BodyFormat::Json => {
            let value: Value = serde_json::from_slice(body).map_err(|e| {
                DecodeError::Unparseable(format!("the body is not valid JSON: {e}"))
            })?;
            match value {
                Value::Array(items) => items.into_iter().map(Ok).collect(),
                obj @ Value::Object(_) => vec![Ok(obj)],
                _ => {
                    return Err(DecodeError::Unparseable(
                        "the body must be a JSON object (one event) or an array of events".into(),
                    ));
                }
            }
        }
        BodyFormat::Ndjson => {
            let text = std::str::from_utf8(body).map_err(|e| {
                DecodeError::Unparseable(format!(
                    "the body is not UTF-8 (first bad byte at {})",
                    e.valid_up_to()
                ))
            })?;
            let lines: Vec<(usize, &str)> = text
                .split('\n')
                .enumerate()
                .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
                .filter(|(_, l)| !l.trim().is_empty())
                .collect();
            if lines.len() > max_events {
                return Err(DecodeError::TooManyEvents {
                    count: lines.len(),
                    max: max_events,
                });
            }
            let slots: Vec<Slot> = lines
                .into_iter()
                .map(|(n, l)| {
                    serde_json::from_str::<Value>(l)
                        .map_err(|e| format!("line {n} is not valid JSON: {e}"))
                })
                .collect();
            if let Some(Err(first)) = slots.first()
                && slots.iter().all(Result::is_err)
            {
                return Err(DecodeError::Unparseable(format!(
                    "no line of the NDJSON body is valid JSON; {first}"
                )));
            }
            slots
        }
    };
    if slots.is_empty() {
        return Err(DecodeError::Empty);
    }
    if slots.len() > max_events {
        return Err(DecodeError::TooManyEvents {
            count: slots.len(),
            max: max_events,
        });
    }
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(
            body_format(Some("application/json; charset=utf-8")),
            Ok(BodyFormat::Json)
        );
        assert_eq!(
            body_format(Some("Application/X-NDJSON")),
            Ok(BodyFormat::Ndjson)
        );
        assert!(matches!(
            body_format(None),
            Err(DecodeError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            body_format(Some("text/plain")),
            Err(DecodeError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn json_object_and_array() {
        assert_eq!(
            decode_body(BodyFormat::Json, b"{\"a\":1}", 10)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            decode_body(BodyFormat::Json, b"[{}, 3, {}]", 10)
                .unwrap()
                .len(),
            3
        );
        assert_eq!(
            decode_body(BodyFormat::Json, b"[]", 10),
            Err(DecodeError::Empty)
        );
        assert!(matches!(
            decode_body(BodyFormat::Json, b"\"x\"", 10),
            Err(DecodeError::Unparseable(_))
        ));
    }

    #[test]
    fn json_parse_error_says_where() {
        let Err(DecodeError::Unparseable(m)) = decode_body(BodyFormat::Json, b"[{},\n {", 10)
        else {
            panic!("expected a parse error")
        };
        assert!(m.contains("line 2"), "{m}");
    }

    #[test]
    fn ndjson_bad_line_is_rejected_alone() {
        let body = b"{\"a\":1}\r\n\n{oops\n{\"b\":2}\n";
        let slots = decode_body(BodyFormat::Ndjson, body, 10).unwrap();
        assert_eq!(slots.len(), 3);
        assert!(slots[0].is_ok() && slots[2].is_ok());
        assert!(slots[1].as_ref().unwrap_err().starts_with("line 3 "));
        assert!(matches!(
            decode_body(BodyFormat::Ndjson, b"nope\nnope", 10),
            Err(DecodeError::Unparseable(_))
        ));
    }

    #[test]
    fn event_limit() {
        assert_eq!(
            decode_body(BodyFormat::Json, b"[{},{},{}]", 2),
            Err(DecodeError::TooManyEvents { count: 3, max: 2 })
        );
        assert_eq!(
            decode_body(BodyFormat::Ndjson, b"{}\n{}\n{}", 2),
            Err(DecodeError::TooManyEvents { count: 3, max: 2 })
        );
    }
}
