//! What the `mayfly` binary says when something is off, without AWS: an endpoint nobody
//! answers on, the offline commands run outside the repository, and every command's help
//! with its examples one per line.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::CommandFactory;
use mayfly::cli::Cli;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn mayfly_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mayfly"))
        .current_dir(dir)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE")
        .env_remove("MAYFLY_NAME")
        .env_remove("MAYFLY_LOG")
        .output()
        .expect("run mayfly")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A loopback URL nothing listens on: a port the OS just handed out and took back.
fn closed_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// A scratch directory outside the repository.
fn elsewhere(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mayfly-msg-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_refused_connection_is_one_sentence_and_the_detail_waits_for_verbose() {
    let url = closed_endpoint();
    let here = elsewhere("refused");
    // A queue command (status looks the queues up first) and a table command.
    for (args, service) in [
        (vec!["status"], "SQS"),
        (vec!["payers", "list"], "DynamoDB"),
    ] {
        let mut all = vec!["--endpoint-url", url.as_str()];
        all.extend(&args);
        let out = mayfly_in(&here, &all);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "cannot reach {service} at {url} (connection refused"
            )),
            "{args:?}: {err}"
        );
        assert!(err.contains("--endpoint-url"), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        for dump in ["DispatchFailure", "ConnectorError", "hyper"] {
            assert!(!err.contains(dump), "{args:?} shows the SDK's dump: {err}");
        }
        // Not the deployment's fault: nothing says it is missing.
        for wrong in ["not found", "MAYFLY_NAME", "DeploymentName"] {
            assert!(!err.contains(wrong), "{args:?}: {err}");
        }

        let mut verbose = vec!["-v"];
        verbose.extend(&all);
        let err = stderr(&mayfly_in(&here, &verbose));
        assert!(err.contains("dispatch failure"), "{args:?} -v: {err}");
    }
    std::fs::remove_dir_all(&here).ok();
}

#[test]
fn offline_commands_outside_the_repository_say_where_they_looked_and_name_profiles() {
    let here = elsewhere("offline");
    let jobs = repo("payer-profiles/examples/jobs.jsonl");
    let jobs = jobs.to_str().unwrap();
    for args in [
        vec!["plan", "--jobs", jobs],
        vec!["render", "--payer", "cedar-plan", "--kind", "claims"],
    ] {
        let out = mayfly_in(&here, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("no profile directory or file `payer-profiles` was found here"),
            "{args:?}: {err}"
        );
        assert!(err.contains(&here.display().to_string()), "{args:?}: {err}");
        assert!(err.contains("--profiles"), "{args:?}: {err}");
        assert!(!err.contains("(file): cannot read"), "{args:?}: {err}");
    }
    // An empty directory is named as such.
    let empty = here.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = mayfly_in(
        &here,
        &[
            "plan",
            "--profiles",
            empty.to_str().unwrap(),
            "--jobs",
            jobs,
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no payer profile (*.toml) in"),
        "{}",
        stderr(&out)
    );
    // payers validate names the path it was given.
    let out = mayfly_in(&here, &["payers", "validate", "payer-profiles"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no profile directory or file `payer-profiles` was found here"),
        "{}",
        stderr(&out)
    );
    // With --profiles, the same plan works from anywhere.
    let profiles = repo("payer-profiles");
    let out = mayfly_in(
        &here,
        &[
            "plan",
            "--profiles",
            profiles.to_str().unwrap(),
            "--jobs",
            jobs,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::remove_dir_all(&here).ok();
}

/// Every command path, from the command tree the binary parses with.
fn command_paths(cmd: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        let mut path = prefix.to_vec();
        path.push(sub.get_name().to_owned());
        out.push(path.clone());
        command_paths(sub, &path, out);
    }
}

#[test]
fn every_commands_help_ends_with_examples_one_per_line() {
    let mut paths = vec![Vec::new()];
    command_paths(&Cli::command(), &[], &mut paths);
    assert!(paths.len() >= 25, "{paths:?}");
    let here = elsewhere("help");
    for path in paths {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let out = mayfly_in(&here, &args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let help = String::from_utf8(out.stdout).unwrap();
        let examples = help.split("Examples:\n").nth(1).unwrap_or_else(|| {
            panic!(
                "`mayfly {}` --help has no examples:\n{help}",
                path.join(" ")
            )
        });
        let lines: Vec<&str> = examples
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .collect();
        assert!(!lines.is_empty(), "{args:?}:\n{help}");
        for line in lines {
            assert!(line.starts_with("  mayfly "), "{args:?}: `{line}`");
            assert_eq!(
                line.matches("mayfly ").count(),
                1,
                "{args:?}: two examples on one line: `{line}`"
            );
            // The example is about this command.
            let words: Vec<&str> = line
                .split_whitespace()
                .filter(|w| !w.starts_with('-'))
                .collect();
            for name in &path {
                assert!(words.contains(&name.as_str()), "{args:?}: `{line}`");
            }
        }
        // Nowhere else in the help do two invocations run together.
        for line in help.lines() {
            assert!(line.matches("mayfly ").count() <= 1, "{args:?}: `{line}`");
        }
    }
    std::fs::remove_dir_all(&here).ok();
}
