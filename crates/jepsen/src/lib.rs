//! placeholder tour
pub mod history;
pub mod linearizability;
