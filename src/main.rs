//! The `dialgate` command line. Only argument parsing and wiring live here;
//! every command calls into the library.

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

#[derive(Subcommand)]
enum Command {
    /// Check everything loaded at run time: ONNX Runtime, models, Opus.
    Doctor,
    /// Answering-machine detection on recorded audio.
    #[command(subcommand)]
    Amd(AmdCommand),
    /// Run the gateway: Twilio Media Streams at /twilio/stream, bridged to an agent.
    Serve {
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
        /// Twilio auth token: when set, stream upgrades must be signed.
        #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
        twilio_auth_token: Option<String>,
        /// Public base URL Twilio connects to (wss://…), for signatures.
        #[arg(long, env = "DIALGATE_PUBLIC_URL")]
        public_url: Option<String>,
        /// Connect the agent at answer instead of after AMD.
        #[arg(long)]
        agent_immediate: bool,
        /// On a machine, leave a message with this voicemail script path
        /// (default: end the call).
        #[arg(long)]
        leave_message: Option<String>,
    },
    /// Built-in agents.
    #[command(subcommand)]
    Agent(AgentCommand),
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
    #[arg(long, default_value_t = 3000)]
    initial_check_delay_ms: u64,
    /// When unsure and no LLM answers: human, machine or unknown.
    #[arg(long, default_value = "human")]
    fallback: String,
    /// Read at most this much of each file, ms.
    #[arg(long, default_value_t = 60_000)]
    max_audio_ms: u64,
    /// Ask an LLM when unsure (DIALGATE_LLM_BASE_URL, DIALGATE_LLM_MODEL,
    /// DIALGATE_LLM_API_KEY or OPENAI_API_KEY).
    #[arg(long)]
    llm: bool,
    /// Time the LLM may take, ms.
    #[arg(long, default_value_t = 1500)]
    llm_budget_ms: u64,
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
            ..AmdConfig::default()
        })
    }

    fn verifier(&self) -> anyhow::Result<Option<dialgate::detect::llm::BlockingVerifier>> {
        use dialgate::detect::llm::{BlockingVerifier, LlmConfig, LlmVerifier};
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dialgate: {e:#}");
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
            let c = dialgate::detect::bench::classify_file(
                &file,
                amd.config()?,
                None,
                amd.max_audio_ms,
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
                if !json && (i.is_multiple_of(25) || i == n) {
                    eprint!("\r{i}/{n} clips");
                }
            };
            let verifier = amd.verifier()?;
            let v = verifier
                .as_ref()
                .map(|v| v as &dyn dialgate::detect::bench::Verifier);
            let report = bench(
                &dir,
                Detector::Dialgate(amd.config()?, v),
                threads,
                per_file || plot.is_some(),
                amd.max_audio_ms,
                &progress,
            )?;
            let mut others = Vec::new();
            for b in baselines {
                others.push(bench(
                    &dir,
                    Detector::Baseline(b),
                    threads,
                    per_file,
                    amd.max_audio_ms,
                    &progress,
                )?);
            }
            if !json {
                eprintln!();
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
                        println!(
                            "  {} {:<40} {:<8} -> {:<14} {:>6} ms  {}",
                            if f.correct { " " } else { "X" },
                            f.file,
                            f.label,
                            f.result.answered_by,
                            f.result.decision_ms,
                            f.result.machine_end.as_deref().unwrap_or("")
                        );
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Command::Serve {
            listen,
            agent_url,
            twilio_auth_token,
            public_url,
            agent_immediate,
            leave_message,
        } => {
            use dialgate::call::session::{AgentStart, MachineAction, SessionConfig};
            let cfg = dialgate::server::ServerConfig {
                listen,
                agent_url,
                twilio_auth_token,
                public_url,
                session: SessionConfig {
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
                agent_connect_timeout: std::time::Duration::from_secs(5),
            };
            // Load the models before the first call arrives.
            dialgate::detect::classifier::warm_up()?;
            tokio::runtime::Runtime::new()?.block_on(dialgate::server::run(cfg))?;
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
