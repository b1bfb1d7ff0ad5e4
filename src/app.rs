//! Assembles `dialgate serve`: the store, the dialer engine, the media
//! endpoints ([`crate::server`]) and the API ([`crate::api`]) on one
//! listener. The demo and the integration tests start the same thing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::api::{self, ApiState, Metrics};
use crate::call::session::SessionConfig;
use crate::carrier::twilio::rest::{TwilioClient, TwilioConfig};
use crate::engine::{Engine, EngineConfig};
use crate::events::delivery::{self, DeliveryConfig};
use crate::server::{self, ServerConfig};
use crate::store::Store;

/// What to start.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The SQLite file.
    pub db: PathBuf,
    /// How carriers reach us; defaults to `http://<bound address>`.
    pub public_url: Option<String>,
    /// Carriers by name (`twilio`, `sim`).
    pub carriers: HashMap<String, TwilioConfig>,
    /// Agent for streams that belong to no campaign.
    pub default_agent_url: String,
    /// The audio format that agent speaks.
    pub default_agent_audio: crate::agent::bridge::AgentAudio,
    /// The LLM that AMD escalates to when a campaign asks for verification.
    pub llm: Option<Arc<crate::detect::llm::LlmVerifier>>,
    /// The SIP trunk, for caller numbers whose carrier is `sip`.
    pub sip: Option<crate::engine::SipTrunk>,
    /// Where to take inbound SIP calls (UDP), if at all; they go to the
    /// default agent.
    pub sip_listen: Option<SocketAddr>,
    /// Session for streams that belong to no campaign.
    pub default_session: SessionConfig,
    /// How often the dialer looks for due attempts.
    pub tick: Duration,
    /// When the carrier does not place a call (unreachable, "not now"), the
    /// contact is tried again after this, doubling with each attempt.
    pub carrier_backoff: Duration,
    /// Event delivery and post-call analysis.
    pub delivery: DeliveryConfig,
}

/// A running gateway.
pub struct App {
    /// The bound address.
    pub addr: SocketAddr,
    /// The public base URL.
    pub public_url: String,
    /// The engine.
    pub engine: Arc<Engine>,
    /// The store.
    pub store: Store,
    /// The inbound SIP address and its counters, when taking calls.
    pub sip_inbound: Option<(SocketAddr, Arc<crate::carrier::sip::inbound::InboundStats>)>,
}

/// Opens the store, binds, and starts everything in the background.
pub async fn start(cfg: AppConfig) -> anyhow::Result<App> {
    let store = Store::open(&cfg.db)
        .with_context(|| format!("opening the database {}", cfg.db.display()))?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let public_url = cfg
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let carriers: HashMap<String, TwilioClient> = cfg
        .carriers
        .iter()
        .map(|(k, v)| (k.clone(), TwilioClient::new(v.clone())))
        .collect();
    let (engine, facts) = Engine::new(
        store.clone(),
        EngineConfig {
            public_url: public_url.clone(),
            carriers,
            // the trunk's calls verify with the same LLM as Twilio's
            sip: cfg.sip.clone().map(|mut t| {
                t.llm = t.llm.or_else(|| cfg.llm.clone());
                t
            }),
            tick: cfg.tick,
            carrier_backoff: cfg.carrier_backoff,
        },
    );
    tokio::spawn(engine.clone().run(facts));
    if let Some(t) = &cfg.sip
        && let Some(every) = t.options_interval
    {
        tokio::spawn(crate::carrier::sip::keepalive::run(
            t.trunk.clone(),
            t.addr,
            every,
            t.up.clone(),
        ));
    }
    tokio::spawn(delivery::run(store.clone(), cfg.delivery.clone()));
    // Real Twilio signs the stream upgrade with the account's token; the
    // simulator does not, so only a configured `twilio` carrier turns the
    // check on.
    let twilio_token = cfg.carriers.get("twilio").map(|t| t.auth_token.clone());
    let ws_base = public_url
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    let server_cfg = ServerConfig {
        listen: addr,
        agent_url: cfg.default_agent_url.clone(),
        agent_audio: cfg.default_agent_audio,
        twilio_auth_token: twilio_token,
        public_url: Some(ws_base),
        session: cfg.default_session.clone(),
        agent_connect_timeout: Duration::from_secs(5),
        llm: cfg.llm.clone(),
        engine: Some(engine.clone()),
    };
    let state = Arc::new(ApiState {
        engine: engine.clone(),
        carrier_tokens: cfg
            .carriers
            .values()
            .map(|c| c.auth_token.clone())
            .collect(),
        public_url: public_url.clone(),
        metrics: Metrics::default(),
    });
    let sip_inbound = match cfg.sip_listen {
        None => None,
        Some(at) => Some(
            crate::carrier::sip::inbound::start(
                at,
                crate::carrier::sip::inbound::InboundConfig {
                    agent_url: cfg.default_agent_url.clone(),
                    agent_audio: cfg.default_agent_audio,
                    agent_connect_timeout: Duration::from_secs(5),
                    session: cfg.default_session.clone(),
                    answer_after: Duration::ZERO,
                    max_calls: 1000,
                },
            )
            .await
            .with_context(|| format!("binding the SIP port {at}"))?,
        ),
    };
    let router = server::router(server_cfg).merge(api::router(state));
    tokio::spawn(async move {
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "server stopped");
        }
    });
    tracing::info!(%addr, %public_url, "dialgate serving the API, /twilio/stream and /twilio/status");
    Ok(App {
        addr,
        public_url,
        engine,
        store,
        sip_inbound,
    })
}
