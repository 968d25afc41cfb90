//! placeholder tour
pub mod cluster;
pub mod history;
pub mod linearizability;
pub mod nemesis;
pub mod proxy;
pub mod set_checker;
pub mod watch_checker;
