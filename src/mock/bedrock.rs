//! AWS Bedrock's runtime API for Anthropic models: `POST
//! /model/{id}/invoke` (JSON) and `/model/{id}/invoke-with-response-stream`
//! (AWS event-stream frames whose `chunk` events carry base64 Anthropic
//! events, the last with `amazon-bedrock-invocationMetrics`).
//!
//! Every request must be signed with SigV4 for service `bedrock` with
//! [`AWS_TEST_SECRET_ACCESS_KEY`](super::AWS_TEST_SECRET_ACCESS_KEY): the
//! mock recomputes the signature with `aws-sigv4` from the signed headers
//! and answers 403 (`InvalidSignatureException`, or
//! `IncompleteSignatureException` for a malformed `Authorization`) when it
//! differs. The body must be Bedrock's: `anthropic_version:
//! bedrock-2023-05-31`, no `model`, no `stream`, a `messages` array; else
//! 400 `ValidationException`.
//!
//! Faults ([`Fault`]) come out as Bedrock gives them: error statuses with
//! `x-amzn-ErrorType` and `{"message": …}` (429 `ThrottlingException`, 503
//! `ServiceUnavailableException`, 403 `AccessDeniedException`, …);
//! [`Fault::SseErrorFirst`] as a stream whose first frame is a
//! `throttlingException` exception frame (non-stream: a 429).

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use percent_encoding::percent_decode_str;
use secrecy::SecretString;
use serde_json::{json, Value};

use super::answer::Answer;
use super::body::{Ending, MockBody};
use super::fault::Fault;
use super::state::{Shared, StreamTally};
use super::{anthropic, AWS_TEST_SECRET_ACCESS_KEY};
use crate::bedrock::eventstream::encode;
use crate::bedrock::sign::{sign_request, AwsKeys, SERVICE};

/// How far a request's `x-amz-date` may be from the mock's clock (AWS
/// allows 15 minutes).
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// A request to one of Bedrock's invoke paths.
#[derive(Debug)]
pub(super) struct Invocation {
    model_id: String,
    stream: bool,
    /// The access key id, when the `Authorization` header has SigV4's shape.
    access_key_id: Option<String>,
    /// Why the signature is refused, if it is.
    signature_error: Option<(&'static str, String)>,
}

impl Invocation {
    /// The invocation `path` asks for, if it is a Bedrock invoke path.
    pub(super) fn of(
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Option<Self> {
        if method != Method::POST {
            return None;
        }
        let rest = path.strip_prefix("/model/")?;
        let (model, stream) = if let Some(model) = rest.strip_suffix("/invoke") {
            (model, false)
        } else {
            (rest.strip_suffix("/invoke-with-response-stream")?, true)
        };
        let model_id = percent_decode_str(model).decode_utf8().ok()?.into_owned();
        let parsed = Authorization::parse(headers);
        let access_key_id = parsed.as_ref().ok().map(|a| a.access_key_id.clone());
        let signature_error = match parsed {
            Ok(authorization) => verify(&authorization, path, headers, body).err(),
            Err(why) => Some(("IncompleteSignatureException", why.to_owned())),
        };
        Some(Self {
            model_id,
            stream,
            access_key_id,
            signature_error,
        })
    }

    /// The access key id the request was signed with: the credential its
    /// fault plan goes by.
    pub(super) fn access_key_id(&self) -> Option<&str> {
        self.access_key_id.as_deref()
    }

    /// The answer, or the fault's.
    pub(super) fn respond(
        &self,
        shared: &std::sync::Arc<Shared>,
        body: &Bytes,
        fault: Option<&Fault>,
    ) -> Response<MockBody> {
        if let Some((name, message)) = &self.signature_error {
            return error(403, name, message);
        }
        match fault {
            Some(Fault::Status {
                status,
                retry_after,
            }) => {
                let mut response = error(*status, exception_name(*status), message(*status));
                if let Some(seconds) = retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(*seconds));
                }
                return response;
            }
            Some(Fault::BadRequest { message }) => {
                return error(400, "ValidationException", message)
            }
            Some(Fault::SseErrorFirst) if !self.stream => {
                return error(429, "ThrottlingException", message(429))
            }
            _ => {}
        }
        if let Err(why) = validate(body) {
            return error(400, "ValidationException", &why);
        }
        let answer = Answer::new(
            shared.next_answer_number(),
            &self.model_id,
            body.len(),
            shared.pacing.stream_deltas,
        );
        if !self.stream {
            let mut response = Response::new(MockBody::whole(anthropic::message(&answer)));
            set_json(response.headers_mut());
            return response;
        }
        let mut frames: Vec<Bytes> = anthropic::stream_events(&answer)
            .iter()
            .filter_map(sse_data)
            .collect::<Vec<_>>();
        if let Some(last) = frames.len().checked_sub(1) {
            // Bedrock's own metrics ride on the last event.
            if let Ok(mut stop) = serde_json::from_slice::<Value>(&frames[last]) {
                stop["amazon-bedrock-invocationMetrics"] = json!({
                    "inputTokenCount": answer.input_tokens,
                    "outputTokenCount": answer.output_tokens(),
                    "invocationLatency": 1,
                    "firstByteLatency": 1,
                });
                frames[last] = Bytes::from(stop.to_string());
            }
        }
        let mut frames: Vec<Bytes> = frames.iter().map(|event| chunk(event)).collect();
        let mut interval = shared.pacing.event_interval;
        let mut ending = Ending::Clean;
        match fault {
            Some(Fault::SseErrorFirst) => {
                frames = vec![exception_frame("throttlingException", message(429))];
            }
            Some(Fault::MidStreamCut { after_events }) => {
                frames.truncate(*after_events);
                ending = Ending::Cut;
            }
            Some(Fault::SlowStream { interval: slow }) => interval = *slow,
            _ => {}
        }
        let mut response = Response::new(MockBody::paced(frames, interval, ending));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.amazon.eventstream"),
        );
        request_id(response.headers_mut());
        response.map(|body| body.counted_as_stream(StreamTally::open(shared)))
    }
}

/// The parts of a SigV4 `Authorization` header.
struct Authorization {
    access_key_id: String,
    date: String,
    region: String,
    signed_headers: Vec<String>,
}

impl Authorization {
    fn parse(headers: &HeaderMap) -> Result<Self, &'static str> {
        let value = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or("Authorization header is missing")?;
        let fields = value
            .strip_prefix("AWS4-HMAC-SHA256 ")
            .ok_or("Authorization must use AWS4-HMAC-SHA256")?;
        let field = |name: &str| {
            fields
                .split(',')
                .map(str::trim)
                .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
        };
        let credential = field("Credential").ok_or("Credential is missing")?;
        let signed = field("SignedHeaders").ok_or("SignedHeaders is missing")?;
        let signature = field("Signature").ok_or("Signature is missing")?;
        let scope: Vec<&str> = credential.split('/').collect();
        let [access_key_id, date, region, service, terminal] = scope[..] else {
            return Err("Credential must be <key>/<date>/<region>/<service>/aws4_request");
        };
        if service != SERVICE || terminal != "aws4_request" {
            return Err("Credential scope must end in bedrock/aws4_request");
        }
        if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return Err("Credential date must be YYYYMMDD");
        }
        if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("Signature must be 64 hex digits");
        }
        let signed_headers: Vec<String> = signed.split(';').map(str::to_owned).collect();
        if !signed_headers.iter().any(|h| h == "host") {
            return Err("SignedHeaders must include host");
        }
        Ok(Self {
            access_key_id: access_key_id.to_owned(),
            date: date.to_owned(),
            region: region.to_owned(),
            signed_headers,
        })
    }
}

/// Recomputes the signature with the shared test secret; `Err` says why
/// the request is refused.
fn verify(
    authorization: &Authorization,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(), (&'static str, String)> {
    let invalid = |why: &str| ("InvalidSignatureException", why.to_owned());
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| invalid("x-amz-date is missing"))?;
    if !amz_date.starts_with(&authorization.date) || amz_date.len() != 16 {
        return Err(invalid("x-amz-date does not match the credential scope"));
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &amz_date[0..4],
        &amz_date[4..6],
        &amz_date[6..8],
        &amz_date[9..11],
        &amz_date[11..13],
        &amz_date[13..15]
    );
    let time = humantime::parse_rfc3339(&rfc3339).map_err(|_| invalid("bad x-amz-date"))?;
    let now = SystemTime::now();
    let skew = now
        .duration_since(time)
        .or_else(|_| time.duration_since(now))
        .unwrap_or_default();
    if skew > MAX_SKEW {
        return Err(invalid("Signature expired"));
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| invalid("host is missing"))?;
    // The request as signed: the signed headers only; the signer adds
    // `x-amz-date` and the session token itself.
    let mut req = Request::post(format!("http://{host}{path}"))
        .body(body.clone())
        .map_err(|_| invalid("the request cannot be rebuilt"))?;
    for name in &authorization.signed_headers {
        if matches!(name.as_str(), "x-amz-date" | "x-amz-security-token") {
            continue;
        }
        let value = headers
            .get(name.as_str())
            .ok_or_else(|| invalid("a signed header is missing"))?;
        let name = header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid("a signed header name is invalid"))?;
        req.headers_mut().insert(name, value.clone());
    }
    let access_key_id = SecretString::from(authorization.access_key_id.clone());
    let secret = SecretString::from(AWS_TEST_SECRET_ACCESS_KEY);
    let token = headers
        .get("x-amz-security-token")
        .and_then(|v| v.to_str().ok())
        .map(SecretString::from);
    let keys = AwsKeys {
        region: &authorization.region,
        access_key_id: &access_key_id,
        secret_access_key: &secret,
        session_token: token.as_ref(),
    };
    sign_request(&mut req, &keys, time).map_err(|_| invalid("the request cannot be signed"))?;
    let expected = req.headers().get(header::AUTHORIZATION);
    if expected != headers.get(header::AUTHORIZATION) {
        return Err(invalid(
            "The request signature we calculated does not match the signature you provided.",
        ));
    }
    Ok(())
}

/// Checks the body is Bedrock's shape of a Messages request.
fn validate(body: &Bytes) -> Result<(), String> {
    let request: Value =
        serde_json::from_slice(body).map_err(|_| "Malformed input request".to_owned())?;
    if request.get("anthropic_version").and_then(Value::as_str) != Some("bedrock-2023-05-31") {
        return Err("anthropic_version: bedrock-2023-05-31 is required".to_owned());
    }
    for field in ["model", "stream"] {
        if request.get(field).is_some() {
            return Err(format!("extraneous key [{field}] is not permitted"));
        }
    }
    if !request.get("messages").is_some_and(Value::is_array) {
        return Err("messages: required key not found".to_owned());
    }
    Ok(())
}

/// The `data:` JSON of one SSE event.
fn sse_data(event: &Bytes) -> Option<Bytes> {
    let text = std::str::from_utf8(event).ok()?;
    let data = text.lines().find_map(|line| line.strip_prefix("data: "))?;
    Some(Bytes::copy_from_slice(data.as_bytes()))
}

/// One `chunk` frame carrying an Anthropic event.
fn chunk(event: &[u8]) -> Bytes {
    let bytes = base64::engine::general_purpose::STANDARD.encode(event);
    // Bedrock pads chunks with a `p` field so their sizes say nothing.
    let payload = json!({"bytes": bytes, "p": "abcdefghij"}).to_string();
    encode(
        &[
            (":event-type", "chunk"),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.as_bytes(),
    )
}

/// An exception frame, as Bedrock ends a failing stream.
fn exception_frame(name: &str, message: &str) -> Bytes {
    encode(
        &[
            (":exception-type", name),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        json!({ "message": message }).to_string().as_bytes(),
    )
}

fn exception_name(status: u16) -> &'static str {
    match status {
        400 => "ValidationException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 | 529 => "ServiceUnavailableException",
        _ => "InternalServerException",
    }
}

fn message(status: u16) -> &'static str {
    match status {
        400 => "Malformed input request",
        403 => "You don't have access to the model with the specified model ID.",
        429 => "Too many requests, please wait before trying again.",
        503 | 529 => "Bedrock is unable to process your request.",
        _ => "The server encountered an internal error.",
    }
}

/// An error answer in Bedrock's shape.
fn error(status: u16, name: &str, message: &str) -> Response<MockBody> {
    let body = Bytes::from(json!({ "message": message }).to_string());
    let mut response = Response::new(MockBody::whole(body));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    set_json(headers);
    let kind = format!("{name}:http://internal.amazon.com/coral/com.amazon.bedrock/");
    if let Ok(kind) = HeaderValue::from_str(&kind) {
        headers.insert("x-amzn-errortype", kind);
    }
    response
}

fn set_json(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    request_id(headers);
}

fn request_id(headers: &mut HeaderMap) {
    headers.insert(
        "x-amzn-requestid",
        HeaderValue::from_static("00000000-0000-4000-8000-000000000000"),
    );
}
