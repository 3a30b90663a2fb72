//! The dev tokens `viewcount up` makes when no tokens file is given: an
//! admin, a finance and one creator token, valid while the process runs.

use crate::util::say;

/// Tokens made at start when no tokens file is given: valid while this
/// process runs, printed once.
pub(super) struct DevTokens {
    pub(super) admin: String,
    pub(super) finance: String,
    pub(super) creator: Option<(String, String)>,
    pub(super) tables: String,
}

impl DevTokens {
    pub(super) fn new(catalog: &store::catalog::Catalog) -> anyhow::Result<Self> {
        use serving::tokens::{Role, new_token};
        let (admin, t1) = new_token("dev-admin", Role::Admin, None)?;
        let (finance, t2) = new_token("dev-finance", Role::Finance, None)?;
        let mut tables = t1 + &t2;
        // The creator of the most viewed video the catalog attributes.
        let creator = (0..catalog.len() as u32)
            .map(loadgen::Generator::video_id)
            .find_map(|v| catalog.creator_of(&v).map(str::to_owned));
        let creator = match creator {
            Some(c) => {
                let (secret, t) = new_token(&format!("dev-creator-{c}"), Role::Creator, Some(&c))?;
                tables.push_str(&t);
                Some((c, secret))
            }
            None => None,
        };
        Ok(Self {
            admin,
            finance,
            creator,
            tables,
        })
    }

    pub(super) fn tokens(&self) -> anyhow::Result<serving::tokens::Tokens> {
        Ok(serving::tokens::Tokens::parse(&self.tables)?)
    }

    pub(super) fn print(&self, base: &str) {
        say!(
            "serve: dev tokens (valid while this runs; use --tokens FILE for real ones):\n  admin    {}\n  finance  {}",
            self.admin,
            self.finance
        );
        if let Some((c, secret)) = &self.creator {
            say!(
                "  creator {c}  {secret}\n  e.g. curl -s -H 'Authorization: Bearer {secret}' {base}/v1/creators/{c}/views"
            );
        }
    }
}
