//! placeholder tour
pub mod history;
pub mod linearizability;
pub mod proxy;
pub mod set_checker;
pub mod watch_checker;
