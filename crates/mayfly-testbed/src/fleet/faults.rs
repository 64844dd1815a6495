//! Fault injection for the local fleet: what should go wrong for which job, parsed from
//! `JOB_ID=FAULT` pairs (`--fault`, or one per line in `--faults-file`).
//!
//! A key may name one attempt (`JOB_ID@2=crash`); job ids cannot contain `@` or `=`, so the
//! key is unambiguous. A fault for one attempt wins over a fault for the whole job.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use mayfly::job::{is_job_id, JOB_ID_FORM};

/// What goes wrong for one job's instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The stand-in ETL prints some output, then exits with this code.
    Exit(i32),
    /// The instance's processes are all killed mid-job, without a shutdown: the instance
    /// stays running in the emulator and no `finished` event is sent.
    Crash,
    /// The fleet never runs the instance's user-data (the instance never boots).
    NeverStart,
    /// The stand-in ETL never ends: the job's runtime limit, the deadline or a reaper must.
    Hang,
    /// A spot interruption notice appears on the metadata endpoint about a second after
    /// boot; the ETL keeps running and the fleet reclaims the instance at the notice's time.
    Spot,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Exit(code) => write!(f, "exit:{code}"),
            Fault::Crash => f.write_str("crash"),
            Fault::NeverStart => f.write_str("never-start"),
            Fault::Hang => f.write_str("hang"),
            Fault::Spot => f.write_str("spot"),
        }
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "crash" => Ok(Fault::Crash),
            "never-start" => Ok(Fault::NeverStart),
            "hang" => Ok(Fault::Hang),
            "spot" => Ok(Fault::Spot),
            _ => match s.strip_prefix("exit:") {
                Some(code) => match code.parse::<u8>() {
                    Ok(code) => Ok(Fault::Exit(i32::from(code))),
                    Err(_) => Err(format!("`{s}`: the exit code must be 0 to 255")),
                },
                None => Err(format!(
                    "unknown fault `{s}` (expected exit:N, crash, never-start, hang or spot)"
                )),
            },
        }
    }
}

/// Which instance a fault applies to: every attempt of a job, or one attempt.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    job_id: String,
    attempt: Option<u32>,
}

/// The faults to inject, by job (and optionally attempt).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    by_key: BTreeMap<Key, Fault>,
}

impl Faults {
    /// Adds one `JOB_ID=FAULT` or `JOB_ID@ATTEMPT=FAULT` pair; a later pair for the same key
    /// replaces an earlier one.
    pub fn add_spec(&mut self, spec: &str) -> Result<(), String> {
        let (key, fault) = spec
            .split_once('=')
            .ok_or_else(|| format!("`{spec}`: expected JOB_ID=FAULT"))?;
        let (job_id, attempt) = match key.trim().split_once('@') {
            Some((job_id, attempt)) => {
                let attempt = attempt
                    .parse::<u32>()
                    .ok()
                    .filter(|a| *a >= 1)
                    .ok_or_else(|| format!("`{spec}`: the attempt must be a number from 1"))?;
                (job_id, Some(attempt))
            }
            None => (key.trim(), None),
        };
        if !is_job_id(job_id) {
            return Err(format!(
                "`{spec}`: `{job_id}` is not a job id: {JOB_ID_FORM}"
            ));
        }
        let fault = fault.trim().parse::<Fault>()?;
        self.by_key.insert(
            Key {
                job_id: job_id.to_owned(),
                attempt,
            },
            fault,
        );
        Ok(())
    }

    /// Parses a faults file: one pair per line; blank lines and `#` comments are skipped.
    /// Errors name the line.
    pub fn add_text(&mut self, text: &str) -> Result<(), String> {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            self.add_spec(line)
                .map_err(|e| format!("line {}: {e}", n + 1))?;
        }
        Ok(())
    }

    /// Reads and parses a faults file; errors name the file.
    pub fn add_file(&mut self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        self.add_text(&text)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The fault for this job attempt, if any (an attempt's own fault first).
    pub fn lookup(&self, job_id: &str, attempt: Option<u32>) -> Option<Fault> {
        let key = |attempt| Key {
            job_id: job_id.to_owned(),
            attempt,
        };
        attempt
            .and_then(|a| self.by_key.get(&key(Some(a))))
            .or_else(|| self.by_key.get(&key(None)))
            .copied()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// `JOB_ID=FAULT` pairs, comma-separated; `none` when empty.
impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.by_key.is_empty() {
            return f.write_str("none");
        }
        for (n, (key, fault)) in self.by_key.iter().enumerate() {
            let sep = if n == 0 { "" } else { "," };
            match key.attempt {
                Some(attempt) => write!(f, "{sep}{}@{attempt}={fault}", key.job_id)?,
                None => write!(f, "{sep}{}={fault}", key.job_id)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_fault() {
        for (text, fault) in [
            ("exit:75", Fault::Exit(75)),
            ("exit:0", Fault::Exit(0)),
            ("crash", Fault::Crash),
            ("never-start", Fault::NeverStart),
            ("hang", Fault::Hang),
            ("spot", Fault::Spot),
        ] {
            assert_eq!(text.parse::<Fault>(), Ok(fault));
            assert_eq!(fault.to_string(), text);
        }
        assert!("exit:256".parse::<Fault>().is_err());
        assert!("exit:-1".parse::<Fault>().is_err());
        assert!("explode"
            .parse::<Fault>()
            .unwrap_err()
            .contains("unknown fault"));
    }

    #[test]
    fn job_ids_may_contain_colons_and_attempts_win() {
        let mut faults = Faults::default();
        faults
            .add_spec("harbor-health:2026-11-01:claims=exit:75")
            .unwrap();
        faults
            .add_spec("harbor-health:2026-11-01:claims@2=crash")
            .unwrap();
        let job = "harbor-health:2026-11-01:claims";
        assert_eq!(faults.lookup(job, Some(1)), Some(Fault::Exit(75)));
        assert_eq!(faults.lookup(job, None), Some(Fault::Exit(75)));
        assert_eq!(faults.lookup(job, Some(2)), Some(Fault::Crash));
        assert_eq!(faults.lookup("other", Some(2)), None);
        assert_eq!(
            faults.to_string(),
            "harbor-health:2026-11-01:claims=exit:75,harbor-health:2026-11-01:claims@2=crash"
        );
        assert_eq!(Faults::default().to_string(), "none");
    }

    #[test]
    fn bad_specs_say_why() {
        let mut faults = Faults::default();
        assert!(faults
            .add_spec("no-equals")
            .unwrap_err()
            .contains("JOB_ID=FAULT"));
        assert!(faults
            .add_spec("a b=crash")
            .unwrap_err()
            .contains("not a job id"));
        assert!(faults
            .add_spec("job@0=crash")
            .unwrap_err()
            .contains("attempt"));
        assert!(faults
            .add_spec("job=boom")
            .unwrap_err()
            .contains("unknown fault"));
        assert!(faults.is_empty());
    }

    #[test]
    fn files_skip_comments_and_name_the_line() {
        let mut faults = Faults::default();
        faults
            .add_text("# chaos run\n\njob-a=hang\n  job-b = spot\n")
            .unwrap();
        assert_eq!(faults.lookup("job-a", Some(1)), Some(Fault::Hang));
        assert_eq!(faults.lookup("job-b", Some(1)), Some(Fault::Spot));
        let err = faults.add_text("job-c=crash\njob-d=nope\n").unwrap_err();
        assert!(err.starts_with("line 2: "), "{err}");
    }
}
