//! Tower middleware that turns a pool of upstream LLM accounts (Anthropic
//! subscription and API-key accounts, AWS Bedrock, OpenAI keys) into one
//! reliable, fast endpoint.
//!
//! Each concern is its own tower [`Layer`](tower_layer::Layer), usable alone;
//! [`RelayBuilder`] composes the default stack:
//!
//! ```text
//! request_id → error_response → body_limit → auth → list_models → parse
//!   → session_hash → failover → select → model_map → header_whitelist
//!   → beta_header → credentials → oauth → usage → bedrock → upstream
//! ```
//!
//! Layers pass typed values in the request extensions: [`Principal`],
//! [`Endpoint`], [`ParsedRequest`], [`SelectedAccount`]; responses carry
//! [`ServedBy`] and a [`UsageHandle`](usage::UsageHandle). Inner layers speak `Request<Bytes>` → `Response<RelayBody>`
//! with [`RelayError`] as the error, which
//! [`error_response`] turns into an answer in the API's own format.
//!
//! # Examples
//!
//! Mount the relay in an axum app:
//!
//! ```no_run
//! use secrecy::SecretString;
//! use tower_llm_relay::{Account, AccountPool, ClientKeys, Credentials, Platform, Principal, RelayBuilder};
//!
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! let mut keys = ClientKeys::new();
//! keys.insert(SecretString::from("sk-relay-alice"), Principal::new("alice"));
//! let key = SecretString::from(std::env::var("ANTHROPIC_API_KEY").unwrap_or_default());
//! let accounts = AccountPool::new([Account::builder("claude-1", Platform::Anthropic, Credentials::ApiKey(key)).build()]);
//! let relay = RelayBuilder::new().keys(keys).accounts(accounts).build::<axum::body::Body>();
//! let app = axum::Router::new().fallback_service(relay);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await
//! # }
//! ```

#![deny(missing_docs, unreachable_pub, unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

/// `get_ref`, `get_mut` and `into_inner` for a middleware whose inner
/// service is the field `inner` of type `S` (tower-http's set).
macro_rules! inner_accessors {
    () => {
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
    };
}

mod account;
mod body;
mod builder;
mod endpoint;
mod error;
mod future;
mod glob;
mod hex;
mod json;
mod metric_handles;
mod needle;
mod principal;

pub mod auth;
pub mod bedrock;
pub mod beta_header;
pub mod body_limit;
pub mod client_limit;
pub mod credentials;
pub mod error_response;
pub mod failover;
pub mod header_whitelist;
pub mod list_models;
pub mod model_map;
pub mod oauth;
pub mod parse;
pub mod request_id;
pub mod select;
pub mod session_hash;
pub mod sse;
pub mod state;
pub mod stats;
pub mod trace;
pub mod upstream;
pub mod usage;

#[cfg(feature = "config")]
pub mod config;
#[cfg(feature = "mock")]
pub mod mock;

pub use account::{
    Account, AccountBuilder, AccountId, AccountType, Credentials, Platform, SelectedAccount,
    ServedBy,
};
pub use body::{BoxError, HoldUntilEnd, RelayBody};
pub use builder::{RelayBuilder, RelayService, ServiceBuilderExt};
pub use endpoint::{ApiFormat, Endpoint};
pub use error::{RelayError, UpstreamError, UpstreamErrorKind};
pub use future::{OnResponse, ResponseHook};
pub use glob::{ModelGlob, ModelGlobs};
pub use parse::ParsedRequest;
pub use principal::{ClientKeys, KeyId, KeyLimits, Principal};
pub use select::AccountPool;
pub use usage::{Usage, UsageReport, UsageSink};

/// Compiles the README's examples as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
