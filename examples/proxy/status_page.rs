//! `GET /admin`: the status page. Server-rendered HTML with inline CSS, no
//! build step; it reloads itself every few seconds and a few lines of inline
//! script tick the cooldown countdowns between reloads.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tower_llm_relay::select::AccountStatus;
use tower_llm_relay::usage::Totals;
use tower_llm_relay::KeyId;

/// How often the page reloads itself, in seconds.
const REFRESH_SECS: u32 = 5;

/// One account as the status page and the admin routes show it.
pub(crate) struct AccountRow {
    pub(crate) status: AccountStatus,
    pub(crate) token_expires_at: Option<u64>,
    pub(crate) totals: Totals,
}

/// One client key as the status page and the admin routes show it.
pub(crate) struct KeyRow {
    pub(crate) name: KeyId,
    pub(crate) group: String,
    pub(crate) totals: Totals,
}

const STYLE: &str = r#"
:root { color-scheme: light dark; --ok:#1a7f37; --busy:#9a6700; --cool:#0969da; --bad:#cf222e; --muted:#6e7781; }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; padding: 1rem; max-width: 72rem; margin-inline: auto; }
h1 { font-size: 1.3rem; margin: 0 0 .2rem; }
h2 { font-size: 1.05rem; margin: 1.5rem 0 .5rem; }
.sub { color: var(--muted); margin: 0 0 1rem; }
.summary { display: flex; flex-wrap: wrap; gap: .5rem; }
.summary span { padding: .2rem .6rem; border-radius: 1rem; background: color-mix(in srgb, currentColor 8%, transparent); }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; padding: .45rem .5rem; border-bottom: 1px solid color-mix(in srgb, currentColor 15%, transparent); vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: .8rem; text-transform: uppercase; letter-spacing: .03em; }
td.num { font-variant-numeric: tabular-nums; }
.state { display: inline-block; padding: .1rem .55rem; border-radius: 1rem; color: #fff; font-weight: 600; font-size: .8rem; }
.state.healthy { background: var(--ok); } .state.busy { background: var(--busy); }
.state.cooling { background: var(--cool); } .state.broken { background: var(--bad); }
.bar { width: 7rem; height: .6rem; border-radius: .3rem; background: color-mix(in srgb, currentColor 12%, transparent); overflow: hidden; }
.bar > i { display: block; height: 100%; background: var(--busy); }
.small { font-size: .8rem; color: var(--muted); }
.err { display: inline-block; margin: 0 .25rem .15rem 0; padding: 0 .4rem; border-radius: .3rem; background: color-mix(in srgb, var(--bad) 15%, transparent); font-size: .75rem; }
@media (max-width: 640px) {
  thead { display: none; }
  table, tbody, tr, td { display: block; width: 100%; }
  tr { border: 1px solid color-mix(in srgb, currentColor 15%, transparent); border-radius: .5rem; margin-bottom: .6rem; padding: .3rem .5rem; }
  td { border: 0; padding: .2rem 0; }
  td[data-label]::before { content: attr(data-label) ": "; color: var(--muted); font-size: .8rem; }
}
"#;

/// Ticks every `[data-until]` countdown once a second.
const SCRIPT: &str = r#"
(function () {
  function tick() {
    var now = Date.now() / 1000;
    document.querySelectorAll('[data-until]').forEach(function (el) {
      var left = Math.max(0, Math.round(Number(el.dataset.until) - now));
      el.textContent = left > 0 ? left + ' s left' : 'ending';
    });
  }
  tick();
  setInterval(tick, 1000);
})();
"#;

/// How an account looks now, as a word and a colour.
fn state_of(row: &AccountRow, now: u64) -> &'static str {
    let s = &row.status;
    if s.cooldown_until.is_some_and(|until| until > now) {
        // Credentials refused or too many failures in a row: someone should
        // look, rather than wait.
        let broken_reason = s
            .cooldown_reason
            .is_some_and(|r| matches!(r, "auth_failed" | "credentials_rejected"));
        if s.ejected || broken_reason {
            return "broken";
        }
        return "cooling";
    }
    // One model cooling down leaves the others usable, but it is worth a
    // look all the same.
    if s.model_cooldowns.iter().any(|c| c.until > now) {
        return "cooling";
    }
    if s.in_flight >= s.concurrency && s.concurrency > 0 {
        return "busy";
    }
    "healthy"
}

/// Text safe inside HTML elements and quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// 1234567 → "1.2M": token counts at a glance.
fn compact(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}G", n as f64 / 1e9),
    }
}

fn ago(then: Option<SystemTime>, now: SystemTime) -> String {
    let Some(then) = then else {
        return "never".to_owned();
    };
    let secs = now.duration_since(then).map_or(0, |d| d.as_secs());
    match secs {
        0..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        _ => format!("{} h ago", secs / 3600),
    }
}

/// The whole page.
pub(crate) fn render(accounts: &[AccountRow], keys: &[KeyRow], now: SystemTime) -> String {
    let unix_now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut counts = [0usize; 4];
    for row in accounts {
        let i = match state_of(row, unix_now) {
            "healthy" => 0,
            "busy" => 1,
            "cooling" => 2,
            _ => 3,
        };
        counts[i] += 1;
    }
    let mut html = String::with_capacity(4096 + 600 * (accounts.len() + keys.len()));
    // Writing to a String cannot fail.
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <title>Relay status</title><style>{STYLE}</style></head><body>\
         <h1>Relay status</h1><p class=\"sub\">{} accounts, {} keys · refreshes every {REFRESH_SECS} s</p>\
         <div class=\"summary\" id=\"summary\"><span>{} healthy</span><span>{} busy</span><span>{} cooling down</span><span>{} broken</span></div>",
        accounts.len(),
        keys.len(),
        counts[0],
        counts[1],
        counts[2],
        counts[3],
    );
    html.push_str(
        "<h2>Accounts</h2><table id=\"accounts\"><thead><tr><th>Account</th><th>State</th>\
         <th>Slots</th><th>Waiting</th><th>Cooldown</th><th>Errors</th><th>TTFT</th>\
         <th>Tokens in / out</th><th>Last used</th></tr></thead><tbody>",
    );
    for row in accounts {
        let s = &row.status;
        let state = state_of(row, unix_now);
        let fill = if s.concurrency == 0 {
            0
        } else {
            (u64::from(s.in_flight) * 100 / u64::from(s.concurrency)).min(100)
        };
        let countdown = |what: &str, until: u64| {
            format!(
                "<div>{}<br><span class=\"small\" data-until=\"{until}\">for {} s</span></div>",
                escape(what),
                until - unix_now
            )
        };
        let mut cooldown = match (s.cooldown_until, s.cooldown_reason) {
            (Some(until), reason) if until > unix_now => {
                countdown(reason.unwrap_or("cooling"), until)
            }
            _ => String::new(),
        };
        for c in s.model_cooldowns.iter().filter(|c| c.until > unix_now) {
            cooldown.push_str(&countdown(&format!("{}: {}", c.model, c.reason), c.until));
        }
        if cooldown.is_empty() {
            cooldown.push('–');
        }
        let errors: String = s
            .recent_errors
            .iter()
            .rev()
            .map(|e| format!("<span class=\"err\">{}</span>", escape(e.reason)))
            .collect();
        let errors = format!(
            "{errors}<span class=\"small\">{:.0}% errors</span>",
            s.error_rate * 100.0
        );
        let ttft = s
            .ttft_ms
            .map_or_else(|| "–".to_owned(), |ms| format!("{ms:.0} ms"));
        let u = &row.totals.usage;
        let _ = write!(
            html,
            "<tr data-account=\"{id}\" data-state=\"{state}\">\
             <td data-label=\"Account\"><b>{id}</b><br><span class=\"small\">{platform} · {kind} · {group}</span></td>\
             <td data-label=\"State\"><span class=\"state {state}\">{state}</span></td>\
             <td data-label=\"Slots\" class=\"num\"><div class=\"bar\" title=\"{in_flight} of {limit}\"><i style=\"width:{fill}%\"></i></div>{in_flight} / {limit}</td>\
             <td data-label=\"Waiting\" class=\"num\">{waiting}</td>\
             <td data-label=\"Cooldown\">{cooldown}</td>\
             <td data-label=\"Errors\">{errors}</td>\
             <td data-label=\"TTFT\" class=\"num\">{ttft}</td>\
             <td data-label=\"Tokens\" class=\"num\">{input} / {output}</td>\
             <td data-label=\"Last used\" class=\"small\">{last}</td></tr>",
            id = escape(&s.id),
            platform = s.platform,
            kind = s.kind,
            group = escape(&s.group),
            in_flight = s.in_flight,
            limit = s.concurrency,
            waiting = s.waiting,
            input = compact(u.total_input_tokens()),
            output = compact(u.output_tokens),
            last = ago(row.totals.last_seen, now),
        );
    }
    html.push_str(
        "</tbody></table><h2>Client keys</h2><table id=\"keys\"><thead><tr><th>Key</th>\
         <th>Group</th><th>Requests</th><th>Tokens in / out</th><th>Cache read</th>\
         <th>Last used</th></tr></thead><tbody>",
    );
    for row in keys {
        let t = &row.totals;
        let _ = write!(
            html,
            "<tr data-key=\"{name}\"><td data-label=\"Key\"><b>{name}</b></td>\
             <td data-label=\"Group\">{group}</td>\
             <td data-label=\"Requests\" class=\"num\">{requests}</td>\
             <td data-label=\"Tokens\" class=\"num\">{input} / {output}</td>\
             <td data-label=\"Cache read\" class=\"num\">{cache}</td>\
             <td data-label=\"Last used\" class=\"small\">{last}</td></tr>",
            name = escape(row.name.as_str()),
            group = escape(&row.group),
            requests = t.requests,
            input = compact(t.usage.total_input_tokens()),
            output = compact(t.usage.output_tokens),
            cache = compact(t.usage.cache_read_input_tokens),
            last = ago(t.last_seen, now),
        );
    }
    let _ = write!(
        html,
        "</tbody></table><script>{SCRIPT}</script></body></html>"
    );
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn counts_are_compact() {
        assert_eq!(compact(999), "999");
        assert_eq!(compact(12_345), "12.3k");
        assert_eq!(compact(4_200_000), "4.2M");
    }
}
