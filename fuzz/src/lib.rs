//! Fuzzing harness for listwarden: the code each fuzz target runs, kept in
//! a library so the stable replay test (`tests/faults_fuzz_replay.rs`)
//! runs the very same code on the stored corpus.
//!
//! - [`frames`]: milter frames as Postfix writes them, replies read back.
//! - [`milter`]: one real milter session over a stream pair.
//! - [`inputs`]: the address, config and DSN entry points.

pub mod frames;
pub mod inputs;
pub mod milter;
