//! Fuzz target: the request parser and the session hash. Whatever bytes a
//! client sends, parsing never panics and a refusal is always a 400
//! `invalid_request_error`; a parsed request always gets a well-shaped
//! session hash or none. See `support/fuzz.rs` for the driver and its
//! environment variables.

mod support;

use proptest::prelude::*;
use serde_json::{json, Value};
use support::fuzz::fuzz;
use tower_llm_relay::session_hash::SessionHash;
use tower_llm_relay::{Endpoint, ParsedRequest, RelayError};

const ENDPOINTS: [Endpoint; 4] = [
    Endpoint::Messages,
    Endpoint::CountTokens,
    Endpoint::ChatCompletions,
    Endpoint::Responses,
];

/// The keys the parser and the session hash look at, so generated
/// objects hit their paths often.
const KEYS: &[&str] = &[
    "model",
    "stream",
    "messages",
    "metadata",
    "user_id",
    "system",
    "tools",
    "thinking",
    "input",
    "instructions",
    "previous_response_id",
    "content",
    "role",
    "type",
    "text",
    "cache_control",
    "ephemeral",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("ephemeral".to_owned()),
        Just("claude-sonnet-4-5".to_owned()),
        "session_[0-9a-f-]{30,40}",
        "user_[a-z0-9]{0,8}_session_[0-9a-f-]{0,40}",
        any::<String>(),
        "\\PC{0,40}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        let key = prop_oneof![
            4 => proptest::sample::select(KEYS).prop_map(str::to_owned),
            1 => any::<String>(),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A request object: the usual fields, each present or not, with values
/// of the right shape or any other.
fn request_like() -> impl Strategy<Value = Vec<u8>> {
    let field = |name: &'static str, good: BoxedStrategy<Value>| {
        prop_oneof![
            2 => Just(None),
            4 => good.prop_map(move |v| Some((name, v))),
            1 => json_value().prop_map(move |v| Some((name, v))),
        ]
    };
    let message = (text(), json_value()).prop_map(|(t, extra)| {
        json!({"role": "user", "content": [{"type": "text", "text": t, "cache_control": {"type": "ephemeral"}}], "x": extra})
    });
    (
        field("model", text().prop_map(Value::String).boxed()),
        field("stream", any::<bool>().prop_map(Value::Bool).boxed()),
        field(
            "messages",
            prop::collection::vec(message, 0..4)
                .prop_map(Value::Array)
                .boxed(),
        ),
        field(
            "metadata",
            text().prop_map(|t| json!({ "user_id": t })).boxed(),
        ),
        field("system", json_value().boxed()),
        field("input", json_value().boxed()),
        field("instructions", json_value().boxed()),
        field(
            "previous_response_id",
            text().prop_map(Value::String).boxed(),
        ),
    )
        .prop_map(|fields| {
            let (a, b, c, d, e, f, g, h) = fields;
            let object: serde_json::Map<String, Value> = [a, b, c, d, e, f, g, h]
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            serde_json::to_vec(&Value::Object(object)).expect("JSON serialises")
        })
}

/// A valid request with a few bytes changed, inserted or cut.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let valid = br#"{"model":"claude-sonnet-4-5","stream":true,"metadata":{"user_id":"user_ab_account__session_123e4567-e89b-12d3-a456-426614174000"},"system":[{"type":"text","text":"You are","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"Hello"}]}"#;
    prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..8).prop_map(
        move |edits| {
            let mut body = valid.to_vec();
            for (at, byte, how) in edits {
                let i = at.index(body.len() + 1);
                match how {
                    0 if i < body.len() => body[i] = byte,
                    1 => body.insert(i, byte),
                    _ if i < body.len() => {
                        body.remove(i);
                    }
                    _ => {}
                }
            }
            body
        },
    )
}

/// JSON nested thousands deep, in the fields the parser keeps raw and the
/// session hash parses later.
fn deep() -> impl Strategy<Value = Vec<u8>> {
    (0..20_000usize, 0..4usize, any::<bool>()).prop_map(|(depth, place, arrays)| {
        let (open, close) = if arrays { ("[", "]") } else { ("{\"a\":", "}") };
        let nest = format!("{}1{}", open.repeat(depth), close.repeat(depth));
        let body = match place {
            0 => format!(r#"{{"model":"m","messages":[{{"role":"user","content":{nest}}}]}}"#),
            1 => format!(r#"{{"model":"m","messages":[],"system":{nest}}}"#),
            2 => format!(r#"{{"model":"m","messages":[],"metadata":{{"user_id":{nest}}}}}"#),
            _ => format!(r#"{{"model":"m","messages":[],"unknown":{nest}}}"#),
        };
        body.into_bytes()
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..512),
        4 => request_like(),
        3 => mutated(),
        1 => deep(),
    ]
}

fn check(body: &[u8], header: &Option<String>) -> Result<(), TestCaseError> {
    for endpoint in ENDPOINTS {
        match ParsedRequest::parse(endpoint, body) {
            Ok(parsed) => {
                prop_assert!(!parsed.model().trim().is_empty());
                if let Some(hash) = SessionHash::from_request(&parsed, header.as_deref()) {
                    let s = hash.as_str();
                    let hex = s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
                    let uuid = s.len() == 36
                        && s.bytes()
                            .all(|b| matches!(b, b'a'..=b'f' | b'0'..=b'9' | b'-'));
                    prop_assert!(hex || uuid, "odd session hash {s:?}");
                }
            }
            Err(RelayError::InvalidRequest(message)) => {
                prop_assert!(!message.is_empty());
                let error = RelayError::InvalidRequest(message);
                prop_assert_eq!(error.status(), http::StatusCode::BAD_REQUEST);
            }
            Err(other) => prop_assert!(false, "wrong kind of error: {other:?}"),
        }
    }
    Ok(())
}

#[test]
fn fuzz_request_parser_and_session_hash() {
    let header = prop::option::of(text());
    // Test threads have 2 MiB stacks, as Tokio's workers do: deep JSON
    // must be refused by the parser's own limits within that.
    fuzz("request_parser", (body(), header), |(body, header)| {
        check(&body, &header)
    });
}

#[test]
fn json_nested_ten_thousand_deep_is_a_400_not_a_stack_overflow() {
    for arrays in [true, false] {
        let (open, close) = if arrays { ("[", "]") } else { ("{\"a\":", "}") };
        let nest = format!("{}1{}", open.repeat(10_000), close.repeat(10_000));
        for body in [
            format!(r#"{{"model":"m","messages":[{{"role":"user","content":{nest}}}]}}"#),
            format!(r#"{{"model":"m","messages":[],"system":{nest}}}"#),
            format!(r#"{{"model":"m","messages":[],"unknown":{nest}}}"#),
        ] {
            check(body.as_bytes(), &None).expect("no panic");
            for endpoint in ENDPOINTS {
                assert!(
                    matches!(
                        ParsedRequest::parse(endpoint, body.as_bytes()),
                        Err(RelayError::InvalidRequest(_))
                    ),
                    "{endpoint:?} took JSON nested 10,000 deep"
                );
            }
        }
    }
}
