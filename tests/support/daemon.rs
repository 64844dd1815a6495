//! `mayfly run` as a child process, with the lines it prints on stdout (one per event) kept
//! with the time each arrived.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Daemon {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Daemon {
    /// Starts `mayfly --name NAME [global…] run [args…]` against the emulator.
    pub fn start(name: &str, global: &[&str], args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mayfly"))
            .args(["--name", name])
            .args(global)
            .arg("run")
            .args(args)
            .envs(super::child_env())
            .current_dir(super::repo())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mayfly run");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        Daemon { child, lines }
    }

    /// The first line matching `pred`, and when it arrived.
    pub fn saw(&self, pred: impl Fn(&str) -> bool) -> Option<(Instant, String)> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|(_, l)| pred(l))
            .cloned()
    }

    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| pred(l))
            .count()
    }

    /// Waits up to `within` for the first line matching `pred`; panics naming `what`, with
    /// every line so far.
    pub fn wait_for(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> (Instant, String) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(found) = self.saw(&pred) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} line within {within:?}: {:#?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill")
            .success());
        self.child.wait().expect("wait for mayfly run")
    }

    /// SIGKILL: no pass finishes, no lease is released.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill mayfly run");
        self.child.wait().expect("wait for mayfly run");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A failed test leaves no daemon behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
