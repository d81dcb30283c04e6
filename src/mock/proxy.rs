//! Egress proxies for tests: HTTP `CONNECT` and SOCKS5 on 127.0.0.1 that
//! count the tunnels they open. They only tunnel to loopback addresses.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The largest `CONNECT` request head read.
const MAX_CONNECT_HEAD: usize = 16 * 1024;

/// The protocol a [`MockProxy`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// HTTP/1.1 `CONNECT` tunnels (URL `http://127.0.0.1:PORT`).
    HttpConnect,
    /// SOCKS5 without authentication, `CONNECT` only (URL
    /// `socks5://127.0.0.1:PORT`).
    Socks5,
}

/// A running egress proxy on 127.0.0.1; dropping it stops it and closes
/// its tunnels.
#[derive(Debug)]
pub struct MockProxy {
    addr: SocketAddr,
    kind: ProxyKind,
    tunnels: Arc<AtomicUsize>,
    accept_task: JoinHandle<()>,
    // Dropped with the proxy, which ends every tunnel task.
    _shutdown: watch::Sender<()>,
}

impl Drop for MockProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl MockProxy {
    /// Starts a proxy of `kind` on a free loopback port.
    pub async fn start(kind: ProxyKind) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let tunnels = Arc::new(AtomicUsize::new(0));
        let (shutdown, shut_down) = watch::channel(());
        let counter = tunnels.clone();
        let accept_task = tokio::spawn(async move {
            loop {
                let client = match listener.accept().await {
                    Ok((client, _)) => client,
                    Err(_) => {
                        // Out of file descriptors and the like: back off.
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let counter = counter.clone();
                let mut shut_down = shut_down.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = tunnel(kind, client, &counter) => {}
                        _ = shut_down.changed() => {}
                    }
                });
            }
        });
        Ok(Self {
            addr,
            kind,
            tunnels,
            accept_task,
            _shutdown: shutdown,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its URL, for a client's proxy setting.
    pub fn url(&self) -> String {
        match self.kind {
            ProxyKind::HttpConnect => format!("http://{}", self.addr),
            ProxyKind::Socks5 => format!("socks5://{}", self.addr),
        }
    }

    /// Tunnels opened so far.
    pub fn tunnels(&self) -> usize {
        self.tunnels.load(Ordering::SeqCst)
    }
}

async fn tunnel(kind: ProxyKind, client: TcpStream, counter: &AtomicUsize) {
    let opened = match kind {
        ProxyKind::HttpConnect => open_http_connect(client).await,
        ProxyKind::Socks5 => open_socks5(client).await,
    };
    match opened {
        Ok((mut client, mut target)) => {
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut target).await;
        }
        Err(error) => tracing::debug!(%error, "mock proxy: tunnel refused"),
    }
}

/// Only loopback targets: the mock must never reach beyond this machine.
/// Names other than `localhost` are refused rather than looked up.
fn loopback_target(host: &str, port: u16) -> Option<SocketAddr> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse::<IpAddr>().ok()?
    };
    ip.is_loopback().then_some(SocketAddr::new(ip, port))
}

fn refused(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, why.to_owned())
}

async fn open_http_connect(mut client: TcpStream) -> io::Result<(TcpStream, TcpStream)> {
    let mut head = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(at) = memchr::memmem::find(&head, b"\r\n\r\n") {
            break at + 4;
        }
        if head.len() > MAX_CONNECT_HEAD {
            return Err(refused("CONNECT head too large"));
        }
        let mut chunk = [0_u8; 1024];
        let read = client.read(&mut chunk).await?;
        if read == 0 {
            return Err(refused("closed before the CONNECT head ended"));
        }
        head.extend_from_slice(&chunk[..read]);
    };
    let request_line = head
        .split(|byte| *byte == b'\n')
        .next()
        .and_then(|line| std::str::from_utf8(line).ok())
        .unwrap_or_default()
        .trim_end();
    let mut words = request_line.split(' ');
    let target = match (words.next(), words.next()) {
        (Some("CONNECT"), Some(authority)) => authority
            .rsplit_once(':')
            .and_then(|(host, port)| loopback_target(host, port.parse().ok()?)),
        _ => None,
    };
    let Some(target) = target else {
        client
            .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
            .await?;
        return Err(refused("not a CONNECT to a loopback address"));
    };
    let mut upstream = match TcpStream::connect(target).await {
        Ok(upstream) => upstream,
        Err(error) => {
            client
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                .await?;
            return Err(error);
        }
    };
    client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await?;
    // Bytes the client sent right after its head belong to the tunnel.
    upstream.write_all(&head[head_end..]).await?;
    Ok((client, upstream))
}

/// SOCKS5 reply codes used here (RFC 1928 §6).
const SOCKS_OK: u8 = 0x00;
const SOCKS_NOT_ALLOWED: u8 = 0x02;
const SOCKS_REFUSED: u8 = 0x05;
const SOCKS_BAD_COMMAND: u8 = 0x07;
const SOCKS_BAD_ADDRESS: u8 = 0x08;

async fn socks_reply(client: &mut TcpStream, code: u8) -> io::Result<()> {
    client.write_all(&[5, code, 0, 1, 0, 0, 0, 0, 0, 0]).await
}

async fn open_socks5(mut client: TcpStream) -> io::Result<(TcpStream, TcpStream)> {
    let mut greeting = [0_u8; 2];
    client.read_exact(&mut greeting).await?;
    if greeting[0] != 5 {
        return Err(refused("not SOCKS5"));
    }
    let mut methods = vec![0_u8; usize::from(greeting[1])];
    client.read_exact(&mut methods).await?;
    if !methods.contains(&0) {
        client.write_all(&[5, 0xFF]).await?;
        return Err(refused("the client offers no 'no authentication' method"));
    }
    client.write_all(&[5, 0]).await?;

    let mut request = [0_u8; 4];
    client.read_exact(&mut request).await?;
    if request[1] != 1 {
        socks_reply(&mut client, SOCKS_BAD_COMMAND).await?;
        return Err(refused("only CONNECT is supported"));
    }
    let host = match request[3] {
        1 => {
            let mut octets = [0_u8; 4];
            client.read_exact(&mut octets).await?;
            Ipv4Addr::from(octets).to_string()
        }
        3 => {
            let mut length = [0_u8; 1];
            client.read_exact(&mut length).await?;
            let mut name = vec![0_u8; usize::from(length[0])];
            client.read_exact(&mut name).await?;
            String::from_utf8_lossy(&name).into_owned()
        }
        4 => {
            let mut octets = [0_u8; 16];
            client.read_exact(&mut octets).await?;
            Ipv6Addr::from(octets).to_string()
        }
        _ => {
            socks_reply(&mut client, SOCKS_BAD_ADDRESS).await?;
            return Err(refused("unknown address type"));
        }
    };
    let mut port = [0_u8; 2];
    client.read_exact(&mut port).await?;
    let Some(target) = loopback_target(&host, u16::from_be_bytes(port)) else {
        socks_reply(&mut client, SOCKS_NOT_ALLOWED).await?;
        return Err(refused("not a loopback address"));
    };
    match TcpStream::connect(target).await {
        Ok(upstream) => {
            socks_reply(&mut client, SOCKS_OK).await?;
            Ok((client, upstream))
        }
        Err(error) => {
            socks_reply(&mut client, SOCKS_REFUSED).await?;
            Err(error)
        }
    }
}
