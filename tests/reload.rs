//! `SIGHUP` reloads the proxy's accounts and keys from its config file
//! without dropping a request in flight.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use support::proxy_process::{ConfigFile, Proxy};
use support::{account, messages_body};
use tower_llm_relay::mock::MockUpstream;

fn config(keys: &[&str], accounts: &[(&str, &str)], base: &str) -> String {
    let mut text = String::new();
    for key in keys {
        text += &format!("[[keys]]\nkey = \"sk-relay-{key}\"\nname = \"{key}\"\n");
    }
    for (id, credential) in accounts {
        text += &account(id, "anthropic", "api_key", credential, base);
    }
    text
}

fn post(proxy: &Proxy, key: &str, stream: bool) -> Request<Full<Bytes>> {
    Request::post(proxy.url("/v1/messages"))
        .header("x-api-key", format!("sk-relay-{key}"))
        .body(Full::new(Bytes::from(messages_body(
            "claude-sonnet-4-5",
            stream,
        ))))
        .unwrap()
}

fn hang_up(proxy: &Proxy) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &proxy.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

#[tokio::test]
async fn sighup_swaps_accounts_and_keys_and_the_removed_account_drains() {
    // 40 deltas 50 ms apart: a stream of about two seconds.
    let mock = MockUpstream::builder()
        .stream_deltas(40)
        .event_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    let base = mock.base_url();
    let file = ConfigFile::new(&config(&["alice"], &[("old-1", "k-old")], &base));
    let proxy = Proxy::start(file.path(), &[]);

    // A stream on the account that the new config removes.
    let streaming = support::open(post(&proxy, "alice", true)).await;
    assert_eq!(streaming.status(), 200);
    assert_eq!(streaming.headers()["x-relay-account"], "old-1");
    let body = tokio::spawn(async move { streaming.into_body().collect().await });

    std::fs::write(
        file.path(),
        config(&["alice", "bob"], &[("new-1", "k-new")], &base),
    )
    .unwrap();
    hang_up(&proxy);

    // New requests see the new pool and the new key once the reload is in.
    let mut served_by = String::new();
    for _ in 0..100 {
        let answer = support::send(post(&proxy, "bob", false)).await;
        if answer.status == 200 {
            served_by = answer.headers["x-relay-account"]
                .to_str()
                .unwrap()
                .to_owned();
            break;
        }
        assert_eq!(answer.status, 401, "{}", answer.text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(served_by, "new-1", "the reload did not take effect");
    let alice = support::send(post(&proxy, "alice", false)).await;
    assert_eq!(alice.headers["x-relay-account"], "new-1");

    // The stream that started on the removed account ran to its end.
    let streamed = body
        .await
        .unwrap()
        .expect("the stream was not cut")
        .to_bytes();
    let text = String::from_utf8_lossy(&streamed);
    assert!(text.contains("event: message_stop"), "{text}");
    assert_eq!(text.matches("event: content_block_delta").count(), 40);

    // A broken file is refused and the running config kept.
    std::fs::write(file.path(), "[[accounts]]\nid = 3\n").unwrap();
    hang_up(&proxy);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let still = support::send(post(&proxy, "bob", false)).await;
    assert_eq!(still.status, 200);
    assert_eq!(still.headers["x-relay-account"], "new-1");
}
