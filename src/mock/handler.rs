//! Turns one request into one answer (or into a fault).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::answer::{status_message, Answer};
use super::bedrock::Invocation;
use super::body::{Ending, MockBody};
use super::fault::Fault;
use super::state::{InFlight, Shared, StreamTally};
use super::{anthropic, oauth, openai, ReceivedRequest, TOKEN_FAULTS, TOKEN_PATH};

/// The largest request body the mock reads; more gets a 413.
const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;

/// Why the mock gave no answer; hyper closes the connection (HTTP/1) or
/// resets the stream (HTTP/2) when a service returns an error.
#[derive(Debug)]
pub(super) enum NoAnswer {
    /// The request body could not be read.
    BrokenRequest,
    /// A [`Fault::ConnectionReset`].
    Reset,
    /// A [`Fault::Hang`] that ended because the mock was dropped.
    ShutDown,
}

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::BrokenRequest => "the request body could not be read",
            Self::Reset => "connection reset by the mock upstream",
            Self::ShutDown => "the mock upstream was dropped",
        })
    }
}

impl std::error::Error for NoAnswer {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Messages,
    CountTokens,
    ChatCompletions,
    Responses,
    Models,
    OAuthToken,
    Unknown,
}

impl Endpoint {
    fn of(method: &Method, path: &str) -> Self {
        match (method, path) {
            (&Method::POST, "/v1/messages") => Self::Messages,
            (&Method::POST, "/v1/messages/count_tokens") => Self::CountTokens,
            (&Method::POST, "/v1/chat/completions") => Self::ChatCompletions,
            (&Method::POST, "/v1/responses") => Self::Responses,
            (&Method::GET, "/v1/models") => Self::Models,
            (&Method::POST, TOKEN_PATH) => Self::OAuthToken,
            _ => Self::Unknown,
        }
    }
}

/// Whose error format a path gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Anthropic,
    OpenAi,
}

impl Dialect {
    fn of(path: &str) -> Self {
        if path.starts_with("/v1/chat/completions") || path.starts_with("/v1/responses") {
            Self::OpenAi
        } else {
            Self::Anthropic
        }
    }

    fn error_body(self, status: u16, message: &str) -> Bytes {
        match self {
            Self::Anthropic => anthropic::error_body(status, message),
            Self::OpenAi => openai::error_body(status, message),
        }
    }
}

/// The credential a request carries: `x-api-key`, else a Bearer token.
fn credential_of(headers: &HeaderMap) -> Option<String> {
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(key.to_owned());
    }
    let authorization = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = authorization.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// Serves one request. `reset_connection` is the connection's flag for
/// closing with a TCP reset.
pub(super) async fn handle(
    shared: Arc<Shared>,
    reset_connection: Arc<AtomicBool>,
    request: Request<Incoming>,
) -> Result<Response<MockBody>, NoAnswer> {
    let (parts, body) = request.into_parts();
    let (body, too_large) = match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
        Ok(collected) => (collected.to_bytes(), false),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => (Bytes::new(), true),
        Err(_) => return Err(NoAnswer::BrokenRequest),
    };
    let path = parts.uri.path().to_owned();
    // Bedrock requests go by the access key id they were signed with.
    let bedrock = Invocation::of(&parts.method, &path, &parts.headers, &body);
    let credential = match &bedrock {
        Some(invocation) => invocation.access_key_id().map(str::to_owned),
        None => credential_of(&parts.headers),
    };
    let recorder = shared.pacing.record.then(|| {
        shared.record(ReceivedRequest {
            method: parts.method.clone(),
            path_and_query: parts
                .uri
                .path_and_query()
                .map_or_else(|| path.clone(), |pq| pq.as_str().to_owned()),
            headers: parts.headers,
            body: body.clone(),
            credential: credential.clone(),
            response_body: Bytes::new(),
            status: 0,
        })
    });
    let in_flight = InFlight::start(&shared, credential.as_deref());
    let endpoint = Endpoint::of(&parts.method, &path);
    let fault = if endpoint == Endpoint::OAuthToken {
        shared.next_named_fault(TOKEN_FAULTS)
    } else {
        shared.next_fault(credential.as_deref())
    };
    match fault {
        Some(Fault::ConnectionReset) => {
            // HTTP/1: the connection goes down with a TCP reset. HTTP/2:
            // hyper resets just this stream.
            if parts.version != Version::HTTP_2 {
                reset_connection.store(true, Ordering::SeqCst);
            }
            return Err(NoAnswer::Reset);
        }
        Some(Fault::Hang) => {
            shared.shut_down().await;
            return Err(NoAnswer::ShutDown);
        }
        _ => {}
    }
    let delay = shared.pacing.first_byte_delay;
    if !delay.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shared.shut_down() => return Err(NoAnswer::ShutDown),
        }
    }
    let exchange = Exchange {
        shared: &shared,
        endpoint,
        dialect: Dialect::of(&path),
        body: &body,
        fault,
    };
    let response = match &bedrock {
        _ if too_large => exchange.error(413, "Request body too large"),
        Some(invocation) => invocation.respond(&shared, &body, exchange.fault.as_ref()),
        None => exchange.respond(),
    };
    let response = match recorder {
        Some(recorder) => {
            recorder.status(response.status().as_u16());
            response.map(|body| body.recorded_by(recorder))
        }
        None => response,
    };
    Ok(response.map(|body| body.in_flight(in_flight)))
}

/// One request being answered.
struct Exchange<'a> {
    shared: &'a Arc<Shared>,
    endpoint: Endpoint,
    dialect: Dialect,
    body: &'a Bytes,
    fault: Option<Fault>,
}

fn json_response(status: StatusCode, body: Bytes) -> Response<MockBody> {
    let mut response = Response::new(MockBody::whole(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

impl Exchange<'_> {
    fn error(&self, status: u16, message: &str) -> Response<MockBody> {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(code, self.dialect.error_body(code.as_u16(), message))
    }

    fn respond(&self) -> Response<MockBody> {
        match &self.fault {
            Some(Fault::Status {
                status,
                retry_after,
            }) => {
                let mut response = if self.endpoint == Endpoint::OAuthToken {
                    let (code, body) = oauth::error(*status, status_message(*status));
                    json_response(code, body)
                } else {
                    self.error(*status, status_message(*status))
                };
                if let Some(seconds) = retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(*seconds));
                }
                return response;
            }
            Some(Fault::BadRequest { message }) => {
                if self.endpoint == Endpoint::OAuthToken {
                    let (code, body) = oauth::error(400, message);
                    return json_response(code, body);
                }
                return self.error(400, message);
            }
            _ => {}
        }
        match self.endpoint {
            Endpoint::Unknown => self.error(404, "No such endpoint on the mock upstream"),
            Endpoint::Models => json_response(StatusCode::OK, models()),
            Endpoint::OAuthToken => {
                let (code, body) = oauth::refresh(self.shared, self.body);
                json_response(code, body)
            }
            Endpoint::Messages
            | Endpoint::CountTokens
            | Endpoint::ChatCompletions
            | Endpoint::Responses => match self.parse() {
                Ok(request) => self.answer(&request),
                Err(message) => self.error(400, &message),
            },
        }
    }

    /// The request as JSON, with the fields its endpoint needs.
    fn parse(&self) -> Result<Value, String> {
        let request: Value = serde_json::from_slice(self.body)
            .map_err(|error| format!("Request body is not valid JSON: {error}"))?;
        if !request.is_object() {
            return Err("Request body must be a JSON object".to_owned());
        }
        if !request.get("model").is_some_and(Value::is_string) {
            return Err("model: Field required (a string)".to_owned());
        }
        if self.endpoint == Endpoint::Responses {
            let input_ok = request
                .get("input")
                .is_some_and(|input| input.is_string() || input.is_array());
            if !input_ok {
                return Err("input: Field required (a string or an array)".to_owned());
            }
        } else if !request.get("messages").is_some_and(Value::is_array) {
            return Err("messages: Field required (an array)".to_owned());
        }
        Ok(request)
    }

    fn answer(&self, request: &Value) -> Response<MockBody> {
        let model = request.get("model").and_then(Value::as_str).unwrap_or("");
        let answer = Answer::new(
            self.shared.next_answer_number(),
            model,
            self.body.len(),
            self.shared.pacing.stream_deltas,
        );
        let previous = request.get("previous_response_id").and_then(Value::as_str);
        let stream = request.get("stream") == Some(&Value::Bool(true))
            && self.endpoint != Endpoint::CountTokens;
        if !stream {
            let body = match self.endpoint {
                Endpoint::Messages => anthropic::message(&answer),
                Endpoint::CountTokens => anthropic::count_tokens(&answer),
                Endpoint::ChatCompletions => openai::chat_completion(&answer),
                _ => openai::response(&answer, previous),
            };
            return match self.fault {
                Some(Fault::SseErrorFirst) => self.error(529, "Overloaded"),
                Some(Fault::MidStreamCut { .. }) => half_then_cut(body),
                _ => json_response(StatusCode::OK, body),
            };
        }
        let include_usage = request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        let (mut events, error_first) = match self.endpoint {
            Endpoint::Messages => (
                anthropic::stream_events(&answer),
                anthropic::overloaded_event(),
            ),
            Endpoint::ChatCompletions => (
                openai::chat_chunks(&answer, include_usage),
                openai::chat_overloaded_event(),
            ),
            _ => (
                openai::response_events(&answer, previous),
                openai::responses_overloaded_event(),
            ),
        };
        let mut interval = self.shared.pacing.event_interval;
        let mut ending = Ending::Clean;
        match self.fault {
            Some(Fault::SseErrorFirst) => events = vec![error_first],
            Some(Fault::MidStreamCut { after_events }) => {
                events.truncate(after_events);
                ending = Ending::Cut;
            }
            Some(Fault::SlowStream { interval: slow }) => interval = slow,
            _ => {}
        }
        let stamp = self.shared.pacing.stamp_events;
        event_stream(events, interval, ending).map(|body| {
            body.counted_as_stream(StreamTally::open(self.shared))
                .stamped(stamp)
        })
    }
}

/// A JSON answer that announces its full length but breaks half way.
fn half_then_cut(body: Bytes) -> Response<MockBody> {
    let full_length = body.len();
    let half = body.slice(..full_length / 2);
    let mut response = Response::new(MockBody::paced(vec![half], Duration::ZERO, Ending::Cut));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(full_length));
    response
}

fn event_stream(events: Vec<Bytes>, interval: Duration, ending: Ending) -> Response<MockBody> {
    let mut response = Response::new(MockBody::paced(events, interval, ending));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /v1/models`: a small list that reads as either API's listing.
fn models() -> Bytes {
    let ids = ["claude-mock-1", "gpt-mock-1"];
    let data: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({
                "id": id,
                "type": "model",
                "object": "model",
                "display_name": id,
                "created_at": "2025-01-01T00:00:00Z",
                "created": 1_735_689_600,
                "owned_by": "mock",
            })
        })
        .collect();
    let list = json!({
        "object": "list",
        "data": data,
        "has_more": false,
        "first_id": ids[0],
        "last_id": ids[ids.len() - 1],
    });
    Bytes::from(list.to_string())
}
