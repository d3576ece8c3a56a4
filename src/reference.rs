//! Image references
