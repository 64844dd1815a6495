//! An instance's processes: its user-data runs as the leader of a new session (`setsid`),
//! and everything the script starts stays in that session, so "the instance" is the session.
//!
//! A session rather than a process group because the job runs under `timeout`, which moves
//! itself and the job into a process group of their own; they stay in the session. Members
//! are found by scanning `/proc` (Linux) and killed with `kill -KILL`, repeating until none is
//! left, so processes forked during the kill are caught too.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tracing::warn;

/// Rounds of scan-and-kill before giving up on a session that keeps forking.
const KILL_ROUNDS: usize = 50;

/// A user-data script started in its own session.
#[derive(Debug)]
pub struct Session {
    /// The script's shell, the session leader; reaped by `try_wait`.
    pub leader: Child,
    /// The session id: the leader's pid.
    pub id: u32,
}

/// Runs `bash <script>` in `cwd` as the leader of a new session, with exactly `env`, no
/// stdin, and its output appended to `console`.
pub fn spawn(
    script: &Path,
    cwd: &Path,
    env: &[(String, String)],
    console: &Path,
) -> std::io::Result<Session> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(console)?;
    // `setsid` execs in place (no fork) because the child it runs in is not a process
    // group leader, so the session id is the pid we hold.
    let leader = Command::new("setsid")
        .arg("bash")
        .arg(script)
        .current_dir(cwd)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let id = leader
        .id()
        .ok_or_else(|| std::io::Error::other("the user-data process exited at once"))?;
    Ok(Session { leader, id })
}

/// `(pid, state, session)` from the text of `/proc/<pid>/stat`.
pub fn parse_stat(text: &str) -> Option<(u32, char, u32)> {
    let pid = text.split_whitespace().next()?.parse().ok()?;
    // The command name may hold spaces and parentheses; the fields after it do not.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let _pgrp = fields.next()?;
    let session = fields.next()?.parse().ok()?;
    Some((pid, state, session))
}

/// Live (not zombie) processes by session id.
pub fn scan() -> HashMap<u32, Vec<u32>> {
    let mut by_session: HashMap<u32, Vec<u32>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return by_session;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // A process may exit between listing and reading: skip it.
        let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((pid, state, session)) = parse_stat(&text) {
            if state != 'Z' && state != 'X' && session != 0 {
                by_session.entry(session).or_default().push(pid);
            }
        }
    }
    by_session
}

/// Kills every process of session `id`; true once none is left.
pub async fn kill(id: u32) -> bool {
    for _ in 0..KILL_ROUNDS {
        let Some(pids) = scan().remove(&id) else {
            return true;
        };
        let status = Command::new("kill")
            .arg("-KILL")
            .args(pids.iter().map(u32::to_string))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        // A non-zero status usually means one of them had already exited; the rescan tells.
        if let Err(e) = status {
            warn!(session = id, error = %e, "Cannot run kill.");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    !scan().contains_key(&id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines_with_awkward_names() {
        let line = "4242 (a (weird) name) S 1 4240 4240 0 -1 4194560 100 0 0 0";
        assert_eq!(parse_stat(line), Some((4242, 'S', 4240)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[tokio::test]
    async fn kill_ends_the_whole_session_including_other_groups() {
        let dir = std::env::temp_dir().join(format!("mayfly-session-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("script.sh");
        // `timeout` moves the inner sleep into a process group of its own.
        std::fs::write(
            &script,
            "sleep 300 &\ntimeout 300 sleep 300 &\necho started\nwait\n",
        )
        .unwrap();
        let env = vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())];
        let mut session = spawn(&script, &dir, &env, &dir.join("console.log")).unwrap();
        let mut members = Vec::new();
        for _ in 0..100 {
            members = scan().remove(&session.id).unwrap_or_default();
            if members.len() >= 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            members.len() >= 4,
            "bash, sleep, timeout, sleep: {members:?}"
        );
        assert!(members.contains(&session.id));
        assert!(kill(session.id).await);
        session.leader.wait().await.unwrap();
        assert!(!scan().contains_key(&session.id));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
