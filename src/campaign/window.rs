//! Calling windows in the recipient's local time. The dialer asks, for an
//! attempt that is otherwise due, whether the window is open now in every
//! zone the recipient may be in, and if not, when it next opens. Pure
//! functions of `now`: DST is handled by `chrono-tz`, never by adding hours.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// Local hours and days when calls may be placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallingWindow {
    /// Opening time, local, `HH:MM`.
    #[serde(default = "default_start")]
    pub start: String,
    /// Closing time, local, `HH:MM` (exclusive).
    #[serde(default = "default_end")]
    pub end: String,
    /// Days allowed (`mon` … `sun`); empty means every day.
    #[serde(default)]
    pub days: Vec<String>,
    /// Zone used when the number says nothing about where the recipient is.
    #[serde(default)]
    pub fallback_time_zone: Option<String>,
}

fn default_start() -> String {
    "08:00".into()
}
fn default_end() -> String {
    "21:00".into()
}

impl Default for CallingWindow {
    fn default() -> Self {
        Self {
            start: default_start(),
            end: default_end(),
            days: Vec::new(),
            fallback_time_zone: None,
        }
    }
}

/// A window ready to evaluate.
#[derive(Debug, Clone)]
pub struct Window {
    start: NaiveTime,
    end: NaiveTime,
    days: [bool; 7],
}

/// Parses `HH:MM`.
pub fn parse_hhmm(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s, "%H:%M").ok()
}

/// Parses a day name.
pub fn parse_day(s: &str) -> Option<Weekday> {
    match s.to_ascii_lowercase().get(..3)? {
        "mon" => Some(Weekday::Mon),
        "tue" => Some(Weekday::Tue),
        "wed" => Some(Weekday::Wed),
        "thu" => Some(Weekday::Thu),
        "fri" => Some(Weekday::Fri),
        "sat" => Some(Weekday::Sat),
        "sun" => Some(Weekday::Sun),
        _ => None,
    }
}

impl Window {
    /// From the campaign's (validated) settings; `None` when they do not parse.
    pub fn new(w: &CallingWindow) -> Option<Self> {
        let start = parse_hhmm(&w.start)?;
        // "24:00" closes at midnight, so a window can span the whole day.
        let end = if w.end == "24:00" {
            NaiveTime::from_hms_milli_opt(23, 59, 59, 999)?
        } else {
            parse_hhmm(&w.end)?
        };
        if start >= end {
            return None;
        }
        let mut days = [w.days.is_empty(); 7];
        for d in &w.days {
            days[parse_day(d)?.num_days_from_monday() as usize] = true;
        }
        Some(Self { start, end, days })
    }

    fn open_in(&self, now: DateTime<Utc>, tz: Tz) -> bool {
        let local = now.with_timezone(&tz);
        let t = local.time();
        self.days[local.weekday().num_days_from_monday() as usize]
            && t >= self.start
            && t < self.end
    }

    /// Open now in every zone?
    pub fn is_open(&self, now: DateTime<Utc>, zones: &[Tz]) -> bool {
        zones.iter().all(|&tz| self.open_in(now, tz))
    }

    /// The first instant at or after `now` when the window is open in every
    /// zone, looking up to two weeks ahead; `None` when it never is (zones
    /// too far apart for the hours).
    pub fn next_open(&self, now: DateTime<Utc>, zones: &[Tz]) -> Option<DateTime<Utc>> {
        if self.is_open(now, zones) {
            return Some(now);
        }
        // The intersection opens when the last zone opens, so it opens at
        // one of the zones' local opening instants.
        let mut candidates = Vec::new();
        for &tz in zones {
            let today = now.with_timezone(&tz).date_naive();
            for d in 0..15 {
                let day = today + Duration::days(d);
                let naive = day.and_time(self.start);
                let at = match tz.from_local_datetime(&naive) {
                    LocalResult::Single(t) => t,
                    LocalResult::Ambiguous(first, _) => first,
                    // The opening time falls in a spring-forward gap: the
                    // window opens at the first valid local instant after.
                    LocalResult::None => {
                        match tz.from_local_datetime(&(naive + Duration::hours(1))) {
                            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t,
                            LocalResult::None => continue,
                        }
                    }
                };
                let at = at.with_timezone(&Utc);
                if at > now {
                    candidates.push(at);
                }
            }
        }
        candidates.sort();
        candidates.into_iter().find(|&t| self.is_open(t, zones))
    }
}

/// Parses zone names, skipping none silently: an unknown zone is an error.
pub fn parse_zones(names: &[&str]) -> Result<Vec<Tz>, String> {
    names
        .iter()
        .map(|n| {
            n.parse::<Tz>()
                .map_err(|_| format!("unknown time zone `{n}`"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn ten_pm_local_defers_to_next_morning() {
        let w = Window::new(&CallingWindow::default()).unwrap();
        let ny = [chrono_tz::America::New_York];
        // 22:00 in New York (EST, UTC-5) on a Wednesday.
        let now = utc("2026-01-14T03:00:00Z");
        assert!(!w.is_open(now, &ny));
        assert_eq!(w.next_open(now, &ny).unwrap(), utc("2026-01-14T13:00:00Z"));
    }

    #[test]
    fn dst_change_moves_the_opening_in_utc() {
        let w = Window::new(&CallingWindow::default()).unwrap();
        let ny = [chrono_tz::America::New_York];
        // Saturday 2026-03-07 22:00 EST; DST starts Sunday 03-08 at 02:00.
        // 08:00 EDT on Sunday is 12:00 UTC, not 13:00.
        let now = utc("2026-03-08T03:00:00Z");
        assert_eq!(w.next_open(now, &ny).unwrap(), utc("2026-03-08T12:00:00Z"));
        // And back in autumn: Sunday 2026-11-01 08:00 EST is 13:00 UTC.
        let now = utc("2026-11-01T02:30:00Z");
        assert_eq!(w.next_open(now, &ny).unwrap(), utc("2026-11-01T13:00:00Z"));
    }

    #[test]
    fn several_zones_need_all_open() {
        let w = Window::new(&CallingWindow::default()).unwrap();
        let us = [
            chrono_tz::America::New_York,
            chrono_tz::America::Los_Angeles,
        ];
        // 09:00 in New York is 06:00 in Los Angeles: closed until LA opens.
        let now = utc("2026-06-10T13:00:00Z");
        assert!(!w.is_open(now, &us));
        assert_eq!(w.next_open(now, &us).unwrap(), utc("2026-06-10T15:00:00Z"));
    }

    #[test]
    fn days_are_respected() {
        let cw = CallingWindow {
            days: vec![
                "mon".into(),
                "tue".into(),
                "wed".into(),
                "thu".into(),
                "fri".into(),
            ],
            ..CallingWindow::default()
        };
        let w = Window::new(&cw).unwrap();
        let ldn = [chrono_tz::Europe::London];
        // Saturday noon in London → Monday 08:00 BST.
        let now = utc("2026-06-13T11:00:00Z");
        assert_eq!(w.next_open(now, &ldn).unwrap(), utc("2026-06-15T07:00:00Z"));
    }

    #[test]
    fn bad_windows_do_not_parse() {
        let bad = |s: &str, e: &str| CallingWindow {
            start: s.into(),
            end: e.into(),
            ..CallingWindow::default()
        };
        assert!(Window::new(&bad("21:00", "08:00")).is_none());
        assert!(Window::new(&bad("8am", "21:00")).is_none());
    }
}
