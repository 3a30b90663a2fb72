//! One flipped byte in any object that money or serving is computed from
//! is refused by every reader, with a `corrupt` error naming the object,
//! and never becomes a number: on the store `viewcount up --demo` leaves,
//! each kind of object (a run's views and filtered files, its manifest, the
//! published state, the catalog, a statement's files) is damaged in turn
//! and `billing report`, `billing explain`, `status` and `batch run
//! --dirty` are run against it; then it is restored and they succeed
//! again (so the refusals were the damage's, not the setup's). `ledger
//! verify --deep` follows the statements down to the raw files.

use std::path::{Path, PathBuf};

use crate::{run, text};

/// What `up` left: the store's directory and URL, the key and the rates.
struct Demo {
    _dir: tempfile::TempDir,
    root: PathBuf,
    url: String,
    key: String,
    rates: String,
}

fn demo() -> Demo {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let url = format!("file://{}", root.display());
    let key = dir.path().join("ledger.key").display().to_string();
    let rates = dir.path().join("rates.toml");
    std::fs::write(&rates, "currency = \"USD\"\ndefault_cpm = \"2.50\"\n").unwrap();
    let rates = rates.display().to_string();
    let k = run(&["ledger", "keygen", "--out", &key], &[]);
    assert!(k.status.success(), "{}", text(&k.stderr));
    let up = run(
        &[
            "up",
            "--demo",
            "2000",
            "--demo-rate",
            "0",
            "--exit-after-demo",
            "--listen",
            "127.0.0.1:0",
            "--store",
            &url,
            "--ledger-key",
            &key,
            "--rates",
            &rates,
        ],
        &[],
    );
    assert!(
        text(&up.stdout).contains("demo: every check passed"),
        "{}\n{}",
        text(&up.stdout),
        text(&up.stderr)
    );
    Demo {
        _dir: dir,
        root,
        url,
        key,
        rates,
    }
}

/// The first file under `dir` (relative to the store root) whose name ends with `suffix`.
fn find(root: &Path, dir: &str, suffix: &str) -> PathBuf {
    let mut stack = vec![root.join(dir)];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                return p;
            }
        }
    }
    panic!("no {suffix} under {dir}");
}

/// Flips one bit of the byte in the middle of `path`; returns the original.
fn flip(path: &Path) -> Vec<u8> {
    let original = std::fs::read(path).unwrap();
    let mut damaged = original.clone();
    let i = damaged.len() / 2;
    damaged[i] ^= 0x01;
    std::fs::write(path, damaged).unwrap();
    original
}

#[test]
fn a_flipped_byte_in_any_object_is_refused_by_every_reader() {
    let d = demo();
    let period = chrono::Utc::now().format("%Y-%m").to_string();
    let statement = find(&d.root, "statements", "statement.csv");
    let creator = std::fs::read_to_string(&statement)
        .unwrap()
        .lines()
        .nth(1)
        .and_then(|l| l.split(',').next().map(str::to_owned))
        .expect("a statement line");
    let report = || {
        run(
            &[
                "billing",
                "report",
                "--period",
                &period,
                "--provisional",
                "--store",
                &d.url,
                "--ledger-key",
                &d.key,
                "--rates",
                &d.rates,
            ],
            &[],
        )
    };
    let explain = || {
        run(
            &[
                "billing",
                "explain",
                "--creator",
                &creator,
                "--period",
                &period,
                "--store",
                &d.url,
            ],
            &[],
        )
    };
    let status = || run(&["status", "--json", "--store", &d.url], &[]);
    let dirty = || run(&["batch", "run", "--dirty", "--store", &d.url], &[]);
    // Healthy, every reader succeeds.
    for (name, o) in [
        ("report", report()),
        ("explain", explain()),
        ("status", status()),
    ] {
        assert!(
            o.status.success(),
            "{name} before any damage: {}",
            text(&o.stderr)
        );
    }

    // The published state in force, and a run it names for this month.
    let current: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.root.join("CURRENT")).unwrap()).unwrap();
    let state_path = d.root.join(current["path"].as_str().unwrap());
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    let run_id = state["hours"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(hour, _)| hour.starts_with(&period))
        .and_then(|(_, r)| r.as_str())
        .expect("a run owning an hour of this month")
        .to_owned();
    let kinds: Vec<(&str, PathBuf, Vec<&str>)> = vec![
        (
            "views",
            d.root.join(format!("views/run={run_id}/part-0.parquet")),
            vec!["report", "explain"],
        ),
        (
            "filtered",
            d.root.join(format!("filtered/run={run_id}/part-0.parquet")),
            vec!["report"],
        ),
        (
            "manifest",
            d.root.join(format!("runs/{run_id}.json")),
            vec!["report", "explain", "dirty", "status"],
        ),
        (
            "published state",
            state_path,
            vec!["report", "dirty", "status"],
        ),
        ("catalog", find(&d.root, "catalog", ".csv"), vec!["report"]),
    ];
    for (kind, path, readers) in &kinds {
        let shown = path.strip_prefix(&d.root).unwrap().display().to_string();
        let original = flip(path);
        for reader in readers {
            let o = match *reader {
                "report" => report(),
                "explain" => explain(),
                "dirty" => dirty(),
                _ => status(),
            };
            let err = text(&o.stderr);
            assert!(
                !o.status.success(),
                "{reader} accepted a damaged {kind} ({shown}):\n{}",
                text(&o.stdout)
            );
            assert!(
                err.contains("corrupt") && err.contains(&shown),
                "{reader} on a damaged {kind}: the error does not say {shown} is corrupt: {err}"
            );
        }
        std::fs::write(path, original).unwrap();
        let again = report();
        assert!(
            again.status.success(),
            "after restoring the {kind}: {}",
            text(&again.stderr)
        );
    }

    // Below the statements: a raw file a run read, and the run's views.
    // `ledger verify` checks the log and the statement files; `--deep`
    // follows each statement down and names what changed.
    let deep = || run(&["ledger", "verify", "--deep", "--store", &d.url], &[]);
    let o = deep();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("raw files re-hashed"),
        "{}",
        text(&o.stdout)
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.root.join(format!("runs/{run_id}.json"))).unwrap())
            .unwrap();
    let raw = manifest["inputs"][0]["path"].as_str().unwrap().to_owned();
    for shown in [raw, format!("views/run={run_id}/part-0.parquet")] {
        let path = d.root.join(&shown);
        let original = flip(&path);
        let shallow = run(&["ledger", "verify", "--store", &d.url], &[]);
        assert!(shallow.status.success(), "{}", text(&shallow.stderr));
        let o = deep();
        let err = text(&o.stderr);
        assert!(!o.status.success(), "--deep accepted a damaged {shown}");
        assert!(err.contains("corrupt") && err.contains(&shown), "{err}");
        std::fs::write(&path, original).unwrap();
    }
    assert!(deep().status.success());

    // A statement's files: explain and the ledger refuse them.
    let original = flip(&statement);
    let shown = statement
        .strip_prefix(&d.root)
        .unwrap()
        .display()
        .to_string();
    for (reader, o) in [
        ("billing explain", explain()),
        (
            "ledger verify",
            run(&["ledger", "verify", "--store", &d.url], &[]),
        ),
    ] {
        assert!(!o.status.success(), "{reader} accepted a damaged statement");
        assert!(
            text(&o.stderr).contains(&shown),
            "{reader}: {}",
            text(&o.stderr)
        );
    }
    std::fs::write(&statement, original).unwrap();
    let o = explain();
    assert!(o.status.success(), "{}", text(&o.stderr));

    // The sealed totals and the committed rules (totals.json, rules.json:
    // their hashes are in the entry): the ledger refuses them, shallow and
    // deep.
    for name in ["totals.json", "rules.json"] {
        let sealed = statement.with_file_name(name);
        let shown = sealed.strip_prefix(&d.root).unwrap().display().to_string();
        let original = flip(&sealed);
        for args in [
            &["ledger", "verify", "--store", &d.url][..],
            &["ledger", "verify", "--deep", "--store", &d.url][..],
        ] {
            let o = run(args, &[]);
            assert!(!o.status.success(), "{args:?} accepted a damaged {name}");
            assert!(
                text(&o.stderr).contains(&shown),
                "{args:?}: {}",
                text(&o.stderr)
            );
        }
        std::fs::write(&sealed, original).unwrap();
    }
    assert!(deep().status.success());
}
