//! Coffer's storage engine: turns a directory tree or a byte stream into an
//! encrypted, deduplicated recovery point in an [`ObjectStore`], and back.
//!
//! The engine is given an unwrapped [`DataKey`] and never learns what wrapped it.
//! See `docs/format.md` for every object it writes and `ARCHITECTURE.md` for the
//! data flow. Public entry point: [`Repository`].

mod api;
mod repo;

pub use api::*;
