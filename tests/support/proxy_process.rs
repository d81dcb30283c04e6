//! The built `examples/proxy` binary, run as an operator would.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};

/// The proxy example, built by `cargo test` next to the test binaries.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    dir.join("examples")
        .join(format!("proxy{}", std::env::consts::EXE_SUFFIX))
}

/// A config file that removes itself.
pub struct ConfigFile(PathBuf);

impl ConfigFile {
    pub fn new(text: &str) -> Self {
        let n: u64 = rand::random();
        let path = std::env::temp_dir().join(format!("relay-test-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, text).expect("write temp config");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A running proxy; killed when dropped.
pub struct Proxy {
    pub child: Child,
    pub addr: String,
    /// Its stderr (the logs), when asked for.
    pub stderr: Option<ChildStderr>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    /// Starts the proxy on `config`, listening on a free port, with `env`.
    pub fn start(config: &Path, env: &[(&str, &str)]) -> Proxy {
        Self::start_with(config, env, &[], false)
    }

    /// As [`Proxy::start`], with more arguments, and its stderr kept for
    /// the test when `logs` is set.
    pub fn start_with(config: &Path, env: &[(&str, &str)], args: &[&str], logs: bool) -> Proxy {
        let mut child = Command::new(binary())
            .arg("--config")
            .arg(config)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(if logs { Stdio::piped() } else { Stdio::null() })
            .spawn()
            .expect("the proxy example was built by cargo test");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("a first line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_owned();
        let stderr = child.stderr.take();
        Proxy {
            child,
            addr,
            stderr,
        }
    }

    /// The proxy's URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}
