//! The image store: a bare git repository written through gix, plus checkouts.
