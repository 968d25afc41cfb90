//! The Doozer client protocol (see `shared/doc/doozer-protocol.md`).

pub mod codec;
pub mod glob;
pub mod msg;
pub mod path;
pub mod uri;
