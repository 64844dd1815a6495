//! mayfly's test bed: the tooling that runs mayfly for real on one machine, against the AWS
//! emulator (moto). Nothing here is part of the production crate; `mayfly` only has this
//! crate as a dev-dependency, for its tests and examples.
//!
//! - [`fleet`]: the local fleet (`mayfly-fleet`): runs the emulator's instances as local
//!   processes, with their own metadata endpoint, `shutdown` that terminates them, and
//!   injected faults.
//! - [`faultproxy`]: the fault proxy (`mayfly-faultproxy`): an HTTP proxy in front of the
//!   emulator that injects throttling, 5xx, timeouts and lost responses, seeded.

pub mod faultproxy;
pub mod fleet;
