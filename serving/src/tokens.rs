//! Bearer tokens (DESIGN §6): who may read what.
//!
//! The tokens file is TOML, one `[[token]]` table per token:
//!
//! ```toml
//! [[token]]
//! name = "alice-dashboard"
//! sha256 = "…64 hex digits: SHA-256 of the secret…"
//! role = "creator"          # creator | finance | admin
//! creator_id = "alice"      # creators only
//! ```
//!
//! The secret itself is never stored: a request's secret is hashed and
//! compared with every token's hash in constant time, so neither the
//! comparison's duration nor an early exit tells how close a guess was.
//! [`new_token`] makes a secret and the table to append for it (what
//! `viewcount token create` does); the secret is shown once.

use std::fmt;

use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Only its own creator's videos.
    Creator,
    /// Everything (read), for payment reports.
    Finance,
    /// Everything.
    Admin,
}

impl Role {
    /// The role's name in the tokens file and in answers.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Creator => "creator",
            Role::Finance => "finance",
            Role::Admin => "admin",
        }
    }
}

/// One token of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// A name people recognise (unique in the file).
    pub name: String,
    /// SHA-256 of the secret.
    sha256: [u8; 32],
    /// Its role.
    pub role: Role,
    /// The creator a `creator` token is scoped to.
    pub creator_id: Option<String>,
}

impl Token {
    /// Whether this token may read data owned by `owner` (`None`: a video
    /// no catalog entry attributes to anyone). Creators see only their own;
    /// finance and admin see everything.
    pub fn may_read(&self, owner: Option<&str>) -> bool {
        match self.role {
            Role::Finance | Role::Admin => true,
            Role::Creator => owner.is_some() && owner == self.creator_id.as_deref(),
        }
    }
}

/// The tokens of a file, checked.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    tokens: Vec<Token>,
}

/// Why a tokens file is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokensError(pub String);

impl fmt::Display for TokensError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tokens file: {}", self.0)
    }
}

impl std::error::Error for TokensError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    token: Vec<RawToken>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    sha256: String,
    role: Role,
    creator_id: Option<String>,
}

impl Tokens {
    /// Parses and checks a tokens file: every field valid, names unique,
    /// `creator_id` exactly on creator tokens.
    pub fn parse(text: &str) -> Result<Self, TokensError> {
        let file: File = toml::from_str(text).map_err(|e| TokensError(e.to_string()))?;
        let mut tokens: Vec<Token> = Vec::with_capacity(file.token.len());
        for (i, t) in file.token.into_iter().enumerate() {
            let at = format!("token #{} ({:?})", i + 1, t.name);
            if t.name.trim().is_empty() {
                return Err(TokensError(format!("token #{}: name is empty", i + 1)));
            }
            if tokens.iter().any(|x| x.name == t.name) {
                return Err(TokensError(format!("{at}: the name is used twice")));
            }
            let mut sha = [0u8; 32];
            hex::decode_to_slice(&t.sha256, &mut sha).map_err(|_| {
                TokensError(format!(
                    "{at}: sha256 must be 64 hex digits (the SHA-256 of the secret)"
                ))
            })?;
            if let Some(other) = tokens.iter().find(|x| x.sha256 == sha) {
                // One secret would be two tokens (which role is it?).
                return Err(TokensError(format!(
                    "{at}: its sha256 is also token {:?}'s; give each token its own secret (`viewcount token create`)",
                    other.name
                )));
            }
            match (&t.role, &t.creator_id) {
                (Role::Creator, None) => {
                    return Err(TokensError(format!(
                        "{at}: a creator token needs creator_id"
                    )));
                }
                (Role::Creator, Some(c)) => {
                    if let Err(e) = store::catalog::check_creator_id(c) {
                        return Err(TokensError(format!("{at}: {e}")));
                    }
                }
                (Role::Finance | Role::Admin, Some(_)) => {
                    return Err(TokensError(format!(
                        "{at}: only creator tokens have a creator_id"
                    )));
                }
                _ => {}
            }
            tokens.push(Token {
                name: t.name,
                sha256: sha,
                role: t.role,
                creator_id: t.creator_id,
            });
        }
        Ok(Self { tokens })
    }

    /// The token whose secret is `secret`, if any. Every token's hash is
    /// compared, in constant time, whichever matches.
    pub fn authenticate(&self, secret: &str) -> Option<&Token> {
        let h: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let mut found = None;
        for t in &self.tokens {
            if bool::from(t.sha256.ct_eq(&h)) {
                found = Some(t);
            }
        }
        found
    }

    /// Whether `token` is still one of these, unchanged (a stream opened
    /// with it ends once it is revoked or its role or creator changed).
    pub fn holds(&self, token: &Token) -> bool {
        self.tokens.iter().any(|t| t == token)
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// A new secret (`vct_` and 64 hex digits from a cryptographically secure
/// generator seeded by the OS) and the
/// `[[token]]` table to append to the file for it. Errors when the
/// resulting entry would be refused (bad creator id, missing or extra
/// creator id).
pub fn new_token(
    name: &str,
    role: Role,
    creator_id: Option<&str>,
) -> Result<(String, String), TokensError> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("vct_{}", hex::encode(bytes));
    let role_name = role.name();
    let mut table = format!(
        "\n[[token]]\nname = {}\nsha256 = \"{}\"\nrole = \"{role_name}\"\n",
        toml_string(name),
        hex::encode(Sha256::digest(secret.as_bytes()))
    );
    if let Some(c) = creator_id {
        table.push_str(&format!("creator_id = {}\n", toml_string(c)));
    }
    // The entry must stand on its own as a valid file.
    Tokens::parse(&table)?;
    Ok((secret, table))
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_tokens_authenticate_with_their_role_and_scope() {
        let (alice_secret, alice) = new_token("alice-dash", Role::Creator, Some("alice")).unwrap();
        let (fin_secret, fin) = new_token("finance \"Q4\"", Role::Finance, None).unwrap();
        let tokens = Tokens::parse(&format!("# ours\n{alice}{fin}")).unwrap();
        assert_eq!(tokens.len(), 2);
        let a = tokens.authenticate(&alice_secret).expect("alice's secret");
        assert_eq!((a.name.as_str(), &a.role), ("alice-dash", &Role::Creator));
        assert!(a.may_read(Some("alice")));
        assert!(!a.may_read(Some("bob")), "another creator's video");
        assert!(!a.may_read(None), "an unattributed video");
        let f = tokens.authenticate(&fin_secret).unwrap();
        assert_eq!(f.name, "finance \"Q4\"");
        assert!(f.may_read(Some("bob")) && f.may_read(None));
        assert!(tokens.authenticate("vct_wrong").is_none());
        assert!(tokens.authenticate("").is_none());
        assert!(
            !alice.contains(&alice_secret),
            "the file never holds the secret"
        );
        assert_ne!(alice_secret, fin_secret);
    }

    #[test]
    fn bad_files_are_refused_saying_what_is_wrong() {
        let h = "0".repeat(64);
        let cases = [
            (
                format!("[[token]]\nname = \"a\"\nsha256 = \"{h}\"\nrole = \"creator\"\n"),
                "needs creator_id",
            ),
            (
                format!(
                    "[[token]]\nname = \"a\"\nsha256 = \"{h}\"\nrole = \"admin\"\ncreator_id = \"x\"\n"
                ),
                "only creator tokens",
            ),
            (
                "[[token]]\nname = \"a\"\nsha256 = \"abc\"\nrole = \"admin\"\n".to_owned(),
                "64 hex digits",
            ),
            (
                format!("[[token]]\nname = \"a\"\nsha256 = \"{h}\"\nrole = \"root\"\n"),
                "role",
            ),
            (
                format!(
                    "[[token]]\nname = \"a\"\nsha256 = \"{h}\"\nrole = \"admin\"\nsecret = \"x\"\n"
                ),
                "secret",
            ),
            (
                format!(
                    "[[token]]\nname = \"a\"\nsha256 = \"{h}\"\nrole = \"admin\"\n[[token]]\nname = \"a\"\nsha256 = \"{h}\"\nrole = \"finance\"\n"
                ),
                "used twice",
            ),
            (
                format!(
                    "[[token]]\nname = \"a\"\nsha256 = \"{h}\"\nrole = \"creator\"\ncreator_id = \"c\"\n[[token]]\nname = \"b\"\nsha256 = \"{h}\"\nrole = \"admin\"\n"
                ),
                "its sha256 is also token \"a\"'s",
            ),
            (
                format!(
                    "[[token]]\nname = \"a\"\nsha256 = \"{h}\"\nrole = \"creator\"\ncreator_id = \"b c\"\n"
                ),
                "creator_id must be",
            ),
        ];
        for (text, want) in cases {
            let e = Tokens::parse(&text).expect_err(&text).to_string();
            assert!(e.contains(want), "{text}\n→ {e}");
        }
        assert!(Tokens::parse("").unwrap().is_empty());
        assert!(new_token("x", Role::Creator, None).is_err());
        assert!(new_token("x", Role::Admin, Some("alice")).is_err());
    }
}
