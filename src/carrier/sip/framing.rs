//! SIP over a stream (TCP, RFC 3261 §18.3): bytes in, whole messages out.
//! A message ends after its blank line and `Content-Length` body bytes;
//! CRLF keep-alives between messages (RFC 5626 §3.5.1) are skipped.
//! Sans-IO: the driver reads the socket into [`Framer::push`] and sends
//! each message [`Framer::next_message`] gives to the call.

/// The largest message accepted: SIP over TCP has no datagram limit, so a
/// peer that never ends its headers (or claims a huge body) is cut off.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// The stream cannot be read as SIP any more: the connection must close.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FramingError {
    /// No blank line within [`MAX_MESSAGE`] bytes, or a body beyond it.
    #[error("SIP message over {MAX_MESSAGE} bytes")]
    TooLong,
    /// A `Content-Length` that is not a number. Over a stream it is
    /// mandatory (RFC 3261 §18.3): without it the next message's start is
    /// unknown.
    #[error("bad or missing Content-Length: {0}")]
    ContentLength(String),
}

/// Reassembles SIP messages from a byte stream.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    /// Bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, if one has arrived.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, FramingError> {
        // keep-alive CRLFs between messages
        let lead = self
            .buf
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        self.buf.drain(..lead);
        let Some(head_end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            return if self.buf.len() > MAX_MESSAGE {
                Err(FramingError::TooLong)
            } else {
                Ok(None)
            };
        };
        let body_start = head_end + 4;
        let head = String::from_utf8_lossy(&self.buf[..head_end]);
        let mut length = None;
        for line in head.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let name = name.trim();
            if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
                let v = value.trim();
                length = Some(
                    v.parse::<usize>()
                        .map_err(|_| FramingError::ContentLength(v.chars().take(20).collect()))?,
                );
            }
        }
        let length =
            length.ok_or_else(|| FramingError::ContentLength("none in the message".into()))?;
        if body_start + length > MAX_MESSAGE {
            return Err(FramingError::TooLong);
        }
        if self.buf.len() < body_start + length {
            return Ok(None);
        }
        let rest = self.buf.split_off(body_start + length);
        Ok(Some(std::mem::replace(&mut self.buf, rest)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BYE: &[u8] = b"BYE sip:a@b SIP/2.0\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n";

    fn with_body(body: &str) -> Vec<u8> {
        format!(
            "SIP/2.0 200 OK\r\nCall-ID: x\r\nl: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn messages_are_cut_at_their_content_length() {
        let mut f = Framer::default();
        let ok = with_body("v=0\r\n");
        let mut stream = b"\r\n\r\n".to_vec(); // keep-alive
        stream.extend_from_slice(&ok);
        stream.extend_from_slice(BYE);
        // one byte at a time: nothing until each message is whole
        let mut out = Vec::new();
        for b in &stream {
            f.push(std::slice::from_ref(b));
            while let Some(m) = f.next_message().unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out, vec![ok, BYE.to_vec()]);
        // and all at once
        let mut f = Framer::default();
        f.push(&stream);
        assert_eq!(f.next_message().unwrap().unwrap(), with_body("v=0\r\n"));
        assert_eq!(f.next_message().unwrap().unwrap(), BYE);
        assert_eq!(f.next_message().unwrap(), None);
    }

    #[test]
    fn a_stream_that_is_not_sip_is_an_error() {
        let mut f = Framer::default();
        f.push(b"INVITE sip:a SIP/2.0\r\nCall-ID: x\r\n\r\n");
        assert!(matches!(
            f.next_message(),
            Err(FramingError::ContentLength(_))
        ));
        let mut f = Framer::default();
        f.push(b"INVITE sip:a SIP/2.0\r\nContent-Length: lots\r\n\r\n");
        assert!(matches!(
            f.next_message(),
            Err(FramingError::ContentLength(_))
        ));
        let mut f = Framer::default();
        f.push(&vec![b'a'; MAX_MESSAGE + 1]);
        assert_eq!(f.next_message(), Err(FramingError::TooLong));
        let mut f = Framer::default();
        f.push(b"SIP/2.0 200 OK\r\nContent-Length: 99999999\r\n\r\n");
        assert_eq!(f.next_message(), Err(FramingError::TooLong));
        let mut f = Framer::default();
        f.push(b"\xff\xfe\r\nContent-Length: 1\r\n\r\nx");
        assert!(
            f.next_message().unwrap().is_some(),
            "framing is not parsing"
        );
    }
}
