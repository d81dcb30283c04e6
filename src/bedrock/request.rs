//! The Bedrock request: its path and its body.

use bytes::Bytes;
use http::HeaderValue;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{Map, Value};

use crate::body::BoxError;

/// The `anthropic_version` Bedrock's Anthropic models require in the body.
pub const ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// Bedrock model ids of current Claude models, by Anthropic model name:
/// a starting point for an account's `model_mapping`.
///
/// The relay does not apply this table by itself: Bedrock ids depend on
/// the region and on whether the account uses cross-region inference
/// profiles (`us.anthropic.…`, `eu.anthropic.…`), so an account serves only
/// the models its mapping names.
///
/// # Examples
///
/// ```
/// use secrecy::SecretString;
/// use tower_llm_relay::bedrock::DEFAULT_MODEL_IDS;
/// use tower_llm_relay::{Account, Credentials, Platform};
///
/// let credentials = Credentials::Bedrock {
///     region: "us-east-1".into(),
///     access_key_id: SecretString::from("AKID"),
///     secret_access_key: SecretString::from("secret"),
///     session_token: None,
/// };
/// let account = DEFAULT_MODEL_IDS
///     .iter()
///     .fold(Account::builder("bedrock-1", Platform::Anthropic, credentials), |b, (name, id)| {
///         b.map_model(*name, *id)
///     })
///     .build();
/// assert!(account.serves_model("claude-sonnet-4-5"));
/// assert_eq!(account.upstream_model("claude-sonnet-4-5"), "anthropic.claude-sonnet-4-5-20250929-v1:0");
/// ```
pub const DEFAULT_MODEL_IDS: &[(&str, &str)] = &[
    ("claude-opus-4-1", "anthropic.claude-opus-4-1-20250805-v1:0"),
    (
        "claude-opus-4-1-20250805",
        "anthropic.claude-opus-4-1-20250805-v1:0",
    ),
    ("claude-opus-4-0", "anthropic.claude-opus-4-20250514-v1:0"),
    (
        "claude-opus-4-20250514",
        "anthropic.claude-opus-4-20250514-v1:0",
    ),
    (
        "claude-sonnet-4-5",
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
    ),
    (
        "claude-sonnet-4-5-20250929",
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
    ),
    (
        "claude-sonnet-4-0",
        "anthropic.claude-sonnet-4-20250514-v1:0",
    ),
    (
        "claude-sonnet-4-20250514",
        "anthropic.claude-sonnet-4-20250514-v1:0",
    ),
    (
        "claude-3-7-sonnet-20250219",
        "anthropic.claude-3-7-sonnet-20250219-v1:0",
    ),
    (
        "claude-haiku-4-5",
        "anthropic.claude-haiku-4-5-20251001-v1:0",
    ),
    (
        "claude-haiku-4-5-20251001",
        "anthropic.claude-haiku-4-5-20251001-v1:0",
    ),
    (
        "claude-3-5-haiku-20241022",
        "anthropic.claude-3-5-haiku-20241022-v1:0",
    ),
];

/// What is percent-encoded in a model id: everything but RFC 3986's
/// unreserved characters.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The path of an invocation of `model_id`, the id percent-encoded as one
/// path segment.
///
/// # Examples
///
/// ```
/// use tower_llm_relay::bedrock::invoke_path;
///
/// assert_eq!(
///     invoke_path("anthropic.claude-sonnet-4-5-20250929-v1:0", false),
///     "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke",
/// );
/// assert_eq!(
///     invoke_path("arn:aws:bedrock:us-east-1:1:inference-profile/x", true),
///     "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fx/invoke-with-response-stream",
/// );
/// ```
pub fn invoke_path(model_id: &str, stream: bool) -> String {
    let action = if stream {
        "invoke-with-response-stream"
    } else {
        "invoke"
    };
    format!(
        "/model/{}/{action}",
        utf8_percent_encode(model_id, PATH_SEGMENT)
    )
}

/// The Bedrock body for an Anthropic Messages body: without `model` and
/// `stream`, with `anthropic_version`, and the `anthropic-beta` header's
/// flags (comma-separated) as an `anthropic_beta` list.
///
/// # Examples
///
/// ```
/// use http::HeaderValue;
/// use serde_json::json;
/// use tower_llm_relay::bedrock::invoke_body;
///
/// let client = br#"{"model":"claude-sonnet-4-5","stream":true,"max_tokens":8,"messages":[]}"#;
/// let beta = HeaderValue::from_static("context-1m-2025-08-07, interleaved-thinking-2025-05-14");
/// let body = invoke_body(client, Some(&beta)).unwrap();
/// let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
/// assert_eq!(body, json!({
///     "anthropic_version": "bedrock-2023-05-31",
///     "anthropic_beta": ["context-1m-2025-08-07", "interleaved-thinking-2025-05-14"],
///     "max_tokens": 8,
///     "messages": [],
/// }));
/// assert!(invoke_body(b"[1]", None).is_err());
/// ```
pub fn invoke_body(body: &[u8], beta: Option<&HeaderValue>) -> Result<Bytes, BoxError> {
    let mut object: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|_| "the Messages request body is not a JSON object")?;
    object.remove("model");
    object.remove("stream");
    object.insert(
        "anthropic_version".to_owned(),
        Value::String(ANTHROPIC_VERSION.to_owned()),
    );
    let flags: Vec<Value> = beta
        .and_then(|v| v.to_str().ok())
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|flag| !flag.is_empty())
        .map(|flag| Value::String(flag.to_owned()))
        .collect();
    if !flags.is_empty() {
        object.insert("anthropic_beta".to_owned(), Value::Array(flags));
    }
    Ok(Bytes::from(serde_json::to_vec(&object)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unreserved_characters_stay_in_the_model_id() {
        assert_eq!(
            invoke_path("us.anthropic.claude-x_1~2 3", false),
            "/model/us.anthropic.claude-x_1~2%203/invoke"
        );
    }

    #[test]
    fn a_body_without_beta_flags_gets_no_beta_list() {
        let body = invoke_body(br#"{"model":"m","messages":[]}"#, None).unwrap();
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert!(value.get("anthropic_beta").is_none());
        assert!(value.get("model").is_none());
        let empty = HeaderValue::from_static(" , ");
        let body = invoke_body(br#"{"messages":[]}"#, Some(&empty)).unwrap();
        assert!(!String::from_utf8_lossy(&body).contains("anthropic_beta"));
    }
}
