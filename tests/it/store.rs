//! Integration tests for store.
