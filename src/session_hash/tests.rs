use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::endpoint::Endpoint;

#[derive(Debug, Clone)]
enum System {
    None,
    Plain(String),
    Marked(String),
}

fn build(
    uuid: &Option<String>,
    system: &System,
    marked_message: &Option<String>,
    first: &Option<String>,
) -> ParsedRequest {
    let mut body = json!({"model": "m", "messages": []});
    if let Some(uuid) = uuid {
        body["metadata"] = json!({"user_id": format!("user_abc_account__session_{uuid}")});
    }
    match system {
        System::None => {}
        System::Plain(s) => body["system"] = json!(s),
        System::Marked(s) => {
            body["system"] = json!([
                {"type": "text", "text": "unmarked-prefix-"},
                {"type": "text", "text": s, "cache_control": {"type": "ephemeral"}},
            ])
        }
    }
    let mut messages = vec![json!({"role": "user", "content": first.clone().unwrap_or_default()})];
    if let Some(m) = marked_message {
        messages.push(json!({"role": "user", "content": [
            {"type": "text", "text": m, "cache_control": {"type": "ephemeral"}},
        ]}));
    }
    body["messages"] = json!(messages);
    ParsedRequest::parse(Endpoint::Messages, body.to_string().as_bytes()).unwrap()
}

fn text() -> impl Strategy<Value = String> {
    "[a-z]{1,12}"
}

fn uuid() -> impl Strategy<Value = String> {
    "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
}

fn system() -> impl Strategy<Value = System> {
    prop_oneof![
        Just(System::None),
        text().prop_map(System::Plain),
        text().prop_map(System::Marked),
    ]
}

proptest! {
    #[test]
    fn the_first_present_source_decides(
        header in proptest::option::of(text()),
        uuid in proptest::option::of(uuid()),
        system in system(),
        marked_message in proptest::option::of(text()),
        first in proptest::option::of(text()),
    ) {
        let parsed = build(&uuid, &system, &marked_message, &first);
        let got = SessionHash::from_request(&parsed, header.as_deref());
        let expected = if let Some(h) = &header {
            Some(SessionHash::of_text(h))
        } else if let Some(u) = &uuid {
            Some(SessionHash(u.as_str().into()))
        } else if let System::Marked(s) = &system {
            Some(SessionHash::of_text(s))
        } else if let Some(m) = &marked_message {
            Some(SessionHash::of_text(m))
        } else if let System::Plain(s) = &system {
            Some(SessionHash::of_text(s))
        } else {
            first.as_ref().map(|f| SessionHash::of_text(f))
        };
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn the_hash_is_the_first_16_bytes_of_sha256_in_hex() {
    // sha256("hello") = 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824
    assert_eq!(
        SessionHash::of_text("hello").as_str(),
        "2cf24dba5fb0a30e26e83b2ac5b9e29e"
    );
}

#[test]
fn session_uuid_needs_36_uuid_characters() {
    assert_eq!(
        session_uuid("x_session_123e4567-e89b-12d3-a456-426614174000_y"),
        Some("123e4567-e89b-12d3-a456-426614174000")
    );
    assert_eq!(session_uuid("session_short"), None);
    assert_eq!(
        session_uuid("session_ZZZe4567-e89b-12d3-a456-426614174000"),
        None
    );
}

#[test]
fn requests_without_any_text_have_no_hash() {
    let parsed =
        ParsedRequest::parse(Endpoint::Messages, br#"{"model":"m","messages":[]}"#).unwrap();
    assert_eq!(SessionHash::from_request(&parsed, None), None);
    assert_eq!(SessionHash::from_request(&parsed, Some("  ")), None);
}

#[test]
fn responses_input_strings_and_instructions_count() {
    let parsed =
        ParsedRequest::parse(Endpoint::Responses, br#"{"model":"m","input":"hi there"}"#).unwrap();
    assert_eq!(
        SessionHash::from_request(&parsed, None),
        Some(SessionHash::of_text("hi there"))
    );
    let parsed = ParsedRequest::parse(
        Endpoint::Responses,
        br#"{"model":"m","instructions":"be brief","input":"x"}"#,
    )
    .unwrap();
    assert_eq!(
        SessionHash::from_request(&parsed, None),
        Some(SessionHash::of_text("be brief"))
    );
}

/// Texts with and without escapes (escaped strings cannot be borrowed).
fn any_text() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(json!("")),
        "[a-z]{1,6}".prop_map(|s| json!(s)),
        "[a-z\"\\\\\n\u{e9}\u{1F600}]{1,6}".prop_map(|s| json!(s)),
    ]
}

/// Anything that may stand where the hash looks for text or blocks,
/// the unusual shapes included.
fn odd_value() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(json!(null)),
        Just(json!(5)),
        Just(json!(true)),
        Just(json!({"text": "in an object"})),
        any_text(),
    ]
}

fn block() -> impl Strategy<Value = serde_json::Value> {
    let kind = prop_oneof![
        Just(None),
        Just(Some(json!("text"))),
        Just(Some(json!("input_text"))),
        Just(Some(json!("image"))),
        odd_value().prop_map(Some),
    ];
    let text = prop_oneof![3 => any_text().prop_map(Some), 1 => Just(None), 1 => odd_value().prop_map(Some)];
    let cache = prop_oneof![
        2 => Just(None),
        2 => Just(Some(json!({"type": "ephemeral"}))),
        1 => Just(Some(json!({"type": "persistent"}))),
        1 => odd_value().prop_map(|v| Some(json!({"type": v}))),
        1 => odd_value().prop_map(Some),
    ];
    let object = (kind, text, cache).prop_map(|(kind, text, cache)| {
        let mut block = json!({});
        if let Some(kind) = kind {
            block["type"] = kind;
        }
        if let Some(text) = text {
            block["text"] = text;
        }
        if let Some(cache) = cache {
            block["cache_control"] = cache;
        }
        block
    });
    prop_oneof![6 => object, 1 => odd_value()]
}

fn content() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        3 => any_text(),
        4 => proptest::collection::vec(block(), 0..4).prop_map(serde_json::Value::from),
        1 => odd_value(),
    ]
}

fn message() -> impl Strategy<Value = serde_json::Value> {
    let object = proptest::option::of(content()).prop_map(|content| {
        let mut message = json!({"role": "user"});
        if let Some(content) = content {
            message["content"] = content;
        }
        message
    });
    prop_oneof![6 => object, 1 => odd_value()]
}

fn conversation() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        4 => proptest::collection::vec(message(), 0..5).prop_map(serde_json::Value::from),
        1 => odd_value(),
    ]
}

proptest! {
    /// The borrowed reading decides as the `Value` trees do, whatever the
    /// shapes (where it declines, the trees decide by construction).
    #[test]
    fn borrowed_texts_hash_as_the_trees_do(
        system in proptest::option::of(content()),
        messages in proptest::option::of(conversation()),
        input in proptest::option::of(prop_oneof![any_text(), conversation()]),
        instructions in proptest::option::of(content()),
        duplicate_key in any::<bool>(),
        escaped_key in any::<bool>(),
    ) {
        let mut body = json!({"model": "m"});
        for (name, value) in [("system", system), ("messages", messages), ("input", input), ("instructions", instructions)] {
            if let Some(value) = value {
                body[name] = value;
            }
        }
        let mut text = body.to_string();
        if duplicate_key {
            // serde_json's trees keep the last of duplicate keys.
            text = text.replacen("\"text\":", "\"text\":\"dup\",\"text\":", 1);
        }
        if escaped_key {
            // The same key, spelled with an escape.
            text = text.replace("\"cache_control\"", "\"cache\\u005fcontrol\"");
        }
        let parsed = ParsedRequest::parse(Endpoint::Responses, text.as_bytes()).unwrap();
        let expected = SessionHash::from_tree(&parsed);
        if let Ok(hash) = hash_in_place(&parsed) {
            prop_assert_eq!(hash, expected.clone());
        }
        prop_assert_eq!(SessionHash::from_request(&parsed, None), expected);
    }
}

#[test]
fn usual_bodies_are_read_without_trees() {
    let body = json!({
        "model": "m",
        "system": [{"type": "text", "text": "Be \"brief\".\n", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "plain \u{e9}"},
            {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "tool_use", "id": "t", "name": "n", "input": {"x": [1, 2]}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "r"}]},
                                         {"type": "image", "source": {"type": "base64", "data": "AAAA"}}]},
        ],
    });
    let parsed = ParsedRequest::parse(Endpoint::Messages, body.to_string().as_bytes()).unwrap();
    let hash = hash_in_place(&parsed).expect("a usual body is read in place");
    assert_eq!(hash, Some(SessionHash::of_text("Be \"brief\".\n")));
    // Past the system: every message is read.
    let unmarked = body.to_string().replace("cache_control", "cache_note");
    let parsed = ParsedRequest::parse(Endpoint::Messages, unmarked.as_bytes()).unwrap();
    let hash = hash_in_place(&parsed).expect("a usual body is read in place");
    assert_eq!(hash, Some(SessionHash::of_text("Be \"brief\".\n")));
    let plain = ParsedRequest::parse(
        Endpoint::Messages,
        br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .unwrap();
    assert!(hash_in_place(&plain).is_ok());
    assert_eq!(
        SessionHash::from_request(&plain, None),
        Some(SessionHash::of_text("hi"))
    );
}
