//! WAV in and out: how recorded audio enters dialgate (`amd classify`,
//! `amd bench`, the simulator's call scripts) and how the simulator records
//! what it heard.
//!
//! The reader is streaming: it parses the RIFF header, then decodes, downmixes
//! and resamples to 8 kHz mono as frames are asked for, so a four-hour file
//! costs no more memory than a four-second one. It reads PCM 8/16/24/32-bit,
//! IEEE float 32/64-bit, μ-law and A-law, plain or `WAVE_FORMAT_EXTENSIBLE`,
//! at any rate from 1 kHz to 384 kHz and up to 16 channels. Everything it
//! reads is untrusted: malformed headers are errors, never panics.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::resample::Resampler;
use super::{AudioFrame, FRAME_SAMPLES, SAMPLE_RATE, g711};

/// Errors reading or writing WAV files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WavError {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is empty.
    #[error("empty file: not a WAV file")]
    Empty,
    /// The first bytes are not `RIFF....WAVE`.
    #[error("not a WAV file (no RIFF/WAVE header){0}")]
    NotWav(&'static str),
    /// A header field is out of range or inconsistent.
    #[error("malformed WAV header: {0}")]
    BadHeader(String),
    /// The encoding is one we do not decode.
    #[error(
        "unsupported WAV encoding: format tag {format_tag:#06x} with {bits} bits per sample (supported: PCM 8/16/24/32, float 32/64, mu-law, A-law)"
    )]
    Unsupported { format_tag: u16, bits: u16 },
    /// The file ends inside a header.
    #[error("truncated WAV file: {0}")]
    Truncated(&'static str),
    /// The audio could not be resampled to 8 kHz.
    #[error(transparent)]
    Resample(#[from] super::resample::ResampleError),
    /// A channel was asked for that the file does not have.
    #[error("channel {asked} asked for, but the file has {channels} (channels count from 1)")]
    NoSuchChannel { asked: u16, channels: u16 },
}

/// What a file that is not a RIFF WAV looks like, for the error: people
/// benchmark AMD on their own call recordings, which often come as MP3,
/// FLAC, Ogg or M4A, and "no RIFF header" alone does not say what to do.
fn other_container(head: &[u8]) -> &'static str {
    macro_rules! convert {
        ($what:literal) => {
            concat!(
                ": it looks like ",
                $what,
                "; convert it first, e.g. `ffmpeg -i IN -ac 1 -ar 8000 OUT.wav`"
            )
        };
    }
    let is = |magic: &[u8]| head.starts_with(magic);
    if is(b"RIFX") {
        ": big-endian RIFX is not supported"
    } else if is(b"RF64") || is(b"BW64") {
        convert!("RF64 (a WAV over 4 GiB), which is not supported")
    } else if is(b"ID3") || (head.len() >= 2 && head[0] == 0xFF && head[1] & 0xE0 == 0xE0) {
        // (an MPEG audio frame's sync word: MP3, or AAC in ADTS)
        convert!("MP3 (or AAC)")
    } else if is(b"fLaC") {
        convert!("FLAC")
    } else if is(b"OggS") {
        convert!("Ogg (Vorbis or Opus)")
    } else if head.len() >= 8 && &head[4..8] == b"ftyp" {
        convert!("MP4/M4A")
    } else if is(b"FORM") {
        convert!("AIFF")
    } else {
        ""
    }
}

/// How the samples in a WAV file are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Linear PCM: 8-bit unsigned, 16/24/32-bit signed little-endian.
    Pcm { bits: u16 },
    /// IEEE float, 32 or 64 bits.
    Float { bits: u16 },
    /// G.711 μ-law.
    MuLaw,
    /// G.711 A-law.
    ALaw,
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pcm { bits } => write!(f, "PCM {bits}-bit"),
            Self::Float { bits } => write!(f, "float {bits}-bit"),
            Self::MuLaw => f.write_str("mu-law"),
            Self::ALaw => f.write_str("A-law"),
        }
    }
}

/// What the header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavInfo {
    /// Source sample rate in Hz.
    pub sample_rate: u32,
    /// Source channel count.
    pub channels: u16,
    /// Sample encoding.
    pub encoding: Encoding,
    /// Sample frames (per channel) in the data chunk, when its size is known.
    pub frames: Option<u64>,
}

impl WavInfo {
    /// Duration in milliseconds when the length is known.
    pub fn duration_ms(&self) -> Option<u64> {
        self.frames
            .map(|f| f * 1000 / u64::from(self.sample_rate.max(1)))
    }

    fn bytes_per_sample(&self) -> usize {
        match self.encoding {
            Encoding::Pcm { bits } | Encoding::Float { bits } => usize::from(bits / 8),
            Encoding::MuLaw | Encoding::ALaw => 1,
        }
    }
}

const TAG_PCM: u16 = 0x0001;
const TAG_FLOAT: u16 = 0x0003;
const TAG_ALAW: u16 = 0x0006;
const TAG_MULAW: u16 = 0x0007;
const TAG_EXTENSIBLE: u16 = 0xFFFE;
/// Source samples decoded per read: bounded memory whatever the file size.
const READ_FRAMES: usize = 4096;

/// A streaming reader that yields 8 kHz mono PCM16.
pub struct WavReader<R> {
    reader: R,
    info: WavInfo,
    /// Data bytes left to read; `None` when the header gave no size.
    remaining: Option<u64>,
    raw: Vec<u8>,
    /// Mono samples at the source rate waiting for a full resampler chunk.
    pending: Vec<i16>,
    resampler: Option<Resampler>,
    resampled: Vec<i16>,
    /// 8 kHz output not yet handed out.
    out: VecDeque<i16>,
    /// Resampler delay still to drop from the front of the output.
    skip: usize,
    source_frames_read: u64,
    produced: u64,
    eof: bool,
    next_media_ms: u64,
    /// The one channel to read (0-based); `None` mixes them all.
    channel: Option<u16>,
}

impl WavReader<BufReader<File>> {
    /// Opens a file.
    pub fn open(path: &Path) -> Result<Self, WavError> {
        let file = File::open(path).map_err(|source| WavError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::new(BufReader::new(file)).map_err(|e| match e {
            WavError::Io { source, .. } => WavError::Io {
                path: path.to_path_buf(),
                source,
            },
            other => other,
        })
    }
}

fn io_err(source: io::Error) -> WavError {
    WavError::Io {
        path: PathBuf::new(),
        source,
    }
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` on a clean EOF before any byte.
fn read_exact_or_eof<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<bool, WavError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(WavError::Truncated("inside a chunk header")),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e)),
        }
    }
    Ok(true)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn parse_fmt(body: &[u8]) -> Result<(u16, u32, Encoding), WavError> {
    if body.len() < 16 {
        return Err(WavError::BadHeader(format!(
            "fmt chunk is {} bytes, needs 16",
            body.len()
        )));
    }
    let mut tag = u16_at(body, 0);
    let channels = u16_at(body, 2);
    let rate = u32_at(body, 4);
    let block_align = u16_at(body, 12);
    let bits = u16_at(body, 14);
    if tag == TAG_EXTENSIBLE {
        if body.len() < 40 {
            return Err(WavError::BadHeader(
                "WAVE_FORMAT_EXTENSIBLE fmt chunk shorter than 40 bytes".into(),
            ));
        }
        tag = u16_at(body, 24);
    }
    if channels == 0 || channels > 16 {
        return Err(WavError::BadHeader(format!(
            "{channels} channels (1 to 16 supported)"
        )));
    }
    if !(1_000..=384_000).contains(&rate) {
        return Err(WavError::BadHeader(format!(
            "sample rate {rate} Hz (1000 to 384000 supported)"
        )));
    }
    let encoding = match (tag, bits) {
        (TAG_PCM, 8 | 16 | 24 | 32) => Encoding::Pcm { bits },
        (TAG_FLOAT, 32 | 64) => Encoding::Float { bits },
        (TAG_MULAW, 8) => Encoding::MuLaw,
        (TAG_ALAW, 8) => Encoding::ALaw,
        _ => {
            return Err(WavError::Unsupported {
                format_tag: tag,
                bits,
            });
        }
    };
    let expected_align = channels as usize * usize::from(bits / 8);
    if usize::from(block_align) != expected_align {
        return Err(WavError::BadHeader(format!(
            "block align {block_align}, expected {expected_align} for {channels} x {bits} bits"
        )));
    }
    Ok((channels, rate, encoding))
}

impl<R: Read> WavReader<R> {
    /// Parses the header from `reader`, leaving it at the first sample.
    pub fn new(mut reader: R) -> Result<Self, WavError> {
        let mut head = [0u8; 12];
        let mut got = 0;
        while got < 12 {
            match reader.read(&mut head[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(e)),
            }
        }
        if got == 0 {
            return Err(WavError::Empty);
        }
        if got < 12 || &head[0..4] != b"RIFF" || &head[8..12] != b"WAVE" {
            return Err(WavError::NotWav(other_container(&head[..got])));
        }
        let mut format: Option<(u16, u32, Encoding)> = None;
        loop {
            let mut ch = [0u8; 8];
            if !read_exact_or_eof(&mut reader, &mut ch)? {
                return Err(if format.is_none() {
                    WavError::BadHeader("no fmt chunk".into())
                } else {
                    WavError::BadHeader("no data chunk".into())
                });
            }
            let size = u32_at(&ch, 4);
            match &ch[0..4] {
                b"fmt " => {
                    if size > 4096 {
                        return Err(WavError::BadHeader(format!("fmt chunk of {size} bytes")));
                    }
                    let mut body = vec![0u8; size as usize + (size as usize & 1)];
                    if !read_exact_or_eof(&mut reader, &mut body)? {
                        return Err(WavError::Truncated("inside the fmt chunk"));
                    }
                    format = Some(parse_fmt(&body[..size as usize])?);
                }
                b"data" => {
                    let Some((channels, sample_rate, encoding)) = format else {
                        return Err(WavError::BadHeader("data chunk before fmt chunk".into()));
                    };
                    let mut info = WavInfo {
                        sample_rate,
                        channels,
                        encoding,
                        frames: None,
                    };
                    // 0 and 0xFFFFFFFF are what streaming writers leave when
                    // they never came back to fix the size: read to EOF.
                    let remaining = if size == u32::MAX {
                        None
                    } else {
                        let block = (info.bytes_per_sample() * channels as usize) as u64;
                        info.frames = Some(u64::from(size) / block);
                        Some(u64::from(size))
                    };
                    return Self::with_info(reader, info, remaining);
                }
                _ => {
                    let skip = u64::from(size) + u64::from(size & 1);
                    let copied =
                        io::copy(&mut (&mut reader).take(skip), &mut io::sink()).map_err(io_err)?;
                    if copied < skip {
                        return Err(WavError::Truncated("inside a chunk before the data"));
                    }
                }
            }
        }
    }

    fn with_info(reader: R, info: WavInfo, remaining: Option<u64>) -> Result<Self, WavError> {
        let resampler = if info.sample_rate == SAMPLE_RATE {
            None
        } else {
            // 20 ms frames when the rate allows, else longer chunks: at 1 s
            // every integer rate has whole frames.
            let mut last = None;
            let mut built = None;
            for ms in [20, 40, 100, 200, 1000] {
                match Resampler::with_frame_ms(info.sample_rate, SAMPLE_RATE, ms) {
                    Ok(r) => {
                        built = Some(r);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            match (built, last) {
                (Some(r), _) => Some(r),
                (None, Some(e)) => return Err(e.into()),
                (None, None) => None,
            }
        };
        let skip = resampler.as_ref().map_or(0, Resampler::delay_samples);
        let (in_len, out_len) = resampler
            .as_ref()
            .map_or((0, 0), |r| (r.input_len(), r.output_len()));
        Ok(Self {
            reader,
            raw: vec![0; READ_FRAMES * info.bytes_per_sample() * info.channels as usize],
            pending: Vec::with_capacity(in_len + READ_FRAMES),
            resampled: vec![0; out_len],
            out: VecDeque::with_capacity(READ_FRAMES + out_len * 2),
            info,
            remaining,
            resampler,
            skip,
            source_frames_read: 0,
            produced: 0,
            eof: false,
            next_media_ms: 0,
            channel: None,
        })
    }

    /// Reads only `channel` (counted from 1) instead of the mix of all.
    ///
    /// A call recorded in two channels (Twilio's dual-channel recordings, a
    /// PBX's stereo monitor) holds the callee on one and our side on the
    /// other; mixed, the other side's audio (early media, a prompt played
    /// too soon) would be taken for the callee's.
    pub fn select_channel(&mut self, channel: u16) -> Result<(), WavError> {
        let channels = self.info.channels;
        if channel == 0 || channel > channels {
            return Err(WavError::NoSuchChannel {
                asked: channel,
                channels,
            });
        }
        self.channel = Some(channel - 1);
        Ok(())
    }

    /// The header's description of the audio.
    pub fn info(&self) -> &WavInfo {
        &self.info
    }

    /// 8 kHz samples this file holds (rounded down), known once the whole
    /// file was read or when the header gave the data size.
    fn expected_output(&self) -> u64 {
        self.source_frames_read * u64::from(SAMPLE_RATE) / u64::from(self.info.sample_rate)
    }

    fn decode_sample(&self, b: &[u8]) -> i16 {
        match self.info.encoding {
            Encoding::Pcm { bits: 8 } => (i16::from(b[0]) - 128) << 8,
            Encoding::Pcm { bits: 16 } => i16::from_le_bytes([b[0], b[1]]),
            Encoding::Pcm { bits: 24 } => i16::from_le_bytes([b[1], b[2]]),
            Encoding::Pcm { .. } => i16::from_le_bytes([b[2], b[3]]),
            Encoding::Float { bits: 32 } => {
                float_to_i16(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            }
            Encoding::Float { .. } => float_to_i16(f64::from_le_bytes([
                b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
            ])),
            Encoding::MuLaw => g711::ulaw_decode(b[0]),
            Encoding::ALaw => g711::alaw_decode(b[0]),
        }
    }

    /// Reads the next block of the data chunk into `pending` (mono, source
    /// rate). Returns false at the end of the data.
    fn fill_pending(&mut self) -> Result<bool, WavError> {
        let bps = self.info.bytes_per_sample();
        let block = bps * self.info.channels as usize;
        let mut want = self.raw.len();
        if let Some(rem) = self.remaining {
            want = want.min(usize::try_from(rem).unwrap_or(usize::MAX));
        }
        want -= want % block;
        if want == 0 {
            return Ok(false);
        }
        let mut got = 0;
        while got < want {
            match self.reader.read(&mut self.raw[got..want]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(e)),
            }
        }
        // A file cut short mid-sample keeps its whole frames.
        let whole = got - got % block;
        if let Some(rem) = self.remaining.as_mut() {
            *rem = if got < want { 0 } else { *rem - got as u64 };
        }
        let channels = self.info.channels as i32;
        for frame in self.raw[..whole].chunks_exact(block) {
            let sample = match self.channel {
                Some(c) => {
                    let at = usize::from(c) * bps;
                    self.decode_sample(&frame[at..at + bps])
                }
                None => {
                    let sum: i32 = frame
                        .chunks_exact(bps)
                        .map(|s| i32::from(self.decode_sample(s)))
                        .sum();
                    (sum / channels) as i16
                }
            };
            self.pending.push(sample);
        }
        self.source_frames_read += (whole / block) as u64;
        Ok(whole > 0 && got == want)
    }

    /// Queues resampled output, dropping the resampler's leading delay.
    fn push_output(skip: &mut usize, out: &mut VecDeque<i16>, samples: &[i16]) {
        let dropped = (*skip).min(samples.len());
        *skip -= dropped;
        out.extend(&samples[dropped..]);
    }

    /// Moves decoded audio through the resampler until at least `need`
    /// 8 kHz samples are ready or the file is exhausted.
    fn produce(&mut self, need: usize) -> Result<(), WavError> {
        while self.out.len() < need && !self.eof {
            let more = self.fill_pending()?;
            match self.resampler.as_mut() {
                None => {
                    self.out.extend(self.pending.drain(..));
                }
                Some(r) => {
                    let in_len = r.input_len();
                    let mut consumed = 0;
                    while self.pending.len() - consumed >= in_len {
                        let n = r.process(
                            &self.pending[consumed..consumed + in_len],
                            &mut self.resampled,
                        )?;
                        consumed += in_len;
                        Self::push_output(&mut self.skip, &mut self.out, &self.resampled[..n]);
                    }
                    self.pending.drain(..consumed);
                }
            }
            if !more {
                self.eof = true;
                self.flush_resampler()?;
            }
        }
        Ok(())
    }

    /// At the end of the data: pad the last chunk with silence and push
    /// zeros through until the delayed tail is out, then trim to the exact
    /// length the source implies.
    fn flush_resampler(&mut self) -> Result<(), WavError> {
        let expected = self.expected_output();
        let Some(r) = self.resampler.as_mut() else {
            return Ok(());
        };
        let in_len = r.input_len();
        let mut chunk = std::mem::take(&mut self.pending);
        chunk.resize(in_len, 0);
        let mut guard = 0;
        while self.produced + (self.out.len() as u64) < expected && guard < 64 {
            let n = r.process(&chunk, &mut self.resampled)?;
            Self::push_output(&mut self.skip, &mut self.out, &self.resampled[..n]);
            chunk.fill(0);
            guard += 1;
        }
        let keep = expected.saturating_sub(self.produced) as usize;
        self.out.truncate(keep);
        Ok(())
    }

    /// Fills `out` with up to `out.len()` 8 kHz samples; 0 means the end.
    pub fn read_samples(&mut self, out: &mut [i16]) -> Result<usize, WavError> {
        self.produce(out.len())?;
        let n = out.len().min(self.out.len());
        for (o, s) in out[..n].iter_mut().zip(self.out.drain(..n)) {
            *o = s;
        }
        self.produced += n as u64;
        Ok(n)
    }

    /// The next 20 ms frame (the last one padded with silence), stamped with
    /// its media time from the start of the file.
    pub fn next_frame(&mut self) -> Result<Option<AudioFrame>, WavError> {
        let mut frame = AudioFrame::silence(self.next_media_ms);
        let n = self.read_samples(&mut frame.pcm)?;
        if n == 0 {
            return Ok(None);
        }
        self.next_media_ms += u64::from(super::FRAME_MS);
        Ok(Some(frame))
    }
}

fn float_to_i16(v: f64) -> i16 {
    if v.is_nan() {
        0
    } else {
        (v * 32768.0).round().clamp(-32768.0, 32767.0) as i16
    }
}

/// Reads a whole file as 8 kHz mono, stopping after `max_ms` when given.
pub fn read_8k_mono(path: &Path, max_ms: Option<u64>) -> Result<(WavInfo, Vec<i16>), WavError> {
    let mut r = WavReader::open(path)?;
    let info = *r.info();
    let limit = max_ms.map(|ms| (ms * u64::from(SAMPLE_RATE) / 1000) as usize);
    let mut all = Vec::new();
    let mut buf = [0i16; FRAME_SAMPLES * 50];
    loop {
        let n = r.read_samples(&mut buf)?;
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
        if let Some(limit) = limit
            && all.len() >= limit
        {
            all.truncate(limit);
            break;
        }
    }
    Ok((info, all))
}

fn write_header<W: Write>(
    w: &mut W,
    tag: u16,
    rate: u32,
    bits: u16,
    data_len: u32,
) -> io::Result<()> {
    let bytes_per_sample = u32::from(bits / 8);
    let non_pcm = tag != TAG_PCM;
    let fmt_len: u32 = if non_pcm { 18 } else { 16 };
    let fact_len: u32 = if non_pcm { 12 } else { 0 };
    let riff_len = 4 + (8 + fmt_len) + fact_len + 8 + data_len + (data_len & 1);
    w.write_all(b"RIFF")?;
    w.write_all(&riff_len.to_le_bytes())?;
    w.write_all(b"WAVE")?;
    w.write_all(b"fmt ")?;
    w.write_all(&fmt_len.to_le_bytes())?;
    w.write_all(&tag.to_le_bytes())?;
    w.write_all(&1u16.to_le_bytes())?;
    w.write_all(&rate.to_le_bytes())?;
    w.write_all(&(rate * bytes_per_sample).to_le_bytes())?;
    w.write_all(&(bytes_per_sample as u16).to_le_bytes())?;
    w.write_all(&bits.to_le_bytes())?;
    if non_pcm {
        w.write_all(&0u16.to_le_bytes())?;
        w.write_all(b"fact")?;
        w.write_all(&4u32.to_le_bytes())?;
        w.write_all(&(data_len / bytes_per_sample).to_le_bytes())?;
    }
    w.write_all(b"data")?;
    w.write_all(&data_len.to_le_bytes())
}

fn data_len(samples: usize, bytes_per_sample: usize, path: &Path) -> Result<u32, WavError> {
    u32::try_from(samples * bytes_per_sample).map_err(|_| WavError::Io {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "WAV data over 4 GiB"),
    })
}

fn write_file(
    path: &Path,
    body: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<(), WavError> {
    let io = |source| WavError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut w = BufWriter::new(File::create(path).map_err(io)?);
    body(&mut w).map_err(io)?;
    w.flush().map_err(io)
}

/// Writes mono PCM16 at `rate`.
pub fn write_pcm16(path: &Path, rate: u32, samples: &[i16]) -> Result<(), WavError> {
    let len = data_len(samples.len(), 2, path)?;
    write_file(path, |w| {
        write_header(w, TAG_PCM, rate, 16, len)?;
        for s in samples {
            w.write_all(&s.to_le_bytes())?;
        }
        Ok(())
    })
}

/// Writes 8 kHz mono μ-law (8 KB per second: how the repo stores clips).
pub fn write_ulaw(path: &Path, samples_8k: &[i16]) -> Result<(), WavError> {
    let len = data_len(samples_8k.len(), 1, path)?;
    write_file(path, |w| {
        write_header(w, TAG_MULAW, SAMPLE_RATE, 8, len)?;
        for &s in samples_8k {
            w.write_all(&[g711::ulaw_encode(s)])?;
        }
        if len & 1 == 1 {
            w.write_all(&[0])?;
        }
        Ok(())
    })
}

/// Encodes mono PCM16 as an in-memory WAV (for sending audio to an LLM).
pub fn to_wav_bytes(rate: u32, samples: &[i16]) -> Vec<u8> {
    let len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    // Writing to a Vec cannot fail.
    let _ = write_header(&mut out, TAG_PCM, rate, 16, len);
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn sine(rate: u32, freq: f64, ms: u64) -> Vec<i16> {
        let n = rate as u64 * ms / 1000;
        (0..n)
            .map(|i| (8000.0 * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()) as i16)
            .collect()
    }

    fn header(tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        let align = channels * bits / 8;
        v.extend_from_slice(b"RIFF");
        v.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        v.extend_from_slice(b"WAVE");
        v.extend_from_slice(b"fmt ");
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&channels.to_le_bytes());
        v.extend_from_slice(&rate.to_le_bytes());
        v.extend_from_slice(&(rate * u32::from(align)).to_le_bytes());
        v.extend_from_slice(&align.to_le_bytes());
        v.extend_from_slice(&bits.to_le_bytes());
        v.extend_from_slice(b"data");
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<i16>, WavError> {
        let mut r = WavReader::new(bytes)?;
        let mut all = Vec::new();
        let mut buf = [0i16; 333];
        loop {
            let n = r.read_samples(&mut buf)?;
            if n == 0 {
                return Ok(all);
            }
            all.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn pcm16_8k_round_trips_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wav");
        let pcm = sine(8000, 440.0, 1234);
        write_pcm16(&path, 8000, &pcm).unwrap();
        let (info, back) = read_8k_mono(&path, None).unwrap();
        assert_eq!(info.encoding, Encoding::Pcm { bits: 16 });
        assert_eq!(info.duration_ms(), Some(1234));
        assert_eq!(back, pcm);
    }

    #[test]
    fn ulaw_file_decodes_like_g711() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.wav");
        let pcm = sine(8000, 1000.0, 333);
        write_ulaw(&path, &pcm).unwrap();
        let (info, back) = read_8k_mono(&path, None).unwrap();
        assert_eq!(info.encoding, Encoding::MuLaw);
        assert_eq!(back.len(), pcm.len());
        for (a, b) in pcm.iter().zip(&back) {
            assert_eq!(g711::ulaw_decode(g711::ulaw_encode(*a)), *b);
        }
    }

    #[test]
    fn stereo_44k1_is_downmixed_and_resampled_to_8k() {
        let mono = sine(44_100, 700.0, 2000);
        let mut data = Vec::new();
        for s in &mono {
            data.extend_from_slice(&s.to_le_bytes());
            data.extend_from_slice(&s.to_le_bytes());
        }
        let out = read_all(&header(1, 2, 44_100, 16, &data)).unwrap();
        assert_eq!(out.len(), 16_000);
        let crossings = out[4000..12000]
            .windows(2)
            .filter(|w| (w[0] < 0) != (w[1] < 0))
            .count();
        let freq = crossings as f64 / 2.0;
        assert!((freq - 700.0).abs() < 5.0, "{freq}");
    }

    #[test]
    fn one_channel_of_a_two_channel_call_is_read_alone() {
        // our side plays a tone on the left, the callee is silent on the right
        let left = sine(8000, 700.0, 500);
        let mut data = Vec::new();
        for (i, s) in left.iter().enumerate() {
            data.extend_from_slice(&s.to_le_bytes());
            data.extend_from_slice(&(i as i16 % 7).to_le_bytes());
        }
        let bytes = header(1, 2, 8000, 16, &data);
        let read = |channel: Option<u16>| -> Result<Vec<i16>, WavError> {
            let mut r = WavReader::new(&bytes[..])?;
            if let Some(c) = channel {
                r.select_channel(c)?;
            }
            let mut all = vec![0i16; 8000];
            let n = r.read_samples(&mut all)?;
            all.truncate(n);
            Ok(all)
        };
        assert_eq!(read(Some(1)).unwrap(), left);
        let right = read(Some(2)).unwrap();
        assert!(right.iter().enumerate().all(|(i, s)| *s == i as i16 % 7));
        let mixed = read(None).unwrap();
        assert_eq!(mixed[1], ((i32::from(left[1]) + 1) / 2) as i16);
        for bad in [0, 3] {
            let err = read(Some(bad)).unwrap_err().to_string();
            assert!(
                err.contains(&format!("channel {bad}")) && err.contains("has 2"),
                "{err}"
            );
        }
    }

    #[test]
    fn every_encoding_decodes_to_the_same_tone() {
        let base = sine(16_000, 500.0, 200);
        let mut variants: Vec<(u16, u16, Vec<u8>)> = Vec::new();
        variants.push((1, 8, base.iter().map(|s| ((s >> 8) + 128) as u8).collect()));
        variants.push((
            1,
            24,
            base.iter()
                .flat_map(|s| {
                    let b = s.to_le_bytes();
                    [0, b[0], b[1]]
                })
                .collect(),
        ));
        variants.push((
            1,
            32,
            base.iter()
                .flat_map(|s| (i32::from(*s) << 16).to_le_bytes())
                .collect(),
        ));
        variants.push((
            3,
            32,
            base.iter()
                .flat_map(|s| (f32::from(*s) / 32768.0).to_le_bytes())
                .collect(),
        ));
        variants.push((
            3,
            64,
            base.iter()
                .flat_map(|s| (f64::from(*s) / 32768.0).to_le_bytes())
                .collect(),
        ));
        variants.push((6, 8, base.iter().map(|s| g711::alaw_encode(*s)).collect()));
        let reference = read_all(&header(
            1,
            1,
            16_000,
            16,
            &base
                .iter()
                .flat_map(|s| s.to_le_bytes())
                .collect::<Vec<_>>(),
        ))
        .unwrap();
        assert_eq!(reference.len(), 1600);
        for (tag, bits, data) in variants {
            let out = read_all(&header(tag, 1, 16_000, bits, &data)).unwrap();
            assert_eq!(out.len(), reference.len(), "tag {tag} bits {bits}");
            let err: f64 = out
                .iter()
                .zip(&reference)
                .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
                .sum::<f64>()
                / out.len() as f64;
            assert!(err < 300.0, "tag {tag} bits {bits}: mean error {err}");
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(matches!(read_all(b""), Err(WavError::Empty)));
        let text = read_all(b"hello world, not audio").unwrap_err();
        assert!(matches!(text, WavError::NotWav(_)));
        // (no container is named for text)
        assert!(!text.to_string().contains("looks like"));
        // other containers are named, with how to convert them
        for (bytes, what) in [
            (&b"ID3\x04\0\0\0\0\0\0"[..], "MP3"),
            (&b"\xFF\xFB\x90\x64\0\0\0\0\0\0\0\0"[..], "MP3"),
            (&b"fLaC\0\0\0\x22\0\0\0\0"[..], "FLAC"),
            (&b"OggS\0\x02\0\0\0\0\0\0"[..], "Ogg"),
            (&b"\0\0\0\x20ftypM4A \0\0"[..], "MP4/M4A"),
            (&b"FORM\0\0\0\0AIFF"[..], "AIFF"),
            (&b"RF64\xFF\xFF\xFF\xFFWAVE"[..], "RF64"),
        ] {
            let e = read_all(bytes).unwrap_err().to_string();
            assert!(
                e.contains(what) && e.contains("not a WAV") && e.contains("ffmpeg"),
                "{what}: {e}"
            );
        }
        assert!(matches!(
            read_all(b"RIFF\0\0\0\0WAVE"),
            Err(WavError::BadHeader(_))
        ));
        // unsupported: ADPCM (tag 2)
        assert!(matches!(
            read_all(&header(2, 1, 8000, 4, &[0; 10])),
            Err(WavError::BadHeader(_) | WavError::Unsupported { .. })
        ));
        assert!(matches!(
            read_all(&header(0x55, 1, 8000, 16, &[0; 10])),
            Err(WavError::Unsupported {
                format_tag: 0x55,
                ..
            })
        ));
        assert!(matches!(
            read_all(&header(1, 0, 8000, 16, &[])),
            Err(WavError::BadHeader(_))
        ));
        assert!(matches!(
            read_all(&header(1, 1, 0, 16, &[])),
            Err(WavError::BadHeader(_))
        ));
        // a zero-length data chunk is valid and empty
        assert_eq!(read_all(&header(1, 1, 8000, 16, &[])).unwrap().len(), 0);
        // data cut short: whole samples are kept
        let mut cut = header(1, 1, 8000, 16, &[1, 0, 2, 0, 3, 0]);
        cut.truncate(cut.len() - 1);
        assert_eq!(read_all(&cut).unwrap(), vec![1, 2]);
        // every prefix of a valid file and random bytes: no panic
        let good = header(1, 2, 22_050, 16, &[7; 400]);
        for n in 0..good.len() {
            let _ = read_all(&good[..n]);
        }
        let mut x: u32 = 1;
        for _ in 0..2000 {
            let mut bytes = good.clone();
            for _ in 0..4 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let at = (x as usize >> 8) % bytes.len();
                bytes[at] = (x >> 24) as u8;
            }
            let _ = read_all(&bytes);
        }
    }

    #[test]
    fn frames_carry_media_time() {
        let data: Vec<u8> = sine(8000, 300.0, 50)
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let bytes = header(1, 1, 8000, 16, &data);
        let mut r = WavReader::new(&bytes[..]).unwrap();
        let times: Vec<u64> = std::iter::from_fn(|| r.next_frame().unwrap())
            .map(|f| f.media_ms)
            .collect();
        assert_eq!(times, vec![0, 20, 40]);
    }

    #[test]
    fn in_memory_wav_parses_back() {
        let pcm = sine(16_000, 440.0, 100);
        let bytes = to_wav_bytes(16_000, &pcm);
        let r = WavReader::new(&bytes[..]).unwrap();
        assert_eq!(r.info().sample_rate, 16_000);
        assert_eq!(r.info().frames, Some(1600));
    }
}
