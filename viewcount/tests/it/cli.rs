//! The binary as a user runs it (`viewcount gen --catalog`, `viewcount gen
//! --fraud-ratio --labels`, `viewcount catalog import/show`, `viewcount
//! token create`, `viewcount token playback-keygen/sign-playback`): exit
//! codes, output and the files it leaves.

use std::path::Path;
use std::process::Output;

use crate::text;

fn viewcount(args: &[&str], store: &Path) -> Output {
    crate::run(
        args,
        &[("VIEWCOUNT_STORE", format!("file://{}", store.display()))],
    )
}

#[test]
fn a_generated_catalog_imports_and_a_bad_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let file = dir.path().join("catalog.csv");

    let out = viewcount(
        &[
            "gen",
            "--videos",
            "200",
            "--seed",
            "5",
            "--catalog",
            file.to_str().unwrap(),
        ],
        &store,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("190 of 200 videos"),
        "{}",
        text(&out.stderr)
    );

    let none = viewcount(&["catalog", "show"], &store);
    assert!(text(&none.stdout).contains("no catalog imported"));

    let out = viewcount(&["catalog", "import", file.to_str().unwrap()], &store);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sha = store::layout::sha256(&std::fs::read(&file).unwrap());
    assert!(text(&out.stdout).contains(&sha), "{}", text(&out.stdout));
    assert!(store.join(format!("catalog/{sha}.csv")).exists());

    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "video_id,creator_id,title\nv1,alice,ok\nv2,bob smith,oops\n",
    )
    .unwrap();
    let out = viewcount(&["catalog", "import", bad.to_str().unwrap()], &store);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("line 3") && err.contains("creator_id"),
        "{err}"
    );

    let show = viewcount(&["catalog", "show"], &store);
    assert!(
        text(&show.stdout).contains(&format!("catalog {sha}: 190 videos")),
        "{}",
        text(&show.stdout)
    );
}

#[test]
fn labelled_traffic_lists_each_labelled_event_once_and_the_truth_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (events, labels, truth) = (
        dir.path().join("events.ndjson"),
        dir.path().join("labels.csv"),
        dir.path().join("truth.json"),
    );
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let out = viewcount(
        &[
            "gen",
            "--events",
            "20000",
            "--users",
            "5000",
            "--span",
            "6h",
            "--start",
            "2026-11-21T00:00:00Z",
            "--fraud-ratio",
            "0.08",
            "--pattern",
            "farm_bots=10",
            // Episodes small enough for every hard case to occur.
            "--pattern",
            "link_views=40",
            "--pattern",
            "short_views=40",
            "--out",
            &path(&events),
            "--labels",
            &path(&labels),
            "--truth",
            &path(&truth),
        ],
        &store,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = std::fs::read_to_string(&labels).unwrap();
    let mut lines = listed.lines();
    assert_eq!(lines.next(), Some("event_id,label"));
    let mut per_label: std::collections::BTreeMap<&str, u64> = Default::default();
    let mut ids = std::collections::BTreeSet::new();
    for line in lines {
        let (id, label) = line.split_once(',').unwrap();
        assert!(ids.insert(id), "{id} listed twice");
        *per_label.entry(label).or_default() += 1;
    }
    let truth: serde_json::Value = serde_json::from_slice(&std::fs::read(&truth).unwrap()).unwrap();
    // Every label but plain organic is listed, once per view the truth counts.
    for (label, tally) in truth["labels"].as_object().unwrap() {
        let listed = per_label.get(label.as_str()).copied().unwrap_or(0);
        let views = tally["views"].as_u64().unwrap();
        if label == "organic" {
            assert_eq!(listed, 0);
        } else {
            assert!(views > 0, "{label} occurs");
            assert_eq!(listed, views, "{label}");
        }
    }
    assert_eq!(
        per_label.len(),
        loadgen::Label::ALL.len() - 1,
        "every label but plain organic: {per_label:?}"
    );
    // Each listed id is in the events file.
    let written = std::fs::read_to_string(&events).unwrap();
    let first = ids.iter().next().unwrap();
    assert!(written.contains(first));

    let bad = viewcount(&["gen", "--out", "-", "--pattern", "farm_bots"], &store);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("NAME=NUMBER"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn a_playback_key_pair_signs_tokens_its_public_line_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("player.key");
    let key = key.to_str().unwrap();
    let out = viewcount(
        &[
            "token",
            "playback-keygen",
            "--key-id",
            "2026-12",
            "--out",
            key,
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let public = std::fs::read_to_string(format!("{key}.pub")).unwrap();
    assert!(public.starts_with("2026-12 ed25519 "), "{public}");
    let ring = playback::Keyring::parse(&public, "player.key.pub").unwrap();

    let out = viewcount(
        &[
            "token",
            "sign-playback",
            "--key",
            key,
            "--video",
            "v7",
            "--playback-id",
            "pb-9",
            "--ttl",
            "2h",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    let now = chrono::Utc::now();
    let v = ring.verify(&token, "v7", now, now).unwrap();
    assert_eq!(
        (v.key_id.as_str(), v.claims.playback_id.as_str()),
        ("2026-12", "pb-9")
    );
    assert_eq!(v.claims.exp - v.claims.iat, 7_200);

    // Refusals say what to do: an existing key is kept, a public line is
    // not a signing key, a day and more is too long.
    for (args, want) in [
        (
            vec!["token", "playback-keygen", "--key-id", "x", "--out", key],
            "never overwritten",
        ),
        (
            vec![
                "token",
                "sign-playback",
                "--key",
                &format!("{key}.pub"),
                "--video",
                "v7",
            ],
            "make one with `viewcount token playback-keygen`",
        ),
        (
            vec![
                "token",
                "sign-playback",
                "--key",
                key,
                "--video",
                "v7",
                "--ttl",
                "25h",
            ],
            "longer than the 24 h",
        ),
        (
            vec![
                "token",
                "playback-keygen",
                "--key-id",
                "a b",
                "--out",
                "/tmp/never",
            ],
            "key id",
        ),
    ] {
        let out = viewcount(&args, dir.path());
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn token_create_appends_a_hash_and_prints_the_secret_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    let f = file.to_str().unwrap();
    let create = |args: &[&str]| {
        let mut all = vec!["token", "create", "--tokens", f];
        all.extend_from_slice(args);
        viewcount(&all, dir.path())
    };
    let out = create(&["--role", "creator", "--creator", "alice", "--name", "alice"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let secret = text(&out.stdout).trim().to_owned();
    assert!(secret.starts_with("vct_") && secret.len() == 68, "{secret}");
    let out = create(&["--role", "admin", "--name", "ops"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(!stored.contains(&secret), "the secret is never stored");
    let tokens = serving::tokens::Tokens::parse(&stored).unwrap();
    assert_eq!(tokens.len(), 2);
    let t = tokens
        .authenticate(&secret)
        .expect("the printed secret works");
    assert_eq!(t.creator_id.as_deref(), Some("alice"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "only the owner reads the tokens file");
    }

    // Refused: a creator token without a creator, a reused name. The file
    // is left as it was.
    for args in [
        &["--role", "creator", "--name", "x"][..],
        &["--role", "finance", "--name", "alice"][..],
    ] {
        let out = create(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(!text(&out.stderr).is_empty());
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), stored);
}

#[test]
fn ledger_keygen_billing_errors_and_an_empty_ledger_as_a_user_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let key = dir.path().join("ledger.key");
    let k = key.to_str().unwrap();

    let out = viewcount(&["ledger", "keygen", "--out", k], &store);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let public = std::fs::read_to_string(format!("{k}.pub")).unwrap();
    assert!(public.starts_with("viewcount.local/ledger+"), "{public}");
    assert!(text(&out.stdout).contains(public.trim()));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let before = std::fs::read(&key).unwrap();
    let again = viewcount(&["ledger", "keygen", "--out", k], &store);
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("never overwritten"));
    assert_eq!(std::fs::read(&key).unwrap(), before, "the key is kept");

    let rates = dir.path().join("rates.toml");
    std::fs::write(&rates, "currency = \"USD\"\ndefault_cpm = 2.5\n").unwrap();
    let r = rates.to_str().unwrap();
    for (args, says) in [
        (
            vec![
                "billing",
                "report",
                "--period",
                "2026-13",
                "--rates",
                r,
                "--ledger-key",
                k,
            ],
            "is not a month",
        ),
        (
            vec![
                "billing",
                "report",
                "--period",
                "2026-10",
                "--rates",
                r,
                "--ledger-key",
                k,
            ],
            "rate card line 2: default_cpm must be a decimal string",
        ),
        (
            vec![
                "billing",
                "finalize",
                "--period",
                "2026-10",
                "--ledger-key",
                k,
            ],
            "has no statement yet",
        ),
        (
            vec![
                "billing",
                "report",
                "--period",
                "2026-10",
                "--rates",
                r,
                "--ledger-key",
                "/nonexistent",
            ],
            "viewcount ledger keygen",
        ),
        (
            vec!["ledger", "prove", "--entry", "0"],
            "the ledger is empty",
        ),
    ] {
        let out = viewcount(&args, &store);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    std::fs::write(&rates, "currency = \"USD\"\ndefault_cpm = \"2.50\"\n").unwrap();
    let out = viewcount(
        &[
            "billing",
            "report",
            "--period",
            "2026-10",
            "--rates",
            r,
            "--ledger-key",
            k,
        ],
        &store,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("nothing is published yet"),
        "{}",
        text(&out.stderr)
    );

    let out = viewcount(&["ledger", "verify"], &store);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ledger is empty"));
}

/// `viewcount gen --out - | head -1`: the reader goes away, the command ends quietly (exit 141, as on SIGPIPE),
/// no panic, no error message.
#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    use std::io::{BufRead, BufReader};
    {
        let args = ["gen", "--out", "-", "--events", "200000"];
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_viewcount"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty(), "{args:?}");
        // The pipe's reader is gone now.
        let out = child.wait_with_output().unwrap();
        let stderr = text(&out.stderr);
        // 200 000 events are far more than a pipe holds: the write fails.
        assert_eq!(out.status.code(), Some(141), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("error"),
            "{args:?}: {stderr}"
        );
    }
}
