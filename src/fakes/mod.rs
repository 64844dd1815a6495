//! Stateful in-memory fakes of every port. They behave like the services: they keep state,
//! enforce conditional writes, honour client tokens as EC2 does, and can be scripted to fail.
//! Core logic is tested against them; adapters are tested against the emulator.

mod account;
mod compute;
pub mod history;
mod queue;
mod store;

pub use account::FakeAccount;
pub use compute::{FakeCompute, LaunchFault};
pub use queue::FakeQueue;
pub use store::{FakeConfigStore, FakeLedger};
