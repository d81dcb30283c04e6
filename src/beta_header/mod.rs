//! Rewrites `anthropic-beta` for the selected account's type.
//!
//! Subscription accounts (`oauth`, `setup_token`) must send Anthropic's
//! OAuth beta flag, `oauth-2025-04-20`. Following seed 002:
//!
//! - the client's flags are kept, in order, never overwritten;
//! - the OAuth flag goes right after `claude-code-20250219` when the client
//!   sent that flag, else first; it is never added twice;
//! - when the client sent no flags, a model-dependent default is used
//!   (Haiku models get a shorter list);
//! - flags that subscription accounts reject (configurable, none by default)
//!   are dropped for them.
//!
//! API-key accounts get the client's value untouched. The default lists
//! deliberately omit `claude-code-20250219`: adding it for a client that did
//! not send it would claim an identity the caller does not have.
//!
//! # Examples
//!
//! ```
//! use tower_llm_relay::beta_header::BetaHeaderLayer;
//!
//! let layer = BetaHeaderLayer::new();
//! assert_eq!(
//!     layer.subscription_flags("claude-sonnet-4-5", Some("claude-code-20250219,context-1m-2025-08-07")),
//!     "claude-code-20250219,oauth-2025-04-20,context-1m-2025-08-07",
//! );
//! assert_eq!(layer.subscription_flags("claude-haiku-4-5", None), "oauth-2025-04-20,interleaved-thinking-2025-05-14");
//! ```

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use tower_layer::Layer;
use tower_service::Service;

use crate::account::SelectedAccount;
use crate::parse::ParsedRequest;

/// The `anthropic-beta` header.
pub const ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");
/// The flag subscription (OAuth) tokens need.
pub const OAUTH_FLAG: &str = "oauth-2025-04-20";
/// Claude Code's flag, after which the OAuth flag is inserted.
pub const CLAUDE_CODE_FLAG: &str = "claude-code-20250219";

const DEFAULT_FLAGS: &str =
    "oauth-2025-04-20,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14";
const HAIKU_FLAGS: &str = "oauth-2025-04-20,interleaved-thinking-2025-05-14";

/// Applies [`BetaHeader`]: see the module docs.
#[derive(Debug, Clone)]
pub struct BetaHeaderLayer {
    config: Arc<Config>,
}

#[derive(Debug, Clone)]
struct Config {
    default_flags: String,
    haiku_flags: String,
    rejected_by_subscription: Vec<String>,
}

impl BetaHeaderLayer {
    /// The seed's behaviour with the default flag lists.
    pub fn new() -> Self {
        Self {
            config: Arc::new(Config {
                default_flags: DEFAULT_FLAGS.to_owned(),
                haiku_flags: HAIKU_FLAGS.to_owned(),
                rejected_by_subscription: Vec::new(),
            }),
        }
    }

    /// Sets the flags sent for subscription accounts when the client sent
    /// none: `default` for most models, `haiku` for Haiku models. The OAuth
    /// flag is added to each when missing.
    pub fn default_flags(mut self, default: &str, haiku: &str) -> Self {
        let config = Arc::make_mut(&mut self.config);
        config.default_flags = merge_oauth(split(default));
        config.haiku_flags = merge_oauth(split(haiku));
        self
    }

    /// Drops these flags for subscription accounts, which reject them.
    pub fn drop_for_subscription<I, S>(mut self, flags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Arc::make_mut(&mut self.config).rejected_by_subscription =
            flags.into_iter().map(Into::into).collect();
        self
    }

    /// The `anthropic-beta` value a subscription account sends for `model`
    /// given the client's value.
    pub fn subscription_flags(&self, model: &str, client: Option<&str>) -> String {
        let config = &self.config;
        let flags = match client.map(split).filter(|f| !f.is_empty()) {
            Some(flags) => merge_oauth(flags),
            None if model.to_ascii_lowercase().contains("haiku") => config.haiku_flags.clone(),
            None => config.default_flags.clone(),
        };
        if config.rejected_by_subscription.is_empty() {
            return flags;
        }
        split(&flags)
            .into_iter()
            .filter(|f| !config.rejected_by_subscription.iter().any(|r| r == f))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Default for BetaHeaderLayer {
    fn default() -> Self {
        Self::new()
    }
}

fn split(flags: &str) -> Vec<&str> {
    flags
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .collect()
}

/// The flags with the OAuth flag in its place (after Claude Code's, else
/// first), once.
fn merge_oauth(mut flags: Vec<&str>) -> String {
    if !flags.contains(&OAUTH_FLAG) {
        let at = flags
            .iter()
            .position(|f| *f == CLAUDE_CODE_FLAG)
            .map_or(0, |i| i + 1);
        flags.insert(at, OAUTH_FLAG);
    }
    flags.join(",")
}

/// The client's flags as one comma-separated value (several header lines
/// are joined), or `None` when absent or not text.
fn client_flags(headers: &HeaderMap) -> Option<String> {
    let mut values = headers.get_all(&ANTHROPIC_BETA).iter().peekable();
    values.peek()?;
    let joined: Result<Vec<&str>, _> = values.map(HeaderValue::to_str).collect();
    joined.ok().map(|v| v.join(","))
}

impl<S> Layer<S> for BetaHeaderLayer {
    type Service = BetaHeader<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BetaHeader {
            inner,
            layer: self.clone(),
        }
    }
}

/// Middleware that rewrites `anthropic-beta`; see the module docs.
#[derive(Debug, Clone)]
pub struct BetaHeader<S> {
    inner: S,
    layer: BetaHeaderLayer,
}

impl<S> BetaHeader<S> {
    /// Wraps `inner` with the default behaviour.
    pub fn new(inner: S) -> Self {
        BetaHeaderLayer::new().layer(inner)
    }

    /// A layer for this middleware.
    pub fn layer() -> BetaHeaderLayer {
        BetaHeaderLayer::new()
    }

    inner_accessors!();
}

impl<S> Service<Request<Bytes>> for BetaHeader<S>
where
    S: Service<Request<Bytes>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Bytes>) -> Self::Future {
        let subscription = req
            .extensions()
            .get::<SelectedAccount>()
            .is_some_and(|a| a.account_type().is_subscription());
        if subscription {
            let model = req
                .extensions()
                .get::<ParsedRequest>()
                .map(|p| p.model().to_owned())
                .unwrap_or_default();
            let client = client_flags(req.headers());
            let flags = self.layer.subscription_flags(&model, client.as_deref());
            let headers = req.headers_mut();
            headers.remove(&ANTHROPIC_BETA);
            if let Ok(value) = HeaderValue::from_str(&flags) {
                if !flags.is_empty() {
                    headers.insert(ANTHROPIC_BETA, value);
                }
            }
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_flag_table() {
        let layer = BetaHeaderLayer::new();
        let cases: [(&str, Option<&str>, &str); 7] = [
            ("claude-sonnet-4-5", None, DEFAULT_FLAGS),
            ("claude-3-5-haiku", None, HAIKU_FLAGS),
            ("claude-sonnet-4-5", Some(""), DEFAULT_FLAGS),
            ("claude-sonnet-4-5", Some("a,b"), "oauth-2025-04-20,a,b"),
            (
                "claude-sonnet-4-5",
                Some(" claude-code-20250219 , x "),
                "claude-code-20250219,oauth-2025-04-20,x",
            ),
            (
                "claude-sonnet-4-5",
                Some("x,oauth-2025-04-20"),
                "x,oauth-2025-04-20",
            ),
            ("claude-haiku-4-5", Some("x"), "oauth-2025-04-20,x"),
        ];
        for (model, client, want) in cases {
            assert_eq!(
                layer.subscription_flags(model, client),
                want,
                "{model} {client:?}"
            );
        }
    }

    #[test]
    fn rejected_flags_are_dropped_for_subscription_accounts() {
        let layer = BetaHeaderLayer::new().drop_for_subscription(["context-1m-2025-08-07"]);
        assert_eq!(
            layer.subscription_flags("claude-opus-4-1", Some("context-1m-2025-08-07,y")),
            "oauth-2025-04-20,y"
        );
    }

    #[test]
    fn several_header_lines_are_joined() {
        let mut headers = HeaderMap::new();
        headers.append(ANTHROPIC_BETA, HeaderValue::from_static("a"));
        headers.append(ANTHROPIC_BETA, HeaderValue::from_static("b,c"));
        assert_eq!(client_flags(&headers).as_deref(), Some("a,b,c"));
        assert_eq!(client_flags(&HeaderMap::new()), None);
    }
}
