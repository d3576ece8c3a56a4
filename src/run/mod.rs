//! Running a command in a root filesystem with user and mount namespaces (ch-run).
//!
//! Knows nothing of the store: it takes a root filesystem path (directory or SquashFS file).
