//! Phone numbers at the edge of the call queue: every destination and caller
//! number is normalised to E.164 before it is stored, routed or dialled, and
//! the recipient's time zones are derived from it for calling windows.
//!
//! Parsing and validation use `phonenumber`, a Rust port of Google's
//! libphonenumber (the metadata is compiled in). libphonenumber's time-zone
//! mapper is not part of the port, so the zones come from a table by region
//! here. Where a country spans several zones and the number does not say
//! which (the US, Canada, Russia…), all of them are returned: a calling
//! window must then be open in every one, which is the conservative reading
//! of the TCPA-style "recipient's local time" rule.

use phonenumber::country::Id;
use phonenumber::{Mode, PhoneNumber};

/// Why a number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// Not a phone number at all.
    #[error("`{input}` is not a phone number: {reason}")]
    Unparseable {
        /// What was given (only ever logged redacted).
        input: String,
        /// The parser's reason.
        reason: String,
    },
    /// Parsed, but not a number that can be dialled in its country.
    #[error("`{0}` is not a valid number for its country")]
    Invalid(String),
}

/// A normalised number: `+` then digits.
pub type E164 = String;

/// Parses `input` (any common format; national numbers use
/// `default_region`, an ISO 3166 alpha-2 code) into E.164.
pub fn normalize(input: &str, default_region: Option<&str>) -> Result<E164, PhoneError> {
    let trimmed = input.trim();
    let region = default_region.and_then(|r| r.to_ascii_uppercase().parse::<Id>().ok());
    let n: PhoneNumber =
        phonenumber::parse(region, trimmed).map_err(|e| PhoneError::Unparseable {
            input: trimmed.to_string(),
            reason: e.to_string(),
        })?;
    if !phonenumber::is_valid(&n) {
        return Err(PhoneError::Invalid(trimmed.to_string()));
    }
    Ok(n.format().mode(Mode::E164).to_string())
}

/// The region (ISO alpha-2) of an E.164 number, when known.
pub fn region(e164: &str) -> Option<String> {
    let n = phonenumber::parse(None, e164).ok()?;
    n.country().id().map(|id| format!("{id:?}"))
}

/// The IANA time zones the recipient may be in.
pub fn time_zones(e164: &str) -> Vec<&'static str> {
    let Some(r) = region(e164) else {
        return Vec::new();
    };
    zones_for_region(&r).to_vec()
}

/// Zones per region. Multi-zone countries list their populated extremes so
/// the window holds everywhere in between.
fn zones_for_region(region: &str) -> &'static [&'static str] {
    match region {
        "US" => &[
            "America/New_York",
            "America/Chicago",
            "America/Denver",
            "America/Phoenix",
            "America/Los_Angeles",
            "America/Anchorage",
            "Pacific/Honolulu",
        ],
        "CA" => &[
            "America/St_Johns",
            "America/Halifax",
            "America/Toronto",
            "America/Winnipeg",
            "America/Edmonton",
            "America/Vancouver",
        ],
        "MX" => &["America/Mexico_City", "America/Tijuana", "America/Cancun"],
        "BR" => &["America/Sao_Paulo", "America/Manaus", "America/Rio_Branco"],
        "AU" => &["Australia/Sydney", "Australia/Adelaide", "Australia/Perth"],
        "RU" => &["Europe/Kaliningrad", "Europe/Moscow", "Asia/Vladivostok"],
        "ID" => &["Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura"],
        "GB" => &["Europe/London"],
        "IE" => &["Europe/Dublin"],
        "FR" => &["Europe/Paris"],
        "DE" => &["Europe/Berlin"],
        "ES" => &["Europe/Madrid"],
        "PT" => &["Europe/Lisbon"],
        "IT" => &["Europe/Rome"],
        "NL" => &["Europe/Amsterdam"],
        "BE" => &["Europe/Brussels"],
        "CH" => &["Europe/Zurich"],
        "AT" => &["Europe/Vienna"],
        "SE" => &["Europe/Stockholm"],
        "NO" => &["Europe/Oslo"],
        "DK" => &["Europe/Copenhagen"],
        "FI" => &["Europe/Helsinki"],
        "PL" => &["Europe/Warsaw"],
        "GR" => &["Europe/Athens"],
        "TR" => &["Europe/Istanbul"],
        "UA" => &["Europe/Kyiv"],
        "IL" => &["Asia/Jerusalem"],
        "OM" => &["Asia/Muscat"],
        "AE" => &["Asia/Dubai"],
        "SA" => &["Asia/Riyadh"],
        "QA" => &["Asia/Qatar"],
        "KW" => &["Asia/Kuwait"],
        "BH" => &["Asia/Bahrain"],
        "EG" => &["Africa/Cairo"],
        "MA" => &["Africa/Casablanca"],
        "NG" => &["Africa/Lagos"],
        "KE" => &["Africa/Nairobi"],
        "ZA" => &["Africa/Johannesburg"],
        "IN" => &["Asia/Kolkata"],
        "PK" => &["Asia/Karachi"],
        "BD" => &["Asia/Dhaka"],
        "CN" => &["Asia/Shanghai"],
        "HK" => &["Asia/Hong_Kong"],
        "JP" => &["Asia/Tokyo"],
        "KR" => &["Asia/Seoul"],
        "SG" => &["Asia/Singapore"],
        "MY" => &["Asia/Kuala_Lumpur"],
        "PH" => &["Asia/Manila"],
        "TH" => &["Asia/Bangkok"],
        "VN" => &["Asia/Ho_Chi_Minh"],
        "NZ" => &["Pacific/Auckland"],
        "AR" => &["America/Argentina/Buenos_Aires"],
        "CL" => &["America/Santiago"],
        "CO" => &["America/Bogota"],
        "PE" => &["America/Lima"],
        _ => &[],
    }
}

/// Masks all but the last four digits, for logs.
pub fn redact(number: &str) -> String {
    let digits = number.chars().filter(char::is_ascii_digit).count();
    let mut seen = 0;
    number
        .chars()
        .map(|c| {
            if c.is_ascii_digit() {
                seen += 1;
                if seen + 4 <= digits { '•' } else { c }
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_common_formats() {
        assert_eq!(
            normalize("(201) 555-0123", Some("US")).unwrap(),
            "+12015550123"
        );
        assert_eq!(normalize("+968 9123 4567", None).unwrap(), "+96891234567");
        assert_eq!(
            normalize("020 7946 0958", Some("gb")).unwrap(),
            "+442079460958"
        );
    }

    #[test]
    fn refuses_garbage_and_invalid_numbers() {
        assert!(matches!(
            normalize("call me maybe", Some("US")),
            Err(PhoneError::Unparseable { .. })
        ));
        assert!(normalize("", None).is_err());
        assert!(normalize("+1 000", None).is_err());
        assert!(matches!(
            normalize("+1 200 555 0123", None),
            Err(PhoneError::Invalid(_))
        ));
    }

    #[test]
    fn zones_follow_the_region() {
        assert_eq!(time_zones("+96891234567"), vec!["Asia/Muscat"]);
        assert!(time_zones("+12015550123").contains(&"America/Los_Angeles"));
        assert_eq!(region("+442079460958").as_deref(), Some("GB"));
    }

    #[test]
    fn redaction_keeps_the_last_four() {
        assert_eq!(redact("+12015550123"), "+•••••••0123");
    }
}
