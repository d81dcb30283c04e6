//! The fault campaign: thousands of requests through a pool where most
//! accounts misbehave in every way the mock knows, while clients hang up
//! at random. Every request that could be served is served, every other
//! one gets a well-formed error in time, and nothing is left behind: no
//! slot, no waiter, no task, no connection, no open upstream stream.
//!
//! The pool:
//! - Anthropic: one account per fault (429 with `retry-after`, 529, 500,
//!   connection reset, hang past the first-byte timeout, `event: error`
//!   first, mid-stream cut) each hitting a share of its requests, one
//!   slow-streaming account and one healthy account. Every Anthropic
//!   request *could be served*.
//! - OpenAI: only faulty accounts (529, reset, hang, mid-stream cut), so
//!   an OpenAI request may be *unservable*.
//!
//! What counts (see [`Outcome`]):
//! - *served*: 200 and a complete body (a JSON answer, or a stream that
//!   reaches `message_stop` / `[DONE]` without an error event);
//! - *cut after commit*: 200 from an account whose fault is a mid-stream
//!   cut, ending with a well-formed SSE `error` event (streams) or a body
//!   error (JSON answers). Once bytes reached the client no other account
//!   may take over, so these are the upstream's failures passed on
//!   faithfully, not lost requests;
//! - *refused*: an error status with a body in the API's own error format,
//!   within the request deadline (plus scheduling slack);
//! - *hung up*: the client went away on purpose, before the head or in the
//!   middle of the body.
//!
//! Every Anthropic request must be served or cut after commit (100%); an
//! OpenAI request may also be refused. Anything else fails the test.
//!
//! `FAULT_CAMPAIGN_REQUESTS` (default 5,000) and `FAULT_CAMPAIGN_SEED`
//! (default 1) change the run; `FAULT_CAMPAIGN_LOG` takes a tracing
//! filter (e.g. `tower_llm_relay=debug`) to see why an account failed.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use support::{account, Harness, CLIENT_KEY};
use tower_llm_relay::mock::{Fault, FaultPlan, MockUpstream};
use tower_llm_relay::state::StateStore;
use tower_llm_relay::AccountId;

const CONCURRENCY: usize = 64;
/// The relay's request deadline in this test.
const DEADLINE: Duration = Duration::from_secs(10);
/// Slack on top of the deadline for a busy 2-core machine.
const SLACK: Duration = Duration::from_secs(5);
const HEALTHY: &str = "a-healthy";

/// One account of the pool: id, platform, and what goes wrong there.
struct Member {
    id: &'static str,
    platform: &'static str,
    plan: FaultPlan,
}

fn random(probability: f64, fault: Fault, seed: u64) -> FaultPlan {
    FaultPlan::Random {
        probability,
        fault,
        seed,
    }
}

fn status(status: u16, retry_after: Option<u64>) -> Fault {
    Fault::Status {
        status,
        retry_after,
    }
}

fn pool(seed: u64) -> Vec<Member> {
    let cut = Fault::MidStreamCut { after_events: 2 };
    let member = |id, platform, plan| Member { id, platform, plan };
    vec![
        member(
            "a-429",
            "anthropic",
            random(0.3, status(429, Some(1)), seed + 1),
        ),
        member(
            "a-529",
            "anthropic",
            random(0.3, status(529, None), seed + 2),
        ),
        member(
            "a-500",
            "anthropic",
            random(0.3, status(500, None), seed + 3),
        ),
        member(
            "a-reset",
            "anthropic",
            random(0.3, Fault::ConnectionReset, seed + 4),
        ),
        member("a-hang", "anthropic", random(0.2, Fault::Hang, seed + 5)),
        member(
            "a-sse-error",
            "anthropic",
            random(0.3, Fault::SseErrorFirst, seed + 6),
        ),
        member("a-cut", "anthropic", random(0.2, cut.clone(), seed + 7)),
        member(
            "a-slow",
            "anthropic",
            FaultPlan::Always(Fault::SlowStream {
                interval: Duration::from_millis(30),
            }),
        ),
        member(HEALTHY, "anthropic", FaultPlan::Never),
        member("o-529", "openai", random(0.5, status(529, None), seed + 8)),
        member(
            "o-reset",
            "openai",
            random(0.5, Fault::ConnectionReset, seed + 9),
        ),
        member("o-hang", "openai", random(0.3, Fault::Hang, seed + 10)),
        member("o-cut", "openai", random(0.3, cut, seed + 11)),
        member("o-dead", "openai", FaultPlan::Always(status(500, None))),
    ]
}

fn is_cut_account(id: &str) -> bool {
    id.ends_with("-cut")
}

/// The relay's config: short upstream timeouts, so a hang costs little
/// (3 s: at 1 s a healthy answer on a starved 2-core machine sometimes
/// timed out, which rightly cooled the healthy account down), a retry
/// budget that never runs dry (the campaign checks failover, not
/// the budget), room for the whole concurrency on the healthy account,
/// and no moving of sessions for first-token time: that is a latency
/// policy, not a failure, and on a starved machine the busiest account
/// looks slow while it is merely busy. Sessions may then
/// move only because their account failed, which is what is checked.
fn config(pool: &[Member]) -> String {
    let mut toml = format!(
        "[upstream]\nfirst_byte_timeout_secs = 3\nstream_first_byte_timeout_secs = 3\n\
         pool_idle_timeout_secs = 1\n\
         [scheduling]\nretry_budget_percent = 1000.0\nrequest_deadline_secs = {}\n\
         cooldown_wait_max_secs = 1\nsticky_ttft_factor = 1000.0\n",
        DEADLINE.as_secs()
    );
    for member in pool {
        toml += &account(
            member.id,
            member.platform,
            "api_key",
            &format!("cred-{}", member.id),
            "{base}",
        );
        let concurrency = if member.id == HEALTHY {
            CONCURRENCY
        } else {
            16
        };
        toml += &format!("concurrency = {concurrency}\n");
        match member.id {
            "o-dead" => toml += "models = [\"gpt-dead\"]\n",
            id if id.starts_with("o-") => toml += "models = [\"gpt-4o\"]\n",
            _ => {}
        }
    }
    toml
}

// === The requests ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Anthropic,
    OpenAi,
    /// A model only a dead account serves: never servable.
    OpenAiDead,
}

/// How the client behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HangUp {
    Never,
    /// Gives up before the head arrives, after this many milliseconds.
    BeforeHead(u64),
    /// Reads the first frame of the body, then goes away.
    MidBody,
}

#[derive(Debug, Clone)]
struct Call {
    api: Api,
    stream: bool,
    session: Option<String>,
    hang_up: HangUp,
}

impl Call {
    fn request(&self, base: &str) -> Request<Full<Bytes>> {
        let (path, body) = match self.api {
            Api::Anthropic => {
                let mut body = serde_json::json!({
                    "model": "claude-sonnet-4-5",
                    "max_tokens": 64,
                    "stream": self.stream,
                    // An empty first message: no session hash from text.
                    "messages": [{"role": "user", "content": ""}],
                });
                if let Some(session) = &self.session {
                    body["metadata"] =
                        serde_json::json!({"user_id": format!("user_x_session_{session}")});
                }
                ("/v1/messages", body)
            }
            Api::OpenAi | Api::OpenAiDead => {
                let text = self.session.clone().unwrap_or_default();
                let model = if self.api == Api::OpenAi {
                    "gpt-4o"
                } else {
                    "gpt-dead"
                };
                let body = serde_json::json!({
                    "model": model,
                    "stream": self.stream,
                    "messages": [{"role": "user", "content": text}],
                });
                ("/v1/chat/completions", body)
            }
        };
        Request::post(format!("{base}{path}"))
            .header("x-api-key", CLIENT_KEY)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request builds")
    }
}

/// A unit of work for one client task: one sessionless request, or a
/// conversation whose requests go one after the other.
type Job = Vec<Call>;

fn jobs(total: usize, rng: &mut SmallRng) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut n = 0;
    while n < total {
        let api = match rng.random_range(0..100) {
            0..70 => Api::Anthropic,
            70..95 => Api::OpenAi,
            _ => Api::OpenAiDead,
        };
        let in_session = rng.random_bool(0.5);
        let len = if in_session {
            rng.random_range(2..=8).min(total - n)
        } else {
            1
        };
        let session = in_session.then(|| format!("{:08x}-0000-4000-8000-{:012x}", jobs.len(), n));
        let job = (0..len)
            .map(|_| {
                let hang_up = match rng.random_range(0..100) {
                    0..5 => HangUp::BeforeHead(rng.random_range(0..40)),
                    5..10 => HangUp::MidBody,
                    _ => HangUp::Never,
                };
                n += 1;
                Call {
                    api,
                    stream: rng.random_bool(0.5),
                    session: session.clone(),
                    hang_up,
                }
            })
            .collect();
        jobs.push(job);
    }
    jobs
}

// === What happened ===

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Served {
        account: String,
    },
    CutAfterCommit {
        account: String,
    },
    Refused {
        status: u16,
        message: String,
    },
    HungUp,
    /// Anything else: the test fails and prints these.
    Wrong(String),
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn run_call(client: &HttpClient, base: &str, call: &Call) -> Outcome {
    let started = Instant::now();
    let pending = client.request(call.request(base));
    let response = match call.hang_up {
        HangUp::BeforeHead(ms) => {
            return match tokio::time::timeout(Duration::from_millis(ms), pending).await {
                // Too fast to hang up on: read it and judge it.
                Ok(Ok(response)) => judge(call, response, started).await,
                Ok(Err(e)) => Outcome::Wrong(format!("request failed: {e}")),
                Err(_) => Outcome::HungUp,
            };
        }
        _ => match tokio::time::timeout(DEADLINE + SLACK, pending).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return Outcome::Wrong(format!("request failed: {e}")),
            Err(_) => return Outcome::Wrong("no head within the deadline".into()),
        },
    };
    if call.hang_up == HangUp::MidBody && response.status() == 200 {
        let mut body = response.into_body();
        let _ = tokio::time::timeout(DEADLINE + SLACK, body.frame()).await;
        drop(body);
        return Outcome::HungUp;
    }
    judge(call, response, started).await
}

/// Reads an answer to its end and says what it was.
async fn judge(
    call: &Call,
    response: http::Response<hyper::body::Incoming>,
    started: Instant,
) -> Outcome {
    let (parts, body) = response.into_parts();
    let account = parts
        .headers
        .get("x-relay-account")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let collected = tokio::time::timeout(DEADLINE + SLACK, body.collect()).await;
    let elapsed = started.elapsed();
    let body = match collected {
        Err(_) => return Outcome::Wrong(format!("body not done in time from {account}")),
        Ok(Err(e)) => {
            // A JSON answer cut upstream after its head went out.
            return if parts.status == 200 && !call.stream && is_cut_account(&account) {
                Outcome::CutAfterCommit { account }
            } else {
                Outcome::Wrong(format!("body error from {account:?}: {e}"))
            };
        }
        Ok(Ok(body)) => body.to_bytes(),
    };
    let text = String::from_utf8_lossy(&body);
    if parts.status != 200 {
        if elapsed > DEADLINE + SLACK {
            return Outcome::Wrong(format!("{} after {elapsed:?}", parts.status));
        }
        return match well_formed_error(call.api, &body) {
            Ok(()) => Outcome::Refused {
                status: parts.status.as_u16(),
                message: text.into_owned(),
            },
            Err(why) => Outcome::Wrong(format!("{}: {why}: {text}", parts.status)),
        };
    }
    if account.is_empty() {
        return Outcome::Wrong(format!("200 without x-relay-account: {text}"));
    }
    if !call.stream {
        return match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(json) if json.get("error").is_none() => Outcome::Served { account },
            _ => Outcome::Wrong(format!("bad JSON answer from {account}: {text}")),
        };
    }
    let (error_event, complete) = match call.api {
        Api::Anthropic => (
            text.contains("event: error\n"),
            text.contains("event: message_stop"),
        ),
        Api::OpenAi | Api::OpenAiDead => {
            (text.contains("\"error\""), text.contains("data: [DONE]"))
        }
    };
    if error_event {
        // Well formed: the last event, and valid JSON in the API's format.
        let last = text.trim_end().rsplit("\n\n").next().unwrap_or_default();
        let data = last
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap_or_default();
        if is_cut_account(&account) && well_formed_error(call.api, data.as_bytes()).is_ok() {
            return Outcome::CutAfterCommit { account };
        }
        return Outcome::Wrong(format!("error event from {account}: {text}"));
    }
    if complete {
        Outcome::Served { account }
    } else {
        Outcome::Wrong(format!("incomplete stream from {account}: {text}"))
    }
}

/// An error body in the API's own format.
fn well_formed_error(api: Api, body: &[u8]) -> Result<(), String> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let error = &json["error"];
    let ok = match api {
        Api::Anthropic => json["type"] == "error" && error["type"].is_string(),
        Api::OpenAi | Api::OpenAiDead => error["type"].is_string(),
    };
    if ok && error["message"].is_string() {
        Ok(())
    } else {
        Err("not in the API's error format".into())
    }
}

// === The campaign ===

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Polls `check` until it holds or `within` passes.
async fn settles(within: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_survives_a_fault_campaign() {
    let total: usize = env_or("FAULT_CAMPAIGN_REQUESTS", 5_000);
    let seed: u64 = env_or("FAULT_CAMPAIGN_SEED", 1);
    let started = Instant::now();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("FAULT_CAMPAIGN_LOG").unwrap_or_else(|_| "off".into()))
        .try_init();

    let tasks_before = alive_tasks();
    let pool = pool(seed);
    let mock = MockUpstream::builder().start().await.expect("mock starts");
    for member in &pool {
        mock.set_faults(&format!("cred-{}", member.id), member.plan.clone());
    }
    let (h, store) = Harness::with_store(mock, &config(&pool)).await;
    let base = format!("http://{}", h.addr);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_millis(500))
        .pool_timer(TokioTimer::new())
        .build_http();

    let mut rng = SmallRng::seed_from_u64(seed);
    let queue = Arc::new(Mutex::new(jobs(total, &mut rng)));
    let results: Arc<Mutex<Vec<(Call, Outcome)>>> = Arc::default();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (queue, results, client, base) =
                (queue.clone(), results.clone(), client.clone(), base.clone());
            tokio::spawn(async move {
                loop {
                    let Some(job) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    for call in job {
                        let outcome = run_call(&client, &base, &call).await;
                        results.lock().unwrap().push((call, outcome));
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("client task");
    }
    let load_time = started.elapsed();
    drop(client);
    let results = std::mem::take(&mut *results.lock().unwrap());
    assert_eq!(results.len(), total);

    // === Every request accounted for ===
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_account: BTreeMap<String, usize> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (call, outcome) in &results {
        let key = match (outcome, call.api) {
            (Outcome::Served { account }, Api::OpenAiDead) => {
                wrong.push(format!("a dead model was served by {account}"));
                "wrong"
            }
            (Outcome::Served { account }, _) => {
                *by_account.entry(account.clone()).or_default() += 1;
                "served"
            }
            (Outcome::CutAfterCommit { .. }, _) => "cut_after_commit",
            (Outcome::Refused { .. }, Api::OpenAi | Api::OpenAiDead) => "refused",
            (Outcome::Refused { status, message }, Api::Anthropic) => {
                wrong.push(format!(
                    "servable request refused with {status}: {message} {call:?}"
                ));
                "wrong"
            }
            (Outcome::HungUp, _) => "hung_up",
            (Outcome::Wrong(why), _) => {
                wrong.push(format!("{why} ({call:?})"));
                "wrong"
            }
        };
        *counts.entry(key).or_default() += 1;
    }

    // === Sticky sessions: a session leaves its account only when that
    // account failed; the healthy account never fails, so never leaves ===
    let mut sessions: HashMap<&str, Vec<&str>> = HashMap::new();
    for (call, outcome) in &results {
        if let (Some(session), Outcome::Served { account }, Api::Anthropic) =
            (&call.session, outcome, call.api)
        {
            sessions.entry(session).or_default().push(account);
        }
    }
    let mut moves = 0;
    for (session, served) in &sessions {
        for pair in served.windows(2) {
            if pair[0] != pair[1] {
                moves += 1;
                if pair[0] == HEALTHY {
                    wrong.push(format!(
                        "session {session} left the healthy account: {served:?}"
                    ));
                }
            }
        }
    }

    // === Nothing left behind ===
    let ids: Vec<AccountId> = pool.iter().map(|m| AccountId::from(m.id)).collect();
    let id_refs: Vec<&AccountId> = ids.iter().collect();
    let idle = settles(Duration::from_secs(10), async || {
        let loads = store.loads(&id_refs, None).await.expect("memory store");
        loads.iter().all(|l| l.in_flight == 0 && l.waiting == 0)
    })
    .await;
    let loads = store.loads(&id_refs, None).await.expect("memory store");
    let held: u32 = loads.iter().map(|l| l.in_flight).sum();
    let waiting: u32 = loads.iter().map(|l| l.waiting).sum();
    let upstream_quiet = settles(Duration::from_secs(10), async || {
        h.mock.open_streams() == 0 && h.mock.open_connections() == 0
    })
    .await;
    // The harness holds two tasks (the relay's server, the mock's accept
    // loop); every connection and request task must be gone.
    let harness_tasks = 2;
    let tasks_settled = settles(Duration::from_secs(10), async || {
        alive_tasks() <= tasks_before + harness_tasks
    })
    .await;
    let tasks_after = alive_tasks();

    println!(
        "fault campaign: {total} requests in {:.1}s (seed {seed}, concurrency {CONCURRENCY}): \
         served {} cut_after_commit {} refused {} hung_up {} wrong {} | \
         sessions {} moves {} | upstream requests {} | slots {held} waiters {waiting} \
         | tasks {tasks_before}->{tasks_after} | mock connections {} streams {} | served by {by_account:?}",
        load_time.as_secs_f64(),
        counts.get("served").unwrap_or(&0),
        counts.get("cut_after_commit").unwrap_or(&0),
        counts.get("refused").unwrap_or(&0),
        counts.get("hung_up").unwrap_or(&0),
        counts.get("wrong").unwrap_or(&0),
        sessions.len(),
        moves,
        h.mock.request_count(),
        h.mock.open_connections(),
        h.mock.open_streams(),
    );
    assert!(
        wrong.is_empty(),
        "{} wrong outcomes, first ones:\n{}",
        wrong.len(),
        wrong[..wrong.len().min(10)].join("\n")
    );
    assert!(idle, "slots or waiters left: {loads:?}");
    assert!(
        upstream_quiet,
        "upstream left open: {} connections, {} streams",
        h.mock.open_connections(),
        h.mock.open_streams()
    );
    assert!(
        tasks_settled,
        "task leak: {tasks_before} tasks before, {tasks_after} after"
    );
    // The campaign must have exercised what it claims to.
    for outcome in ["served", "cut_after_commit", "refused", "hung_up"] {
        assert!(
            counts.get(outcome).copied().unwrap_or(0) > 0,
            "no {outcome} outcome"
        );
    }
    assert!(by_account.contains_key(HEALTHY));
    assert!(
        by_account.len() > 3,
        "faulty accounts served too: {by_account:?}"
    );
}
