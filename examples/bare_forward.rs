//! The floor under any relay built on hyper: forwards each request to one
//! upstream as it came and streams the answer back, on the same server,
//! client, runtime and allocator as the example proxy, with none of the
//! relay's layers (no auth, parsing, selection, failover, usage, logs).
//!
//! `benches/load/run.sh` measures it next to nginx and the proxy, so the
//! table tells what the HTTP stack costs apart from what the layers cost.
//!
//! ```text
//! cargo run --release --example bare_forward -- --listen 127.0.0.1:9002 --upstream 127.0.0.1:9001
//! ```
//!
//! It prints `listening on ADDR` once bound and runs until killed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

// The proxy's allocator, so the two differ only in the layers.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Command line of the forwarder.
#[derive(Debug, Parser)]
#[command(
    name = "bare_forward",
    about = "Forwards every request to one upstream"
)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:9002")]
    listen: SocketAddr,
    /// The upstream's `host:port` (plain HTTP).
    #[arg(long)]
    upstream: Authority,
}

type Forwarder = Client<HttpConnector, Incoming>;
type AnswerBody = BoxBody<Bytes, hyper::Error>;

#[tokio::main]
async fn main() -> ExitCode {
    match serve(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    // The proxy's upstream client settings (see `tower_llm_relay::upstream`).
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Forwarder = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_max_idle_per_host(256)
        .build(connector);
    let mut server = auto::Builder::new(TokioExecutor::new());
    server.http1().timer(TokioTimer::new());
    loop {
        let (stream, _) = listener.accept().await?;
        // As the proxy: answers go out without waiting for more to batch.
        let _ = stream.set_nodelay(true);
        let (client, upstream, server) = (client.clone(), args.upstream.clone(), server.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                forward(client.clone(), upstream.clone(), req)
            });
            // A client that goes away mid-request is not an error here.
            let _ = server.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// `req` sent on to `upstream`; a 502 when it cannot be.
async fn forward(
    client: Forwarder,
    upstream: Authority,
    req: Request<Incoming>,
) -> Result<Response<AnswerBody>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(upstream);
    uri.path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .or(Some(PathAndQuery::from_static("/")));
    let Ok(uri) = Uri::from_parts(uri) else {
        return Ok(bad_gateway());
    };
    parts.uri = uri;
    match client.request(Request::from_parts(parts, body)).await {
        Ok(answer) => Ok(answer.map(BodyExt::boxed)),
        Err(_) => Ok(bad_gateway()),
    }
}

fn bad_gateway() -> Response<AnswerBody> {
    let mut answer = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *answer.status_mut() = StatusCode::BAD_GATEWAY;
    answer
}
