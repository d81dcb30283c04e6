//! `*` globs over model names (`claude-*`, `gpt-4o*`, `*`).

use std::sync::Arc;

/// One model-name pattern where `*` matches any run of characters.
///
/// # Examples
///
/// ```
/// use tower_llm_relay::ModelGlob;
///
/// let glob = ModelGlob::new("claude-*-4-5");
/// assert!(glob.matches("claude-sonnet-4-5"));
/// assert!(!glob.matches("gpt-4o"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelGlob {
    pattern: Arc<str>,
}

impl ModelGlob {
    /// A glob from its pattern text.
    pub fn new(pattern: impl Into<Arc<str>>) -> Self {
        Self {
            pattern: pattern.into(),
        }
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether the pattern names one model (has no `*`).
    pub fn is_literal(&self) -> bool {
        !self.pattern.contains('*')
    }

    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        let mut parts = self.pattern.split('*');
        // `split` always yields at least one part.
        let first = parts.next().unwrap_or_default();
        let Some(mut rest) = name.strip_prefix(first) else {
            return false;
        };
        let mut parts = parts.peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                // The last part anchors at the end of the name.
                return rest.ends_with(part);
            }
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        // No `*` at all: the prefix had to be the whole name.
        rest.is_empty()
    }
}

/// An allow-list of model globs. Empty means every model is allowed.
///
/// # Examples
///
/// ```
/// use tower_llm_relay::ModelGlobs;
///
/// let globs = ModelGlobs::new(["claude-*", "gpt-4o"]);
/// assert!(globs.allows("claude-opus-4-1"));
/// assert!(!globs.allows("gpt-4o-mini"));
/// assert!(ModelGlobs::default().allows("anything"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelGlobs {
    globs: Arc<[ModelGlob]>,
}

impl ModelGlobs {
    /// An allow-list from pattern texts.
    pub fn new<I, S>(patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Arc<str>>,
    {
        Self {
            globs: patterns.into_iter().map(ModelGlob::new).collect(),
        }
    }

    /// Whether no pattern is set (everything is allowed).
    pub fn is_unrestricted(&self) -> bool {
        self.globs.is_empty()
    }

    /// Whether `model` is allowed.
    pub fn allows(&self, model: &str) -> bool {
        self.globs.is_empty() || self.globs.iter().any(|g| g.matches(model))
    }

    /// The patterns, in order.
    pub fn iter(&self) -> impl Iterator<Item = &ModelGlob> {
        self.globs.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::ModelGlob;

    #[test]
    fn glob_table() {
        let cases = [
            ("*", "", true),
            ("*", "abc", true),
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("abc*", "abcd", true),
            ("*bcd", "abcd", true),
            ("*bcd", "abcde", false),
            ("a*d", "abcd", true),
            ("a*d", "ad", true),
            ("a*d", "a", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxcyyb", false),
            ("a**c", "abc", true),
            ("ab*ba", "aba", false),
            ("claude-*", "gpt-4o", false),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(
                ModelGlob::new(pattern).matches(name),
                want,
                "{pattern} ~ {name}"
            );
        }
    }
}
