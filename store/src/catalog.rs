//! The video catalog (DESIGN §6): which creator owns each video, and its
//! title. Serving uses it to scope creators to their own videos and billing
//! to pay them; a view of a video missing from it is *unattributed*: counted
//! and reported, never dropped.
//!
//! The file is CSV with the header `video_id,creator_id,title`: `video_id`
//! as events carry it (1–64 of `A-Z a-z 0-9 _ -`), `creator_id`
//! the same id rule as a video id, `title` free text of at most 512 characters on
//! one line (no control characters; quote it if it holds commas or quotes).
//! A video appears once. A bad line is an error naming the line and the
//! rule, and then nothing is imported.
//!
//! An import stores the file's bytes as they were given, content-addressed
//! (`catalog/<sha256>.csv`, so anyone can check the hash billing records),
//! then replaces `catalog/CURRENT`, one small JSON object naming the catalog
//! in force, in one write: readers see the old catalog or the new one,
//! never a mix.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, layout};

/// The header line, exactly.
pub const HEADER: [&str; 3] = ["video_id", "creator_id", "title"];
/// Longest `title`, in characters.
pub const MAX_TITLE_CHARS: usize = 512;

/// One video's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The owner.
    pub creator_id: String,
    /// Its title.
    pub title: String,
}

/// A parsed, valid catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    /// SHA-256 (hex) of the file's bytes: the catalog's identity.
    pub sha256: String,
    videos: BTreeMap<String, Entry>,
    by_creator: BTreeMap<String, Vec<String>>,
}

/// Why a catalog file is refused: the line (1 = the header) and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// Line number in the file, from 1.
    pub line: u64,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for LineError {}

impl Catalog {
    /// Parses and checks a catalog file. The first bad line is the error;
    /// a UTF-8 byte-order mark (as spreadsheets write) is ignored.
    pub fn parse(bytes: &[u8]) -> std::result::Result<Self, LineError> {
        let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(body);
        let mut videos: BTreeMap<String, Entry> = BTreeMap::new();
        let mut first_line: BTreeMap<String, u64> = BTreeMap::new();
        let mut record = csv::StringRecord::new();
        let mut header_seen = false;
        loop {
            let more = reader.read_record(&mut record).map_err(|e| LineError {
                line: e.position().map_or(0, |p| p.line()),
                message: match e.kind() {
                    csv::ErrorKind::Utf8 { .. } => "is not UTF-8".into(),
                    _ => format!("is not valid CSV: {e}"),
                },
            })?;
            if !more {
                break;
            }
            let line = record.position().map_or(0, |p| p.line());
            if !header_seen {
                if record.iter().collect::<Vec<_>>() != HEADER {
                    return Err(LineError {
                        line,
                        message: format!(
                            "the header must be exactly `{}`, got `{}`",
                            HEADER.join(","),
                            record.iter().collect::<Vec<_>>().join(",")
                        ),
                    });
                }
                header_seen = true;
                continue;
            }
            let err = |message: String| LineError { line, message };
            if record.len() != 3 {
                return Err(err(format!(
                    "has {} fields; every line is `video_id,creator_id,title` (quote a title that holds commas)",
                    record.len()
                )));
            }
            let (video, creator, title) = (&record[0], &record[1], &record[2]);
            schemas::validate::check_video_id(video).map_err(|v| err(v.to_string()))?;
            check_creator_id(creator).map_err(err)?;
            check_title(title).map_err(err)?;
            if let Some(first) = first_line.get(video) {
                return Err(err(format!(
                    "video_id {video:?} is already on line {first}; a video has one owner"
                )));
            }
            first_line.insert(video.to_owned(), line);
            videos.insert(
                video.to_owned(),
                Entry {
                    creator_id: creator.to_owned(),
                    title: title.to_owned(),
                },
            );
        }
        if !header_seen {
            return Err(LineError {
                line: 1,
                message: format!(
                    "the file is empty; it starts with the header `{}`",
                    HEADER.join(",")
                ),
            });
        }
        let mut by_creator: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (video, e) in &videos {
            by_creator
                .entry(e.creator_id.clone())
                .or_default()
                .push(video.clone());
        }
        Ok(Self {
            sha256: layout::sha256(bytes),
            videos,
            by_creator,
        })
    }

    /// The entry of `video_id`, if the catalog has it.
    pub fn entry(&self, video_id: &str) -> Option<&Entry> {
        self.videos.get(video_id)
    }

    /// The owner of `video_id`; `None`: unattributed.
    pub fn creator_of(&self, video_id: &str) -> Option<&str> {
        self.entry(video_id).map(|e| e.creator_id.as_str())
    }

    /// The videos of `creator_id`, sorted (empty for an unknown creator).
    pub fn videos_of(&self, creator_id: &str) -> &[String] {
        self.by_creator.get(creator_id).map_or(&[], Vec::as_slice)
    }

    /// Every video with its entry, sorted by video id.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.videos.iter().map(|(v, e)| (v.as_str(), e))
    }

    /// Number of videos.
    pub fn len(&self) -> usize {
        self.videos.len()
    }

    /// Whether it lists no video.
    pub fn is_empty(&self) -> bool {
        self.videos.is_empty()
    }

    /// Number of creators owning at least one video.
    pub fn creators(&self) -> usize {
        self.by_creator.len()
    }
}

/// Writes `[video_id, creator_id, title]` rows as a catalog file (header,
/// one line per video, fields quoted only where CSV needs it).
pub fn to_csv<'a>(rows: impl IntoIterator<Item = [&'a str; 3]>) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    // Writing to a Vec cannot fail.
    let _ = w.write_record(HEADER);
    for row in rows {
        let _ = w.write_record(row);
    }
    w.into_inner().unwrap_or_default()
}

/// Checks a creator id (DESIGN §6: [`schemas::validate::ID_PATTERN`], the
/// video ids' rule); the error says the rule and shows the value (cut short).
pub fn check_creator_id(s: &str) -> std::result::Result<(), String> {
    if schemas::validate::is_id(s) {
        Ok(())
    } else {
        Err(schemas::validate::id_rule("creator_id", s))
    }
}

fn check_title(s: &str) -> std::result::Result<(), String> {
    let chars = s.chars().count();
    if chars > MAX_TITLE_CHARS {
        return Err(format!(
            "title has {chars} characters; at most {MAX_TITLE_CHARS}"
        ));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(format!(
            "title holds the control character {c:?}; a title is one line of text"
        ));
    }
    Ok(())
}

/// `catalog/CURRENT`: names the catalog in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Current {
    /// SHA-256 (hex) of the catalog file.
    pub sha256: String,
    /// Its path, `catalog/<sha256>.csv`.
    pub path: String,
    /// Videos it lists.
    pub videos: usize,
    /// Creators owning them.
    pub creators: usize,
    /// When it was put in force.
    pub imported_at: DateTime<Utc>,
}

/// Checks `bytes` and puts them in force as the catalog. Nothing is written
/// if a line is bad ([`Error::Catalog`]). Importing the catalog already in
/// force again is harmless (same path, same bytes).
pub async fn import(store: &dyn ObjectStore, bytes: Bytes) -> Result<(Catalog, Current)> {
    let catalog = Catalog::parse(&bytes)?;
    let path = layout::catalog_file(&catalog.sha256);
    layout::put(store, &path, bytes).await?;
    let current = Current {
        sha256: catalog.sha256.clone(),
        path: path.to_string(),
        videos: catalog.len(),
        creators: catalog.creators(),
        imported_at: Utc::now(),
    };
    layout::put_json(store, &layout::catalog_current(), &current).await?;
    Ok((catalog, current))
}

/// `catalog/CURRENT`: which catalog is in force (`None`: none imported), a
/// small read to see whether it changed.
pub async fn current_pointer(store: &dyn ObjectStore) -> Result<Option<Current>> {
    layout::get_json::<Current>(store, &layout::catalog_current()).await
}

/// The catalog in force, if one was imported. Its bytes are checked
/// against the hash `catalog/CURRENT` names.
pub async fn current(store: &dyn ObjectStore) -> Result<Option<Catalog>> {
    let Some(cur) = current_pointer(store).await? else {
        return Ok(None);
    };
    load(store, &cur.sha256).await.map(Some)
}

/// The catalog with this SHA-256 (one in force now or earlier: imports are
/// kept), its bytes checked against the hash.
pub async fn load(store: &dyn ObjectStore, sha256: &str) -> Result<Catalog> {
    let path = layout::catalog_file(sha256);
    let bytes = match store.get(&path).await {
        Ok(r) => r.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(Error::Corrupt(format!(
                "catalog {path} does not exist; import the catalog again"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    if layout::sha256(&bytes) != sha256 {
        return Err(Error::Corrupt(format!(
            "{path} does not hash to the SHA-256 in its name; it was changed after import: import the catalog again"
        )));
    }
    Catalog::parse(&bytes)
        .map_err(|e| Error::Corrupt(format!("{path} no longer parses ({e}); import it again")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> std::result::Result<Catalog, LineError> {
        Catalog::parse(s.as_bytes())
    }

    #[test]
    fn a_valid_catalog_indexes_videos_and_creators() {
        let text = "video_id,creator_id,title\n\
             v1,alice,First\n\
             v2,alice,\"Second, with a comma and \"\"quotes\"\"\"\n\
             v3,bob,\n";
        let c = parse(text).unwrap();
        assert_eq!((c.len(), c.creators()), (3, 2));
        assert_eq!(c.creator_of("v2"), Some("alice"));
        assert_eq!(
            c.entry("v2").unwrap().title,
            "Second, with a comma and \"quotes\""
        );
        assert_eq!(c.videos_of("alice"), ["v1", "v2"]);
        assert!(c.videos_of("carol").is_empty());
        assert_eq!(c.creator_of("v9"), None, "unattributed");
        assert_eq!(c.sha256, layout::sha256(text.as_bytes()));
    }

    fn c_bytes(c: &Catalog) -> Vec<u8> {
        to_csv(
            c.iter()
                .map(|(v, e)| [v, e.creator_id.as_str(), e.title.as_str()]),
        )
    }

    #[test]
    fn writing_and_parsing_round_trip() {
        let c = parse("video_id,creator_id,title\nv1,a,\"x,y\"\nv2,b,plain\n").unwrap();
        let again = Catalog::parse(&c_bytes(&c)).unwrap();
        assert_eq!(
            again.iter().collect::<Vec<_>>(),
            c.iter().collect::<Vec<_>>()
        );
    }

    #[test]
    fn every_bad_line_names_its_line_and_rule() {
        let cases: [(&str, u64, &str); 9] = [
            ("", 1, "empty"),
            ("video,creator,title\n", 1, "header"),
            ("video_id,creator_id,title\nv1,alice\n", 2, "fields"),
            (
                "video_id,creator_id,title\nv1,alice,t\nbad video!,alice,t\n",
                3,
                "video_id",
            ),
            ("video_id,creator_id,title\nv1,al ice,t\n", 2, "creator_id"),
            ("video_id,creator_id,title\nv1,,t\n", 2, "creator_id"),
            (
                "video_id,creator_id,title\nv1,a,t\nv2,a,t\nv1,b,t\n",
                4,
                "already on line 2",
            ),
            (
                "video_id,creator_id,title\nv1,a,\"two\nlines\"\n",
                2,
                "control character",
            ),
            // An open quote runs to the end of the file: caught as a
            // multi-line title.
            (
                "video_id,creator_id,title\nv1,a,\"unterminated\nv2,a,t\n",
                2,
                "control character",
            ),
        ];
        for (text, line, rule) in cases {
            let e = parse(text).expect_err(text);
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.to_string().contains(rule), "{text:?}: {e}");
        }
        let long = format!("video_id,creator_id,title\nv1,a,{}\n", "é".repeat(513));
        assert!(parse(&long).unwrap_err().message.contains("513 characters"));
        let ok = format!("video_id,creator_id,title\nv1,a,{}\n", "é".repeat(512));
        assert!(parse(&ok).is_ok());
        let not_utf8 = b"video_id,creator_id,title\nv1,a,\xff\n";
        assert!(
            Catalog::parse(not_utf8)
                .unwrap_err()
                .message
                .contains("UTF-8")
        );
    }

    #[test]
    fn a_byte_order_mark_and_crlf_are_accepted() {
        let c = Catalog::parse(b"\xEF\xBB\xBFvideo_id,creator_id,title\r\nv1,a,t\r\n").unwrap();
        assert_eq!(c.creator_of("v1"), Some("a"));
        assert_eq!(c.entry("v1").unwrap().title, "t");
    }

    #[tokio::test]
    async fn import_puts_the_catalog_in_force_and_refuses_bad_files_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = layout::open(&format!("file://{}", dir.path().display())).unwrap();
        assert_eq!(current(store.as_ref()).await.unwrap(), None);

        let first = Bytes::from_static(b"video_id,creator_id,title\nv1,a,One\n");
        let (c1, cur) = import(store.as_ref(), first.clone()).await.unwrap();
        assert_eq!(cur.path, format!("catalog/{}.csv", layout::sha256(&first)));
        assert_eq!(current(store.as_ref()).await.unwrap(), Some(c1.clone()));

        // A bad file changes nothing.
        let bad = Bytes::from_static(b"video_id,creator_id,title\nv2,b c,Two\n");
        let e = import(store.as_ref(), bad).await.unwrap_err();
        assert!(matches!(e, Error::Catalog(_)), "{e}");
        assert_eq!(e.class(), schemas::ErrorClass::Input);
        assert_eq!(current(store.as_ref()).await.unwrap(), Some(c1.clone()));

        let second = Bytes::from_static(b"video_id,creator_id,title\nv1,a,One\nv2,b,Two\n");
        let (c2, _) = import(store.as_ref(), second).await.unwrap();
        assert_ne!(c2.sha256, c1.sha256);
        assert_eq!(current(store.as_ref()).await.unwrap(), Some(c2.clone()));
        // Re-importing the first one puts it back in force.
        import(store.as_ref(), first).await.unwrap();
        assert_eq!(current(store.as_ref()).await.unwrap(), Some(c1));

        // A catalog file edited after import is refused, not trusted.
        let path = dir.path().join(format!("catalog/{}.csv", c2.sha256));
        import(store.as_ref(), Bytes::from(std::fs::read(&path).unwrap()))
            .await
            .unwrap();
        std::fs::write(&path, b"video_id,creator_id,title\nv1,mallory,One\n").unwrap();
        let e = current(store.as_ref()).await.unwrap_err();
        assert!(e.to_string().contains("changed after import"), "{e}");
    }
}
