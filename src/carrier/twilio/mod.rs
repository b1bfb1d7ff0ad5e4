//! Twilio: the Media Streams wire format (also spoken toward agents) and
//! request signatures. The REST client, the stream endpoint and the
//! simulator build on these.

pub mod rest;
pub mod signature;
pub mod stream;
