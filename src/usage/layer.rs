use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Request, Response};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::body::{Frames, Framing, Meta, UsageBody};
use super::extract::{Api, Extractor};
use super::sink::{TracingSink, UsageSink};
use crate::account::SelectedAccount;
use crate::body::RelayBody;
use crate::endpoint::Endpoint;
use crate::future::{OnResponse, ResponseHook};
use crate::json::top_level_value_span;
use crate::parse::ParsedRequest;
use crate::principal::Principal;
use crate::request_id::RequestId;
use crate::sse::splice::Splicer;
use crate::sse::SseScanner;

/// Whether the relay asks OpenAI chat streams for usage when the client
/// did not.
///
/// OpenAI sends no usage in a chat stream unless the request says
/// `"stream_options":{"include_usage":true}`; without it a streamed chat
/// answer cannot be accounted for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IncludeUsage {
    /// Add `stream_options.include_usage` upstream when the client did not
    /// ask, and take the extra usage chunk (`choices: []` with `usage`) out
    /// of the client's stream, so the client sees the stream it asked for.
    /// The default.
    #[default]
    Inject,
    /// Send the request as the client wrote it (chat streams may then
    /// report no usage).
    AsRequested,
}

/// Applies [`UsageExtract`]: see the [module docs](super).
#[derive(Clone)]
pub struct UsageExtractLayer {
    sink: Arc<dyn UsageSink>,
    include_usage: IncludeUsage,
}

impl Default for UsageExtractLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for UsageExtractLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsageExtractLayer")
            .field("include_usage", &self.include_usage)
            .finish_non_exhaustive()
    }
}

impl UsageExtractLayer {
    /// Reports to a [`TracingSink`]; asks chat streams for usage.
    pub fn new() -> Self {
        Self {
            sink: Arc::new(TracingSink::new()),
            include_usage: IncludeUsage::Inject,
        }
    }

    /// Reports to `sink` instead.
    pub fn sink(mut self, sink: impl UsageSink) -> Self {
        self.sink = Arc::new(sink);
        self
    }

    /// Reports to `sink` as well as to the sinks set so far.
    pub fn also(mut self, sink: impl UsageSink) -> Self {
        self.sink = Arc::new((self.sink, sink));
        self
    }

    /// Whether to ask OpenAI chat streams for usage (default
    /// [`IncludeUsage::Inject`]).
    pub fn include_usage(mut self, mode: IncludeUsage) -> Self {
        self.include_usage = mode;
        self
    }
}

impl<S> Layer<S> for UsageExtractLayer {
    type Service = UsageExtract<S>;

    fn layer(&self, inner: S) -> Self::Service {
        UsageExtract {
            inner,
            config: self.clone(),
        }
    }
}

/// Middleware that reads usage from every response; see the
/// [module docs](super).
#[derive(Clone, Debug)]
pub struct UsageExtract<S> {
    inner: S,
    config: UsageExtractLayer,
}

impl<S> UsageExtract<S> {
    /// Wraps `inner`, reporting to a [`TracingSink`].
    pub fn new(inner: S) -> Self {
        UsageExtractLayer::new().layer(inner)
    }

    /// A layer for this middleware.
    pub fn layer() -> UsageExtractLayer {
        UsageExtractLayer::new()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// The chat request body with `stream_options.include_usage` set, or
/// `None` when the client asked for usage itself (or the body is not an
/// object). Only `stream_options` changes; the rest is kept byte for byte.
pub(crate) fn with_include_usage(body: &[u8]) -> Option<Vec<u8>> {
    let Some(span) = top_level_value_span(body, "stream_options") else {
        // No `stream_options`: add it as the object's first member.
        let open = body.iter().position(|b| !b.is_ascii_whitespace())?;
        if body[open] != b'{' {
            return None;
        }
        let rest = &body[open + 1..];
        let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
        let member: &[u8] = if empty {
            br#""stream_options":{"include_usage":true}"#
        } else {
            br#""stream_options":{"include_usage":true},"#
        };
        let mut out = Vec::with_capacity(body.len() + member.len());
        out.extend_from_slice(&body[..=open]);
        out.extend_from_slice(member);
        out.extend_from_slice(rest);
        return Some(out);
    };
    let mut options = match serde_json::from_slice::<serde_json::Value>(&body[span.clone()]) {
        Ok(serde_json::Value::Object(map)) => map,
        // `null` or junk: the upstream would have refused junk anyway.
        _ => serde_json::Map::new(),
    };
    if options.get("include_usage") == Some(&serde_json::Value::Bool(true)) {
        return None;
    }
    options.insert("include_usage".to_owned(), serde_json::Value::Bool(true));
    let value = serde_json::to_vec(&options).ok()?;
    let mut out = Vec::with_capacity(body.len() + value.len());
    out.extend_from_slice(&body[..span.start]);
    out.extend_from_slice(&value);
    out.extend_from_slice(&body[span.end..]);
    Some(out)
}

impl<S> Service<Request<Bytes>> for UsageExtract<S>
where
    S: Service<Request<Bytes>, Response = Response<RelayBody>>,
{
    type Response = Response<RelayBody>;
    type Error = S::Error;
    type Future = OnResponse<S::Future, Attach>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Bytes>) -> Self::Future {
        let started = Instant::now();
        let parsed = req.extensions().get::<ParsedRequest>();
        let endpoint = parsed
            .map(ParsedRequest::endpoint)
            .or_else(|| Endpoint::from_path(req.uri().path()));
        let asks_stream = parsed.is_some_and(ParsedRequest::is_stream);
        let client_model = parsed.map(|p| p.model().to_owned());
        let meta = Meta {
            request_id: req.extensions().get::<RequestId>().cloned(),
            account: req
                .extensions()
                .get::<SelectedAccount>()
                .map(|a| a.id().clone()),
            key: req.extensions().get::<Principal>().map(|p| p.id().clone()),
            client_model,
            endpoint,
            status: http::StatusCode::OK,
            stream: false,
            started,
        };
        let mut strip = false;
        if self.config.include_usage == IncludeUsage::Inject
            && endpoint == Some(Endpoint::ChatCompletions)
            && asks_stream
        {
            if let Some(body) = with_include_usage(req.body()) {
                *req.body_mut() = Bytes::from(body);
                req.headers_mut().remove(header::CONTENT_LENGTH);
                strip = true;
            }
        }
        let hook = Attach {
            meta,
            strip,
            sink: self.config.sink.clone(),
        };
        OnResponse::new(self.inner.call(req), hook)
    }
}

/// Wraps the response body and puts a
/// [`UsageHandle`](super::UsageHandle) in the response.
pub struct Attach {
    meta: Meta,
    strip: bool,
    sink: Arc<dyn UsageSink>,
}

impl fmt::Debug for Attach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attach")
            .field("meta", &self.meta)
            .field("strip", &self.strip)
            .finish_non_exhaustive()
    }
}

impl ResponseHook<RelayBody> for Attach {
    fn apply(self, response: Response<RelayBody>) -> Response<RelayBody> {
        let Attach {
            mut meta,
            strip,
            sink,
        } = self;
        let (mut parts, body) = response.into_parts();
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let events = content_type.starts_with("text/event-stream");
        let json = content_type.starts_with("application/json");
        let api = Api::of(meta.endpoint);
        let framing = if !parts.status.is_success() || api == Api::None {
            // Error answers carry no usage; they are reported with none.
            Framing::Opaque
        } else if events && strip {
            // The body's length changes: the usage chunk comes out.
            parts.headers.remove(header::CONTENT_LENGTH);
            Framing::Spliced(Splicer::new(SseScanner::new()))
        } else if events {
            Framing::Events(SseScanner::new())
        } else if json {
            Framing::Document(Frames::default())
        } else {
            Framing::Opaque
        };
        meta.status = parts.status;
        meta.stream = events;
        let extractor = Extractor::new(api, meta.started, strip);
        let (body, handle) = UsageBody::new(body, framing, meta, extractor, sink);
        parts.extensions.insert(handle);
        Response::from_parts(parts, RelayBody::new(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_usage_is_added_as_the_first_member() {
        let out = with_include_usage(br#" {"model":"m","stream":true}"#).unwrap_or_default();
        assert_eq!(
            out,
            br#" {"stream_options":{"include_usage":true},"model":"m","stream":true}"#
        );
        let out = with_include_usage(b"{ }").unwrap_or_default();
        assert_eq!(out, br#"{"stream_options":{"include_usage":true} }"#);
    }

    #[test]
    fn include_usage_is_set_in_existing_stream_options() {
        let out = with_include_usage(
            br#"{"model":"m","stream_options":{"include_obfuscation":false,"include_usage":false},"n":1}"#,
        )
        .unwrap_or_default();
        assert_eq!(
            out,
            br#"{"model":"m","stream_options":{"include_obfuscation":false,"include_usage":true},"n":1}"#
        );
        let out = with_include_usage(br#"{"stream_options":null}"#).unwrap_or_default();
        assert_eq!(out, br#"{"stream_options":{"include_usage":true}}"#);
    }

    #[test]
    fn a_client_that_asked_for_usage_is_left_alone() {
        assert!(with_include_usage(br#"{"stream_options":{"include_usage":true}}"#).is_none());
        assert!(with_include_usage(b"[1]").is_none());
    }
}
