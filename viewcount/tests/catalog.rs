//! `viewcount gen --catalog` and `viewcount catalog import/show`, run as a
//! user would: the built binary, a store directory, exit codes and output.

use std::path::Path;
use std::process::{Command, Output};

fn viewcount(args: &[&str], store: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_viewcount"))
        .args(args)
        .env("VIEWCOUNT_STORE", format!("file://{}", store.display()))
        .env("NO_COLOR", "1")
        .output()
        .expect("viewcount runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
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
