//! The benchmark run: start the mock, the gateways (one core, 1 GiB each) and nginx; measure
//! every scenario in interleaved repetitions with the in-process load generator on its own core;
//! summarise into a [`BenchReport`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use loadgen::{Mix, Mode, Plan, Report, RequestSpec, Target};

use super::cgroup::MemoryCap;
use super::model::{BenchReport, Percentiles, RatePoint, RunMeta, ScenarioKind, ScenarioResult, Stat, TargetCheck};
use super::procs::{Launch, Proc, clock_ticks_per_sec, on_path, sibling, wait_listening};
use super::stamp;

/// A 206-byte chat completion, as an SDK would send it.
pub const CHAT_BODY: &str = r#"{"model":"bench","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Summarise the plot of Hamlet in two sentences, please."}],"temperature":0.2,"max_tokens":64}"#;
const STREAM_BODY: &str = r#"{"model":"bench","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Tell me a story."}]}"#;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Scenario groups to run (`passthrough`, `governed`, `translated`, `routed`, `guarded`, `nginx`, `streaming`,
    /// `mcp`, `open-streams`);
    /// empty: all.
    pub only: Vec<String>,
    pub quick: bool,
    pub repetitions: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Offered rates for the latency measurements.
    pub rates: Vec<f64>,
    /// Concurrent streams for the memory scenario.
    pub open_streams: usize,
    pub gateway_core: usize,
    pub mock_core: usize,
    pub loadgen_core: usize,
    pub command: String,
}

impl Options {
    pub fn full() -> Options {
        Options {
            only: Vec::new(),
            quick: false,
            repetitions: 3,
            duration: Duration::from_secs(3),
            warmup: Duration::from_secs(1),
            rates: vec![1000.0, 5000.0, 10_000.0, 20_000.0, 30_000.0, 40_000.0, 50_000.0, 60_000.0],
            open_streams: 10_000,
            gateway_core: 0,
            mock_core: 1,
            loadgen_core: 1,
            command: String::new(),
        }
    }

    /// Under a minute: one repetition, short measurements, one rate, few streams.
    pub fn quick() -> Options {
        Options {
            quick: true,
            repetitions: 1,
            duration: Duration::from_millis(1500),
            warmup: Duration::from_millis(500),
            rates: vec![500.0],
            open_streams: 200,
            ..Options::full()
        }
    }

    fn wants(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|g| g == group)
    }
}

/// One thing to load.
struct Scenario {
    name: String,
    description: String,
    kind: ScenarioKind,
    driver: Option<String>,
    url: String,
    /// Request headers (the virtual key of the governed scenario).
    headers: Vec<(String, String)>,
    /// The request body (a 1 KiB prompt for the guardrails scenarios).
    body: String,
    /// The process whose CPU and memory are measured.
    proc_index: Option<usize>,
    idle_rss_mb: Option<f64>,
    notes: Vec<String>,
}

/// One repetition's measurements of one scenario.
#[derive(Default, Clone)]
struct Samples {
    max_rps: Vec<f64>,
    cpu_us_per_req: Vec<f64>,
    /// Per offered rate: one report per repetition.
    at_rate: Vec<(f64, Vec<Report>)>,
    errors: u64,
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

pub(super) fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub(super) fn plan(
    url: &str,
    body: &str,
    headers: &[(&str, &str)],
    mode: Mode,
    o: &Options,
    duration: Duration,
) -> Result<Plan, String> {
    let target = Target::parse(url, None)?;
    let spec = RequestSpec {
        body: Some(bytes::Bytes::from(body.to_string())),
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        weight: 1,
        ..RequestSpec::default()
    };
    Ok(Plan {
        mix: Mix::single(&target, spec)?,
        target,
        mode,
        duration,
        warmup: o.warmup,
        max_requests: None,
        workers: 1,
        cores: vec![o.loadgen_core],
        driver: engine::rt::DriverKind::Epoll,
        timeout: Duration::from_secs(30),
        max_in_flight: 20_000,
    })
}

pub(super) fn errors_of(r: &Report) -> u64 {
    (r.completed - r.ok) + r.errors.values().sum::<u64>()
}

/// Runs the whole benchmark.
pub fn run(o: &Options) -> Result<BenchReport, String> {
    let shardgate = sibling("shardgate")
        .ok_or("the shardgate binary is not next to shardgate-bench: build with `cargo build --release --bins`")?;
    let mock_bin = sibling("shardgate-mock").ok_or("the shardgate-mock binary is not next to shardgate-bench")?;
    let nginx_bin = if o.wants("nginx") { on_path("nginx") } else { None };
    let work = std::env::temp_dir().join(format!("shardgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let result = run_in(o, &work, &shardgate, &mock_bin, nginx_bin.as_deref());
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn run_in(
    o: &Options,
    work: &Path,
    shardgate: &Path,
    mock_bin: &Path,
    nginx: Option<&Path>,
) -> Result<BenchReport, String> {
    let (date, started_at) = stamp::now_utc();
    let (commit, dirty) = stamp::commit();
    let ticks = clock_ticks_per_sec();
    let mut procs: Vec<Proc> = Vec::new();
    let mut caps: Vec<MemoryCap> = Vec::new();

    // The mock provider.
    let mock_port = free_port()?;
    let mock_args: Vec<String> = ["--listen", &addr(mock_port).to_string(), "--shards", "1", "--driver", "epoll"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    procs.push(Proc::start(Launch {
        name: "mock",
        program: mock_bin,
        args: mock_args,
        core: o.mock_core,
        cap: None,
        nofile: 65536,
        log: work.join("mock.log"),
        env: Vec::new(),
    })?);
    if !wait_listening(addr(mock_port), Duration::from_secs(5)) {
        return Err("the mock provider did not start (see its log)".into());
    }

    // Gateways: one per driver, each on the gateway core inside its own 1 GiB cgroup.
    let config = work.join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  reload: {{watch: false}}\nproviders:\n  up:\n    kind: openai-compatible\n    base_url: http://127.0.0.1:{mock_port}/v1\n    api_key: sk-bench\nmodels:\n  bench: {{target: up/bench}}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut scenarios = vec![Scenario {
        name: "baseline".into(),
        description: "straight to the mock provider (no gateway)".into(),
        kind: ScenarioKind::Baseline,
        driver: None,
        url: format!("http://127.0.0.1:{mock_port}/v1/chat/completions"),
        headers: Vec::new(),
        body: CHAT_BODY.into(),
        proc_index: Some(0),
        idle_rss_mb: None,
        notes: Vec::new(),
    }];
    let governed_config = work.join("governed.yaml");
    std::fs::write(&governed_config, governed_yaml(mock_port)).map_err(|e| e.to_string())?;
    // The same model served by an Anthropic provider: the mock answers `/v1/messages`.
    let translated_config = work.join("translated.yaml");
    std::fs::write(
        &translated_config,
        format!(
            "server:\n  reload: {{watch: false}}\nproviders:\n  up:\n    kind: anthropic\n    base_url: http://127.0.0.1:{mock_port}/v1\n    api_key: sk-bench\n    pool: {{max_connections: 4096}}\nmodels:\n  bench: {{target: up/bench}}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    // A routed model: a fallback over a weighted group of two accounts and a third account,
    // with retries and breakers configured; the mock never fails, so none fires.
    let routed_config = work.join("routed.yaml");
    let account = |name: &str| {
        format!(
            "  {name}:\n    kind: openai-compatible\n    base_url: http://127.0.0.1:{mock_port}/v1\n    api_key: sk-bench\n    pool: {{max_connections: 4096}}\n"
        )
    };
    std::fs::write(
        &routed_config,
        format!(
            "server:\n  reload: {{watch: false}}\nproviders:\n{}{}{}models:\n  bench:\n    route:\n      strategy: fallback\n      targets:\n        - route: {{strategy: weighted, targets: [{{target: up/bench, weight: 3}}, {{target: up2/bench, weight: 1}}]}}\n        - {{target: up3/bench}}\n      retry: {{attempts: 2, backoff: 50ms, budget: 5s}}\n      breaker: {{failure_rate: 0.5, min_requests: 20, cooldown: 10s}}\n      timeouts: {{attempt: 30s, total: 60s}}\n",
            account("up"),
            account("up2"),
            account("up3")
        ),
    )
    .map_err(|e| e.to_string())?;
    // Guardrails on both phases, as a cautious operator would run them: secrets blocked,
    // injection audited, PII redacted (with restoration).
    let guarded_config = work.join("guarded.yaml");
    std::fs::write(
        &guarded_config,
        format!(
            "server:\n  reload: {{watch: false}}\nproviders:\n{}models:\n  bench: {{target: up/bench}}\nguardrails:\n  - {{id: secrets, check: secrets, phase: [input, output]}}\n  - {{id: injection, check: injection, enforcement: audit}}\n  - {{id: pii, check: pii, mode: mutate, restore: true, phase: [input, output]}}\n",
            account("up")
        ),
    )
    .map_err(|e| e.to_string())?;
    let start_gateway_with = |config: &Path,
                              driver: &str,
                              tag: &str,
                              procs: &mut Vec<Proc>,
                              caps: &mut Vec<MemoryCap>|
     -> Result<(u16, usize), String> {
        let cap = MemoryCap::create(&format!("shardgate-bench-{}-{tag}", std::process::id()), 1 << 30);
        let port = free_port()?;
        let args: Vec<String> = [
            "serve",
            "--config",
            &config.display().to_string(),
            "--listen",
            &addr(port).to_string(),
            "--shards",
            "1",
            "--no-pin",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(runtime_args(driver))
        .collect();
        let name = format!("gateway-{tag}");
        let p = Proc::start(Launch {
            name: &name,
            program: shardgate,
            args,
            core: o.gateway_core,
            cap: Some(&cap),
            nofile: 65536,
            log: work.join(format!("{name}.log")),
            env: vec![("SHARDGATE_LOG", "warn")],
        })?;
        procs.push(p);
        caps.push(cap);
        if !wait_listening(addr(port), Duration::from_secs(5)) {
            return Err(format!(
                "the {driver} gateway did not start (see {})",
                work.join(format!("gateway-{tag}.log")).display()
            ));
        }
        Ok((port, procs.len() - 1))
    };
    let start_gateway = |driver: &str, tag: &str, procs: &mut Vec<Proc>, caps: &mut Vec<MemoryCap>| {
        start_gateway_with(&config, driver, tag, procs, caps)
    };
    let mut drivers = vec!["epoll".to_string()];
    if engine::rt::uring_available() {
        drivers.push("uring".into());
    }
    // The default (`auto`) is io_uring where available: the last monoio variant.
    let default_driver = drivers.last().cloned().unwrap_or_else(|| "epoll".into());
    if o.wants("passthrough") || o.wants("streaming") {
        // glommio only where the binary was built with it and the host allows it.
        let mut variants = drivers.clone();
        if o.wants("passthrough") && engine::rt::uring_available() {
            variants.push("glommio".into());
        }
        for d in &variants {
            let started = start_gateway(d, d, &mut procs, &mut caps);
            let (port, idx) = match started {
                Ok(s) => s,
                Err(e) if d == "glommio" => {
                    let why = std::fs::read_to_string(work.join("gateway-glommio.log")).unwrap_or_default();
                    let why = why.lines().last().unwrap_or(&e);
                    let why = why.rsplit("cannot start: ").next().unwrap_or(why).to_string();
                    tracing::warn!(reason = %why, "glommio gateway not measured");
                    scenarios[0].notes.push(format!(
                        "glommio not measured: {why} (build with `cargo build --release --bins --features shardgate-engine/runtime-glommio`)"
                    ));
                    procs.pop();
                    caps.pop();
                    continue;
                }
                Err(e) => return Err(e),
            };
            std::thread::sleep(Duration::from_secs(1));
            let idle = procs[idx].rss_mb();
            let runtime = if d == "glommio" { "glommio".to_string() } else { format!("monoio, {d}") };
            scenarios.push(Scenario {
                name: format!("passthrough-{d}"),
                description: format!("through shardgate ({runtime}), one shard on one core: auth-less pass-through with JSON validation, model routing and usage reading"),
                kind: ScenarioKind::Gateway,
                driver: Some(d.clone()),
                url: format!("http://127.0.0.1:{port}/v1/chat/completions"),
                headers: Vec::new(),
                body: CHAT_BODY.into(),
                proc_index: Some(idx),
                idle_rss_mb: idle,
                notes: Vec::new(),
            });
        }
    }
    if o.wants("governed") {
        let d = default_driver.clone();
        let (port, idx) = start_gateway_with(&governed_config, &d, &format!("governed-{d}"), &mut procs, &mut caps)?;
        std::thread::sleep(Duration::from_secs(1));
        let idle = procs[idx].rss_mb();
        scenarios.push(Scenario {
            name: format!("governed-{d}"),
            description: format!(
                "through shardgate (monoio, {d}), one shard: a virtual key (10k declared), RBAC, 100 rate-limit rules and budgets, cost per request"
            ),
            kind: ScenarioKind::Governed,
            driver: Some(d),
            url: format!("http://127.0.0.1:{port}/v1/chat/completions"),
            headers: vec![("authorization".into(), format!("Bearer {}", bench_key(0)))],
            body: CHAT_BODY.into(),
            proc_index: Some(idx),
            idle_rss_mb: idle,
            notes: Vec::new(),
        });
    }
    // Scenarios of one gateway each, on the default driver.
    let one_each = [
        (
            "prompt-1k",
            &config,
            ScenarioKind::Prompt1k,
            "a 1 KiB prompt, no guardrails (what the guarded scenario is compared with)",
        ),
        (
            "guarded",
            &guarded_config,
            ScenarioKind::Guarded,
            "a 1 KiB prompt, guardrails on prompt and answer: secrets blocked, injection audited, PII redacted and restored",
        ),
        (
            "translated",
            &translated_config,
            ScenarioKind::Translated,
            "to an Anthropic provider: the chat request translated to Messages and the answer back",
        ),
        (
            "routed",
            &routed_config,
            ScenarioKind::Routed,
            "to a routed model: a fallback over a weighted group of two accounts and a third, with retries and breakers configured but not firing",
        ),
    ];
    for (group, config, kind, what) in one_each {
        let wanted = match kind {
            ScenarioKind::Prompt1k => o.wants("guarded"),
            _ => o.wants(group),
        };
        if !wanted {
            continue;
        }
        let d = default_driver.clone();
        let (port, idx) = start_gateway_with(config, &d, &format!("{group}-{d}"), &mut procs, &mut caps)?;
        std::thread::sleep(Duration::from_secs(1));
        let idle = procs[idx].rss_mb();
        scenarios.push(Scenario {
            name: format!("{group}-{d}"),
            description: format!("through shardgate (monoio, {d}), one shard, {what}"),
            kind,
            driver: Some(d),
            url: format!("http://127.0.0.1:{port}/v1/chat/completions"),
            headers: Vec::new(),
            body: match kind {
                ScenarioKind::Prompt1k | ScenarioKind::Guarded => prompt_1k_body(),
                _ => CHAT_BODY.into(),
            },
            proc_index: Some(idx),
            idle_rss_mb: idle,
            notes: Vec::new(),
        });
    }
    let memory_cap = caps.first().map_or_else(|| "not needed: no gateway scenario".to_string(), MemoryCap::describe);

    // nginx, the physical-limit reference.
    if let Some(nginx) = nginx {
        let port = free_port()?;
        let dir = work.join("nginx");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "worker_processes 1;\ndaemon off;\nerror_log {d}/error.log warn;\npid {d}/nginx.pid;\nevents {{ worker_connections 16384; }}\nhttp {{\n  access_log off;\n  upstream mock {{ server 127.0.0.1:{mock_port}; keepalive 256; }}\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://mock;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_buffering off;\n    }}\n  }}\n}}\n",
                d = dir.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let args = vec!["-c".to_string(), conf.display().to_string(), "-p".to_string(), dir.display().to_string()];
        let mut p = Proc::start(Launch {
            name: "nginx",
            program: nginx,
            args,
            core: o.gateway_core,
            cap: None,
            nofile: 65536,
            log: dir.join("stderr.log"),
            env: Vec::new(),
        })?;
        if wait_listening(addr(port), Duration::from_secs(5)) {
            p.watch_first_child();
            let idle = p.rss_mb();
            procs.push(p);
            scenarios.push(Scenario {
                name: "nginx".into(),
                description: "nginx proxy_pass with upstream keep-alive, one worker on the gateway's core".into(),
                kind: ScenarioKind::Reference,
                driver: None,
                url: format!("http://127.0.0.1:{port}/v1/chat/completions"),
                headers: Vec::new(),
                body: CHAT_BODY.into(),
                proc_index: Some(procs.len() - 1),
                idle_rss_mb: idle,
                notes: Vec::new(),
            });
        }
    }

    // Interleaved repetitions: every scenario once per round, rounds repeated. A scenario stops
    // stepping up at the first rate it cannot carry (errors, or under 95% of the offered rate):
    // beyond that the numbers describe overload, not latency. Rates the baseline cannot carry
    // are where the load generator and mock's core gives out: no scenario is measured there.
    let mut samples = vec![Samples::default(); scenarios.len()];
    let mut ceiling: Vec<Option<f64>> = vec![None; scenarios.len()];
    let run_scenarios = o.wants("passthrough")
        || o.wants("nginx")
        || o.wants("governed")
        || o.wants("translated")
        || o.wants("routed")
        || o.wants("guarded");
    for rep in 0..o.repetitions {
        if !run_scenarios {
            break;
        }
        for (i, s) in scenarios.iter().enumerate() {
            let before = s.proc_index.and_then(|p| procs[p].cpu_ticks());
            let headers: Vec<(&str, &str)> = s.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let report =
                loadgen::run(&plan(&s.url, &s.body, &headers, Mode::Closed { connections: 64 }, o, o.duration)?)?;
            let after = s.proc_index.and_then(|p| procs[p].cpu_ticks());
            samples[i].max_rps.push(report.ok_rate);
            // Errors at max throughput are errors; errors past a rate ceiling are overload and
            // are shown in that rate's row instead.
            samples[i].errors += errors_of(&report);
            if let (Some(b), Some(a)) = (before, after)
                && report.ok > 0
            {
                // CPU over the whole run (warm-up included) per request over the whole run.
                let secs = (a.saturating_sub(b)) as f64 / ticks;
                let requests = report.sent.max(1) as f64;
                samples[i].cpu_us_per_req.push(secs * 1e6 / requests);
            }
            tracing::info!(round = rep + 1, scenario = %s.name, rps = report.ok_rate.round(), "max throughput");
        }
        for &rate in &o.rates {
            for (i, s) in scenarios.iter().enumerate() {
                // Rates a scenario cannot carry are skipped ("where reachable").
                let best = samples[i].max_rps.iter().copied().fold(0.0, f64::max);
                let over = |c: &Option<f64>| c.is_some_and(|c| rate > c);
                if rate > best * 0.9 || over(&ceiling[i]) || over(&ceiling[0]) {
                    continue;
                }
                let mode = Mode::Open { rate, poisson: false, max_connections: 512 };
                let headers: Vec<(&str, &str)> = s.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let report = loadgen::run(&plan(&s.url, &s.body, &headers, mode, o, o.duration)?)?;
                if errors_of(&report) > 0 || report.achieved_rate < rate * 0.95 {
                    let lowest = ceiling[i].map_or(rate, |c| c.min(rate));
                    ceiling[i] = Some(lowest);
                }
                match samples[i].at_rate.iter_mut().find(|(r, _)| *r == rate) {
                    Some((_, v)) => v.push(report),
                    None => samples[i].at_rate.push((rate, vec![report])),
                }
                tracing::info!(round = rep + 1, scenario = %s.name, rate, "fixed rate");
            }
        }
    }

    for (s, c) in scenarios.iter_mut().zip(&ceiling) {
        if let Some(c) = c {
            s.notes.push(format!(
                "could not carry {c:.0} req/s (errors or under 95% of it achieved); higher rates not measured"
            ));
        }
    }
    let mut results: Vec<ScenarioResult> = Vec::new();
    if run_scenarios {
        results = summarise(&scenarios, &samples, &mut procs);
    }

    // Streams: TTFT through every gateway variant against the baseline, interleaved.
    let gateway_variants: Vec<String> =
        scenarios.iter().filter(|s| s.kind == ScenarioKind::Gateway).filter_map(|s| s.driver.clone()).collect();
    if o.wants("streaming") {
        for gw in scenarios.iter().filter(|s| s.kind == ScenarioKind::Gateway) {
            results.push(streaming(o, &scenarios[0].url, gw)?);
        }
    }

    if o.wants("translated")
        && let Some(t) = scenarios.iter().find(|s| s.kind == ScenarioKind::Translated)
    {
        results.push(translated_streaming(o, &scenarios[0].url, t)?);
    }

    if o.wants("mcp") {
        let mcp_config = work.join("mcp.yaml");
        std::fs::write(&mcp_config, super::mcp::config_yaml(mock_port)).map_err(|e| e.to_string())?;
        let d = default_driver.clone();
        let (port, _) = start_gateway_with(&mcp_config, &d, &format!("mcp-{d}"), &mut procs, &mut caps)?;
        std::thread::sleep(Duration::from_millis(500));
        results.push(super::mcp::tool_calls(o, mock_port, port, &d)?);
    }

    // Memory with many open streams: a fresh gateway per variant, so its peak is this
    // scenario's. The published target is read on the default variant.
    let mut open_streams_rss = None;
    if o.wants("open-streams") {
        let variants =
            if gateway_variants.is_empty() { vec![default_driver.clone()] } else { gateway_variants.clone() };
        for d in &variants {
            let (port, idx) = start_gateway(d, &format!("streams-{d}"), &mut procs, &mut caps)?;
            let (r, peak) = open_streams(d, o, port, &procs[idx], caps.last())?;
            if *d == default_driver {
                open_streams_rss = peak;
            }
            results.push(r);
            // Free the variant's memory and sockets before the next one.
            procs.pop();
            caps.pop();
        }
    }

    let targets = targets(&results, open_streams_rss, o, &default_driver);
    let meta = RunMeta {
        date,
        started_at,
        command: o.command.clone(),
        commit,
        dirty,
        kernel: stamp::kernel(),
        cpu_model: stamp::cpu_model(),
        cpus: stamp::cpus(),
        memory_gib: stamp::memory_gib(),
        memory_cap,
        gateway_core: o.gateway_core,
        mock_core: o.mock_core,
        loadgen_core: o.loadgen_core,
        quick: o.quick,
        repetitions: o.repetitions,
        duration_s: o.duration.as_secs_f64(),
        warmup_s: o.warmup.as_secs_f64(),
        versions: stamp::versions(nginx),
    };
    drop(procs);
    drop(caps);
    Ok(BenchReport { meta, scenarios: results, targets })
}

/// The secret of the governed scenario's `i`th key.
fn bench_key(i: usize) -> String {
    format!("sk-sg-bench-{i:06}-0123456789abcdef")
}

/// The governed scenario's config: 50 teams, 1000 users, 10k keys, 100 rules (a global request
/// limit, a per-user token limit per team, a monthly budget per team), every limit far above
/// what the benchmark reaches, so that every request pays for every check and none is refused.
/// A chat request whose user prompt is 1 KiB of ordinary text (no personal data, no secrets):
/// the guardrails scenarios' body.
pub fn prompt_1k_body() -> String {
    const PARAGRAPH: &str = "Our quarterly review covered three projects and twelve milestones. The team shipped \
version 1.4.2 of the client, fixed thirty-seven bugs and moved the build to a faster runner, so median \
latency dropped from 120 ms to 85 ms. Please summarise the main risks for the next quarter, the open \
questions about the cache design, and what the support team should tell customers about the migration. ";
    let mut prompt = String::new();
    while prompt.len() < 1024 {
        prompt.push_str(PARAGRAPH);
    }
    prompt.truncate(1024);
    serde_json::json!({"model": "bench", "max_tokens": 64, "temperature": 0.2, "messages": [
        {"role": "system", "content": "You are a careful analyst."},
        {"role": "user", "content": prompt}]})
    .to_string()
}

fn governed_yaml(mock_port: u16) -> String {
    use std::fmt::Write as _;
    let mut y = format!(
        "server:\n  reload: {{watch: false}}\nproviders:\n  up:\n    kind: openai-compatible\n    base_url: http://127.0.0.1:{mock_port}/v1\n    api_key: sk-bench\nmodels:\n  bench: {{target: up/bench}}\npricing:\n  models:\n    bench: {{input_per_mtok: 0.15, output_per_mtok: 0.60}}\nteams:\n"
    );
    const TEAMS: usize = 50;
    for t in 0..TEAMS {
        let _ = writeln!(y, "  team-{t}: {{models: ['bench*', 'gpt-4o*']}}");
    }
    y.push_str("users:\n");
    for u in 0..1000 {
        let _ = writeln!(y, "  user-{u}: {{teams: [team-{}]}}", u % TEAMS);
    }
    y.push_str("keys:\n");
    for k in 0..10_000 {
        let _ = writeln!(y, "  - {{name: key-{k}, secret: {}, user: user-{}}}", bench_key(k), k % 1000);
    }
    y.push_str("rate_limits:\n  - {id: global, limits: {requests_per_minute: 1000000000}}\n");
    for t in 0..TEAMS - 1 {
        let _ = writeln!(
            y,
            "  - {{id: team-{t}-per-user, per: user, when: {{teams: [team-{t}], models: ['bench*']}}, limits: {{tokens_per_minute: 100000000000, requests_per_minute: 1000000000}}}}"
        );
    }
    y.push_str("budgets:\n");
    for t in 0..TEAMS {
        let _ = writeln!(
            y,
            "  - {{id: team-{t}-monthly, per: team, when: {{teams: [team-{t}]}}, limits: {{usd_per_month: 1000000000}}}}"
        );
    }
    y
}

/// Command-line arguments selecting a runtime variant: a monoio driver, or glommio.
fn runtime_args(variant: &str) -> Vec<String> {
    if variant == "glommio" {
        vec!["--runtime".into(), "glommio".into()]
    } else {
        vec!["--driver".into(), variant.into()]
    }
}

pub(super) fn percentiles(
    reports: &[Report],
    pick: impl Fn(&Report) -> Option<&loadgen::recorder::Distribution>,
) -> Option<Percentiles> {
    let ds: Vec<_> = reports.iter().filter_map(pick).collect();
    Some(Percentiles {
        p50: Stat::of(ds.iter().map(|d| d.p50 as f64).collect())?,
        p90: Stat::of(ds.iter().map(|d| d.p90 as f64).collect())?,
        p99: Stat::of(ds.iter().map(|d| d.p99 as f64).collect())?,
        p99_9: Stat::of(ds.iter().map(|d| d.p99_9 as f64).collect())?,
    })
}

/// Percentile differences, repetition by repetition (`a` minus `b`).
pub(super) fn differences(
    a: &[Report],
    b: &[Report],
    pick: impl Fn(&Report) -> Option<&loadgen::recorder::Distribution> + Copy,
) -> Option<Percentiles> {
    let pairs: Vec<_> = a.iter().zip(b).filter_map(|(x, y)| Some((pick(x)?, pick(y)?))).collect();
    let diff = |f: fn(&loadgen::recorder::Distribution) -> u64| {
        Stat::of(pairs.iter().map(|(x, y)| f(x) as f64 - f(y) as f64).collect())
    };
    Some(Percentiles { p50: diff(|d| d.p50)?, p90: diff(|d| d.p90)?, p99: diff(|d| d.p99)?, p99_9: diff(|d| d.p99_9)? })
}

fn summarise(scenarios: &[Scenario], samples: &[Samples], procs: &mut [Proc]) -> Vec<ScenarioResult> {
    let baseline_max = samples.first().and_then(|s| Stat::of(s.max_rps.clone())).map(|s| s.median);
    let nginx_max = scenarios
        .iter()
        .position(|s| s.kind == ScenarioKind::Reference)
        .and_then(|i| Stat::of(samples[i].max_rps.clone()))
        .map(|s| s.median);
    let baseline_rates = samples.first().map(|s| s.at_rate.clone()).unwrap_or_default();
    scenarios
        .iter()
        .zip(samples)
        .map(|(s, smp)| {
            let max = Stat::of(smp.max_rps.clone());
            let rates: Vec<RatePoint> = smp
                .at_rate
                .iter()
                .filter_map(|(rate, reports)| {
                    let base = baseline_rates.iter().find(|(r, _)| r == rate).map(|(_, v)| v.as_slice());
                    Some(RatePoint {
                        offered_rps: *rate,
                        achieved_rps: Stat::of(reports.iter().map(|r| r.achieved_rate).collect())?,
                        latency_us: percentiles(reports, |r| r.latency_us.as_ref())?,
                        service_us: percentiles(reports, |r| r.service_us.as_ref())?,
                        added_us: match (s.kind, base) {
                            (ScenarioKind::Baseline, _) | (_, None) => None,
                            (_, Some(b)) => differences(reports, b, |r| r.service_us.as_ref()),
                        },
                        errors: reports.iter().map(errors_of).sum(),
                    })
                })
                .collect();
            let at_slo = rates
                .iter()
                .filter(|p| p.errors == 0 && p.added_us.as_ref().is_some_and(|a| a.p99.median <= 1000.0))
                .map(|p| p.offered_rps)
                .fold(None, |acc: Option<f64>, r| Some(acc.map_or(r, |a| a.max(r))));
            let peak = s.proc_index.and_then(|i| procs.get(i)).and_then(Proc::peak_rss_mb);
            ScenarioResult {
                name: s.name.clone(),
                description: s.description.clone(),
                kind: s.kind,
                driver: s.driver.clone(),
                ratio_to_baseline: max.as_ref().zip(baseline_max).map(|(m, b)| m.median / b),
                ratio_to_nginx: max.as_ref().zip(nginx_max).map(|(m, n)| m.median / n),
                max_throughput_rps: max,
                throughput_at_slo_rps: if s.kind == ScenarioKind::Baseline { None } else { at_slo },
                rates,
                ttft_overhead_us: None,
                ttft_us: None,
                idle_rss_mb: s.idle_rss_mb,
                peak_rss_mb: peak,
                cpu_us_per_request: Stat::of(smp.cpu_us_per_req.clone()),
                errors: smp.errors,
                notes: s.notes.clone(),
            }
        })
        .collect()
}

fn streaming(o: &Options, baseline_url: &str, gw: &Scenario) -> Result<ScenarioResult, String> {
    // A realistic stream: 64 tokens at 100 tokens/s, first token at once (so TTFT measures the
    // path, not a sleep).
    let headers = [("x-mock-tokens", "64"), ("x-mock-tokens-per-sec", "100")];
    let rate = if o.quick { 20.0 } else { 100.0 };
    let mode = Mode::Open { rate, poisson: false, max_connections: 2048 };
    let (mut base, mut via) = (Vec::new(), Vec::new());
    let duration = o.duration.max(Duration::from_secs(2));
    for _ in 0..o.repetitions {
        base.push(loadgen::run(&plan(baseline_url, STREAM_BODY, &headers, mode, o, duration)?)?);
        via.push(loadgen::run(&plan(&gw.url, STREAM_BODY, &headers, mode, o, duration)?)?);
    }
    let description = format!(
        "{rate:.0} streams/s of 64 tokens at 100 tokens/s through shardgate, against the same streams straight to the mock"
    );
    let name = format!("streaming-{}", gw.driver.as_deref().unwrap_or(""));
    Ok(stream_result(name, description, ScenarioKind::Gateway, gw.driver.clone(), &via, &base, "relayed"))
}

/// A streams scenario's result: TTFT through the gateway, and its difference from the same
/// streams straight to the mock.
fn stream_result(
    name: String,
    description: String,
    kind: ScenarioKind,
    driver: Option<String>,
    via: &[Report],
    base: &[Report],
    what: &str,
) -> ScenarioResult {
    let errors: u64 = via.iter().chain(base).map(errors_of).sum();
    let tokens: u64 = via.iter().map(|r| r.completion_tokens).sum();
    ScenarioResult {
        name,
        description,
        kind,
        driver,
        max_throughput_rps: None,
        throughput_at_slo_rps: None,
        rates: Vec::new(),
        ttft_overhead_us: differences(via, base, |r| r.ttft_us.as_ref()),
        ttft_us: percentiles(via, |r| r.ttft_us.as_ref()),
        idle_rss_mb: None,
        peak_rss_mb: None,
        cpu_us_per_request: None,
        ratio_to_baseline: None,
        ratio_to_nginx: None,
        errors,
        notes: vec![format!(
            "{tokens} completion tokens {what}; inter-token p50 {} µs",
            via.first().and_then(|r| r.itl_us.as_ref()).map_or(0, |d| d.p50)
        )],
    }
}

/// Concurrent streams the translated-streaming scenario holds open (a quick run holds fewer).
const TRANSLATED_STREAMS: f64 = 1000.0;

/// OpenAI-shaped streams translated to Anthropic's and back, with about 1k streams open at once:
/// each stream lasts 5 s (20 tokens at 4 tokens/s, the first at once), so 200 new streams a
/// second keep 1k open. Time to first token through the gateway against the same streams
/// straight to the mock, both measured once the 1k are up (warm-up = one stream's life).
fn translated_streaming(o: &Options, baseline_url: &str, t: &Scenario) -> Result<ScenarioResult, String> {
    let headers = [("x-mock-tokens", "20"), ("x-mock-tokens-per-sec", "4")];
    let life = Duration::from_secs(5);
    let open = if o.quick { 100.0 } else { TRANSLATED_STREAMS };
    let rate = open / life.as_secs_f64();
    raise_own_nofile(4 * open as u64 + 1024);
    let mode = Mode::Open { rate, poisson: false, max_connections: 4 * open as usize };
    let duration = o.duration.max(Duration::from_secs(2));
    let run = |url: &str| -> Result<Report, String> {
        let mut p = plan(url, STREAM_BODY, &headers, mode, o, duration)?;
        p.warmup = if o.quick { Duration::from_secs(1) } else { life };
        loadgen::run(&p)
    };
    // The gateway's own histograms, before and after: what the streams added to them is the
    // gateway's share of their TTFT (request side: arrival to response head minus the wait on
    // the provider; answer side: first upstream piece to first event out).
    const SIDES: [(&str, &str); 2] =
        [("request side", "shardgate_overhead_seconds"), ("first event", "shardgate_stream_first_event_seconds")];
    let port = Target::parse(&t.url, None).ok().map(|t| t.port);
    let scrape_all = || port.and_then(metrics_text).map(|m| SIDES.map(|(_, h)| histogram_buckets(&m, h)));
    let before = scrape_all();
    let (mut base, mut via) = (Vec::new(), Vec::new());
    for _ in 0..o.repetitions {
        base.push(run(baseline_url)?);
        via.push(run(&t.url)?);
    }
    let inside = before.zip(scrape_all()).map(|(b, a)| {
        let parts: Vec<String> = SIDES
            .iter()
            .zip(b.iter().zip(&a))
            .filter_map(|((side, h), (b, a))| {
                let d = buckets_since(b, a);
                let (p50, n) = quantile_bound(&d, 0.5)?;
                let (p99, _) = quantile_bound(&d, 0.99)?;
                Some(format!("{side} ({h}, {n:.0} streams) p50 ≤ {} µs, p99 ≤ {} µs", p50 * 1e6, p99 * 1e6))
            })
            .collect();
        format!("inside the gateway, warm-up included: {}", parts.join("; "))
    });
    let name = format!("translated-streaming-{}", t.driver.as_deref().unwrap_or(""));
    let description = format!(
        "{rate:.0} streams/s of 20 tokens at 4 tokens/s ({open:.0} open at once) through shardgate, OpenAI in and Anthropic out, against the same streams straight to the mock"
    );
    let mut r = stream_result(
        name,
        description,
        ScenarioKind::Translated,
        t.driver.clone(),
        &via,
        &base,
        "translated and relayed",
    );
    r.notes.push(inside.unwrap_or_else(|| "the gateway's first-event histogram could not be read".into()));
    Ok(r)
}

/// Raises this process's open-files limit (the in-process load generator holds one socket per
/// stream). Returns the soft limit in force afterwards.
fn raise_own_nofile(want: u64) -> u64 {
    // Raising the hard limit needs privilege; without it, go as far as the hard limit allows.
    if rlimit::setrlimit(rlimit::Resource::NOFILE, want, want).is_ok() {
        return want;
    }
    rlimit::increase_nofile_limit(want).unwrap_or(1024)
}

fn open_streams(
    variant: &str,
    o: &Options,
    port: u16,
    gw: &Proc,
    cap: Option<&MemoryCap>,
) -> Result<(ScenarioResult, Option<f64>), String> {
    let mut notes = Vec::new();
    let limit = raise_own_nofile(o.open_streams as u64 * 2 + 1024);
    let streams = o.open_streams.min(limit.saturating_sub(256) as usize);
    if streams < o.open_streams {
        notes.push(format!("open-files limit {limit}: {streams} streams instead of {}", o.open_streams));
    }
    let idle = gw.rss_mb();
    // 40 tokens at 4 tokens/s: every stream stays open ~10 s, longer than the measurement.
    let headers = [("x-mock-tokens", "40"), ("x-mock-tokens-per-sec", "4")];
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let mut p = plan(
        &url,
        STREAM_BODY,
        &headers,
        Mode::Closed { connections: streams },
        o,
        Duration::from_secs(if o.quick { 2 } else { 6 }),
    )?;
    p.warmup = Duration::ZERO;
    p.max_requests = Some(streams as u64);
    // Sample the gateway's memory and open connections while the streams are up.
    let pid = gw.watch_pid;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut peak_rss, mut peak_conns) = (0.0f64, 0.0f64);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(kb) = std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                }) {
                    peak_rss = peak_rss.max(kb / 1024.0);
                }
                if let Some(c) = scrape(port, "shardgate_open_connections") {
                    peak_conns = peak_conns.max(c);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (peak_rss, peak_conns)
        })
    };
    let started = Instant::now();
    let report = loadgen::run(&p)?;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (peak_rss, peak_conns) = sampler.join().map_err(|_| "sampler panicked".to_string())?;
    notes.push(format!(
        "{streams} streams requested; at most {peak_conns:.0} client connections open at once (from /metrics); {} completed within {:.1}s",
        report.completed,
        started.elapsed().as_secs_f64()
    ));
    if let Some(c) = cap.and_then(MemoryCap::peak_mb) {
        notes.push(format!("cgroup peak (page cache included): {c:.1} MB"));
    }
    let errors = report.errors.values().sum::<u64>();
    let result = ScenarioResult {
        name: format!("open-streams-{streams}-{variant}"),
        description: format!(
            "{streams} concurrent streams held open through a fresh gateway; resident memory sampled every 100 ms"
        ),
        kind: ScenarioKind::Gateway,
        driver: Some(variant.to_string()),
        max_throughput_rps: None,
        throughput_at_slo_rps: None,
        rates: Vec::new(),
        ttft_overhead_us: None,
        ttft_us: None,
        idle_rss_mb: idle,
        peak_rss_mb: Some(peak_rss).filter(|r| *r > 0.0).or_else(|| gw.peak_rss_mb()),
        cpu_us_per_request: None,
        ratio_to_baseline: None,
        ratio_to_nginx: None,
        errors,
        notes,
    };
    let measured_streams = (peak_conns >= streams as f64 * 0.95).then_some(peak_rss);
    // The published target is about 10k streams; a smaller run (quick mode) does not count.
    Ok((result, if streams >= 10_000 { measured_streams } else { None }))
}

/// The gateway's /metrics text.
fn metrics_text(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr(port), Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

/// One value from the gateway's /metrics.
fn scrape(port: u16, series: &str) -> Option<f64> {
    let text = metrics_text(port)?;
    text.lines().find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))?.rsplit(' ').next()?.parse().ok()
}

/// The cumulative buckets `(upper bound in seconds, count)` of histogram `name`.
fn histogram_buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// What was observed between two scrapes of the same histogram.
fn buckets_since(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after.iter().map(|(le, n)| (*le, n - before.iter().find(|(b, _)| b == le).map_or(0.0, |(_, m)| *m))).collect()
}

/// The upper bound (seconds) of the bucket holding quantile `q`, and the sample count: a
/// bucket bound, not an interpolation.
fn quantile_bound(buckets: &[(f64, f64)], q: f64) -> Option<(f64, f64)> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    buckets.iter().find(|(_, c)| *c >= q * total).map(|(le, _)| (*le, total))
}

fn targets(
    results: &[ScenarioResult],
    streams_rss: Option<f64>,
    o: &Options,
    default_driver: &str,
) -> Vec<TargetCheck> {
    let gateways: Vec<&ScenarioResult> =
        results.iter().filter(|r| r.kind == ScenarioKind::Gateway && !r.rates.is_empty()).collect();
    // The default runtime: monoio with `auto` (io_uring where available).
    let default = gateways.iter().copied().find(|g| g.driver.as_deref() == Some(default_driver));
    let mut t = Vec::new();
    let ratio = default.and_then(|g| g.ratio_to_nginx);
    t.push(TargetCheck {
        name: "pass-through vs nginx".into(),
        goal: ">= 0.90x nginx req/s, same run".into(),
        value: ratio,
        unit: "x".into(),
        met: ratio.map(|r| r >= 0.9),
        note: match (ratio, default) {
            (Some(r), Some(g)) => format!(
                "{} driver; {}",
                g.driver.as_deref().unwrap_or("?"),
                gateways
                    .iter()
                    .filter_map(|g| Some(format!("{}: {:.2}x", g.driver.as_deref()?, g.ratio_to_nginx?)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
            .replace("; ", if r >= 0.9 { "; " } else { "; missed; " }),
            _ => "nginx not installed or not run".into(),
        },
    });
    let added = default
        .and_then(|g| g.rates.iter().find(|p| p.offered_rps == 5000.0))
        .and_then(|p| p.added_us.as_ref())
        .map(|a| a.p99.median);
    t.push(TargetCheck {
        name: "added p99 at 5k req/s".into(),
        goal: "<= 100 µs".into(),
        value: added,
        unit: "µs".into(),
        met: added.map(|a| a <= 100.0),
        note: match added {
            Some(a) if a > 100.0 => format!("missed by {:.0} µs", a - 100.0),
            Some(_) => "service time p99, gateway minus baseline, median of repetitions".into(),
            None => {
                if o.quick {
                    "not measured in --quick".into()
                } else {
                    "5k req/s not reachable or not run".into()
                }
            }
        },
    });
    let governed = results.iter().find(|r| r.kind == ScenarioKind::Governed);
    let governed_ratio = governed
        .and_then(|g| g.max_throughput_rps.as_ref())
        .zip(default.and_then(|d| d.max_throughput_rps.as_ref()))
        .map(|(g, d)| g.median / d.median);
    t.push(TargetCheck {
        name: "auth + limits + budgets vs pass-through".into(),
        goal: ">= 0.85x pass-through req/s, same run".into(),
        value: governed_ratio,
        unit: "x".into(),
        met: governed_ratio.map(|r| r >= 0.85),
        note: match governed_ratio {
            Some(_) => format!("{} driver, median of repetitions", default_driver),
            None => "the governed or pass-through scenario did not run".into(),
        },
    });
    let translated = results.iter().find(|r| r.kind == ScenarioKind::Translated);
    let translated_ratio = translated
        .and_then(|g| g.max_throughput_rps.as_ref())
        .zip(default.and_then(|d| d.max_throughput_rps.as_ref()))
        .map(|(g, d)| g.median / d.median);
    t.push(TargetCheck {
        name: "OpenAI in, Anthropic out vs pass-through".into(),
        goal: ">= 0.75x pass-through req/s, same run".into(),
        value: translated_ratio,
        unit: "x".into(),
        met: translated_ratio.map(|r| r >= 0.75),
        note: match translated_ratio {
            Some(_) => format!("{} driver, median of repetitions, plain (not streamed) answers", default_driver),
            None => "the translated or pass-through scenario did not run".into(),
        },
    });
    let mcp_added = results.iter().find(|r| r.kind == ScenarioKind::Mcp).and_then(|r| {
        r.rates.iter().filter_map(|p| p.added_us.as_ref().map(|a| (p.offered_rps, a.p99.median))).next_back()
    });
    t.push(TargetCheck {
        name: "MCP tools/call added latency".into(),
        goal: "< 200 µs at p99 over calling the server directly".into(),
        value: mcp_added.map(|(_, us)| us),
        unit: "µs".into(),
        met: mcp_added.map(|(_, us)| us < 200.0),
        note: match mcp_added {
            Some((rate, _)) => {
                format!("{default_driver} driver, at {rate:.0} calls/s, median over repetitions of the p99 difference")
            }
            None => "the mcp scenario did not run".into(),
        },
    });
    let routed = results.iter().find(|r| r.kind == ScenarioKind::Routed);
    let routed_ratio = routed
        .and_then(|g| g.max_throughput_rps.as_ref())
        .zip(default.and_then(|d| d.max_throughput_rps.as_ref()))
        .map(|(g, d)| g.median / d.median);
    t.push(TargetCheck {
        name: "routed (retries and breakers idle) vs pass-through".into(),
        goal: ">= 0.97x pass-through req/s, same run".into(),
        value: routed_ratio,
        unit: "x".into(),
        met: routed_ratio.map(|r| r >= 0.97),
        note: match routed_ratio {
            Some(_) => format!("{} driver, median of repetitions", default_driver),
            None => "the routed or pass-through scenario did not run".into(),
        },
    });
    let of_kind = |k: ScenarioKind| results.iter().find(|r| r.kind == k).and_then(|r| r.max_throughput_rps.as_ref());
    let guarded_ratio =
        of_kind(ScenarioKind::Guarded).zip(of_kind(ScenarioKind::Prompt1k)).map(|(g, p)| g.median / p.median);
    t.push(TargetCheck {
        name: "guardrails on (1 KiB prompts) vs pass-through".into(),
        goal: ">= 0.80x pass-through req/s with 1 KiB prompts, same run".into(),
        value: guarded_ratio,
        unit: "x".into(),
        met: guarded_ratio.map(|r| r >= 0.80),
        note: match guarded_ratio {
            Some(_) => format!(
                "{} driver, median of repetitions; secrets, injection and PII on prompt and answer",
                default_driver
            ),
            None => "the guarded scenarios did not run".into(),
        },
    });
    let streamed = results.iter().find(|r| r.name.starts_with("translated-streaming"));
    let added_ttft = streamed.and_then(|r| r.ttft_overhead_us.as_ref()).map(|p| p.p99.median);
    t.push(TargetCheck {
        name: "added TTFT, OpenAI in and Anthropic out, 1k open streams".into(),
        goal: "<= 100 µs at p99".into(),
        value: added_ttft,
        unit: "µs".into(),
        met: added_ttft.filter(|_| !o.quick).map(|a| a <= 100.0),
        note: match added_ttft {
            _ if o.quick => "not judged in --quick (100 open streams)".into(),
            Some(a) if a > 100.0 => format!("missed by {:.0} µs; median of repetitions", a - 100.0),
            Some(_) => "TTFT p99 through the gateway minus straight to the mock, median of repetitions".into(),
            None => "the translated scenario did not run".into(),
        },
    });
    let idle = default.and_then(|g| g.idle_rss_mb);
    t.push(TargetCheck {
        name: "idle RSS".into(),
        goal: "< 20 MB".into(),
        value: idle,
        unit: "MB".into(),
        met: idle.map(|m| m < 20.0),
        note: "one shard, fresh process, 1 s after start".into(),
    });
    t.push(TargetCheck {
        name: "RSS with 10k open streams".into(),
        goal: "< 200 MB".into(),
        value: streams_rss,
        unit: "MB".into(),
        met: streams_rss.map(|m| m < 200.0),
        note: if streams_rss.is_some() {
            "peak VmRSS while 10k streams were open".into()
        } else {
            "not measured at 10k streams in this run (see the open-streams notes)".into()
        },
    });
    t
}

/// Where a report goes: `results/<date>-<scenario>.json` per scenario, the whole report, a
/// Markdown summary, two SVGs; and `results/README.md` pointing at the latest.
pub fn write(report: &BenchReport, out: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let date = &report.meta.date;
    let mut written = Vec::new();
    let mut json_files = Vec::new();
    let put = |name: String, text: String, written: &mut Vec<PathBuf>| -> Result<(), String> {
        let p = out.join(&name);
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
        written.push(p);
        Ok(())
    };
    for s in &report.scenarios {
        let name = format!("{date}-{}.json", s.name);
        let body = serde_json::json!({ "meta": report.meta, "scenario": s, "targets": report.targets });
        put(name.clone(), serde_json::to_string_pretty(&body).map_err(|e| e.to_string())?, &mut written)?;
        json_files.push(name);
    }
    let all = format!("{date}-bench.json");
    put(all.clone(), serde_json::to_string_pretty(report).map_err(|e| e.to_string())?, &mut written)?;
    json_files.insert(0, all);
    let files = super::render::Files {
        json: json_files,
        latency_svg: format!("{date}-latency.svg"),
        throughput_svg: format!("{date}-throughput.svg"),
    };
    put(files.latency_svg.clone(), super::render::latency_svg(report), &mut written)?;
    put(files.throughput_svg.clone(), super::render::throughput_svg(report), &mut written)?;
    let summary = format!("{date}-summary.md");
    put(summary.clone(), super::render::markdown(report, &files), &mut written)?;
    written.push(update_index(out, &summary, report)?);
    Ok(written)
}

/// Rewrites the "latest" block of `results/README.md`, keeping everything else.
fn update_index(out: &Path, summary: &str, report: &BenchReport) -> Result<PathBuf, String> {
    const BEGIN: &str = "<!-- latest-bench:begin -->";
    const END: &str = "<!-- latest-bench:end -->";
    let path = out.join("README.md");
    let current = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        "# Results\n\nBenchmark results, each with the command, machine and commit that made it.\n".into()
    });
    let block = format!(
        "{BEGIN}\n## Latest `shardgate-bench run`\n\n[{summary}]({summary}) — {} on commit `{}`{}, {}.\n{END}",
        report.meta.date,
        report.meta.commit.get(..12).unwrap_or(&report.meta.commit),
        if report.meta.dirty { " (dirty)" } else { "" },
        if report.meta.quick { "quick mode" } else { "full run" }
    );
    let next = match (current.find(BEGIN), current.find(END)) {
        (Some(b), Some(e)) if e > b => format!("{}{block}{}", &current[..b], &current[e + END.len()..]),
        _ => format!("{}\n{block}\n", current.trim_end()),
    };
    std::fs::write(&path, next).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::{buckets_since, histogram_buckets, quantile_bound};

    #[test]
    fn quantile_bound_is_the_bucket_holding_the_quantile() {
        let text = "# HELP h x\nh_bucket{le=\"0.00001\"} 10\nh_bucket{le=\"0.00005\"} 90\nh_bucket{le=\"0.0001\"} 99\nh_bucket{le=\"+Inf\"} 100\nh_sum 1\nh_count 100\n";
        let b = histogram_buckets(text, "h");
        assert_eq!(quantile_bound(&b, 0.5), Some((0.00005, 100.0)));
        assert_eq!(quantile_bound(&b, 0.99), Some((0.0001, 100.0)));
        assert_eq!(quantile_bound(&b, 1.0), Some((f64::INFINITY, 100.0)));
        assert_eq!(quantile_bound(&histogram_buckets("h_bucket{le=\"+Inf\"} 0\n", "h"), 0.5), None);
        assert!(histogram_buckets(text, "other").is_empty());
        // Between two scrapes: only what was added counts.
        let later =
            histogram_buckets(&text.replace("} 90", "} 190").replace("} 99", "} 199").replace("} 100", "} 200"), "h");
        let d = buckets_since(&b, &later);
        assert_eq!(quantile_bound(&d, 0.5), Some((0.00005, 100.0)));
        assert_eq!(quantile_bound(&d, 0.01), Some((0.00005, 100.0)), "no new sample fell in the first bucket");
    }
}
