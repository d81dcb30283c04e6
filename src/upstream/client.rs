use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Uri};
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::proxy::{SocksV5, Tunnel};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::pool::Pool;
use super::UpstreamConfig;

pub(super) type DirectClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;
type TunnelClient = Client<HttpsConnector<Tunnel<HttpConnector>>, Full<Bytes>>;
type SocksClient = Client<HttpsConnector<SocksV5<HttpConnector>>, Full<Bytes>>;

/// A client whose connections go through an egress proxy.
#[derive(Clone)]
pub(super) enum ProxiedClient {
    /// An HTTP proxy, through `CONNECT` tunnels.
    Http(TunnelClient),
    /// A SOCKS5 proxy.
    Socks(SocksClient),
}

impl ProxiedClient {
    pub(super) fn request(
        &self,
        req: http::Request<Full<Bytes>>,
    ) -> hyper_util::client::legacy::ResponseFuture {
        match self {
            Self::Http(client) => client.request(req),
            Self::Socks(client) => client.request(req),
        }
    }
}

/// The in-task pool for direct plain-HTTP traffic, one pooled client for
/// direct HTTPS traffic, and one per egress proxy, made on first use:
/// connections through different proxies must never share a pool.
pub(super) struct Clients {
    pub(super) config: UpstreamConfig,
    pub(super) pool: Pool,
    pub(super) direct: DirectClient,
    proxied: Mutex<HashMap<Arc<str>, ProxiedClient>>,
}

impl Clients {
    pub(super) fn new(config: UpstreamConfig) -> Self {
        let direct = build_client(&config, http_connector(&config));
        Self {
            pool: Pool::new(config.clone()),
            config,
            direct,
            proxied: Mutex::new(HashMap::new()),
        }
    }

    /// The client that goes through `proxy` (`http://[user:pass@]host:port`).
    pub(super) fn proxied(&self, proxy: &str) -> Result<ProxiedClient, InvalidProxy> {
        let mut clients = self.proxied.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = clients.get(proxy) {
            return Ok(client.clone());
        }
        let uri: Uri = proxy.parse().map_err(|_| InvalidProxy)?;
        let client = match uri.scheme_str() {
            Some("http") => {
                let mut tunnel = Tunnel::new(uri.clone(), http_connector(&self.config));
                if let Some(auth) = basic_auth(&uri) {
                    tunnel = tunnel.with_auth(auth);
                }
                ProxiedClient::Http(build_client(&self.config, tunnel))
            }
            Some("socks5" | "socks5h") => {
                let remote_dns = uri.scheme_str() == Some("socks5h");
                let mut socks =
                    SocksV5::new(uri.clone(), http_connector(&self.config)).local_dns(!remote_dns);
                if let Some((user, pass)) = user_info(&uri) {
                    socks = socks.with_auth(user, pass);
                }
                ProxiedClient::Socks(build_client(&self.config, socks))
            }
            _ => return Err(InvalidProxy),
        };
        clients.insert(proxy.into(), client.clone());
        Ok(client)
    }
}

/// The proxy URL could not be used.
#[derive(Debug)]
pub(super) struct InvalidProxy;

impl std::fmt::Display for InvalidProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid egress proxy URL")
    }
}

impl std::error::Error for InvalidProxy {}

fn http_connector(config: &UpstreamConfig) -> HttpConnector {
    let mut http = HttpConnector::new();
    // TLS is layered on top by the rustls connector.
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(config.connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    http
}

fn build_client<C>(config: &UpstreamConfig, connector: C) -> Client<HttpsConnector<C>, Full<Bytes>>
where
    HttpsConnector<C>: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let https = HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(connector);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_max_idle_per_host(config.pool_max_idle_per_host)
        .build(https)
}

/// The user name and password in a proxy URL, if any.
fn user_info(uri: &Uri) -> Option<(String, String)> {
    let authority = uri.authority()?.as_str();
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    Some((user.to_owned(), pass.to_owned()))
}

/// `Proxy-Authorization: Basic …` from the proxy URL's user info.
fn basic_auth(uri: &Uri) -> Option<HeaderValue> {
    let authority = uri.authority()?.as_str();
    let (userinfo, _) = authority.rsplit_once('@')?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(userinfo);
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}
