//! Anthropic Messages API shapes: answers, stream events and errors.

use bytes::Bytes;
use serde_json::{json, Value};

use super::answer::{sse_event, Answer};

/// The error type Anthropic uses for a status.
fn error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        402..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

fn error_json(status: u16, message: &str) -> Value {
    json!({
        "type": "error",
        "error": {"type": error_type(status), "message": message},
    })
}

/// An error body in Anthropic's format.
pub(super) fn error_body(status: u16, message: &str) -> Bytes {
    Bytes::from(error_json(status, message).to_string())
}

/// The `event: error` that opens a stream when the upstream is overloaded.
pub(super) fn overloaded_event() -> Bytes {
    sse_event(Some("error"), &error_json(529, "Overloaded"))
}

fn message_id(answer: &Answer) -> String {
    format!("msg_mock_{}", answer.number)
}

/// A non-stream `/v1/messages` answer.
pub(super) fn message(answer: &Answer) -> Bytes {
    let body = json!({
        "id": message_id(answer),
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": [{"type": "text", "text": answer.text()}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {
            "input_tokens": answer.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": answer.output_tokens(),
        },
    });
    Bytes::from(body.to_string())
}

/// A `/v1/messages/count_tokens` answer.
pub(super) fn count_tokens(answer: &Answer) -> Bytes {
    Bytes::from(json!({"input_tokens": answer.input_tokens}).to_string())
}

/// The events of a streamed `/v1/messages` answer, one per body frame.
pub(super) fn stream_events(answer: &Answer) -> Vec<Bytes> {
    let start = json!({
        "type": "message_start",
        "message": {
            "id": message_id(answer),
            "type": "message",
            "role": "assistant",
            "model": answer.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {
                "input_tokens": answer.input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 1,
            },
        },
    });
    let mut events = vec![
        sse_event(Some("message_start"), &start),
        sse_event(
            Some("content_block_start"),
            &json!({
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }),
        ),
        sse_event(Some("ping"), &json!({"type": "ping"})),
    ];
    events.extend(answer.pieces.iter().map(|piece| {
        sse_event(
            Some("content_block_delta"),
            &json!({
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            }),
        )
    }));
    events.push(sse_event(
        Some("content_block_stop"),
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(sse_event(
        Some("message_delta"),
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": answer.output_tokens()},
        }),
    ));
    events.push(sse_event(
        Some("message_stop"),
        &json!({"type": "message_stop"}),
    ));
    events
}
