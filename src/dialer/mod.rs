//! The dialer's decisions, sans-IO: for each attempt the queue says is due,
//! dial it now (and from which number), defer it to the next calling-window
//! opening, wait for capacity, expire it or suppress it; and after each
//! ending, whether and when to retry. It is told the time and the calls in
//! flight; it never reads a clock or touches the database. The driver
//! ([`crate::engine`]) owns the loop, the store and the carrier clients.
//!
//! In-flight counts are handed in at the start of every tick from the
//! durable queue, not kept incrementally, so they cannot drift from the
//! truth across crashes or lost callbacks. Call-per-second limits are token
//! buckets (starting full, burst of one second's worth) per campaign and per
//! caller number.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::campaign::window::Window;
use crate::campaign::{CallerNumber, CampaignSpec, RetrySpec};
use crate::store::CallStatus;

/// What to do with a due attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Dial it now from this number.
    Dial(CallerNumber),
    /// Not before this instant (ms): the calling window is closed.
    Defer(i64),
    /// No capacity now (concurrency or calls per second); look next tick.
    Wait,
    /// Past its expiry.
    Expire,
    /// On the do-not-call list.
    Suppress,
}

#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    last_ms: i64,
}

impl Bucket {
    fn take(&mut self, now_ms: i64, rate: f64) -> bool {
        let cap = rate.max(1.0);
        let dt = (now_ms - self.last_ms).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + dt * rate).min(cap);
        self.last_ms = now_ms;
        self.tokens >= 1.0
    }
}

/// The dialer core.
#[derive(Debug, Default)]
pub struct Dialer {
    in_flight_campaign: HashMap<String, u32>,
    in_flight_number: HashMap<String, u32>,
    buckets_campaign: HashMap<String, Bucket>,
    buckets_number: HashMap<String, Bucket>,
}

impl Dialer {
    /// A dialer with nothing in flight.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a tick with the calls holding a line now, as
    /// `(campaign_id, caller_number_id)`.
    pub fn begin_tick<'a>(
        &mut self,
        in_flight: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) {
        self.in_flight_campaign.clear();
        self.in_flight_number.clear();
        for (c, n) in in_flight {
            *self.in_flight_campaign.entry(c.to_string()).or_default() += 1;
            if let Some(n) = n {
                *self.in_flight_number.entry(n.to_string()).or_default() += 1;
            }
        }
    }

    /// Calls of a campaign in flight, as the dialer counts them.
    pub fn in_flight(&self, campaign_id: &str) -> u32 {
        self.in_flight_campaign
            .get(campaign_id)
            .copied()
            .unwrap_or(0)
    }

    /// Decides one due attempt. A `Dial` counts against the limits at once.
    #[allow(clippy::too_many_arguments)]
    pub fn decide(
        &mut self,
        now: DateTime<Utc>,
        campaign_id: &str,
        campaign: &CampaignSpec,
        to_number: &str,
        expires_at_ms: Option<i64>,
    ) -> Verdict {
        let now_ms = now.timestamp_millis();
        let expiry = match (
            expires_at_ms,
            campaign.expires_at.map(|t| t.timestamp_millis()),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if expiry.is_some_and(|e| now_ms >= e) {
            return Verdict::Expire;
        }
        // Checked again at dial time: the list may have grown since enqueue.
        if campaign.do_not_call.iter().any(|n| n == to_number) {
            return Verdict::Suppress;
        }
        let zones = campaign.zones_for(to_number);
        // A window that does not parse cannot be saved; if it somehow is,
        // refuse to dial rather than call at any hour.
        let Some(window) = Window::new(&campaign.calling_window) else {
            return Verdict::Defer(now_ms + 3_600_000);
        };
        if !window.is_open(now, &zones) {
            return match window.next_open(now, &zones) {
                Some(t) => Verdict::Defer(t.timestamp_millis()),
                // Zones too far apart for the hours: look again tomorrow
                // (expiry will end it if it never opens).
                None => Verdict::Defer(now_ms + 86_400_000),
            };
        }
        let caller = campaign.route(to_number);
        let l = &campaign.limits;
        if self.in_flight(campaign_id) >= l.max_concurrency {
            return Verdict::Wait;
        }
        let num_in_flight = self.in_flight_number.get(&caller.id).copied().unwrap_or(0);
        if l.max_concurrency_per_number
            .is_some_and(|m| num_in_flight >= m)
        {
            return Verdict::Wait;
        }
        let cb = self
            .buckets_campaign
            .entry(campaign_id.to_string())
            .or_insert(Bucket {
                tokens: l.calls_per_second.max(1.0),
                last_ms: now_ms,
            });
        if !cb.take(now_ms, l.calls_per_second) {
            return Verdict::Wait;
        }
        if let Some(rate) = l.calls_per_second_per_number {
            let nb = self
                .buckets_number
                .entry(caller.id.clone())
                .or_insert(Bucket {
                    tokens: rate.max(1.0),
                    last_ms: now_ms,
                });
            if !nb.take(now_ms, rate) {
                return Verdict::Wait;
            }
            nb.tokens -= 1.0;
        }
        if let Some(cb) = self.buckets_campaign.get_mut(campaign_id) {
            cb.tokens -= 1.0;
        }
        *self
            .in_flight_campaign
            .entry(campaign_id.to_string())
            .or_default() += 1;
        *self.in_flight_number.entry(caller.id.clone()).or_default() += 1;
        Verdict::Dial(caller.clone())
    }

    /// A dial that was decided but did not go out (the claim was lost, or
    /// the carrier refused): give the line back within this tick.
    pub fn release(&mut self, campaign_id: &str, number_id: &str) {
        if let Some(n) = self.in_flight_campaign.get_mut(campaign_id) {
            *n = n.saturating_sub(1);
        }
        if let Some(n) = self.in_flight_number.get_mut(number_id) {
            *n = n.saturating_sub(1);
        }
    }
}

/// When to retry an attempt that ended in `status` (attempt numbers start
/// at 1), or `None`. A deliberate decline is retried only when configured.
pub fn retry_at(policy: &RetrySpec, status: CallStatus, attempt: u32, now_ms: i64) -> Option<i64> {
    let wanted = match status {
        CallStatus::Busy => policy.on_busy,
        CallStatus::Declined => policy.on_decline,
        CallStatus::Missed => policy.on_no_answer,
        _ => false,
    };
    (wanted && attempt <= policy.max_retries).then(|| now_ms + policy.delay_seconds as i64 * 1000)
}

/// A contact whose call the carrier did not place (unreachable, "not now")
/// is tried again while it has had fewer attempts than this; then the
/// failure stands.
pub const UNPLACED_MAX_ATTEMPTS: u32 = 6;

/// When to try again a contact whose attempt `attempt` the carrier did not
/// place, or `None` once [`UNPLACED_MAX_ATTEMPTS`] are spent. The wait is
/// `first_ms`, doubling with each attempt up to 32×: an outage of a few
/// minutes is ridden out without hammering a carrier that said "not now".
/// Separate from [`retry_at`]: the campaign's retry policy is about people
/// (busy, no answer); this is about the carrier, and no one was rung.
pub fn unplaced_retry_at(first_ms: i64, attempt: u32, now_ms: i64) -> Option<i64> {
    (attempt < UNPLACED_MAX_ATTEMPTS).then(|| {
        let doublings = attempt.max(1).saturating_sub(1).min(5);
        now_ms.saturating_add(first_ms.saturating_mul(1 << doublings))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn campaign(max: u32, cps: f64) -> CampaignSpec {
        let mut c: CampaignSpec = serde_json::from_value(json!({
            "name": "t",
            "agent": {"url": "ws://127.0.0.1:9/", "script": "s"},
            "numbers": {"default": {"id": "n1", "number": "+12015550100"},
                        "overrides": [{"prefix": "+968", "id": "om", "number": "+96822000000"}]},
            "calling_window": {"start": "00:00", "end": "23:59"},
            "limits": {"max_concurrency": max, "calls_per_second": cps}
        }))
        .unwrap();
        c.validate().unwrap();
        c
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn routes_and_counts() {
        let c = campaign(2, 100.0);
        let mut d = Dialer::new();
        d.begin_tick([]);
        let now = at("2026-06-10T12:00:00Z");
        match d.decide(now, "c", &c, "+96891234567", None) {
            Verdict::Dial(n) => assert_eq!(n.id, "om"),
            v => panic!("{v:?}"),
        }
        assert!(
            matches!(d.decide(now, "c", &c, "+12015550123", None), Verdict::Dial(n) if n.id == "n1")
        );
        assert_eq!(d.decide(now, "c", &c, "+12015550124", None), Verdict::Wait);
        d.release("c", "n1");
        assert!(matches!(
            d.decide(now, "c", &c, "+12015550124", None),
            Verdict::Dial(_)
        ));
    }

    #[test]
    fn calls_per_second_is_a_token_bucket() {
        let c = campaign(100, 2.0);
        let mut d = Dialer::new();
        d.begin_tick([]);
        let t0 = at("2026-06-10T12:00:00Z");
        let mut dialled = 0;
        for ms in (0..5000).step_by(10) {
            let now = t0 + chrono::Duration::milliseconds(ms);
            if matches!(
                d.decide(now, "c", &c, "+12015550123", None),
                Verdict::Dial(_)
            ) {
                dialled += 1;
            }
        }
        // a full bucket (2) at start + 2/s for 5 s
        assert!((11..=12).contains(&dialled), "{dialled}");
    }

    #[test]
    fn expiry_and_suppression_come_first() {
        let mut c = campaign(1, 1.0);
        c.do_not_call = vec!["+12015550199".into()];
        let mut d = Dialer::new();
        d.begin_tick([]);
        let now = at("2026-06-10T12:00:00Z");
        assert_eq!(
            d.decide(now, "c", &c, "+12015550199", None),
            Verdict::Suppress
        );
        let past = now.timestamp_millis() - 1;
        assert_eq!(
            d.decide(now, "c", &c, "+12015550123", Some(past)),
            Verdict::Expire
        );
    }

    #[test]
    fn closed_window_defers_to_the_opening() {
        let mut c = campaign(1, 1.0);
        c.calling_window = crate::campaign::CallingWindow::default();
        let mut d = Dialer::new();
        d.begin_tick([]);
        // 22:00 in Muscat (UTC+4).
        let now = at("2026-06-10T18:00:00Z");
        assert_eq!(
            d.decide(now, "c", &c, "+96891234567", None),
            Verdict::Defer(at("2026-06-11T04:00:00Z").timestamp_millis())
        );
    }

    #[test]
    fn retry_policy_per_trigger() {
        let p = RetrySpec {
            on_busy: true,
            on_decline: false,
            on_no_answer: true,
            max_retries: 2,
            delay_seconds: 60,
        };
        assert_eq!(retry_at(&p, CallStatus::Busy, 1, 0), Some(60_000));
        assert_eq!(retry_at(&p, CallStatus::Busy, 2, 0), Some(60_000));
        assert_eq!(retry_at(&p, CallStatus::Busy, 3, 0), None);
        assert_eq!(retry_at(&p, CallStatus::Declined, 1, 0), None);
        assert_eq!(retry_at(&p, CallStatus::Missed, 1, 0), Some(60_000));
        assert_eq!(retry_at(&p, CallStatus::Completed, 1, 0), None);
        let p = RetrySpec {
            on_decline: true,
            ..p
        };
        assert_eq!(retry_at(&p, CallStatus::Declined, 1, 0), Some(60_000));
    }

    #[test]
    fn an_unplaced_call_is_tried_again_later_and_later() {
        assert_eq!(unplaced_retry_at(15_000, 1, 0), Some(15_000));
        assert_eq!(unplaced_retry_at(15_000, 2, 0), Some(30_000));
        assert_eq!(unplaced_retry_at(15_000, 5, 100), Some(100 + 15_000 * 16));
        assert_eq!(unplaced_retry_at(15_000, UNPLACED_MAX_ATTEMPTS, 0), None);
        // the doubling is capped, and nothing overflows
        assert_eq!(unplaced_retry_at(1_000, 0, 0), Some(1_000));
        assert_eq!(unplaced_retry_at(i64::MAX, 3, 1), Some(i64::MAX));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever the interleaving of due attempts, endings and ticks,
            /// the calls in flight never exceed the campaign's cap nor the
            /// per-number cap.
            #[test]
            fn concurrency_cap_is_never_exceeded(
                cap in 1u32..8,
                per_number in proptest::option::of(1u32..4),
                ops in proptest::collection::vec((0u8..3, 0u8..4, 0i64..400), 1..300),
            ) {
                let mut c = campaign(cap, 50.0);
                c.limits.max_concurrency_per_number = per_number;
                let mut d = Dialer::new();
                let mut live: Vec<String> = Vec::new();
                let mut now = at("2026-06-10T12:00:00Z");
                let dests = ["+12015550123", "+96891234567", "+96824123456", "+447700900123"];
                d.begin_tick([]);
                for (op, which, dt) in ops {
                    now += chrono::Duration::milliseconds(dt);
                    match op {
                        0 => if let Verdict::Dial(n) = d.decide(now, "c", &c, dests[which as usize], None) {
                            live.push(n.id);
                        },
                        1 => if !live.is_empty() {
                            live.remove(which as usize % live.len());
                        },
                        _ => d.begin_tick(live.iter().map(|n| ("c", Some(n.as_str())))),
                    }
                    prop_assert!(live.len() as u32 <= cap);
                    if let Some(p) = per_number {
                        for id in ["n1", "om"] {
                            prop_assert!(live.iter().filter(|x| *x == id).count() as u32 <= p);
                        }
                    }
                }
            }
        }
    }
}
