//! Integration tests for convert.
