//! Integration tests for build.
