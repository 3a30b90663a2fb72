//! Signed playback tokens: the first line of defence against invented
//! views. The platform's player service signs each playback it starts
//! (the video, a playback id, when it was issued and when it expires) with
//! an Ed25519 key; the token travels in every view event of that playback,
//! and ingest verifies it with the public keys it holds ([`Keyring`]).
//! Ingest never holds a signing key, so a compromised ingest cannot mint
//! tokens. Key ids let a platform rotate keys: ingest keeps the old public
//! key until the last token signed with it has expired.
//!
//! A token is four dot-separated parts, all URL-safe:
//!
//! ```text
//! vpt1.<key id>.<base64url(claims JSON)>.<base64url(Ed25519 signature)>
//! ```
//!
//! The signature covers [`SIGNING_CONTEXT`], the key id, a newline and the
//! claims part exactly as it appears in the token, so a signature of one key
//! id never verifies under another and the claims are checked as signed.
//! The claims are `{"video_id", "playback_id", "iat", "exp"}` with times in
//! Unix seconds; unknown claims are refused.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The first part of every token (the format's version).
pub const TOKEN_PREFIX: &str = "vpt1";
/// What a signature covers before the key id and the claims: no signature
/// made for anything else verifies as a playback token.
pub const SIGNING_CONTEXT: &[u8] = b"viewcount/playback-token/v1\n";
/// Longest token ingest reads, in bytes.
pub const MAX_TOKEN_BYTES: usize = 1024;
/// Longest key id, in characters (`[A-Za-z0-9_-]`).
pub const MAX_KEY_ID_CHARS: usize = 32;
/// Longest playback id, in characters.
pub const MAX_PLAYBACK_ID_CHARS: usize = 128;
/// The longest a token may be valid (`exp - iat`): long enough for a long
/// live stream, short enough that a leaked token is soon worthless.
pub const MAX_LIFETIME: Duration = Duration::hours(24);
/// Clock difference tolerated between the player service, the player and
/// ingest.
pub const CLOCK_SKEW: Duration = Duration::minutes(5);
/// The first word of a signing key file.
const SIGNING_KEY_LABEL: &str = "VIEWCOUNT-PLAYBACK-SIGNING-KEY";
/// The algorithm word of a public key line.
const ALGORITHM: &str = "ed25519";

/// What a token says: this playback of this video was started by the
/// platform, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The video played.
    pub video_id: String,
    /// The playback (one per start of the player; the replay rule counts
    /// views per playback id).
    pub playback_id: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
}

impl Claims {
    /// When the token was issued (`None`: outside chrono's range).
    pub fn issued_at(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(self.iat, 0)
    }

    /// When it expires (`None`: outside chrono's range).
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(self.exp, 0)
    }
}

/// A verified token: its key id and claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The key that signed it.
    pub key_id: String,
    /// What it says.
    pub claims: Claims,
}

/// Why a token was refused. Each message names what was wrong and what the
/// player service or the operator should do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token of this format.
    #[error(
        "playback_token is malformed ({0}); it must be vpt1.<key id>.<claims>.<signature> as `viewcount token sign-playback` makes"
    )]
    Malformed(String),
    /// Signed with a key ingest does not hold.
    #[error(
        "playback_token is signed with key id {0:?}, which ingest does not hold; add that key's public line to --playback-keys, or sign with a key it holds"
    )]
    UnknownKey(String),
    /// The signature does not verify.
    #[error(
        "playback_token's signature does not verify under key {0:?}: the token was altered or signed with another key"
    )]
    BadSignature(String),
    /// Signed for another video.
    #[error("playback_token was issued for video {token:?}, not {event:?}")]
    WrongVideo {
        /// The token's video.
        token: String,
        /// The event's.
        event: String,
    },
    /// Issued in the future of the receive time.
    #[error(
        "playback_token is issued at {issued} (more than 5 minutes after it was received, {received}); check the player service's clock"
    )]
    NotYetValid {
        /// Its `iat`.
        issued: String,
        /// The receive time.
        received: String,
    },
    /// The view happened outside the token's validity.
    #[error(
        "playback_token is valid from {from} to {to} (±5 minutes), but the view occurred at {occurred}; a view is reported with the token of the playback it belongs to"
    )]
    Expired {
        /// `iat`.
        from: String,
        /// `exp`.
        to: String,
        /// The event's `occurred_at`.
        occurred: String,
    },
    /// Valid for longer than [`MAX_LIFETIME`].
    #[error(
        "playback_token is valid for {hours} hours, longer than the 24 allowed; issue tokens per playback, for at most 24 hours"
    )]
    TooLong {
        /// `exp - iat`, in hours.
        hours: i64,
    },
}

impl TokenError {
    /// A short stable code, for metrics and the archive.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) => "malformed",
            TokenError::UnknownKey(_) => "unknown_key",
            TokenError::BadSignature(_) => "bad_signature",
            TokenError::WrongVideo { .. } => "wrong_video",
            TokenError::NotYetValid { .. } => "not_yet_valid",
            TokenError::Expired { .. } => "expired",
            TokenError::TooLong { .. } => "too_long",
        }
    }
}

/// A problem with a key file: what is wrong and how to make a good one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

fn check_key_id(kid: &str) -> Result<(), String> {
    let ok = !kid.is_empty()
        && kid.chars().count() <= MAX_KEY_ID_CHARS
        && kid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "key id {kid:?} must be 1 to {MAX_KEY_ID_CHARS} of A-Z, a-z, 0-9, '-' and '_'"
        ))
    }
}

/// The player service's signing key.
pub struct PlaybackSigner {
    key_id: String,
    key: SigningKey,
}

impl fmt::Debug for PlaybackSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlaybackSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl PlaybackSigner {
    /// A new random key with id `key_id`.
    pub fn generate(key_id: &str) -> Result<Self, KeyError> {
        use rand_core_06::RngCore as _;
        check_key_id(key_id).map_err(KeyError)?;
        let mut seed = [0u8; 32];
        rand_core_06::OsRng.fill_bytes(&mut seed);
        Ok(Self {
            key_id: key_id.to_owned(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// A key from its 32-byte seed (tests and the demo's fixed key).
    pub fn from_seed(key_id: &str, seed: [u8; 32]) -> Result<Self, KeyError> {
        check_key_id(key_id).map_err(KeyError)?;
        Ok(Self {
            key_id: key_id.to_owned(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Parses a signing key file (`VIEWCOUNT-PLAYBACK-SIGNING-KEY <key id>
    /// <base64 seed>`).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let bad = |why: String| {
            KeyError(format!(
                "not a playback signing key ({why}); make one with `viewcount token playback-keygen`"
            ))
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        let [label, kid, seed] = words[..] else {
            return Err(bad(format!(
                "expected 3 words, {SIGNING_KEY_LABEL} <key id> <base64 key>, got {}",
                words.len()
            )));
        };
        if label != SIGNING_KEY_LABEL {
            return Err(bad(format!("it starts with {label:?}")));
        }
        let seed: [u8; 32] = STANDARD
            .decode(seed)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("the key is not 32 bytes of base64".into()))?;
        Self::from_seed(kid, seed).map_err(|KeyError(why)| bad(why))
    }

    /// The signing key file's text (secret: keep it with the player service).
    pub fn to_file_text(&self) -> String {
        format!(
            "{SIGNING_KEY_LABEL} {} {}\n",
            self.key_id,
            STANDARD.encode(self.key.to_bytes())
        )
    }

    /// The public key line ingest's `--playback-keys` file holds.
    pub fn public_line(&self) -> String {
        format!(
            "{} {ALGORITHM} {}\n",
            self.key_id,
            STANDARD.encode(self.key.verifying_key().to_bytes())
        )
    }

    /// The key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Signs `claims`: the token.
    pub fn sign(&self, claims: &Claims) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signature = self.key.sign(&signed_bytes(&self.key_id, &body));
        format!(
            "{TOKEN_PREFIX}.{}.{body}.{}",
            self.key_id,
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }

    /// A token for one playback of `video_id` issued at `issued_at`, valid
    /// for `ttl` (at most [`MAX_LIFETIME`] verifies).
    pub fn issue(
        &self,
        video_id: &str,
        playback_id: &str,
        issued_at: DateTime<Utc>,
        ttl: Duration,
    ) -> String {
        self.sign(&Claims {
            video_id: video_id.to_owned(),
            playback_id: playback_id.to_owned(),
            iat: issued_at.timestamp(),
            exp: (issued_at + ttl).timestamp(),
        })
    }
}

fn signed_bytes(key_id: &str, body: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_CONTEXT.len() + key_id.len() + 1 + body.len());
    m.extend_from_slice(SIGNING_CONTEXT);
    m.extend_from_slice(key_id.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body.as_bytes());
    m
}

/// The public keys ingest verifies tokens with, by key id.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: BTreeMap<String, VerifyingKey>,
}

impl Keyring {
    /// Parses a keys file: one `<key id> ed25519 <base64 public key>` per
    /// line; blank lines and lines starting with `#` are skipped. `source`
    /// names the file in errors.
    pub fn parse(text: &str, source: &str) -> Result<Self, KeyError> {
        let mut keys = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: String| {
                KeyError(format!(
                    "{source} line {}: {why}; each line is `<key id> ed25519 <base64 public key>` as `viewcount token playback-keygen` writes to its .pub file",
                    n + 1
                ))
            };
            let words: Vec<&str> = line.split_whitespace().collect();
            let [kid, alg, key] = words[..] else {
                return Err(bad(format!("expected 3 words, got {}", words.len())));
            };
            check_key_id(kid).map_err(bad)?;
            if alg != ALGORITHM {
                return Err(bad(format!("algorithm {alg:?} is not {ALGORITHM}")));
            }
            let key = STANDARD
                .decode(key)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .and_then(|b| VerifyingKey::from_bytes(&b).ok())
                .ok_or_else(|| {
                    bad("the key is not a 32-byte Ed25519 public key in base64".into())
                })?;
            if keys.insert(kid.to_owned(), key).is_some() {
                return Err(bad(format!("key id {kid:?} appears twice")));
            }
        }
        if keys.is_empty() {
            return Err(KeyError(format!(
                "{source} holds no key; add the public line of the player service's key (`viewcount token playback-keygen`)"
            )));
        }
        Ok(Self { keys })
    }

    /// A keyring of the signers' public keys (tests and the demo).
    pub fn of(signers: &[&PlaybackSigner]) -> Self {
        Self {
            keys: signers
                .iter()
                .map(|s| (s.key_id.clone(), s.key.verifying_key()))
                .collect(),
        }
    }

    /// Adds a signer's public key; `Err` when its key id is held already.
    pub fn insert(&mut self, signer: &PlaybackSigner) -> Result<(), KeyError> {
        if self.keys.contains_key(&signer.key_id) {
            return Err(KeyError(format!(
                "key id {:?} is held already; give each key its own id",
                signer.key_id
            )));
        }
        self.keys
            .insert(signer.key_id.clone(), signer.key.verifying_key());
        Ok(())
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key ids held.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Verifies `token` for a view of `video_id` that occurred at
    /// `occurred_at` and was received at `received_at`: signed by a key
    /// held, for this video, issued no later than the receive time (give or
    /// take [`CLOCK_SKEW`]), valid for at most [`MAX_LIFETIME`], and the
    /// view within its validity (give or take [`CLOCK_SKEW`]). Late views
    /// are judged by when they occurred, so an event that arrives days
    /// later with its playback's token still verifies. The same as
    /// [`Keyring::open`] then [`Opened::check`].
    pub fn verify(
        &self,
        token: &str,
        video_id: &str,
        occurred_at: DateTime<Utc>,
        received_at: DateTime<Utc>,
    ) -> Result<Verified, TokenError> {
        self.open(token)?.check(video_id, occurred_at, received_at)
    }

    /// The part of [`Keyring::verify`] that depends on the token alone (the
    /// signature, and claims that are well-formed and live at most
    /// [`MAX_LIFETIME`]): a caller that meets one token many times, as
    /// ingest does in a request, pays for the signature once.
    pub fn open(&self, token: &str) -> Result<Opened, TokenError> {
        let malformed = |why: &str| TokenError::Malformed(why.to_owned());
        if token.len() > MAX_TOKEN_BYTES {
            return Err(malformed("longer than 1024 bytes"));
        }
        let mut parts = token.split('.');
        let (Some(prefix), Some(kid), Some(body), Some(sig), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(malformed("not four dot-separated parts"));
        };
        if prefix != TOKEN_PREFIX {
            return Err(malformed("it does not start with vpt1"));
        }
        check_key_id(kid).map_err(TokenError::Malformed)?;
        let key = self
            .keys
            .get(kid)
            .ok_or_else(|| TokenError::UnknownKey(kid.to_owned()))?;
        let sig: [u8; 64] = URL_SAFE_NO_PAD
            .decode(sig)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| malformed("the signature is not 64 bytes of base64url"))?;
        key.verify(&signed_bytes(kid, body), &Signature::from_bytes(&sig))
            .map_err(|_| TokenError::BadSignature(kid.to_owned()))?;
        // Only what verified is parsed.
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| malformed("the claims are not the JSON object of a token"))?;
        let id_ok = !claims.playback_id.is_empty()
            && claims.playback_id.chars().count() <= MAX_PLAYBACK_ID_CHARS;
        if !id_ok {
            return Err(malformed("playback_id must be 1 to 128 characters"));
        }
        let lifetime = claims.exp.saturating_sub(claims.iat);
        if lifetime < 0 {
            return Err(malformed("it expires before it is issued"));
        }
        if lifetime > MAX_LIFETIME.num_seconds() {
            return Err(TokenError::TooLong {
                hours: lifetime / 3600,
            });
        }
        // Times far outside any calendar (a signer's bug) are refused, not
        // turned into a date that skew arithmetic would overflow.
        let (Some(from), Some(to)) = (
            claims
                .issued_at()
                .filter(|t| t.timestamp().unsigned_abs() < 1 << 40),
            claims
                .expires_at()
                .filter(|t| t.timestamp().unsigned_abs() < 1 << 40),
        ) else {
            return Err(malformed("iat or exp is not a plausible Unix time"));
        };
        Ok(Opened {
            key_id: kid.to_owned(),
            claims,
            from,
            to,
        })
    }
}

/// A token whose signature verified and whose claims are well-formed
/// ([`Keyring::open`]), not yet held against a view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    key_id: String,
    claims: Claims,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

impl Opened {
    /// The rest of [`Keyring::verify`]: the token is for `video_id`, issued
    /// no later than `received_at` and valid when the view occurred (each
    /// give or take [`CLOCK_SKEW`]).
    pub fn check(
        &self,
        video_id: &str,
        occurred_at: DateTime<Utc>,
        received_at: DateTime<Utc>,
    ) -> Result<Verified, TokenError> {
        if self.claims.video_id != video_id {
            return Err(TokenError::WrongVideo {
                token: self.claims.video_id.clone(),
                event: video_id.to_owned(),
            });
        }
        if self.from > received_at + CLOCK_SKEW {
            return Err(TokenError::NotYetValid {
                issued: self.from.to_rfc3339(),
                received: received_at.to_rfc3339(),
            });
        }
        if occurred_at < self.from - CLOCK_SKEW || occurred_at > self.to + CLOCK_SKEW {
            return Err(TokenError::Expired {
                from: self.from.to_rfc3339(),
                to: self.to.to_rfc3339(),
                occurred: occurred_at.to_rfc3339(),
            });
        }
        Ok(Verified {
            key_id: self.key_id.clone(),
            claims: self.claims.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn signer(kid: &str, seed: u8) -> PlaybackSigner {
        PlaybackSigner::from_seed(kid, [seed; 32]).unwrap()
    }

    const T0: &str = "2026-12-01T10:00:00Z";

    fn token(s: &PlaybackSigner) -> String {
        s.issue("v-1", "pb-42", at(T0), Duration::hours(2))
    }

    #[test]
    fn a_token_verifies_for_its_video_within_its_validity() {
        let s = signer("k1", 7);
        let ring = Keyring::of(&[&s]);
        let t = token(&s);
        assert!(t.starts_with("vpt1.k1."), "{t}");
        let v = ring
            .verify(
                &t,
                "v-1",
                at("2026-12-01T11:00:00Z"),
                at("2026-12-01T11:00:01Z"),
            )
            .unwrap();
        assert_eq!(v.key_id, "k1");
        assert_eq!(v.claims.playback_id, "pb-42");
        assert_eq!(v.claims.issued_at(), Some(at(T0)));
        // A late event, received days after the token expired, is judged by
        // when it occurred.
        ring.verify(
            &t,
            "v-1",
            at("2026-12-01T11:59:00Z"),
            at("2026-12-05T00:00:00Z"),
        )
        .unwrap();
    }

    #[test]
    fn every_way_a_token_can_be_wrong_is_refused_with_its_reason() {
        let s = signer("k1", 7);
        let ring = Keyring::of(&[&s]);
        let t = token(&s);
        let (occurred, received) = (at("2026-12-01T11:00:00Z"), at("2026-12-01T11:00:01Z"));
        let check = |t: &str, video: &str, o, r| ring.verify(t, video, o, r).unwrap_err();

        // Another key, with the same id or another.
        let other = signer("k1", 8);
        assert_eq!(
            check(&token(&other), "v-1", occurred, received).code(),
            "bad_signature"
        );
        let unknown = signer("k9", 7);
        assert_eq!(
            check(&token(&unknown), "v-1", occurred, received),
            TokenError::UnknownKey("k9".into())
        );
        // One altered byte in any part.
        let parts: Vec<&str> = t.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let mut b = part.as_bytes().to_vec();
            let last = b.len() - 1;
            b[last] = if b[last] == b'A' { b'B' } else { b'A' };
            let mut altered: Vec<String> = parts.iter().map(|p| (*p).to_owned()).collect();
            altered[i] = String::from_utf8(b).unwrap();
            let e = check(&altered.join("."), "v-1", occurred, received);
            assert!(
                matches!(
                    e,
                    TokenError::Malformed(_)
                        | TokenError::BadSignature(_)
                        | TokenError::UnknownKey(_)
                ),
                "part {i}: {e}"
            );
        }
        // The claims of one token under the signature of another.
        let t2 = s.issue("v-2", "pb-42", at(T0), Duration::hours(2));
        let p2: Vec<&str> = t2.split('.').collect();
        let spliced = format!("{}.{}.{}.{}", parts[0], parts[1], p2[2], parts[3]);
        assert_eq!(
            check(&spliced, "v-2", occurred, received).code(),
            "bad_signature"
        );
        // Another video.
        assert_eq!(
            check(&t, "v-2", occurred, received),
            TokenError::WrongVideo {
                token: "v-1".into(),
                event: "v-2".into()
            }
        );
        // A view after expiry, or before issue.
        assert_eq!(
            check(&t, "v-1", at("2026-12-01T12:06:00Z"), received).code(),
            "expired"
        );
        assert_eq!(
            check(&t, "v-1", at("2026-12-01T09:54:00Z"), received).code(),
            "expired"
        );
        // Issued in the future of ingest's clock.
        assert_eq!(
            check(&t, "v-1", occurred, at("2026-12-01T09:50:00Z")).code(),
            "not_yet_valid"
        );
        // Valid for longer than a day.
        let long = s.issue("v-1", "pb-42", at(T0), Duration::hours(25));
        assert_eq!(
            check(&long, "v-1", occurred, received),
            TokenError::TooLong { hours: 25 }
        );
        // Not a token.
        for junk in [
            "",
            "vpt1",
            "vpt1.k1.x",
            "vpt2.k1.a.b",
            "vpt1.k1.a.b.c",
            "vpt1.k 1.a.b",
        ] {
            assert_eq!(
                check(junk, "v-1", occurred, received).code(),
                "malformed",
                "{junk:?}"
            );
        }
        // Signed, but with times no calendar holds: refused, no overflow.
        for (iat, exp) in [
            (i64::MIN, i64::MIN),
            (i64::MAX - 10, i64::MAX),
            (-(1 << 41), -(1 << 41)),
        ] {
            let t = s.sign(&Claims {
                video_id: "v-1".into(),
                playback_id: "p".into(),
                iat,
                exp,
            });
            assert_eq!(
                check(&t, "v-1", occurred, received).code(),
                "malformed",
                "{iat}"
            );
        }
        let huge = format!("vpt1.k1.{}.x", "a".repeat(2000));
        assert_eq!(check(&huge, "v-1", occurred, received).code(), "malformed");
        // Every message says what to do.
        let e = check(&token(&unknown), "v-1", occurred, received).to_string();
        assert!(e.contains("--playback-keys"), "{e}");
    }

    #[test]
    fn unknown_claims_are_refused_even_when_signed() {
        let s = signer("k1", 7);
        let body = URL_SAFE_NO_PAD.encode(
            br#"{"video_id":"v-1","playback_id":"p","iat":1764583200,"exp":1764586800,"views":99}"#,
        );
        let sig = s.key.sign(&signed_bytes("k1", &body));
        let t = format!("vpt1.k1.{body}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()));
        let e = Keyring::of(&[&s])
            .verify(&t, "v-1", at(T0), at(T0))
            .unwrap_err();
        assert_eq!(e.code(), "malformed", "{e}");
    }

    #[test]
    fn keys_rotate_and_key_files_round_trip() {
        let old = signer("2026-11", 1);
        let new = PlaybackSigner::generate("2026-12").unwrap();
        let file = format!(
            "# player service keys\n\n{}{}",
            old.public_line(),
            new.public_line()
        );
        let ring = Keyring::parse(&file, "keys.txt").unwrap();
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["2026-11", "2026-12"]);
        let (o, r) = (at("2026-12-01T10:30:00Z"), at("2026-12-01T10:30:00Z"));
        ring.verify(&token(&old), "v-1", o, r).unwrap();
        ring.verify(&token(&new), "v-1", o, r).unwrap();

        let reread = PlaybackSigner::parse(&new.to_file_text()).unwrap();
        assert_eq!(reread.key_id(), "2026-12");
        assert_eq!(reread.public_line(), new.public_line());
        assert_eq!(
            token(&reread),
            token(&new),
            "Ed25519 signs deterministically"
        );
    }

    #[test]
    fn bad_key_files_say_what_is_wrong() {
        let s = signer("k1", 1);
        for (text, want) in [
            ("", "holds no key"),
            ("# only a comment\n", "holds no key"),
            ("k1 ed25519\n", "line 1: expected 3 words"),
            ("k1 rsa AAAA\n", "algorithm \"rsa\""),
            (
                "k1 ed25519 bm90IGEga2V5\n",
                "not a 32-byte Ed25519 public key",
            ),
            ("bad/id ed25519 AAAA\n", "key id \"bad/id\""),
        ] {
            let e = Keyring::parse(text, "keys.txt").unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let twice = format!("{}{}", s.public_line(), s.public_line());
        let e = Keyring::parse(&twice, "keys.txt").unwrap_err().to_string();
        assert!(e.contains("line 2: key id \"k1\" appears twice"), "{e}");
        for text in [
            "",
            "VIEWCOUNT-PLAYBACK-SIGNING-KEY k1",
            "PRIVATE k1 AAAA",
            &s.public_line(),
        ] {
            let e = PlaybackSigner::parse(text).unwrap_err().to_string();
            assert!(e.contains("playback-keygen"), "{text:?}: {e}");
        }
        assert!(PlaybackSigner::generate("").is_err());
        assert!(PlaybackSigner::generate(&"k".repeat(33)).is_err());
    }
}
