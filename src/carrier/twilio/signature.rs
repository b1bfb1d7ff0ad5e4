//! `X-Twilio-Signature`: how Twilio signs its webhooks and the Media Streams
//! WebSocket upgrade, so dialgate can refuse requests that did not come from
//! the account's Twilio.
//!
//! `Base64(HMAC-SHA1(auth_token, URL + concat(name + value for each POST
//! parameter, sorted by name)))`. The WebSocket upgrade is signed over its
//! `wss://` URL with no parameters. A JSON body is not in the parameters:
//! the URL carries `bodySHA256=<hex sha256 of the body>` instead.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

type HmacSha1 = Hmac<Sha1>;

/// HMAC-SHA1 over the URL and the sorted parameters.
fn mac(auth_token: &str, url: &str, params: &[(&str, &str)]) -> HmacSha1 {
    let mut sorted: Vec<&(&str, &str)> = params.iter().collect();
    // Sort by name, then value: repeated names (StatusCallbackEvent) keep a
    // stable order.
    sorted.sort();
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac =
        HmacSha1::new_from_slice(auth_token.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    mac
}

/// The signature Twilio would send for `url` and form `params`.
pub fn sign(auth_token: &str, url: &str, params: &[(&str, &str)]) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(mac(auth_token, url, params).finalize().into_bytes())
}

/// Checks a request's signature in constant time.
pub fn verify(auth_token: &str, url: &str, params: &[(&str, &str)], signature: &str) -> bool {
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    mac(auth_token, url, params).verify_slice(&given).is_ok()
}

/// Checks a JSON-body request: the signature covers the URL (which carries
/// `bodySHA256`), and that hash must match the body.
pub fn verify_json_body(auth_token: &str, url: &str, body: &[u8], signature: &str) -> bool {
    let expected = hex::encode(Sha256::digest(body));
    let carried = url
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("bodySHA256="));
    carried.is_some_and(|h| h.eq_ignore_ascii_case(&expected))
        && verify(auth_token, url, &[], signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector from PROTOCOLS.md (Twilio's documented example).
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const PARAMS: [(&str, &str); 5] = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+12349013030"),
        ("Digits", "1234"),
        ("From", "+12349013030"),
        ("To", "+18005551212"),
    ];

    #[test]
    fn documented_test_vector() {
        assert_eq!(sign("12345", URL, &PARAMS), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        assert!(verify(
            "12345",
            URL,
            &PARAMS,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        // parameter order does not matter
        let mut shuffled = PARAMS;
        shuffled.reverse();
        assert!(verify(
            "12345",
            URL,
            &shuffled,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
    }

    #[test]
    fn anything_changed_fails() {
        let good = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";
        assert!(!verify("54321", URL, &PARAMS, good));
        assert!(!verify(
            "12345",
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            &PARAMS,
            good
        ));
        assert!(!verify("12345", URL, &PARAMS[..4], good));
        assert!(!verify("12345", URL, &PARAMS, "not base64!"));
        assert!(!verify("12345", URL, &PARAMS, ""));
    }

    #[test]
    fn websocket_upgrade_and_json_bodies() {
        let wss = "wss://gw.example.com/twilio/stream";
        let sig = sign("tok", wss, &[]);
        assert!(verify("tok", wss, &[], &sig));
        assert!(!verify(
            "tok",
            "wss://gw.example.com/twilio/other",
            &[],
            &sig
        ));
        let body = br#"{"CallSid":"CA1"}"#;
        let url = format!(
            "https://gw.example.com/hook?bodySHA256={}",
            hex::encode(Sha256::digest(body))
        );
        let sig = sign("tok", &url, &[]);
        assert!(verify_json_body("tok", &url, body, &sig));
        assert!(!verify_json_body(
            "tok",
            &url,
            br#"{"CallSid":"CA2"}"#,
            &sig
        ));
    }
}
