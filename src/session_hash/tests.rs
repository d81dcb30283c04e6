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
