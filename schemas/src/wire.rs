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

/// JSON parsed into a [`Value`], refusing an object that names a key twice
/// (serde_json keeps the last one silently; two readers of one event could
/// then disagree on its `video_id`). The error names the key and where.
pub fn strict_from_slice(bytes: &[u8]) -> serde_json::Result<Value> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = Strict.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// Builds a [`Value`] as serde_json does, but fails on a duplicate key.
#[derive(Clone, Copy)]
struct Strict;

impl<'de> serde::de::DeserializeSeed<'de> for Strict {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        serde::de::DeserializeSeed::deserialize(self, d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "the key {key:?} appears twice in one object; send each field once"
                )));
            }
            let v = map.next_value_seed(self)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
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
            let value: Value = strict_from_slice(body).map_err(|e| {
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
                    strict_from_slice(l.as_bytes())
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
    fn a_key_twice_in_an_event_is_refused_naming_it() {
        let body = br#"[{"event_id":"a","video_id":"v1","video_id":"v2"}]"#;
        let e = decode_body(BodyFormat::Json, body, 10).unwrap_err();
        assert!(
            e.to_string()
                .contains(r#"the key "video_id" appears twice"#),
            "{e}"
        );
        // In NDJSON the line alone.
        let body = b"{\"a\":1}\n{\"b\":1,\"b\":2}\n";
        let slots = decode_body(BodyFormat::Ndjson, body, 10).unwrap();
        assert!(slots[0].is_ok());
        let err = slots[1].as_ref().unwrap_err();
        assert!(
            err.contains("line 2") && err.contains(r#""b" appears twice"#),
            "{err}"
        );
        // Same keys in different objects are fine, and values are as serde_json's.
        let body = br#"{"a":{"x":1},"b":{"x":[1.5,-2,null,true,"s"]}}"#;
        let strict = strict_from_slice(body).unwrap();
        assert_eq!(strict, serde_json::from_slice::<Value>(body).unwrap());
    }

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
