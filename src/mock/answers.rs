//! What the mock says: Anthropic- and OpenAI-shaped answers and errors.

use bytes::Bytes;
use serde_json::{json, Value};

/// The words the mock answers with, cycled.
const WORDS: [&str; 8] = [
    "Hello",
    " from",
    " the",
    " mock",
    " upstream",
    ",",
    " friend",
    ".",
];

/// The API family of a path, for answers and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    Anthropic,
    OpenAi,
}

impl Family {
    pub(super) fn of(path: &str) -> Self {
        if path.starts_with("/v1/chat/") || path.starts_with("/v1/responses") {
            Self::OpenAi
        } else {
            Self::Anthropic
        }
    }
}

/// What one answer is made of.
pub(super) struct Answer<'a> {
    pub(super) id: u64,
    pub(super) model: &'a str,
    pub(super) input_tokens: u64,
    pub(super) deltas: usize,
}

impl Answer<'_> {
    pub(super) fn pieces(&self) -> impl Iterator<Item = &'static str> {
        WORDS.iter().copied().cycle().take(self.deltas.max(1))
    }

    fn text(&self) -> String {
        self.pieces().collect()
    }

    fn output_tokens(&self) -> u64 {
        self.deltas.max(1) as u64
    }

    fn usage_anthropic(&self, output_tokens: u64) -> Value {
        json!({
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
        })
    }

    pub(super) fn anthropic_json(&self) -> Bytes {
        let message = json!({
            "id": format!("msg_mock_{}", self.id),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [{"type": "text", "text": self.text()}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": self.usage_anthropic(self.output_tokens()),
        });
        Bytes::from(message.to_string())
    }

    pub(super) fn anthropic_events(&self) -> Vec<Bytes> {
        let mut events = vec![sse(
            Some("message_start"),
            &json!({
                "type": "message_start",
                "message": {
                    "id": format!("msg_mock_{}", self.id),
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": self.usage_anthropic(1),
                },
            }),
        )];
        events.push(sse(
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ));
        events.push(sse(Some("ping"), &json!({"type": "ping"})));
        for piece in self.pieces() {
            events.push(sse(
                Some("content_block_delta"),
                &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
            ));
        }
        events.push(sse(
            Some("content_block_stop"),
            &json!({"type": "content_block_stop", "index": 0}),
        ));
        events.push(sse(
            Some("message_delta"),
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": self.output_tokens()},
            }),
        ));
        events.push(sse(Some("message_stop"), &json!({"type": "message_stop"})));
        events
    }

    pub(super) fn count_tokens_json(&self) -> Bytes {
        Bytes::from(json!({"input_tokens": self.input_tokens}).to_string())
    }

    fn chat_usage(&self) -> Value {
        json!({
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens(),
            "total_tokens": self.input_tokens + self.output_tokens(),
            "prompt_tokens_details": {"cached_tokens": 0},
        })
    }

    pub(super) fn chat_json(&self) -> Bytes {
        let completion = json!({
            "id": format!("chatcmpl-mock-{}", self.id),
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": self.text()},
                "finish_reason": "stop",
            }],
            "usage": self.chat_usage(),
        });
        Bytes::from(completion.to_string())
    }

    pub(super) fn chat_chunks(&self, include_usage: bool) -> Vec<Bytes> {
        let chunk = |choices: Value| {
            json!({
                "id": format!("chatcmpl-mock-{}", self.id),
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": self.model,
                "choices": choices,
            })
        };
        let mut events = vec![sse(
            None,
            &chunk(
                json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
            ),
        )];
        for piece in self.pieces() {
            events.push(sse(
                None,
                &chunk(json!([{"index": 0, "delta": {"content": piece}, "finish_reason": null}])),
            ));
        }
        events.push(sse(
            None,
            &chunk(json!([{"index": 0, "delta": {}, "finish_reason": "stop"}])),
        ));
        if include_usage {
            let mut last = chunk(json!([]));
            last["usage"] = self.chat_usage();
            events.push(sse(None, &last));
        }
        events.push(Bytes::from_static(b"data: [DONE]\n\n"));
        events
    }

    fn response_object(&self, status: &str, previous: Option<&str>) -> Value {
        let done = status == "completed";
        json!({
            "id": format!("resp_mock_{}", self.id),
            "object": "response",
            "created_at": 1_700_000_000,
            "status": status,
            "model": self.model,
            "previous_response_id": previous,
            "output": if done {
                json!([{
                    "id": format!("msg_mock_{}", self.id),
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": self.text(), "annotations": []}],
                }])
            } else {
                json!([])
            },
            "usage": if done {
                json!({
                    "input_tokens": self.input_tokens,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens": self.output_tokens(),
                    "total_tokens": self.input_tokens + self.output_tokens(),
                })
            } else {
                Value::Null
            },
        })
    }

    pub(super) fn responses_json(&self, previous: Option<&str>) -> Bytes {
        Bytes::from(self.response_object("completed", previous).to_string())
    }

    pub(super) fn responses_events(&self, previous: Option<&str>) -> Vec<Bytes> {
        let mut events = vec![sse(
            Some("response.created"),
            &json!({"type": "response.created", "response": self.response_object("in_progress", previous)}),
        )];
        for piece in self.pieces() {
            events.push(sse(
                Some("response.output_text.delta"),
                &json!({
                    "type": "response.output_text.delta",
                    "item_id": format!("msg_mock_{}", self.id),
                    "output_index": 0,
                    "content_index": 0,
                    "delta": piece,
                }),
            ));
        }
        events.push(sse(
            Some("response.completed"),
            &json!({"type": "response.completed", "response": self.response_object("completed", previous)}),
        ));
        events
    }
}

/// One SSE event.
pub(super) fn sse(event: Option<&str>, data: &Value) -> Bytes {
    Bytes::from(match event {
        Some(event) => format!("event: {event}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    })
}

/// An error body in the family's format.
pub(super) fn error_body(family: Family, status: u16, message: &str) -> Bytes {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    let body = match family {
        Family::Anthropic => json!({"type": "error", "error": {"type": kind, "message": message}}),
        Family::OpenAi => {
            json!({"error": {"message": message, "type": kind, "param": null, "code": kind}})
        }
    };
    Bytes::from(body.to_string())
}

/// The `event: error` an overloaded Anthropic stream opens with.
pub(super) fn overloaded_event() -> Bytes {
    sse(
        Some("error"),
        &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    )
}
