//! Building images from Dockerfiles: parse, plan, cache keys, execute.
//!
//! The only module that uses both [`crate::store`] and [`crate::run`].

pub mod context;
pub mod copy;
pub mod dockerfile;
pub mod exec;
pub mod invocation;
pub mod key;
pub mod mount;
pub mod plan;
pub mod subst;
pub mod why;
