//! What ingest writes: captures of the messages it receives, and the dead
//! letters of the ones it refused.

pub mod capture_writer;
pub mod dead_letter;
