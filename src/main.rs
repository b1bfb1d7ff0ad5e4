//! The `dialgate` command line. Only argument parsing and wiring live here;
//! every command calls into the library.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "dialgate",
    version,
    about = "Outbound call campaigns for AI voice agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Check everything loaded at run time: ONNX Runtime, models, Opus.
    Doctor,
    /// Answering-machine detection on recorded audio.
    #[command(subcommand)]
    Amd(AmdCommand),
    /// Run the gateway: Twilio Media Streams at /twilio/stream, bridged to an agent.
    Serve {
        /// A TOML file of settings named as these flags (`listen = "…"`,
        /// `agent-url = "…"`, `agent-immediate = true`…). A flag on the
        /// command line or its environment variable wins over the file.
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// The agent's WebSocket URL.
        #[arg(
            long,
            env = "DIALGATE_AGENT_URL",
            default_value = "ws://127.0.0.1:8081/"
        )]
        agent_url: String,
        /// The audio that agent speaks: mulaw_8000, l16_16000 or l16_24000.
        #[arg(long, env = "DIALGATE_AGENT_AUDIO", default_value = "mulaw_8000")]
        agent_audio: dialgate::agent::bridge::AgentAudio,
        /// SIP trunk address (host:port): enables the `sip` carrier.
        #[arg(long, env = "DIALGATE_SIP_TRUNK")]
        sip_trunk: Option<String>,
        /// Take inbound SIP calls on this UDP address (e.g. 0.0.0.0:5060);
        /// each is bridged to the agent at --agent-url.
        #[arg(long, env = "DIALGATE_SIP_LISTEN")]
        sip_listen: Option<std::net::SocketAddr>,
        /// SIP digest username.
        #[arg(long, env = "DIALGATE_SIP_USERNAME")]
        sip_username: Option<String>,
        /// SIP digest password.
        #[arg(long, env = "DIALGATE_SIP_PASSWORD", hide_env_values = true)]
        sip_password: Option<String>,
        /// Domain of our From URI (default: the trunk's host).
        #[arg(long)]
        sip_from_domain: Option<String>,
        /// Send every SIP request through this outbound proxy (host:port);
        /// the trunk stays the request's destination.
        #[arg(long, env = "DIALGATE_SIP_OUTBOUND_PROXY")]
        sip_outbound_proxy: Option<String>,
        /// The trunk's transport: udp, or tcp (a connection per call).
        #[arg(long, env = "DIALGATE_SIP_TRANSPORT", default_value = "udp")]
        sip_transport: dialgate::carrier::sip::uac::Transport,
        /// Ping the trunk with OPTIONS every this many seconds and hold SIP
        /// calls while it does not answer (0: never ping).
        #[arg(long, default_value_t = 0)]
        sip_options_interval: u64,
        /// Twilio account SID: enables the `twilio` carrier.
        #[arg(long, env = "TWILIO_ACCOUNT_SID")]
        twilio_account_sid: Option<String>,
        /// Twilio auth token: authenticates REST calls and checks webhook
        /// and stream signatures.
        #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
        twilio_auth_token: Option<String>,
        /// Twilio REST base URL.
        #[arg(long, default_value = "https://api.twilio.com")]
        twilio_api_url: String,
        /// The `sim` carrier's REST base URL (see `dialgate sim`).
        #[arg(long, env = "DIALGATE_SIM_URL")]
        sim_url: Option<String>,
        /// The sim's account SID.
        #[arg(long, default_value = "ACsim")]
        sim_account_sid: String,
        /// The sim's auth token.
        #[arg(
            long,
            env = "DIALGATE_SIM_TOKEN",
            default_value = "sim-token",
            hide_env_values = true
        )]
        sim_auth_token: String,
        /// The SQLite database (created and migrated if needed).
        #[arg(long, env = "DIALGATE_DB", default_value = "dialgate.db")]
        db: std::path::PathBuf,
        /// Public base URL carriers reach this server at (https://…);
        /// defaults to http://<listen address>.
        #[arg(long, env = "DIALGATE_PUBLIC_URL")]
        public_url: Option<String>,
        /// First retry delay for event delivery, ms (then doubling, jittered).
        #[arg(long, default_value_t = 2000)]
        event_backoff_ms: u64,
        /// Delivery attempts before an event is dead-lettered.
        #[arg(long, default_value_t = 10)]
        event_max_attempts: u32,
        /// When the carrier does not place a call (unreachable, 429, 503),
        /// try the contact again after this, ms (doubling per attempt).
        #[arg(long, default_value_t = 15_000)]
        carrier_backoff_ms: u64,
        /// Connect the agent at answer instead of after AMD.
        #[arg(long)]
        agent_immediate: bool,
        /// On a machine, leave a message with this voicemail script path
        /// (default: end the call).
        #[arg(long)]
        leave_message: Option<String>,
    },
    /// N concurrent outbound SIP calls with media against a trunk (e.g. a
    /// SIPp UAS playing speech), through AMD and the in-process echo agent.
    SipLoad {
        /// The trunk's address.
        #[arg(long)]
        trunk: std::net::SocketAddr,
        /// Concurrent calls.
        #[arg(long, default_value_t = 50)]
        calls: usize,
        /// Seconds each call lasts once answered.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Seconds over which calls start.
        #[arg(long, default_value_t = 5)]
        ramp: u64,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Built-in agents.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// The `sim` carrier: a Twilio-compatible simulator.
    Sim {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: std::net::SocketAddr,
        /// Rules file (JSON): which destinations answer, how.
        #[arg(long)]
        rules: std::path::PathBuf,
        /// Append every accepted dial here (JSON lines).
        #[arg(long)]
        log: Option<std::path::PathBuf>,
        /// Write what each answered call heard here, as `<CallSid>.wav`.
        #[arg(long)]
        record_dir: Option<std::path::PathBuf>,
        /// Account SID it accepts.
        #[arg(long, default_value = "ACsim")]
        account_sid: String,
        /// Auth token it accepts and signs callbacks with.
        #[arg(
            long,
            env = "DIALGATE_SIM_TOKEN",
            default_value = "sim-token",
            hide_env_values = true
        )]
        auth_token: String,
    },
    /// API keys.
    #[command(subcommand)]
    Apikey(ApikeyCommand),
    /// Run an example campaign end to end: server, sim carrier, echo agent,
    /// a CSV of contacts, live progress and a final table. No account needed.
    Demo {
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
        /// Keep the database and logs here (default: a temporary directory).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 240)]
        timeout: u64,
    },
    /// Campaigns, through the API.
    #[command(subcommand)]
    Campaign(CampaignCommand),
    /// Launch one call through the API.
    Call {
        #[command(flatten)]
        api: ApiArgs,
        /// Campaign id.
        #[arg(long)]
        campaign: String,
        /// Destination number.
        #[arg(long)]
        to: String,
        /// A variable, `name=value` (repeatable).
        #[arg(long = "var")]
        vars: Vec<String>,
        /// A metadata entry, `name=value` (repeatable).
        #[arg(long = "meta")]
        meta: Vec<String>,
        /// RFC 3339 time to call at.
        #[arg(long)]
        scheduled_for: Option<String>,
        /// Idempotency key.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Measure event delivery to a local receiver, alone and beside a
    /// receiver that never answers.
    DeliveryBench {
        /// Events to deliver.
        #[arg(long, default_value_t = 5000)]
        events: usize,
        /// Events pending for the stuck receiver in the second run.
        #[arg(long, default_value_t = 1000)]
        stuck: usize,
        /// Requests in flight per receiving host.
        #[arg(long, default_value_t = 8)]
        per_host: usize,
    },
    /// Measure the call queue: CSV import rate and peak memory, claims per
    /// second, on a fresh SQLite file.
    QueueBench {
        /// CSV rows to import.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Claims to time.
        #[arg(long, default_value_t = 20_000)]
        claims: u64,
        /// Directory for the database (default: a temporary one).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Open N simulated Twilio streams against a running gateway (bridged to
    /// the echo agent) and report latency, drops and the gateway's cost.
    Loadtest {
        /// ws://HOST:PORT/twilio/stream
        #[arg(long)]
        target: String,
        /// Concurrent streams.
        #[arg(long, default_value_t = 100)]
        streams: usize,
        /// Seconds each stream sends audio.
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// Seconds over which streams connect.
        #[arg(long, default_value_t = 5)]
        ramp: u64,
        /// The gateway's pid, to read its CPU and memory from /proc.
        #[arg(long)]
        gateway_pid: Option<u32>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AgentCommand {
    /// An agent that says "Hello." and echoes what it hears.
    Echo {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: std::net::SocketAddr,
    },
}

#[derive(clap::Args, Clone)]
struct AmdArgs {
    /// The seed's initial check delay: the longest wait for a decision, ms.
    #[arg(long, default_value_t = dialgate::detect::amd::AmdConfig::default().initial_check_delay_ms)]
    initial_check_delay_ms: u64,
    /// When unsure and no LLM answers: human, machine or unknown.
    #[arg(long, default_value = "human")]
    fallback: String,
    /// Read at most this much of each file, ms.
    #[arg(long, default_value_t = 60_000)]
    max_audio_ms: u64,
    /// The callee's channel of a two-channel call recording (1 or 2;
    /// Twilio's dual-channel recordings and many PBXs keep each side on
    /// its own). Default: all channels mixed.
    #[arg(long)]
    channel: Option<u16>,
    /// Ask an LLM when unsure (DIALGATE_LLM_BASE_URL, DIALGATE_LLM_MODEL:
    /// an audio model, default gpt-audio-mini; DIALGATE_LLM_API_KEY or
    /// OPENAI_API_KEY).
    #[arg(long)]
    llm: bool,
    /// Time the LLM may take, ms.
    #[arg(long, default_value_t = 1500)]
    llm_budget_ms: u64,
    /// After a `human` decision, keep listening this long for a voicemail
    /// beep, ms (0: off).
    #[arg(long, default_value_t = dialgate::detect::amd::AmdConfig::default().late_beep_ms)]
    late_beep_ms: u64,
}

impl AmdArgs {
    fn config(&self) -> anyhow::Result<dialgate::detect::amd::AmdConfig> {
        use dialgate::detect::amd::{AmdConfig, Fallback};
        let fallback = match self.fallback.as_str() {
            "human" => Fallback::Human,
            "machine" => Fallback::Machine,
            "unknown" => Fallback::Unknown,
            other => anyhow::bail!("--fallback {other:?}: expected human, machine or unknown"),
        };
        Ok(AmdConfig {
            initial_check_delay_ms: self.initial_check_delay_ms,
            fallback,
            llm_budget_ms: self.llm.then_some(self.llm_budget_ms),
            late_beep_ms: self.late_beep_ms,
            ..AmdConfig::default()
        })
    }

    fn read(&self) -> dialgate::detect::bench::ReadOptions {
        dialgate::detect::bench::ReadOptions {
            max_audio_ms: self.max_audio_ms,
            channel: self.channel,
        }
    }

    fn verifier(&self) -> anyhow::Result<Option<dialgate::verifier::BlockingVerifier>> {
        use dialgate::detect::llm::{LlmConfig, LlmVerifier};
        use dialgate::verifier::BlockingVerifier;
        if !self.llm {
            return Ok(None);
        }
        Ok(Some(BlockingVerifier::new(LlmVerifier::new(
            LlmConfig::from_env(),
        )?)?))
    }
}

#[derive(Subcommand)]
enum AmdCommand {
    /// Run the detector over a WAV file and print its decisions.
    Classify {
        /// A WAV file (any rate, mono or stereo, PCM, float, mu-law or A-law).
        file: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        amd: AmdArgs,
    },
    /// Measure accuracy, latency and cost over a labelled directory.
    Bench {
        /// Directory with labels.csv (AMD.md format).
        dir: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Include every file's result.
        #[arg(long)]
        per_file: bool,
        /// Write decision latencies and the confusion matrix as SVG.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Also run a published baseline: asterisk or twilio (repeatable).
        #[arg(long)]
        baseline: Vec<String>,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        #[command(flatten)]
        amd: AmdArgs,
    },
    /// Write the feature table of a labelled corpus (what the model trains on).
    Features {
        /// Directory with labels.csv.
        dir: PathBuf,
        /// Output CSV.
        #[arg(long)]
        out: PathBuf,
        /// Snapshot interval in ms (a multiple of 20).
        #[arg(long, default_value_t = 100)]
        every_ms: u64,
        /// Audio read per clip, ms.
        #[arg(long, default_value_t = 8000)]
        max_ms: u64,
    },
}

#[derive(clap::Args, Debug, Clone)]
struct ApiArgs {
    /// The API's base URL.
    #[arg(
        long,
        env = "DIALGATE_API_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    api_url: String,
    /// API key (`dialgate apikey create`).
    #[arg(long, env = "DIALGATE_API_KEY", hide_env_values = true)]
    api_key: String,
}

#[derive(Subcommand, Debug)]
enum ApikeyCommand {
    /// Create a key; it is printed once and stored hashed.
    Create {
        /// The SQLite database.
        #[arg(long, env = "DIALGATE_DB", default_value = "dialgate.db")]
        db: std::path::PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum CampaignCommand {
    /// Create from a JSON file.
    Create {
        #[command(flatten)]
        api: ApiArgs,
        /// The campaign (JSON).
        file: std::path::PathBuf,
    },
    /// List campaigns.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show one.
    Show {
        #[command(flatten)]
        api: ApiArgs,
        /// Campaign id.
        id: String,
    },
    /// Upload a CSV of contacts.
    Upload {
        #[command(flatten)]
        api: ApiArgs,
        /// Campaign id.
        id: String,
        /// The CSV file.
        file: std::path::PathBuf,
    },
    /// Stop new dials.
    Pause {
        #[command(flatten)]
        api: ApiArgs,
        /// Campaign id.
        id: String,
    },
    /// Resume dialling.
    Resume {
        #[command(flatten)]
        api: ApiArgs,
        /// Campaign id.
        id: String,
    },
    /// Cancel for good.
    Cancel {
        #[command(flatten)]
        api: ApiArgs,
        /// Campaign id.
        id: String,
    },
    /// Counts by status and AMD outcome.
    Stats {
        #[command(flatten)]
        api: ApiArgs,
        /// Campaign id.
        id: String,
    },
}

fn kv_map(pairs: &[String]) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    pairs
        .iter()
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("`{p}` is not name=value"))?;
            Ok((k.to_string(), serde_json::Value::String(v.to_string())))
        })
        .collect()
}

/// Sends one API request and prints the JSON answer; non-2xx is an error.
async fn api_call(
    api: &ApiArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<(&str, Vec<u8>)>,
) -> anyhow::Result<ExitCode> {
    let url = format!("{}{path}", api.api_url.trim_end_matches('/'));
    let mut req = reqwest::Client::new()
        .request(method, &url)
        .bearer_auth(&api.api_key);
    if let Some((ct, b)) = body {
        req = req.header("content-type", ct).body(b);
    }
    let resp = req.send().await.with_context(|| format!("calling {url}"))?;
    let status = resp.status();
    let text = resp.text().await?;
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) => println!("{}", serde_json::to_string_pretty(&v)?),
        Err(_) => println!("{text}"),
    }
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        eprintln!("dialgate: the API answered {status}");
        ExitCode::FAILURE
    })
}

/// `serve --config FILE`: the file's settings become flags, unless the
/// same flag is on the command line or its environment variable is set.
fn with_config_file(args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    use clap::CommandFactory;
    if args.get(1).and_then(|a| a.to_str()) != Some("serve") {
        return Ok(args);
    }
    let strs: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let path = strs.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--config=").map(str::to_string).or_else(|| {
            (a == "--config")
                .then(|| strs.get(i + 1).cloned())
                .flatten()
        })
    });
    let Some(path) = path else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{path} is not valid TOML"))?;
    let cmd = Cli::command();
    let serve = cmd
        .find_subcommand("serve")
        .context("no serve subcommand")?;
    let mut out = args;
    for (key, value) in table {
        let Some(arg) = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && key != "config")
        else {
            let known: Vec<&str> = serve
                .get_arguments()
                .filter_map(|a| a.get_long())
                .filter(|l| *l != "config" && *l != "help")
                .collect();
            anyhow::bail!(
                "{path}: unknown setting `{key}` (known: {})",
                known.join(", ")
            );
        };
        let flag = format!("--{key}");
        let given = strs
            .iter()
            .any(|a| *a == flag || a.starts_with(&format!("{flag}=")));
        let from_env = arg.get_env().is_some_and(|e| std::env::var_os(e).is_some());
        if given || from_env {
            continue;
        }
        match value {
            toml::Value::Boolean(true) => out.push(flag.into()),
            toml::Value::Boolean(false) => {}
            toml::Value::String(v) => out.extend([flag.into(), v.into()]),
            toml::Value::Integer(v) => out.extend([flag.into(), v.to_string().into()]),
            other => anyhow::bail!(
                "{path}: `{key}` must be a string, number or boolean, not {}",
                other.type_str()
            ),
        }
    }
    Ok(out)
}

/// A SIP `host[:port]` (5060 by default) as the address to send to.
fn resolve_sip(hostport: &str) -> anyhow::Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    let with_port = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:5060")
    };
    with_port
        .to_socket_addrs()
        .with_context(|| format!("resolving the SIP address {hostport}"))?
        .next()
        .with_context(|| format!("the SIP address {hostport} has no address"))
}

/// An error and its causes on one line. Our error types say their cause in
/// their own message (a log line with only `%e` must still say why), so a
/// cause whose text is already there is not repeated.
fn report(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if line.contains(&msg) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&msg);
    }
    line
}

fn main() -> ExitCode {
    let args = match with_config_file(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("dialgate: {}", report(&e));
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(args);
    // The demo's terminal is for its progress and table; per-call logs are
    // one RUST_LOG=info away.
    let default_filter = if matches!(cli.command, Command::Demo { .. }) {
        "warn,ort=warn"
    } else {
        "info,ort=warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dialgate: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    Ok(match cli.command {
        Command::Doctor => {
            let (checks, ok) = dialgate::doctor::run();
            print!("{}", dialgate::doctor::report(&checks));
            if ok {
                ExitCode::SUCCESS
            } else {
                eprintln!("dialgate doctor: some checks failed (see FAIL above)");
                ExitCode::FAILURE
            }
        }
        Command::Amd(AmdCommand::Classify { file, json, amd }) => {
            let verifier = amd.verifier()?;
            let c = dialgate::detect::bench::classify_file(
                &file,
                amd.config()?,
                verifier
                    .as_ref()
                    .map(|v| v as &dyn dialgate::detect::bench::Verifier),
                amd.read(),
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                println!("{}", file.display());
                for e in &c.timeline {
                    println!(
                        "  {:>6} ms  {:<20} p(machine) {:.2}  ({})",
                        e.at_ms, e.outcome, e.p_machine, e.trigger
                    );
                }
                if let Some(b) = c.beep {
                    println!(
                        "  beep {:.0} Hz from {} to {} ms",
                        b.freq_hz, b.start_ms, b.end_ms
                    );
                }
                println!(
                    "  answered by {} at {} ms; {:.1} ms CPU for {:.1} s of audio",
                    c.answered_by,
                    c.decision_ms,
                    c.cpu_ms,
                    c.audio_ms as f64 / 1000.0
                );
            }
            ExitCode::SUCCESS
        }
        Command::Amd(AmdCommand::Bench {
            dir,
            json,
            per_file,
            plot,
            baseline,
            threads,
            amd,
        }) => {
            use dialgate::detect::baseline::Baseline;
            use dialgate::detect::bench::{Detector, bench, format_report, plot_svg};
            let baselines = baseline
                .iter()
                .map(|b| {
                    Baseline::parse(b).ok_or_else(|| {
                        anyhow::anyhow!("--baseline {b:?}: expected asterisk or twilio")
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let progress = |i: usize, n: usize| {
                // (the last count ends its line: a report or an error follows)
                if !json && (i.is_multiple_of(25) || i == n) {
                    eprint!("\r{i}/{n} clips{}", if i == n { "\n" } else { "" });
                }
            };
            let verifier = amd.verifier()?;
            let v = verifier
                .as_ref()
                .map(|v| v as &dyn dialgate::detect::bench::Verifier);
            let cfg = amd.config()?;
            let report = bench(
                &dir,
                Detector::Dialgate(&cfg, v),
                threads,
                per_file || plot.is_some(),
                amd.read(),
                &progress,
            )?;
            let mut others = Vec::new();
            for b in baselines {
                others.push(bench(
                    &dir,
                    Detector::Baseline(b),
                    threads,
                    per_file,
                    amd.read(),
                    &progress,
                )?);
            }
            if let Some(path) = &plot {
                std::fs::write(path, plot_svg(&report))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if json {
                let mut v = serde_json::to_value(&report)?;
                if !per_file && let Some(o) = v.as_object_mut() {
                    o.remove("files");
                }
                if !others.is_empty()
                    && let Some(o) = v.as_object_mut()
                {
                    let b: serde_json::Map<String, serde_json::Value> = others
                        .iter()
                        .map(|r| Ok((r.detector.clone(), serde_json::to_value(r)?)))
                        .collect::<anyhow::Result<_>>()?;
                    o.insert("baselines".into(), serde_json::Value::Object(b));
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", format_report(&report, &others));
                if per_file && let Some(files) = &report.files {
                    println!("\nper file");
                    for f in files {
                        // the trigger and p(machine) say why: what a user
                        // reading the misses on their own recordings needs
                        let first = f.result.timeline.first();
                        println!(
                            "  {} {:<40} {:<8} -> {:<14} {:>6} ms  {:<16} p {:.2}  {}",
                            if f.correct { " " } else { "X" },
                            f.file,
                            f.label,
                            f.result.answered_by,
                            f.result.decision_ms,
                            first.map_or("", |d| d.trigger.as_str()),
                            f.result.p_machine,
                            f.result.machine_end.as_deref().unwrap_or("")
                        );
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Command::Serve {
            config: _,
            listen,
            agent_url,
            agent_audio,
            sip_trunk,
            sip_listen,
            sip_username,
            sip_password,
            sip_from_domain,
            sip_outbound_proxy,
            sip_transport,
            sip_options_interval,
            twilio_account_sid,
            twilio_auth_token,
            twilio_api_url,
            sim_url,
            sim_account_sid,
            sim_auth_token,
            db,
            public_url,
            event_backoff_ms,
            event_max_attempts,
            carrier_backoff_ms,
            agent_immediate,
            leave_message,
        } => {
            use dialgate::call::session::{AgentStart, MachineAction, SessionConfig};
            use dialgate::carrier::twilio::rest::TwilioConfig;
            let mut carriers = std::collections::HashMap::new();
            if let (Some(sid), Some(token)) = (twilio_account_sid, twilio_auth_token) {
                carriers.insert(
                    "twilio".to_string(),
                    TwilioConfig {
                        base_url: twilio_api_url,
                        account_sid: sid,
                        auth_token: token,
                    },
                );
            }
            if let Some(url) = sim_url {
                carriers.insert(
                    "sim".to_string(),
                    TwilioConfig {
                        base_url: url,
                        account_sid: sim_account_sid,
                        auth_token: sim_auth_token,
                    },
                );
            }
            let cfg = dialgate::app::AppConfig {
                listen,
                db,
                public_url,
                carriers,
                default_agent_url: agent_url,
                default_agent_audio: agent_audio,
                sip_listen,
                sip: match sip_trunk {
                    None => None,
                    Some(t) => {
                        // The trunk names the request's destination; the
                        // datagrams go to the outbound proxy when there is
                        // one (then the trunk need not resolve here).
                        let (host, port) = match t.rsplit_once(':') {
                            Some((h, p)) => (
                                h.to_string(),
                                p.parse::<u16>()
                                    .with_context(|| format!("the SIP trunk {t}: bad port"))?,
                            ),
                            None => (t.clone(), 5060),
                        };
                        let send_to = sip_outbound_proxy.as_deref().unwrap_or(t.as_str());
                        let addr = resolve_sip(send_to)?;
                        Some(dialgate::engine::SipTrunk {
                            trunk: dialgate::carrier::sip::uac::TrunkConfig {
                                host,
                                port,
                                username: sip_username,
                                password: sip_password,
                                from_domain: sip_from_domain,
                                transport: sip_transport,
                                outbound_proxy: sip_outbound_proxy,
                            },
                            addr,
                            llm: None,
                            options_interval: (sip_options_interval > 0)
                                .then(|| std::time::Duration::from_secs(sip_options_interval)),
                            up: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
                        })
                    }
                },
                // AMD's LLM verification (campaigns opt in): configured from
                // DIALGATE_LLM_BASE_URL / _MODEL / _API_KEY or OPENAI_API_KEY;
                // post-call analysis (below) has its own model.
                llm: {
                    let llm = dialgate::detect::llm::LlmConfig::from_env();
                    let set = std::env::var_os("DIALGATE_LLM_BASE_URL").is_some()
                        || !llm.api_key.is_empty();
                    if set {
                        tracing::info!(base_url = %llm.base_url, model = %llm.model, "LLM verification available");
                        Some(std::sync::Arc::new(
                            dialgate::detect::llm::LlmVerifier::new(llm)?,
                        ))
                    } else {
                        None
                    }
                },
                default_session: SessionConfig {
                    agent_start: if agent_immediate {
                        AgentStart::Immediate
                    } else {
                        AgentStart::AfterAmd
                    },
                    machine_action: match leave_message {
                        Some(voicemail_script) => MachineAction::LeaveMessage { voicemail_script },
                        None => MachineAction::EndCall,
                    },
                    ..SessionConfig::default()
                },
                tick: std::time::Duration::from_millis(200),
                carrier_backoff: std::time::Duration::from_millis(carrier_backoff_ms),
                delivery: dialgate::events::delivery::DeliveryConfig {
                    base_backoff: std::time::Duration::from_millis(event_backoff_ms.max(1)),
                    max_attempts: event_max_attempts.max(1),
                    llm: Some(dialgate::detect::llm::LlmConfig::analysis_from_env()),
                    ..Default::default()
                },
            };
            // Load the models before the first call arrives.
            dialgate::detect::classifier::warm_up()?;
            tokio::runtime::Runtime::new()?.block_on(async move {
                let _app = dialgate::app::start(cfg).await?;
                tokio::signal::ctrl_c().await?;
                anyhow::Ok(())
            })?;
            ExitCode::SUCCESS
        }
        Command::Sim {
            listen,
            rules,
            log,
            record_dir,
            account_sid,
            auth_token,
        } => {
            let rules = dialgate::carrier::sim::Rules::load(&rules)?;
            let cfg = dialgate::carrier::sim::SimConfig {
                account_sid,
                auth_token,
                rules,
                log,
                record_dir,
            };
            tokio::runtime::Runtime::new()?.block_on(dialgate::carrier::sim::run(listen, cfg))?;
            ExitCode::SUCCESS
        }
        Command::Apikey(ApikeyCommand::Create { db }) => {
            let store = dialgate::store::Store::open(&db)?;
            let (id, secret) = store.create_api_key(chrono::Utc::now().timestamp_millis())?;
            eprintln!("created API key {id} (shown once; stored hashed)");
            println!("{secret}");
            ExitCode::SUCCESS
        }
        Command::Demo { json, dir, timeout } => {
            let opts = dialgate::demo::DemoOptions {
                json,
                dir,
                timeout: std::time::Duration::from_secs(timeout),
            };
            let ok = tokio::runtime::Runtime::new()?.block_on(dialgate::demo::run(opts))?;
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Campaign(c) => {
            use reqwest::Method;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async move {
                match c {
                    CampaignCommand::Create { api, file } => {
                        let body = std::fs::read(&file)
                            .with_context(|| format!("reading {}", file.display()))?;
                        api_call(
                            &api,
                            Method::POST,
                            "/v1/campaigns",
                            Some(("application/json", body)),
                        )
                        .await
                    }
                    CampaignCommand::List { api } => {
                        api_call(&api, Method::GET, "/v1/campaigns", None).await
                    }
                    CampaignCommand::Show { api, id } => {
                        api_call(&api, Method::GET, &format!("/v1/campaigns/{id}"), None).await
                    }
                    CampaignCommand::Upload { api, id, file } => {
                        let body = std::fs::read(&file)
                            .with_context(|| format!("reading {}", file.display()))?;
                        api_call(
                            &api,
                            Method::POST,
                            &format!("/v1/campaigns/{id}/uploads"),
                            Some(("text/csv", body)),
                        )
                        .await
                    }
                    CampaignCommand::Pause { api, id } => {
                        api_call(
                            &api,
                            Method::POST,
                            &format!("/v1/campaigns/{id}/pause"),
                            None,
                        )
                        .await
                    }
                    CampaignCommand::Resume { api, id } => {
                        api_call(
                            &api,
                            Method::POST,
                            &format!("/v1/campaigns/{id}/resume"),
                            None,
                        )
                        .await
                    }
                    CampaignCommand::Cancel { api, id } => {
                        api_call(
                            &api,
                            Method::POST,
                            &format!("/v1/campaigns/{id}/cancel"),
                            None,
                        )
                        .await
                    }
                    CampaignCommand::Stats { api, id } => {
                        api_call(
                            &api,
                            Method::GET,
                            &format!("/v1/campaigns/{id}/stats"),
                            None,
                        )
                        .await
                    }
                }
            })?
        }
        Command::Call {
            api,
            campaign,
            to,
            vars,
            meta,
            scheduled_for,
            idempotency_key,
        } => {
            let body = serde_json::json!({
                "campaign_id": campaign, "to": to,
                "variables": kv_map(&vars)?, "metadata": kv_map(&meta)?,
                "scheduled_for": scheduled_for, "idempotency_key": idempotency_key,
            });
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(api_call(
                &api,
                reqwest::Method::POST,
                "/v1/calls",
                Some(("application/json", body.to_string().into_bytes())),
            ))?
        }
        Command::DeliveryBench {
            events,
            stuck,
            per_host,
        } => {
            let report = tokio::runtime::Runtime::new()?
                .block_on(dialgate::demo::delivery_bench(events, stuck, per_host))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            ExitCode::SUCCESS
        }
        Command::QueueBench { rows, claims, dir } => {
            let report = dialgate::demo::queue_bench(rows, claims, dir.as_deref())?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            ExitCode::SUCCESS
        }
        Command::Loadtest {
            target,
            streams,
            duration,
            ramp,
            gateway_pid,
            json,
        } => {
            let cfg = dialgate::loadtest::LoadConfig {
                target,
                streams,
                duration: std::time::Duration::from_secs(duration),
                ramp: std::time::Duration::from_secs(ramp),
                gateway_pid,
            };
            let r = tokio::runtime::Runtime::new()?.block_on(dialgate::loadtest::run(cfg));
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{} of {} streams connected; {} frames sent, {} echoed back, {} dropped, {} late (> {} ms)",
                    r.connected,
                    r.streams,
                    r.frames_sent,
                    r.frames_received,
                    r.dropped_frames,
                    r.late_frames,
                    dialgate::loadtest::LATE_MS
                );
                println!(
                    "round trip through the gateway: p50 {:.1} ms, p99 {:.1} ms",
                    r.latency_ms.p50, r.latency_ms.p99
                );
                if let Some(cpu) = r.gateway_cpu_us_per_stream_s {
                    println!("gateway CPU: {cpu:.0} µs per stream-second");
                }
                if let Some(kib) = r.gateway_kib_per_stream {
                    println!("gateway memory: {kib:.0} KiB per stream");
                }
            }
            ExitCode::SUCCESS
        }
        Command::SipLoad {
            trunk,
            calls,
            duration,
            ramp,
            json,
        } => {
            let cfg = dialgate::carrier::sip::load::SipLoadConfig {
                trunk,
                calls,
                duration: std::time::Duration::from_secs(duration),
                ramp: std::time::Duration::from_secs(ramp),
            };
            let r = tokio::runtime::Runtime::new()?
                .block_on(dialgate::carrier::sip::load::sip_load(cfg))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{} calls: {} completed, {} failed{}",
                    r.calls,
                    r.completed,
                    r.failed,
                    r.first_failure
                        .as_deref()
                        .map(|f| format!(" (first: {f})"))
                        .unwrap_or_default()
                );
                println!(
                    "RTP: {} frames in (+{} concealed), {} out (+{} of silence), {} lost; {} RTCP reports sent; jitter median {:.2} ms, worst {:.2} ms; AMD decided on {}",
                    r.frames_in,
                    r.frames_concealed,
                    r.frames_out,
                    r.silence_out,
                    r.frames_lost,
                    r.rtcp_sent,
                    r.jitter_ms.0,
                    r.jitter_ms.1,
                    r.amd_decided
                );
                println!("CPU: {:.0} µs per call-second", r.cpu_us_per_call_s);
            }
            ExitCode::SUCCESS
        }
        Command::Agent(AgentCommand::Echo { listen }) => {
            tokio::runtime::Runtime::new()?.block_on(dialgate::agent::echo::run(listen))?;
            ExitCode::SUCCESS
        }
        Command::Amd(AmdCommand::Features {
            dir,
            out,
            every_ms,
            max_ms,
        }) => {
            let file = std::fs::File::create(&out)
                .with_context(|| format!("creating {}", out.display()))?;
            let mut w = std::io::BufWriter::new(file);
            let lines =
                dialgate::detect::dataset::write_table(&dir, every_ms, max_ms, &mut w, |i, n| {
                    if i.is_multiple_of(20) || i == n {
                        eprint!("\r{i}/{n} clips");
                    }
                })?;
            std::io::Write::flush(&mut w)?;
            eprintln!("\n{lines} rows written to {}", out.display());
            ExitCode::SUCCESS
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn a_config_file_fills_in_flags_the_command_line_did_not_give() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9\"\nagent-immediate = true\nevent-max-attempts = 3\nleave-message = \"vm.txt\"\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let out = with_config_file(args(&[
            "dialgate",
            "serve",
            "--config",
            p,
            "--listen",
            "127.0.0.1:7",
        ]))
        .unwrap();
        let cli = Cli::try_parse_from(out).unwrap();
        let Command::Serve {
            listen,
            agent_immediate,
            event_max_attempts,
            leave_message,
            ..
        } = cli.command
        else {
            panic!("not serve");
        };
        assert_eq!(listen.to_string(), "127.0.0.1:7", "the command line wins");
        assert!(agent_immediate);
        assert_eq!(event_max_attempts, 3);
        assert_eq!(leave_message.as_deref(), Some("vm.txt"));

        std::fs::write(&path, "bogus = 1\n").unwrap();
        let e = with_config_file(args(&["dialgate", "serve", "--config", p])).unwrap_err();
        assert!(e.to_string().contains("unknown setting `bogus`"), "{e}");
        std::fs::write(&path, "listen = [1]\n").unwrap();
        assert!(with_config_file(args(&["dialgate", "serve", "--config", p])).is_err());
        std::fs::write(&path, "listen = \n").unwrap();
        let e = with_config_file(args(&["dialgate", "serve", "--config", p])).unwrap_err();
        assert!(e.to_string().contains("not valid TOML"), "{e}");
    }
}
