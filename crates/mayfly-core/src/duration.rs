//! Human durations (`30s`, `10m`, `6h`, `1h30m`, `2d`) as they appear in payer profiles.

use std::fmt;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A whole number of seconds, written and read in the compact `1h30m` form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(u64);

impl Duration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs)
    }

    pub const fn from_mins(mins: u64) -> Self {
        Self(mins * 60)
    }

    pub const fn as_secs(self) -> u64 {
        self.0
    }

    pub fn to_chrono(self) -> chrono::Duration {
        // Durations come from validated profiles (bounded to days), so this never saturates.
        chrono::Duration::seconds(i64::try_from(self.0).unwrap_or(i64::MAX / 1000))
    }
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{input}`: {reason} (expected e.g. `45s`, `10m`, `6h`, `1h30m`, `2d`)")]
pub struct ParseDurationError {
    input: String,
    reason: &'static str,
}

impl FromStr for Duration {
    type Err = ParseDurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseDurationError {
            input: input.to_owned(),
            reason,
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("empty"));
        }
        let mut total: u64 = 0;
        let mut digits = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                _ => return Err(err("unknown unit (use s, m, h or d)")),
            };
            if digits.is_empty() {
                return Err(err("a unit must follow a number"));
            }
            let n: u64 = digits.parse().map_err(|_| err("number too large"))?;
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| err("too large"))?;
            digits.clear();
        }
        if !digits.is_empty() {
            return Err(err("missing unit after the last number"));
        }
        Ok(Self(total))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        if rest == 0 {
            return f.write_str("0s");
        }
        for (unit, secs) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
            if rest >= secs {
                write!(f, "{}{unit}", rest / secs)?;
                rest %= secs;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compound_durations() {
        assert_eq!("45s".parse::<Duration>().unwrap().as_secs(), 45);
        assert_eq!("10m".parse::<Duration>().unwrap().as_secs(), 600);
        assert_eq!("1h30m".parse::<Duration>().unwrap().as_secs(), 5400);
        assert_eq!("2d".parse::<Duration>().unwrap().as_secs(), 172_800);
    }

    #[test]
    fn refuses_malformed_durations() {
        for bad in ["", "10", "m", "10x", "1.5h", "-3m"] {
            assert!(bad.parse::<Duration>().is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["45s", "10m", "1h30m", "2d3h", "0s"] {
            let d: Duration = s.parse().unwrap();
            assert_eq!(d.to_string(), s);
        }
    }
}
