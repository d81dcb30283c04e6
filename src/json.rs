//! Byte-level JSON helpers for the few edits the relay makes to bodies it
//! otherwise forwards untouched.
//!
//! Hand-written because no JSON crate reports where a value sits in its
//! input; re-serializing a whole 20 KB conversation to change one string
//! would cost far more than this scan.

use std::ops::Range;

use crate::needle::Needle;

/// The byte range of the value of `key` in the top-level object of `json`.
/// `json` must be valid JSON (the caller parsed it already).
pub(crate) fn top_level_value_span(json: &[u8], key: &str) -> Option<Range<usize>> {
    let mut depth = 0usize;
    let mut i = 0;
    // At depth 1, strings alternate key, value: a key is a string that
    // follows `{` or `,`.
    let mut expect_key = false;
    while i < json.len() {
        match json[i] {
            b'"' => {
                let end = string_end(json, i)?;
                if depth == 1 && expect_key {
                    let is_key = &json[i + 1..end - 1] == key.as_bytes();
                    if is_key {
                        let colon = end + skip_ws(&json[end..]);
                        if json.get(colon) != Some(&b':') {
                            return None;
                        }
                        let start = colon + 1 + skip_ws(&json[colon + 1..]);
                        return Some(start..value_end(json, start)?);
                    }
                    expect_key = false;
                }
                i = end;
                continue;
            }
            b'{' => {
                depth += 1;
                expect_key = depth == 1;
            }
            b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => expect_key = true,
            _ => {}
        }
        i += 1;
    }
    None
}

/// The deepest nesting of arrays and objects [`validate_object`] accepts:
/// serde_json's own recursion limit, which the layers that parse parts of
/// a body meet.
pub(crate) const MAX_NESTING: usize = 128;

/// Why a body is not one valid JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjectError {
    /// Not JSON: what was expected, and the byte offset where it was not.
    Syntax {
        /// What the grammar needed at `at`.
        expected: &'static str,
        /// The offending byte's offset (the end, for a cut document).
        at: usize,
    },
    /// Valid JSON that is not an object (its first byte named).
    NotObject,
    /// Arrays and objects nested deeper than [`MAX_NESTING`].
    TooDeep,
}

impl ObjectError {
    /// `(line, column)` of the error in `json`, both from 1, as serde_json
    /// reports them.
    pub(crate) fn line_and_column(at: usize, json: &[u8]) -> (usize, usize) {
        let before = &json[..at.min(json.len())];
        let line = 1 + memchr::memchr_iter(b'\n', before).count();
        let column = at
            - before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |n| n + 1)
            + 1;
        (line, column)
    }
}

/// Checks that `json` is one valid JSON text (RFC 8259, UTF-8 checked by
/// the caller) whose value is an object nesting at most [`MAX_NESTING`]
/// deep, and calls `member` with each top-level member's key (as written,
/// escapes left in) and value span.
///
/// Written by hand because the request parser needs both in one pass: a
/// serde pass only to validate costs as much as this whole walk, and
/// serde reports no spans. Its acceptance is serde_json's (a property test
/// compares them).
pub(crate) fn validate_object<'a>(
    json: &'a [u8],
    mut member: impl FnMut(&'a [u8], Range<usize>),
) -> Result<(), ObjectError> {
    #[derive(Clone, Copy)]
    enum Next {
        /// A key, or `}` right after `{`.
        KeyOrClose,
        Key,
        /// A value, or `]` right after `[`.
        ValueOrClose,
        Value,
        /// `,` or the closer of the container the value was in.
        After,
    }
    let syntax = |expected, at| ObjectError::Syntax { expected, at };
    let mut at = skip_ws(json);
    match json.get(at) {
        Some(b'{') => {}
        Some(_) => {
            return Err(match validate_value(json, at) {
                Ok(()) => ObjectError::NotObject,
                Err(error) => error,
            })
        }
        None => return Err(syntax("a JSON object", at)),
    }
    // Bit `d` of `arrays` is set when the container at depth `d` (from 1)
    // is an array; depth 0 is outside the top-level object.
    let mut depth = 1usize;
    let mut arrays = 0u128;
    let mut key = &json[..0];
    let mut value_start = 0;
    let mut next = Next::KeyOrClose;
    at += 1;
    loop {
        at += skip_ws(&json[at..]);
        let byte = json.get(at).copied();
        match next {
            // A closer right after its opener: `After` closes it.
            Next::KeyOrClose | Next::ValueOrClose
                if byte
                    == Some(if matches!(next, Next::KeyOrClose) {
                        b'}'
                    } else {
                        b']'
                    }) =>
            {
                next = Next::After;
            }
            Next::KeyOrClose | Next::Key => {
                if byte != Some(b'"') {
                    return Err(syntax("a string key", at));
                }
                let end = string_checked(json, at)?;
                if depth == 1 {
                    key = &json[at + 1..end - 1];
                }
                at = end + skip_ws(&json[end..]);
                if json.get(at) != Some(&b':') {
                    return Err(syntax("`:`", at));
                }
                at += 1;
                next = Next::Value;
            }
            Next::ValueOrClose | Next::Value => {
                if depth == 1 {
                    value_start = at;
                }
                match byte {
                    Some(opener @ (b'{' | b'[')) => {
                        if depth == MAX_NESTING {
                            return Err(ObjectError::TooDeep);
                        }
                        let is_array = u128::from(opener == b'[');
                        arrays = (arrays & !(1 << depth)) | (is_array << depth);
                        depth += 1;
                        at += 1;
                        next = if opener == b'[' {
                            Next::ValueOrClose
                        } else {
                            Next::KeyOrClose
                        };
                        continue;
                    }
                    _ => at = scalar_end(json, at)?,
                }
                next = Next::After;
                if depth == 1 {
                    member(key, value_start..at);
                }
            }
            Next::After => {
                let in_array = arrays & (1 << (depth - 1)) != 0;
                match byte {
                    Some(b',') => {
                        at += 1;
                        next = if in_array { Next::Value } else { Next::Key };
                    }
                    Some(closer) if closer == if in_array { b']' } else { b'}' } => {
                        at += 1;
                        depth -= 1;
                        if depth == 1 {
                            member(key, value_start..at);
                        } else if depth == 0 {
                            break;
                        }
                    }
                    _ => return Err(syntax("`,` or a closing bracket", at)),
                }
            }
        }
    }
    let end = at + skip_ws(&json[at..]);
    if end == json.len() {
        Ok(())
    } else {
        Err(syntax("the end of the document", end))
    }
}

/// Checks one whole value starting at `at` (for telling a valid non-object
/// from invalid JSON).
fn validate_value(json: &[u8], at: usize) -> Result<(), ObjectError> {
    // As the only member of an object, it meets the same grammar.
    let mut wrapped = Vec::with_capacity(json.len() - at + 6);
    wrapped.extend_from_slice(b"{\"\":");
    wrapped.extend_from_slice(&json[at..]);
    wrapped.push(b'}');
    validate_object(&wrapped, |_, _| {}).map_err(|error| match error {
        ObjectError::Syntax {
            expected,
            at: offset,
        } => ObjectError::Syntax {
            expected,
            at: (at + offset).saturating_sub(4).min(json.len()),
        },
        other => other,
    })
}

/// The end of the string, number or literal starting at `at`.
fn scalar_end(json: &[u8], at: usize) -> Result<usize, ObjectError> {
    let syntax = |expected, at| ObjectError::Syntax { expected, at };
    match json.get(at) {
        Some(b'"') => string_checked(json, at),
        Some(b'-' | b'0'..=b'9') => {
            let mut i = at + usize::from(json[at] == b'-');
            let digits = |i: usize| {
                json[i.min(json.len())..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count()
            };
            match json.get(i) {
                Some(b'0') => i += 1,
                Some(b'1'..=b'9') => i += digits(i),
                _ => return Err(syntax("a digit", i)),
            }
            if json.get(i) == Some(&b'.') {
                let n = digits(i + 1);
                if n == 0 {
                    return Err(syntax("a digit", i + 1));
                }
                i += 1 + n;
            }
            if matches!(json.get(i), Some(b'e' | b'E')) {
                i += 1;
                if matches!(json.get(i), Some(b'+' | b'-')) {
                    i += 1;
                }
                let n = digits(i);
                if n == 0 {
                    return Err(syntax("a digit", i));
                }
                i += n;
            }
            Ok(i)
        }
        _ => {
            for literal in [&b"true"[..], b"false", b"null"] {
                if json[at..].starts_with(literal) {
                    return Ok(at + literal.len());
                }
            }
            Err(syntax("a value", at))
        }
    }
}

/// The index just past the string starting at `at` (a `"`), checking its
/// escapes and that it holds no raw control character.
fn string_checked(json: &[u8], at: usize) -> Result<usize, ObjectError> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    // The bytes of a little-endian word that are a `"`, a `\` or below
    // 0x20, as high bits: the usual has-zero-byte test on the word xor
    // each, and on the word less 0x20. Borrows can flag bytes above a true
    // one, never below, so the lowest flag is exact.
    let special = |word: u64| {
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let zero = |x: u64| x.wrapping_sub(ONES) & !x;
        (zero(quote) | zero(backslash) | (word.wrapping_sub(ONES * 0x20) & !word)) & HIGH
    };
    let mut i = at + 1;
    loop {
        // Eight bytes at a time up to the first byte that may end the run.
        while let Some(chunk) = json.get(i..i + 8) {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            let flags = special(u64::from_le_bytes(word));
            if flags != 0 {
                i += (flags.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        match json.get(i) {
            None => {
                return Err(ObjectError::Syntax {
                    expected: "the string's closing quote",
                    at: json.len(),
                })
            }
            Some(b'"') => return Ok(i + 1),
            Some(b'\\') => match json.get(i + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                Some(b'u')
                    if json
                        .get(i + 2..i + 6)
                        .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
                {
                    i += 6;
                }
                _ => {
                    return Err(ObjectError::Syntax {
                        expected: "a valid escape",
                        at: i + 1,
                    })
                }
            },
            Some(0..=0x1f) => {
                return Err(ObjectError::Syntax {
                    expected: "no control character in a string",
                    at: i,
                })
            }
            Some(_) => i += 1,
        }
    }
}

/// Calls `member` with each member of the top-level object of `json`, in
/// order: the key's text as written (escapes left in) and the value's
/// span. Returns whether the object is whole: it opens, every member has a
/// key, a colon and a value, and it closes with only whitespace after
/// (on `false`, `member` may have seen the members before the fault).
/// Only the structure is checked (strings, brackets, separators), not what
/// scalars spell: for reading a few members of an answer that was not
/// parsed, without building a tree of the rest.
pub(crate) fn top_level_members<'a>(
    json: &'a [u8],
    mut member: impl FnMut(&'a [u8], Range<usize>),
) -> bool {
    top_level_walk(json, &mut member).is_some()
}

fn top_level_walk<'a>(
    json: &'a [u8],
    member: &mut impl FnMut(&'a [u8], Range<usize>),
) -> Option<()> {
    let mut i = skip_ws(json);
    if json.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    i += skip_ws(&json[i..]);
    if json.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if json.get(i) != Some(&b'"') {
                return None;
            }
            let key_end = string_end(json, i)?;
            let key = &json[i + 1..key_end - 1];
            i = key_end + skip_ws(&json[key_end..]);
            if json.get(i) != Some(&b':') {
                return None;
            }
            i += 1;
            let start = i + skip_ws(&json[i..]);
            let end = value_end(json, start)?;
            if end == start {
                return None;
            }
            member(key, start..end);
            i = end + skip_ws(&json[end..]);
            match json.get(i) {
                Some(b',') => i += 1 + skip_ws(&json[i + 1..]),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (i + skip_ws(&json[i..]) == json.len()).then_some(())
}

/// The span of the first element of the array `json` (valid JSON, the
/// caller parsed it already), or `None` when `json` is not an array or is
/// empty: for reading one element without scanning the rest.
pub(crate) fn first_array_element(json: &[u8]) -> Option<Range<usize>> {
    let open = skip_ws(json);
    if json.get(open) != Some(&b'[') {
        return None;
    }
    let start = open + 1 + skip_ws(&json[open + 1..]);
    if json.get(start) == Some(&b']') {
        return None;
    }
    Some(start..value_end(json, start)?)
}

/// The index just past the string starting at `start` (a `"`).
fn string_end(json: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        let at = i + memchr::memchr2(b'"', b'\\', json.get(i..)?)?;
        if json[at] == b'\\' {
            i = at + 2;
        } else {
            return Some(at + 1);
        }
    }
}

fn skip_ws(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .count()
}

/// The index just past the value starting at `start`.
fn value_end(json: &[u8], start: usize) -> Option<usize> {
    match json.get(start)? {
        b'"' => string_end(json, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            while i < json.len() {
                match json[i] {
                    b'"' => {
                        i = string_end(json, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => Some(
            start
                + json[start..]
                    .iter()
                    .take_while(|b| !matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                    .count(),
        ),
    }
}

/// `value` as a JSON string, quotes included, in a `Vec` of exactly its
/// length (which becomes `Bytes` without another allocation). Names
/// without escapes (model names) are quoted as they are; others are
/// encoded by serde.
pub(crate) fn quoted(value: &str) -> Vec<u8> {
    let plain = value
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
    if !plain {
        // Encoding a `str` cannot fail.
        let mut encoded = serde_json::to_vec(value).unwrap_or_default();
        encoded.shrink_to_fit();
        return encoded;
    }
    let mut out = Vec::with_capacity(value.len() + 2);
    out.push(b'"');
    out.extend_from_slice(value.as_bytes());
    out.push(b'"');
    out
}

/// Replaces the top-level string value of `key` with `value`, returning the
/// new document, or `None` when there is no such key.
///
/// The result is sized exactly: a `Vec` filled to its capacity becomes
/// `Bytes` without another allocation.
pub(crate) fn replace_top_level_string(json: &[u8], key: &str, value: &str) -> Option<Vec<u8>> {
    let span = top_level_value_span(json, key)?;
    let value = quoted(value);
    let mut out = Vec::with_capacity(json.len() - span.len() + value.len());
    out.extend_from_slice(&json[..span.start]);
    out.extend_from_slice(&value);
    out.extend_from_slice(&json[span.end..]);
    Some(out)
}

/// Finds the first `"model"` member whose value is exactly the JSON string
/// `from` (already encoded, quotes included), for rewriting a model name in
/// an upstream answer. Returns the value's span.
///
/// An unescaped `"model"` followed by `:` can only be an object key: inside
/// a JSON string the quotes would be escaped. Upstream answers put the
/// top-level `model` before any content, so the first match is the one.
pub(crate) fn find_model_value(json: &[u8], from: &[u8]) -> Option<Range<usize>> {
    static MODEL_KEY: Needle = Needle::new(b"\"model\"");
    let mut offset = 0;
    while let Some(at) = MODEL_KEY.find(&json[offset..]) {
        let after_key = offset + at + MODEL_KEY.len();
        let colon = after_key + skip_ws(&json[after_key..]);
        if json.get(colon) == Some(&b':') {
            let start = colon + 1 + skip_ws(&json[colon + 1..]);
            if json[start..].starts_with(from) {
                return Some(start..start + from.len());
            }
        }
        offset = after_key;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_the_top_level_key() {
        let doc =
            br#"{"messages":[{"model":"inner","content":"\"model\": x"}], "model" : "top", "z":1}"#;
        let span = top_level_value_span(doc, "model").unwrap();
        assert_eq!(&doc[span], br#""top""#);
        assert!(top_level_value_span(br#"{"a":{"model":"x"}}"#, "model").is_none());
    }

    #[test]
    fn value_ends_for_every_kind() {
        let doc = br#"{"a":[1,{"b":"]"}],"b":{"c":"}"},"c":12.5e3,"d":true,"e":"s\"q"}"#;
        let get = |k| &doc[top_level_value_span(doc, k).unwrap()];
        assert_eq!(get("a"), br#"[1,{"b":"]"}]"#);
        assert_eq!(get("b"), br#"{"c":"}"}"#);
        assert_eq!(get("c"), b"12.5e3");
        assert_eq!(get("d"), b"true");
        assert_eq!(get("e"), br#""s\"q""#);
    }

    #[test]
    fn top_level_members_are_walked_in_order_and_only_whole_objects_pass() {
        let doc = b" { \"a\" : [1,{\"usage\":{}}], \"b\\\"\":\"x\",\"c\":null }\n";
        let mut seen = Vec::new();
        assert!(top_level_members(doc, |key, span| seen.push((key, &doc[span]))));
        let expected: [(&[u8], &[u8]); 3] = [
            (b"a", br#"[1,{"usage":{}}]"#),
            (br#"b\""#, br#""x""#),
            (b"c", b"null"),
        ];
        assert_eq!(seen, expected);
        assert!(top_level_members(b"{}", |_, _| panic!("no members")));
        for broken in [
            &br#"{"a":1"#[..],
            br#"{"a":1,}"#,
            br#"{"a":}"#,
            br#"{"a" 1}"#,
            br#"{"a":"cut}"#,
            br#"{"a":1} x"#,
            br#"[1]"#,
            b"",
        ] {
            assert!(
                !top_level_members(broken, |_, _| {}),
                "{}",
                String::from_utf8_lossy(broken)
            );
        }
    }

    #[test]
    fn the_first_array_element_is_found_without_the_rest() {
        let doc = br#" [ {"content":"a]"} , 2 , "never read"#;
        let first = first_array_element(doc).unwrap();
        assert_eq!(&doc[first], br#"{"content":"a]"}"#);
        assert_eq!(first_array_element(b"[]"), None);
        assert_eq!(first_array_element(b" [ ] "), None);
        assert_eq!(first_array_element(br#""text""#), None);
        assert_eq!(&b"[7]"[first_array_element(b"[7]").unwrap()], b"7");
    }

    fn value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            "[a-z \"\\\\/\u{e9}\u{1F600}\t\n]{0,24}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z\"]{0,6}", inner, 0..5)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        /// The validator accepts exactly what serde_json accepts (as an
        /// object), on valid documents and on documents with one byte
        /// changed, and reports the members the plain walk finds.
        #[test]
        fn validation_agrees_with_serde_json(
            members in proptest::collection::btree_map("[a-z]{0,6}", value(), 0..6),
            pretty in proptest::prelude::any::<bool>(),
            top_level_array in proptest::prelude::any::<bool>(),
            edit in proptest::option::weighted(0.9, (proptest::prelude::any::<proptest::sample::Index>(), 0..4u8,
                proptest::sample::select(b"{}[],:\"\\01-.eE+tfnu \n\x01x".to_vec()))),
        ) {
            let value = if top_level_array {
                serde_json::Value::from(members.values().cloned().collect::<Vec<_>>())
            } else {
                serde_json::Value::Object(members.into_iter().collect())
            };
            let mut doc = if pretty {
                serde_json::to_vec_pretty(&value).unwrap()
            } else {
                serde_json::to_vec(&value).unwrap()
            };
            if let Some((at, kind, byte)) = edit {
                let at = at.index(doc.len() + 1);
                match kind {
                    0 => doc.insert(at, byte),
                    1 if at < doc.len() => { doc.remove(at); }
                    2 if at < doc.len() => doc[at] = byte,
                    _ => doc.truncate(at),
                }
            }
            let serde_accepts = serde_json::from_slice::<serde::de::IgnoredAny>(&doc).is_ok()
                && doc.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
            let mut seen = Vec::new();
            let checked = validate_object(&doc, |key, span| seen.push((key.to_vec(), span)));
            proptest::prop_assert_eq!(checked.is_ok(), serde_accepts, "{:?} {}", checked, String::from_utf8_lossy(&doc));
            if checked.is_ok() {
                let mut walked = Vec::new();
                proptest::prop_assert!(top_level_members(&doc, |key, span| walked.push((key.to_vec(), span))));
                proptest::prop_assert_eq!(seen, walked);
            }
        }
    }

    #[test]
    fn validation_limits_nesting_and_names_what_it_expected() {
        let nested = |depth: usize| {
            format!(
                "{{\"a\":{}1{}}}",
                "[".repeat(depth - 1),
                "]".repeat(depth - 1)
            )
        };
        assert_eq!(
            validate_object(nested(MAX_NESTING).as_bytes(), |_, _| {}),
            Ok(())
        );
        assert_eq!(
            validate_object(nested(MAX_NESTING + 1).as_bytes(), |_, _| {}),
            Err(ObjectError::TooDeep)
        );
        assert_eq!(
            validate_object(b" [1, 2] ", |_, _| {}),
            Err(ObjectError::NotObject)
        );
        assert_eq!(
            validate_object(b"{\"a\":tru}", |_, _| {}),
            Err(ObjectError::Syntax {
                expected: "a value",
                at: 5
            })
        );
        assert_eq!(
            validate_object(b"{\"a\":\"x\x01\"}", |_, _| {}),
            Err(ObjectError::Syntax {
                expected: "no control character in a string",
                at: 7
            })
        );
        assert_eq!(
            validate_object(b"[1,]", |_, _| {}),
            Err(ObjectError::Syntax {
                expected: "a value",
                at: 3
            })
        );
        assert_eq!(
            validate_object(br#"{"a":[1,],"b":2}"#, |_, _| {}),
            Err(ObjectError::Syntax {
                expected: "a value",
                at: 8
            })
        );
        assert_eq!(
            validate_object(br#"{"a":1,}"#, |_, _| {}),
            Err(ObjectError::Syntax {
                expected: "a string key",
                at: 7
            })
        );
        assert_eq!(ObjectError::line_and_column(7, b"{\n  \"a\" x"), (2, 6));
    }

    #[test]
    fn replaces_the_model_and_keeps_the_rest() {
        let doc = br#"{"stream":true,"model":"a","messages":[]}"#;
        let out = replace_top_level_string(doc, "model", "b\"c").unwrap();
        assert_eq!(out, br#"{"stream":true,"model":"b\"c","messages":[]}"#);
        // Plain names and names with escapes or non-ASCII, at their exact size.
        for name in [
            "claude-sonnet-4-5-20250929",
            "tab\there",
            "caf\u{e9}",
            "x\u{7f}",
            "",
        ] {
            let out = replace_top_level_string(doc, "model", name).unwrap();
            assert_eq!(out.len(), out.capacity(), "{name:?}");
            let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(value["model"], name, "{name:?}");
            assert_eq!(value["messages"], serde_json::json!([]));
        }
    }

    #[test]
    fn finds_model_values_with_spaces_and_skips_other_values() {
        let doc = br#"{"x":{"model":"other"},"model": "m1"}"#;
        let span = find_model_value(doc, br#""m1""#).unwrap();
        assert_eq!(&doc[span], br#""m1""#);
        assert!(find_model_value(br#"{"text":"\"model\":\"m1\""}"#, br#""m1""#).is_none());
    }
}
