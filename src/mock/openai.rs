//! OpenAI shapes: Chat Completions and Responses answers, stream events
//! and errors.

use bytes::Bytes;
use serde_json::{json, Value};

use super::answer::{sse_event, Answer};

/// OpenAI's error `type` and `code` for a status.
fn error_kind(status: u16) -> (&'static str, Option<&'static str>) {
    match status {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        403 => ("invalid_request_error", Some("permission_denied")),
        404 => ("invalid_request_error", Some("unknown_url")),
        429 => ("requests", Some("rate_limit_exceeded")),
        400..=499 => ("invalid_request_error", None),
        _ => ("server_error", None),
    }
}

fn error_json(status: u16, message: &str) -> Value {
    let (kind, code) = error_kind(status);
    json!({
        "error": {"message": message, "type": kind, "param": null, "code": code},
    })
}

/// An error body in OpenAI's format.
pub(super) fn error_body(status: u16, message: &str) -> Bytes {
    Bytes::from(error_json(status, message).to_string())
}

/// The `event: error` that opens a Chat Completions stream when the
/// upstream is overloaded.
pub(super) fn chat_overloaded_event() -> Bytes {
    sse_event(Some("error"), &error_json(529, "Overloaded"))
}

/// The `event: error` that opens a Responses stream when the upstream is
/// overloaded (the Responses API's own error event).
pub(super) fn responses_overloaded_event() -> Bytes {
    sse_event(
        Some("error"),
        &json!({
            "type": "error",
            "code": "server_error",
            "message": "Overloaded",
            "param": null,
            "sequence_number": 0,
        }),
    )
}

fn chat_id(answer: &Answer) -> String {
    format!("chatcmpl-mock-{}", answer.number)
}

fn chat_usage(answer: &Answer) -> Value {
    let output = answer.output_tokens();
    json!({
        "prompt_tokens": answer.input_tokens,
        "completion_tokens": output,
        "total_tokens": answer.input_tokens + output,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    })
}

/// A non-stream `/v1/chat/completions` answer.
pub(super) fn chat_completion(answer: &Answer) -> Bytes {
    let body = json!({
        "id": chat_id(answer),
        "object": "chat.completion",
        "created": answer.created,
        "model": answer.model,
        "system_fingerprint": "fp_mock",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer.text(), "refusal": null},
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": chat_usage(answer),
    });
    Bytes::from(body.to_string())
}

/// The chunks of a streamed `/v1/chat/completions` answer, ending with
/// `data: [DONE]`; with `include_usage`, a last chunk without choices
/// carries the usage (and the others `"usage": null`), as OpenAI does.
pub(super) fn chat_chunks(answer: &Answer, include_usage: bool) -> Vec<Bytes> {
    let chunk = |delta: Value, finish_reason: Value| {
        let mut chunk = json!({
            "id": chat_id(answer),
            "object": "chat.completion.chunk",
            "created": answer.created,
            "model": answer.model,
            "system_fingerprint": "fp_mock",
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
        });
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        sse_event(None, &chunk)
    };
    let mut chunks = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    chunks.extend(
        answer
            .pieces
            .iter()
            .map(|piece| chunk(json!({"content": piece}), Value::Null)),
    );
    chunks.push(chunk(json!({}), json!("stop")));
    if include_usage {
        let usage = json!({
            "id": chat_id(answer),
            "object": "chat.completion.chunk",
            "created": answer.created,
            "model": answer.model,
            "system_fingerprint": "fp_mock",
            "choices": [],
            "usage": chat_usage(answer),
        });
        chunks.push(sse_event(None, &usage));
    }
    chunks.push(Bytes::from_static(b"data: [DONE]\n\n"));
    chunks
}

fn response_object(answer: &Answer, previous_response_id: Option<&str>, done: bool) -> Value {
    let output_tokens = answer.output_tokens();
    let (status, output, usage) = if done {
        let item = json!({
            "type": "message",
            "id": format!("msg_mock_{}", answer.number),
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": answer.text(), "annotations": []}],
        });
        let usage = json!({
            "input_tokens": answer.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": answer.input_tokens + output_tokens,
        });
        ("completed", json!([item]), usage)
    } else {
        ("in_progress", json!([]), Value::Null)
    };
    json!({
        "id": format!("resp_mock_{}", answer.number),
        "object": "response",
        "created_at": answer.created,
        "status": status,
        "model": answer.model,
        "output": output,
        "previous_response_id": previous_response_id,
        "usage": usage,
    })
}

/// A non-stream `/v1/responses` answer.
pub(super) fn response(answer: &Answer, previous_response_id: Option<&str>) -> Bytes {
    Bytes::from(response_object(answer, previous_response_id, true).to_string())
}

/// The events of a streamed `/v1/responses` answer: `response.created`,
/// one `response.output_text.delta` per piece, `response.completed`.
pub(super) fn response_events(answer: &Answer, previous_response_id: Option<&str>) -> Vec<Bytes> {
    let mut sequence_number = 0_u64;
    let mut next = || {
        let current = sequence_number;
        sequence_number += 1;
        current
    };
    let mut events = vec![sse_event(
        Some("response.created"),
        &json!({
            "type": "response.created",
            "sequence_number": next(),
            "response": response_object(answer, previous_response_id, false),
        }),
    )];
    let item_id = format!("msg_mock_{}", answer.number);
    for piece in &answer.pieces {
        events.push(sse_event(
            Some("response.output_text.delta"),
            &json!({
                "type": "response.output_text.delta",
                "sequence_number": next(),
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "delta": piece,
            }),
        ));
    }
    events.push(sse_event(
        Some("response.completed"),
        &json!({
            "type": "response.completed",
            "sequence_number": next(),
            "response": response_object(answer, previous_response_id, true),
        }),
    ));
    events
}
