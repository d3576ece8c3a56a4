//! Building images from Dockerfiles: parse, plan, cache keys, execute.
//!
//! The only module that uses both [`crate::store`] and [`crate::run`].

pub mod dockerfile;
pub mod subst;
