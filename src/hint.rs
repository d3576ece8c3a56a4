//! Hints: an optional line after an error saying what the user can do about it
//! (`hint: ...`). They come from the error types: each library error that can give one
//! implements [`Hint`], and one that wraps another asks the wrapped error. The binaries
//! print the first hint of an error chain, found by [`find`]; they match no message text.

use std::error::Error;

/// An error that may carry advice for the user.
pub trait Hint {
    /// The advice, if this error has any (lowercase, no trailing period).
    fn hint(&self) -> Option<String>;
}

/// Implement [`Hint`] with the type's inherent `hint` method, and list the type for
/// [`find`]. A list, because stable Rust cannot ask a `dyn Error` of the chain for a
/// `dyn Hint` (`Error::provide` is unstable), and the binaries hold `anyhow` errors whose
/// chain holds library errors: a new error type with hints is added here.
macro_rules! hinted_types {
    ($($t:ty),* $(,)?) => {
        $(impl Hint for $t {
            fn hint(&self) -> Option<String> {
                <$t>::hint(self)
            }
        })*

        /// The hint of `e` itself (not of its causes), if its type has hints.
        fn hint_of(e: &(dyn Error + 'static)) -> Option<String> {
            $(if let Some(x) = e.downcast_ref::<$t>() {
                return Hint::hint(x);
            })*
            None
        }
    };
}

hinted_types!(
    crate::store::StoreError,
    crate::store::export::ExportError,
    crate::store::stamp::StampError,
    crate::registry::RegistryError,
    crate::convert::ConvertError,
    crate::image::ImageError,
    crate::reference::ReferenceError,
    crate::build::context::ContextError,
);

/// The first hint in `err`'s chain (`err`, then its sources in order).
pub fn find(err: &(dyn Error + 'static)) -> Option<String> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(h) = hint_of(e) {
            return Some(h);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] StoreError);

    #[test]
    fn hint_is_found_below_an_error_without_one() {
        let e = Outer(StoreError::NoImage("foo".into()));
        assert_eq!(
            find(&e).as_deref(),
            Some("`ch-image list` shows the images in storage")
        );
    }

    #[test]
    fn wrapping_error_gives_the_hint_of_what_it_wraps() {
        // Transparent wrapping hides the inner error from the chain: the wrapper asks it.
        let e = crate::convert::ConvertError::Store(StoreError::NoImage("foo".into()));
        assert!(find(&e).is_some_and(|h| h.contains("ch-image list")));
        let e = StoreError::Export(crate::store::export::ExportError::NoSquashTool);
        assert!(find(&e).is_some_and(|h| h.contains("squashfs-tools")));
    }

    #[test]
    fn boxed_registry_error_under_a_pull_keeps_its_hint() {
        let e = crate::image::ImageError::Pull {
            src: "x:latest".into(),
            source: Box::new(crate::registry::RegistryError::NotFound("x".into())),
        };
        assert!(find(&e).is_some_and(|h| h.contains("check the name and tag")));
    }

    #[test]
    fn error_without_hint_has_none() {
        let e = std::io::Error::other("plain");
        assert_eq!(find(&e), None);
    }
}
