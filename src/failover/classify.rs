//! What to do with one attempt's outcome: one pure function.

use std::time::Duration;

use http::{HeaderMap, StatusCode};

use crate::account::AccountType;
use crate::error::UpstreamErrorKind;
use crate::state::CooldownReason;

/// The longest cooldown taken from an upstream's own hint, except for
/// spend or usage caps, which last until their reset.
pub const MAX_HINTED_COOLDOWN: Duration = Duration::from_secs(300);

/// How an attempt ended, as far as classification needs to know.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// An HTTP answer with this status; for errors, the upstream's message
    /// and headers.
    Status {
        /// The status.
        status: StatusCode,
        /// The error message from the body, if any.
        message: &'a str,
        /// The response headers (for rate-limit hints).
        headers: &'a HeaderMap,
    },
    /// A stream whose first event was an error event (e.g. overloaded).
    StreamError {
        /// The error's `type`, e.g. `overloaded_error`.
        kind: &'a str,
    },
    /// No answer: the connection failed or timed out.
    Transport(UpstreamErrorKind),
}

/// A cooldown to put on the account that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cooldown {
    /// Why.
    pub reason: CooldownReason,
    /// Whether it holds only for the requested model (rate limits and
    /// overload are per model upstream) rather than the whole account.
    pub per_model: bool,
    /// How long the upstream said, if it said; else the reason's default
    /// (grown by the account's failure streak) applies.
    pub hinted: Option<Duration>,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Give this answer to the client.
    Return,
    /// Try the same account again after this pause (subscription 403s,
    /// which are often transient there).
    RetrySameAccount {
        /// The pause before retrying.
        after: Duration,
    },
    /// Try another account; cool this one down.
    Failover {
        /// The cooldown to apply.
        cooldown: Cooldown,
    },
}

/// Classification settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassifyPolicy {
    /// Fail over on 400s that look like compatibility errors (seed 002).
    pub failover_on_400: bool,
    /// Same-account retries already made for this account in this request.
    pub same_account_retries: u32,
    /// How many same-account retries a subscription 403 gets.
    pub max_same_account_retries: u32,
}

/// Decides what to do with an attempt's outcome (seeds 002 and 004).
///
/// # Examples
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use tower_llm_relay::failover::{classify, Action, ClassifyPolicy, Outcome};
/// use tower_llm_relay::AccountType;
///
/// let policy = ClassifyPolicy { failover_on_400: false, same_account_retries: 0, max_same_account_retries: 3 };
/// let headers = HeaderMap::new();
/// let outcome = Outcome::Status { status: StatusCode::BAD_REQUEST, message: "bad", headers: &headers };
/// assert_eq!(classify(outcome, AccountType::ApiKey, policy), Action::Return);
/// let outcome = Outcome::Status { status: StatusCode::TOO_MANY_REQUESTS, message: "", headers: &headers };
/// assert!(matches!(classify(outcome, AccountType::ApiKey, policy), Action::Failover { .. }));
/// ```
pub fn classify(outcome: Outcome<'_>, account: AccountType, policy: ClassifyPolicy) -> Action {
    let failover = |reason, hinted| Action::Failover {
        cooldown: Cooldown {
            reason,
            hinted,
            per_model: matches!(
                reason,
                CooldownReason::RateLimited | CooldownReason::Overloaded
            ),
        },
    };
    let (status, message, headers) = match outcome {
        Outcome::Transport(kind) => {
            let reason = match kind {
                UpstreamErrorKind::Request => CooldownReason::Manual,
                UpstreamErrorKind::Credentials => CooldownReason::CredentialsRejected,
                _ => CooldownReason::UpstreamError,
            };
            return failover(reason, None);
        }
        Outcome::StreamError { kind } => {
            let reason = if kind.contains("rate_limit") {
                CooldownReason::RateLimited
            } else {
                CooldownReason::Overloaded
            };
            return failover(reason, None);
        }
        Outcome::Status {
            status,
            message,
            headers,
        } => (status, message, headers),
    };
    match status.as_u16() {
        s if s < 400 => Action::Return,
        400 if policy.failover_on_400 && is_compatibility_error(message) => {
            failover(CooldownReason::UpstreamError, Some(Duration::ZERO))
        }
        401 => failover(CooldownReason::CredentialsRejected, None),
        403 if account.is_subscription()
            && policy.same_account_retries < policy.max_same_account_retries =>
        {
            Action::RetrySameAccount {
                after: Duration::from_millis(200 * (1 << policy.same_account_retries.min(4))),
            }
        }
        403 => failover(CooldownReason::AuthFailed, None),
        429 if is_usage_cap(message) => {
            failover(CooldownReason::UsageCap, reset_hint(headers, false))
        }
        429 => failover(CooldownReason::RateLimited, reset_hint(headers, true)),
        529 => failover(CooldownReason::Overloaded, reset_hint(headers, true)),
        503 => failover(CooldownReason::Overloaded, reset_hint(headers, true)),
        s if s >= 500 => failover(CooldownReason::UpstreamError, reset_hint(headers, true)),
        _ => Action::Return,
    }
}

/// A 400 that another account or path may not give (seed 002): beta
/// headers, thinking signatures, tool-use pairing.
fn is_compatibility_error(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "anthropic-beta",
        "beta feature",
        "requires beta",
        "thinking",
        "signature",
        "tool_use",
        "tool_result",
        "tools",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

/// A 429 that means a spend or usage cap, not a short rate limit.
fn is_usage_cap(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "usage limit",
        "spend limit",
        "spending limit",
        "credit balance",
        "quota",
        "billing",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

/// The upstream's own word on when to come back: `retry-after-ms`,
/// `retry-after` (seconds or an HTTP date), `anthropic-ratelimit-*-reset`
/// (RFC 3339), OpenAI's `x-ratelimit-reset-*` (`6m0s`, `20ms`). The latest
/// reset wins; capped at [`MAX_HINTED_COOLDOWN`] when `capped`.
pub fn reset_hint(headers: &HeaderMap, capped: bool) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mut hint: Option<Duration> = None;
    let mut consider = |d: Option<Duration>| {
        if let Some(d) = d {
            hint = Some(hint.map_or(d, |h| h.max(d)));
        }
    };
    consider(
        text("retry-after-ms")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_millis),
    );
    consider(text("retry-after").and_then(parse_retry_after));
    for (name, value) in headers {
        let name = name.as_str();
        let Ok(value) = value.to_str() else { continue };
        if name.starts_with("anthropic-ratelimit-") && name.ends_with("-reset") {
            consider(until_rfc3339(value));
        } else if name.starts_with("x-ratelimit-reset-") {
            consider(parse_go_duration(value));
        }
    }
    hint.map(|h| {
        if capped {
            h.min(MAX_HINTED_COOLDOWN)
        } else {
            h
        }
    })
}

fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    httpdate::parse_http_date(value).ok().map(|at| {
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
    })
}

fn until_rfc3339(value: &str) -> Option<Duration> {
    let at = humantime::parse_rfc3339_weak(value.trim()).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// `1h2m3.5s`, `6m0s`, `20ms`, `1s` (OpenAI's reset format).
fn parse_go_duration(value: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = value.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (number, tail) = rest.split_at(split);
        let number: f64 = number.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += number * scale;
        rest = tail;
    }
    (total.is_finite() && total >= 0.0).then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn policy(failover_on_400: bool, retries: u32) -> ClassifyPolicy {
        ClassifyPolicy {
            failover_on_400,
            same_account_retries: retries,
            max_same_account_retries: 3,
        }
    }

    fn status(code: u16, message: &str, account: AccountType, p: ClassifyPolicy) -> Action {
        let headers = HeaderMap::new();
        let outcome = Outcome::Status {
            status: StatusCode::from_u16(code).unwrap(),
            message,
            headers: &headers,
        };
        classify(outcome, account, p)
    }

    fn reason(action: Action) -> Option<CooldownReason> {
        match action {
            Action::Failover { cooldown } => Some(cooldown.reason),
            _ => None,
        }
    }

    /// (status, message, account, policy, failover reason, returned)
    type Case = (
        u16,
        &'static str,
        AccountType,
        ClassifyPolicy,
        Option<CooldownReason>,
        bool,
    );

    #[test]
    fn classification_table() {
        use AccountType::{ApiKey, OAuth, SetupToken};
        use CooldownReason::*;
        let off = policy(false, 0);
        let on = policy(true, 0);
        let cases: [Case; 16] = [
            // (status, message, account, policy, failover reason, returned)
            (200, "", ApiKey, off, None, true),
            (400, "bad thing", ApiKey, off, None, true),
            (
                400,
                "thinking block signature invalid",
                ApiKey,
                off,
                None,
                true,
            ),
            (
                400,
                "thinking block signature invalid",
                ApiKey,
                on,
                Some(UpstreamError),
                false,
            ),
            (
                400,
                "Unexpected `tool_use` ids",
                ApiKey,
                on,
                Some(UpstreamError),
                false,
            ),
            (
                400,
                "anthropic-beta: unknown flag",
                ApiKey,
                on,
                Some(UpstreamError),
                false,
            ),
            (400, "max_tokens too large", ApiKey, on, None, true),
            (401, "", ApiKey, off, Some(CredentialsRejected), false),
            (403, "", ApiKey, off, Some(AuthFailed), false),
            (404, "", ApiKey, off, None, true),
            (429, "rate limited", ApiKey, off, Some(RateLimited), false),
            (
                429,
                "You have reached your usage limit",
                OAuth,
                off,
                Some(UsageCap),
                false,
            ),
            (500, "", ApiKey, off, Some(UpstreamError), false),
            (503, "", ApiKey, off, Some(Overloaded), false),
            (529, "", SetupToken, off, Some(Overloaded), false),
            (403, "", OAuth, policy(false, 3), Some(AuthFailed), false),
        ];
        for (code, message, account, p, want_reason, returned) in cases {
            let action = status(code, message, account, p);
            assert_eq!(
                reason(action),
                want_reason,
                "{code} {message:?} {account:?}"
            );
            assert_eq!(
                action == Action::Return,
                returned,
                "{code} {message:?} {account:?}"
            );
        }
    }

    #[test]
    fn subscription_403_retries_the_same_account_first() {
        let action = status(403, "", AccountType::OAuth, policy(false, 0));
        assert!(matches!(action, Action::RetrySameAccount { .. }));
        let action = status(403, "", AccountType::SetupToken, policy(false, 2));
        assert!(matches!(action, Action::RetrySameAccount { .. }));
    }

    #[test]
    fn transport_failures_and_stream_errors_fail_over() {
        for kind in [
            UpstreamErrorKind::Connect,
            UpstreamErrorKind::Timeout,
            UpstreamErrorKind::Io,
        ] {
            let action = classify(
                Outcome::Transport(kind),
                AccountType::ApiKey,
                policy(false, 0),
            );
            assert_eq!(reason(action), Some(CooldownReason::UpstreamError));
        }
        let action = classify(
            Outcome::StreamError {
                kind: "overloaded_error",
            },
            AccountType::ApiKey,
            policy(false, 0),
        );
        assert_eq!(reason(action), Some(CooldownReason::Overloaded));
    }

    #[test]
    fn reset_hints_from_every_header_kind() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("30"));
        assert_eq!(reset_hint(&h, true), Some(Duration::from_secs(30)));
        h.insert("retry-after-ms", HeaderValue::from_static("45000"));
        assert_eq!(reset_hint(&h, true), Some(Duration::from_secs(45)));
        let mut h = HeaderMap::new();
        h.insert(
            "x-ratelimit-reset-requests",
            HeaderValue::from_static("6m0s"),
        );
        h.insert("x-ratelimit-reset-tokens", HeaderValue::from_static("20ms"));
        assert_eq!(
            reset_hint(&h, true),
            Some(Duration::from_secs(300)),
            "capped at 300 s"
        );
        assert_eq!(reset_hint(&h, false), Some(Duration::from_secs(360)));
        let mut h = HeaderMap::new();
        let in_a_minute = humantime::format_rfc3339_seconds(
            std::time::SystemTime::now() + Duration::from_secs(60),
        )
        .to_string();
        h.insert(
            "anthropic-ratelimit-tokens-reset",
            HeaderValue::from_str(&in_a_minute).unwrap(),
        );
        let hint = reset_hint(&h, true).unwrap();
        assert!(
            hint > Duration::from_secs(55) && hint <= Duration::from_secs(60),
            "{hint:?}"
        );
        assert_eq!(reset_hint(&HeaderMap::new(), true), None);
    }

    #[test]
    fn go_durations() {
        assert_eq!(
            parse_go_duration("1h2m3.5s"),
            Some(Duration::from_secs_f64(3723.5))
        );
        assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("soon"), None);
        assert_eq!(parse_go_duration(""), None);
    }
}
