//! The status page at `/admin`, rendered by a real headless Chromium from a
//! running proxy. Screenshots (desktop and phone widths) are saved under
//! `target/test-artifacts/`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::proxy_process::{ConfigFile, Proxy};
use support::{account, messages_body};
use tower_llm_relay::mock::{Fault, FaultPlan, MockUpstream};

const ADMIN_KEY: &str = "sk-relay-admin-page";
const SECRETS: [&str; 4] = [
    ADMIN_KEY,
    "sk-ant-page-ok",
    "sk-ant-page-limited",
    "sk-relay-page-alice",
];

/// Debian's `chromium` (CI installs it); the test fails without it.
fn chromium() -> PathBuf {
    let candidates = [
        std::env::var("CHROMIUM").unwrap_or_default(),
        "/usr/bin/chromium".to_owned(),
        "/usr/bin/chromium-browser".to_owned(),
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("headless Chromium is needed: apt-get install chromium (or set CHROMIUM)")
}

/// `target/test-artifacts`, next to the test binaries' `debug` dir.
fn artifacts() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test binary lives in target/<profile>/deps");
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create the artifacts dir");
    dir
}

/// Runs headless Chromium on `url` with `action` (`--dump-dom` or
/// `--screenshot=…`), with the flags this machine's closed network needs.
async fn run_chromium(url: String, window: (u32, u32), action: String) -> String {
    tokio::task::spawn_blocking(move || {
        let profile = tempdir();
        let output = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                // Lets the inline script tick before the DOM is dumped.
                "--virtual-time-budget=1500",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--window-size={},{}", window.0, window.1))
            .arg(action)
            .arg(url)
            .output()
            .expect("chromium runs");
        let _ = std::fs::remove_dir_all(&profile);
        assert!(output.status.success(), "chromium failed: {output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    })
    .await
    .expect("the chromium task")
}

fn tempdir() -> PathBuf {
    let n: u64 = rand::random();
    let dir = std::env::temp_dir().join(format!("relay-chromium-{n}"));
    std::fs::create_dir_all(&dir).expect("create a chromium profile dir");
    dir
}

/// The width and height of a PNG file, from its IHDR chunk.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).expect("the screenshot was written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    (be(16), be(20))
}

#[tokio::test]
async fn the_status_page_renders_every_account_and_key_in_chromium() {
    let mock = MockUpstream::start().await.unwrap();
    mock.set_faults(
        "sk-ant-page-limited",
        FaultPlan::Always(Fault::Status {
            status: 429,
            retry_after: Some(120),
        }),
    );
    let base = mock.base_url();
    let config = ConfigFile::new(&format!(
        "admin_key = \"{ADMIN_KEY}\"\n\
         [[keys]]\nkey = \"sk-relay-page-alice\"\nname = \"alice\"\n\
         [[keys]]\nkey = \"sk-relay-page-bob\"\nname = \"bob<script>\"\n{}priority = 1\n{}priority = 2\n",
        account("page-limited", "anthropic", "api_key", "sk-ant-page-limited", &base),
        account("page-ok", "anthropic", "api_key", "sk-ant-page-ok", &base),
    ));
    let proxy = Proxy::start(config.path(), &[]);
    for _ in 0..3 {
        let answer = support::send(
            Request::post(proxy.url("/v1/messages"))
                .header("x-api-key", "sk-relay-page-alice")
                .body(Full::new(Bytes::from(messages_body(
                    "claude-sonnet-4-5",
                    false,
                ))))
                .unwrap(),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }

    let page = format!("http://admin:{ADMIN_KEY}@{}/admin", proxy.addr);
    let dom = run_chromium(page.clone(), (1280, 900), "--dump-dom".to_owned()).await;
    assert!(dom.contains("<title>Relay status</title>"), "{dom}");
    assert!(
        dom.contains(r#"data-account="page-ok" data-state="healthy""#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"data-account="page-limited" data-state="cooling""#),
        "{dom}"
    );
    assert!(dom.contains("rate_limited"), "the cooldown reason shows");
    // The countdown was ticked by the page's script (the server writes
    // "for N s", the script "N s left").
    assert!(dom.contains(" s left</span>"), "{dom}");
    assert!(dom.contains(r#"<tr data-key="alice">"#), "{dom}");
    // Three served requests for alice, none for bob; bob's name is escaped.
    assert!(
        dom.contains(r#"<td data-label="Requests" class="num">3</td>"#),
        "{dom}"
    );
    assert!(dom.contains("bob&lt;script&gt;"), "{dom}");
    for secret in SECRETS {
        assert!(!dom.contains(secret), "{secret} leaked into the page");
    }

    let dir = artifacts();
    for (name, window) in [
        ("status-page.png", (1280, 900)),
        ("status-page-phone.png", (390, 844)),
    ] {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        run_chromium(
            page.clone(),
            window,
            format!("--screenshot={}", path.display()),
        )
        .await;
        assert_eq!(png_size(&path), window, "{name}");
    }
}

#[tokio::test]
async fn the_status_page_needs_the_admin_key() {
    let mock = MockUpstream::start().await.unwrap();
    let config = ConfigFile::new(&format!(
        "admin_key = \"{ADMIN_KEY}\"\n[[keys]]\nkey = \"sk-relay-page-alice\"\nname = \"alice\"\n{}",
        account("page-ok", "anthropic", "api_key", "sk-ant-page-ok", &mock.base_url()),
    ));
    let proxy = Proxy::start(config.path(), &[]);
    let wrong = format!("http://admin:sk-relay-page-alice@{}/admin", proxy.addr);
    let dom = run_chromium(wrong, (800, 600), "--dump-dom".to_owned()).await;
    assert!(!dom.contains("Relay status"), "{dom}");
    assert!(!dom.contains("page-ok"), "{dom}");
    let plain = support::send(
        Request::get(proxy.url("/admin"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(plain.status, 401);
    assert_eq!(
        plain.headers["www-authenticate"],
        "Basic realm=\"relay admin\""
    );
}
