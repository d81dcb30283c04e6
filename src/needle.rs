//! Fixed byte strings searched for on every request, with their searcher
//! built once.
//!
//! `memchr::memmem::find` builds a searcher on each call (about 190
//! instructions for these needles), more than the search itself costs in a
//! request body or an SSE event.

use std::sync::OnceLock;

use memchr::memmem::{FindIter, Finder};

/// A JSON `\u` escape, which can spell any key or word: a search for a
/// plain name finds every spelling only where this is absent.
pub(crate) static UNICODE_ESCAPE: Needle = Needle::new(b"\\u");

/// A needle for a `static`: its `memmem` searcher is built on first use.
pub(crate) struct Needle {
    bytes: &'static [u8],
    finder: OnceLock<Finder<'static>>,
}

impl Needle {
    pub(crate) const fn new(bytes: &'static [u8]) -> Self {
        Self {
            bytes,
            finder: OnceLock::new(),
        }
    }

    fn finder(&self) -> &Finder<'static> {
        self.finder.get_or_init(|| Finder::new(self.bytes))
    }

    /// Where the needle first occurs in `haystack`.
    pub(crate) fn find(&self, haystack: &[u8]) -> Option<usize> {
        self.finder().find(haystack)
    }

    /// Whether the needle occurs in `haystack`.
    pub(crate) fn is_in(&self, haystack: &[u8]) -> bool {
        self.find(haystack).is_some()
    }

    /// Every place, without overlaps, where the needle occurs in `haystack`.
    pub(crate) fn find_iter<'h>(&'h self, haystack: &'h [u8]) -> FindIter<'h, 'h> {
        self.finder().find_iter(haystack)
    }

    /// The needle's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Needle;

    static USAGE: Needle = Needle::new(b"\"usage\"");

    #[test]
    fn finds_what_memmem_finds() {
        let hay = br#"{"usage":null,"x":{"usage":{"input_tokens":1}}}"#;
        assert_eq!(USAGE.find(hay), memchr::memmem::find(hay, b"\"usage\""));
        assert_eq!(USAGE.find_iter(hay).collect::<Vec<_>>(), vec![1, 19]);
        assert!(!USAGE.is_in(b"{\"usage_x\":1}"));
        assert_eq!(USAGE.len(), 7);
    }
}
