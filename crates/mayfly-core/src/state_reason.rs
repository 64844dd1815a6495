//! Why EC2 ended an instance: the `StateReason` DescribeInstances returns with a stopped or
//! terminated instance, and what it means for the attempt that instance carried. An instance
//! that is `terminated` before its job reported `started` usually says why here: a KMS key it
//! may not use, the account's EBS volume limit, no capacity after all.

use std::fmt;

use serde::{Deserialize, Serialize};

/// EC2's reason for an instance's last state change (`Client.VolumeLimitExceeded`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateReason {
    pub code: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// What a [`StateReason`] means for mayfly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateReasonClass {
    /// The instance (or someone, mayfly included) shut it down: nothing EC2 did.
    Shutdown,
    /// EC2 reclaimed a spot instance.
    SpotInterruption,
    /// EC2 had no capacity for it after all: try another rung.
    Capacity,
    /// EC2 could not start it as configured (a KMS key, a snapshot, the volume limit): the
    /// payer's launch settings need an operator.
    Configuration,
    /// Anything else (an internal error, a scheduled stop): an ordinary lost instance.
    Other,
}

impl StateReason {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }

    /// Classifies by code (EC2's documented `StateReason` codes), never by message text.
    pub fn class(&self) -> StateReasonClass {
        match self.code.as_str() {
            "Client.InstanceInitiatedShutdown"
            | "Client.UserInitiatedShutdown"
            | "Client.UserInitiatedHibernate"
            | "Client.InstanceTerminated" => StateReasonClass::Shutdown,
            "Server.SpotInstanceShutdown" | "Server.SpotInstanceTermination" => {
                StateReasonClass::SpotInterruption
            }
            "Server.InsufficientInstanceCapacity" => StateReasonClass::Capacity,
            // `Client.InternalError` is EC2's answer when the instance's encrypted volumes
            // cannot use their KMS key; the KMS codes themselves come in several forms.
            "Client.InternalError"
            | "Client.InvalidSnapshot.NotFound"
            | "Client.VolumeLimitExceeded" => StateReasonClass::Configuration,
            c if c.starts_with("Client.InvalidKMSKey") => StateReasonClass::Configuration,
            _ => StateReasonClass::Other,
        }
    }

    /// Whether the reason says something about the launch, not the job: EC2 took the
    /// instance back or could not start it.
    pub fn ends_the_launch(&self) -> bool {
        matches!(
            self.class(),
            StateReasonClass::Capacity | StateReasonClass::Configuration
        )
    }
}

impl StateReason {
    /// The message without the code EC2 usually repeats at its start
    /// ("Client.VolumeLimitExceeded: Volume limit exceeded" → "Volume limit exceeded").
    pub fn detail(&self) -> &str {
        self.message
            .strip_prefix(self.code.as_str())
            .map_or(self.message.as_str(), |m| m.trim_start_matches([':', ' ']))
    }
}

impl fmt::Display for StateReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = self.detail();
        if message.is_empty() {
            f.write_str(&self.code)
        } else {
            write!(f, "{}: {message}", self.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_code() {
        let cases = [
            (
                "Client.InstanceInitiatedShutdown",
                StateReasonClass::Shutdown,
            ),
            ("Client.UserInitiatedShutdown", StateReasonClass::Shutdown),
            (
                "Server.SpotInstanceTermination",
                StateReasonClass::SpotInterruption,
            ),
            (
                "Server.InsufficientInstanceCapacity",
                StateReasonClass::Capacity,
            ),
            (
                "Client.InvalidKMSKey.InvalidState",
                StateReasonClass::Configuration,
            ),
            (
                "Client.InvalidKMSKey.NotFound",
                StateReasonClass::Configuration,
            ),
            (
                "Client.VolumeLimitExceeded",
                StateReasonClass::Configuration,
            ),
            ("Client.InternalError", StateReasonClass::Configuration),
            ("Server.InternalError", StateReasonClass::Other),
            ("Server.ScheduledStop", StateReasonClass::Other),
        ];
        for (code, want) in cases {
            assert_eq!(StateReason::new(code, "m").class(), want, "{code}");
        }
    }

    #[test]
    fn shows_the_code_once() {
        let r = StateReason::new(
            "Client.VolumeLimitExceeded",
            "Client.VolumeLimitExceeded: Volume limit exceeded",
        );
        assert_eq!(
            r.to_string(),
            "Client.VolumeLimitExceeded: Volume limit exceeded"
        );
        assert_eq!(
            StateReason::new("Server.InternalError", "").to_string(),
            "Server.InternalError"
        );
    }
}
