//! The README's configuration table against the flags the binary really
//! takes: every `VIEWCOUNT_*` variable a command reads through clap has a
//! row naming its flag, every row names a flag some command has (or says
//! `—` for a variable read outside clap), and where the README gives a
//! single default in backticks it is clap's default for that flag (the same
//! duration, if both are durations: `60s` is `1m`).
//!
//! The binary is asked with `--help` for each command (clap prints each
//! option's variable and default), so the table is checked against what a
//! user gets, whatever defines the flag (e.g. the rule set's own fields).

use std::collections::{BTreeMap, BTreeSet};

use crate::{run, text};

/// One option as a command's `--help` states it.
#[derive(Debug, Clone)]
struct Flag {
    long: String,
    env: Option<String>,
    default: Option<String>,
}

/// The subcommands a `--help` lists under "Commands:".
fn subcommands(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in help.lines() {
        if line.starts_with("Commands:") {
            inside = true;
            continue;
        }
        if inside {
            if !line.starts_with("  ") {
                break;
            }
            let name = line.split_whitespace().next().unwrap_or_default();
            if !name.is_empty() && name != "help" {
                out.push(name.to_owned());
            }
        }
    }
    out
}

/// The options of a `--help` (long form: variable and default on their own
/// lines below each option).
fn flags(help: &str) -> Vec<Flag> {
    let mut out: Vec<Flag> = Vec::new();
    for line in help.lines() {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        if (indent == 2 || indent == 6) && (t.starts_with("--") || t.starts_with('-')) {
            let long = t
                .split([',', ' ', '='])
                .map(str::trim)
                .find(|w| w.starts_with("--"))
                .unwrap_or_default()
                .to_owned();
            if long.is_empty() {
                continue;
            }
            out.push(Flag {
                long,
                env: None,
                default: None,
            });
        }
        // The short form states them on the option's line, the long form
        // on lines of their own below it.
        let Some(last) = out.last_mut() else { continue };
        for part in t.split('[').skip(1) {
            // "[default: true] [possible values: ...]": a space before the next.
            let part = part.trim_end().trim_end_matches(']');
            if let Some(v) = part.strip_prefix("env: ") {
                last.env = Some(v.split('=').next().unwrap_or_default().to_owned());
            } else if let Some(v) = part.strip_prefix("default: ") {
                last.default = Some(v.to_owned());
            }
        }
    }
    out
}

/// Every leaf command's options, by command path.
fn every_command() -> BTreeMap<String, Vec<Flag>> {
    let mut out = BTreeMap::new();
    let mut todo: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(path) = todo.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let o = run(&args, &[]);
        assert!(
            o.status.success(),
            "viewcount {args:?}: {}",
            text(&o.stderr)
        );
        let help = text(&o.stdout);
        let subs = subcommands(&help);
        if subs.is_empty() {
            out.insert(path.join(" "), flags(&help));
        }
        for s in subs {
            let mut p = path.clone();
            p.push(s);
            todo.push(p);
        }
    }
    out
}

/// The README's "Configuration" table: variable → (flags cell, default cell).
fn readme_table() -> BTreeMap<String, (String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md beside the workspace");
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .expect("README.md has a Configuration section");
    let mut out = BTreeMap::new();
    for line in section.lines().take_while(|l| !l.starts_with("## ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 6 || !cells[1].starts_with("`VIEWCOUNT_") {
            continue;
        }
        for var in cells[1].split(',') {
            let var = var.trim().trim_matches('`').to_owned();
            out.insert(var, (cells[2].to_owned(), cells[4].to_owned()));
        }
    }
    out
}

#[test]
fn the_readme_configuration_table_matches_every_commands_flags() {
    let commands = every_command();
    assert!(
        commands.contains_key("batch run") && commands.contains_key("up"),
        "{:?}",
        commands.keys()
    );
    let table = readme_table();
    assert!(table.len() > 30, "the table was not found: {table:?}");

    // Variable → the flags that read it, and their defaults.
    let mut by_env: BTreeMap<String, BTreeSet<(String, Option<String>)>> = BTreeMap::new();
    for flags in commands.values() {
        for f in flags {
            if let Some(env) = f.env.as_ref().filter(|e| e.starts_with("VIEWCOUNT_")) {
                by_env
                    .entry(env.clone())
                    .or_default()
                    .insert((f.long.clone(), f.default.clone()));
            }
        }
    }
    let mut wrong = Vec::new();
    for (env, flags) in &by_env {
        let Some((cell, default)) = table.get(env) else {
            wrong.push(format!(
                "{env} (read by {flags:?}) has no row in README's Configuration table"
            ));
            continue;
        };
        for (long, clap_default) in flags {
            if !cell.contains(&format!("`{long}`")) {
                wrong.push(format!(
                    "{env}: the README names {cell}, the binary's flag is {long}"
                ));
            }
            // A single backticked default is checked against clap's.
            let readme_default = default.trim();
            if readme_default.starts_with('`')
                && readme_default.ends_with('`')
                && readme_default.matches('`').count() == 2
                && let Some(d) = clap_default
            {
                let (d, r) = (d.trim_matches('"'), readme_default.trim_matches('`'));
                let same_duration = matches!(
                    (humantime::parse_duration(d), humantime::parse_duration(r)),
                    (Ok(a), Ok(b)) if a == b
                );
                if r != d && !same_duration {
                    wrong.push(format!(
                        "{env} ({long}): the README's default is {readme_default}, the binary's is {d}"
                    ));
                }
            }
        }
    }
    for (env, (cell, _)) in &table {
        if !by_env.contains_key(env) && !cell.contains('—') {
            wrong.push(format!(
                "README's row {env} ({cell}) names a variable no command's flag reads"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "README.md vs the binary:\n{}",
        wrong.join("\n")
    );
}
