//! Egress proxies for tests: an HTTP `CONNECT` proxy and a SOCKS5 proxy on
//! 127.0.0.1 that count the tunnels they open.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The protocol a [`MockProxy`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// HTTP `CONNECT` tunnels.
    HttpConnect,
    /// SOCKS5, no authentication, `CONNECT` command.
    Socks5,
}

/// A running egress proxy; dropping it stops it.
#[derive(Debug)]
pub struct MockProxy {
    addr: SocketAddr,
    kind: ProxyKind,
    tunnels: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for MockProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockProxy {
    /// Starts a proxy of `kind` on a free loopback port.
    pub async fn start(kind: ProxyKind) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let tunnels = Arc::new(AtomicUsize::new(0));
        let counter = tunnels.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let opened = match kind {
                        ProxyKind::HttpConnect => http_connect(client).await,
                        ProxyKind::Socks5 => socks5(client).await,
                    };
                    if let Ok((mut client, mut upstream)) = opened {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        Ok(Self {
            addr,
            kind,
            tunnels,
            task,
        })
    }

    /// Its URL for an account's `proxy` setting.
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

fn refused(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

async fn http_connect(client: TcpStream) -> io::Result<(TcpStream, TcpStream)> {
    let mut reader = BufReader::new(client);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let target = line
        .strip_prefix("CONNECT ")
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or_else(|| refused("not a CONNECT request"))?
        .to_owned();
    // Skip the rest of the head.
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).await? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let upstream = TcpStream::connect(&target).await?;
    let mut client = reader.into_inner();
    client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await?;
    Ok((client, upstream))
}

async fn socks5(mut client: TcpStream) -> io::Result<(TcpStream, TcpStream)> {
    let mut greeting = [0u8; 2];
    client.read_exact(&mut greeting).await?;
    if greeting[0] != 5 {
        return Err(refused("not SOCKS5"));
    }
    let mut methods = vec![0u8; usize::from(greeting[1])];
    client.read_exact(&mut methods).await?;
    client.write_all(&[5, 0]).await?;
    let mut head = [0u8; 4];
    client.read_exact(&mut head).await?;
    if head[1] != 1 {
        return Err(refused("only CONNECT"));
    }
    let host = match head[3] {
        1 => {
            let mut ip = [0u8; 4];
            client.read_exact(&mut ip).await?;
            std::net::Ipv4Addr::from(ip).to_string()
        }
        3 => {
            let mut len = [0u8; 1];
            client.read_exact(&mut len).await?;
            let mut name = vec![0u8; usize::from(len[0])];
            client.read_exact(&mut name).await?;
            String::from_utf8(name).map_err(|_| refused("bad host name"))?
        }
        _ => return Err(refused("unsupported address type")),
    };
    let mut port = [0u8; 2];
    client.read_exact(&mut port).await?;
    let upstream = TcpStream::connect((host.as_str(), u16::from_be_bytes(port))).await?;
    client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
    Ok((client, upstream))
}
