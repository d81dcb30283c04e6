//! The example proxy's own unit tests: its log line and its status page
//! helpers. `cargo test` builds examples as plain binaries, which the
//! integration tests run as an operator would; `test = true` on the example
//! would build it only as a test harness and leave those tests without a
//! binary. So the two self-contained modules with tests compile here too.

// Only the modules' tests and the helpers they call are used here.
#[allow(dead_code)]
#[path = "../examples/proxy/log_line.rs"]
mod log_line;
#[allow(dead_code)]
#[path = "../examples/proxy/status_page.rs"]
mod status_page;
