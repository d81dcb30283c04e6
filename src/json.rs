//! Byte-level JSON helpers for the few edits the relay makes to bodies it
//! otherwise forwards untouched.
//!
//! Hand-written because no JSON crate reports where a value sits in its
//! input; re-serializing a whole 20 KB conversation to change one string
//! would cost far more than this scan.

use std::ops::Range;

use memchr::memmem;

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

/// Whether `json` nests arrays and objects more than `limit` deep. `json`
/// must be valid JSON (the caller parsed it already).
pub(crate) fn nests_deeper_than(json: &[u8], limit: usize) -> bool {
    // Fewer openers than the limit in all (strings included) cannot nest
    // past it: a vectorised count clears most bodies without the walk.
    if memchr::memchr2_iter(b'{', b'[', json).count() <= limit {
        return false;
    }
    let mut depth = 0usize;
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => match string_end(json, i) {
                Some(end) => {
                    i = end;
                    continue;
                }
                None => return false,
            },
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
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

/// Replaces the top-level string value of `key` with `value`, returning the
/// new document, or `None` when there is no such key.
pub(crate) fn replace_top_level_string(json: &[u8], key: &str, value: &str) -> Option<Vec<u8>> {
    let span = top_level_value_span(json, key)?;
    let encoded = serde_json::to_string(value).ok()?;
    let mut out = Vec::with_capacity(json.len() + encoded.len());
    out.extend_from_slice(&json[..span.start]);
    out.extend_from_slice(encoded.as_bytes());
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
    let finder = memmem::Finder::new(b"\"model\"");
    let mut offset = 0;
    while let Some(at) = finder.find(&json[offset..]) {
        let after_key = offset + at + 7;
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
    #[test]
    fn nesting_is_counted_outside_strings_only() {
        use super::nests_deeper_than;
        assert!(!nests_deeper_than(br#"{"a":[[1]],"b":"[[[[[["}"#, 3));
        assert!(nests_deeper_than(br#"{"a":[[{"b":1}]]}"#, 3));
        assert!(!nests_deeper_than(br#"{"a":"\"[[[[","b":[]}"#, 2));
        // Past the count, the walk decides: brackets in strings do not nest.
        assert!(!nests_deeper_than(br#"{"a":"[[[[[[[[","b":[]}"#, 3));
        assert!(nests_deeper_than(br#"[[[[{}]]]]"#, 4));
        assert!(!nests_deeper_than(br#"[[[[{}]]]]"#, 5));
    }

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

    #[test]
    fn replaces_the_model_and_keeps_the_rest() {
        let doc = br#"{"stream":true,"model":"a","messages":[]}"#;
        let out = replace_top_level_string(doc, "model", "b\"c").unwrap();
        assert_eq!(out, br#"{"stream":true,"model":"b\"c","messages":[]}"#);
    }

    #[test]
    fn finds_model_values_with_spaces_and_skips_other_values() {
        let doc = br#"{"x":{"model":"other"},"model": "m1"}"#;
        let span = find_model_value(doc, br#""m1""#).unwrap();
        assert_eq!(&doc[span], br#""m1""#);
        assert!(find_model_value(br#"{"text":"\"model\":\"m1\""}"#, br#""m1""#).is_none());
    }
}
