//! Lock-free single-producer/single-consumer rings for audio that crosses
//! threads: a socket task hands decoded frames to the call's task, and agent
//! audio (arriving in chunks of any size) is re-framed into 20 ms frames for
//! pacing. A thin layer over `rtrb` that fixes the policy callers need:
//! never block, never allocate after construction, and say how much was
//! dropped when the consumer falls behind.

use rtrb::{Consumer, Producer, RingBuffer};

/// Creates a ring holding up to `capacity` items of `T`.
pub fn ring<T: Copy + Default>(capacity: usize) -> (RingProducer<T>, RingConsumer<T>) {
    let (p, c) = RingBuffer::new(capacity);
    (RingProducer { inner: p }, RingConsumer { inner: c })
}

/// The writing half; `Send`, owned by exactly one thread.
pub struct RingProducer<T> {
    inner: Producer<T>,
}

/// The reading half; `Send`, owned by exactly one thread.
pub struct RingConsumer<T> {
    inner: Consumer<T>,
}

impl<T: Copy + Default> RingProducer<T> {
    /// Pushes one item; gives it back when the ring is full.
    #[inline]
    pub fn push(&mut self, item: T) -> Result<(), T> {
        self.inner.push(item).map_err(|rtrb::PushError::Full(v)| v)
    }

    /// Copies as many items of `items` as fit; returns how many were written.
    pub fn push_slice(&mut self, items: &[T]) -> usize {
        let n = items.len().min(self.inner.slots());
        if n == 0 {
            return 0;
        }
        let Ok(mut chunk) = self.inner.write_chunk(n) else {
            return 0;
        };
        let (a, b) = chunk.as_mut_slices();
        a.copy_from_slice(&items[..a.len()]);
        b.copy_from_slice(&items[a.len()..n]);
        chunk.commit_all();
        n
    }

    /// Free slots.
    pub fn free(&self) -> usize {
        self.inner.slots()
    }

    /// True once the consumer was dropped (the call ended).
    pub fn is_abandoned(&self) -> bool {
        self.inner.is_abandoned()
    }
}

impl<T: Copy + Default> RingConsumer<T> {
    /// Pops the oldest item.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        self.inner.pop().ok()
    }

    /// Fills `out` completely from the ring, or takes nothing and returns
    /// false when fewer than `out.len()` items are buffered (so a 20 ms frame
    /// is only ever read whole).
    pub fn pop_exact(&mut self, out: &mut [T]) -> bool {
        let Ok(chunk) = self.inner.read_chunk(out.len()) else {
            return false;
        };
        let (a, b) = chunk.as_slices();
        out[..a.len()].copy_from_slice(a);
        out[a.len()..].copy_from_slice(b);
        chunk.commit_all();
        true
    }

    /// Discards everything buffered (Twilio's `clear`); returns how much.
    pub fn clear(&mut self) -> usize {
        let n = self.inner.slots();
        if let Ok(chunk) = self.inner.read_chunk(n) {
            chunk.commit_all();
        }
        n
    }

    /// Items buffered.
    pub fn len(&self) -> usize {
        self.inner.slots()
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// True once the producer was dropped.
    pub fn is_abandoned(&self) -> bool {
        self.inner.is_abandoned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::AudioFrame;

    #[test]
    fn frames_cross_threads_in_order_without_loss() {
        let (mut tx, mut rx) = ring::<AudioFrame>(8);
        let total = 10_000u64;
        let producer = std::thread::spawn(move || {
            let mut t = 0;
            while t < total {
                let f = AudioFrame::from_pcm(&[t as i16; 160], t * 20);
                if tx.push(f).is_ok() {
                    t += 1;
                } else {
                    std::thread::yield_now();
                }
            }
        });
        let mut next = 0;
        while next < total {
            match rx.pop() {
                Some(f) => {
                    assert_eq!(f.media_ms, next * 20);
                    assert_eq!(f.pcm[159], next as i16);
                    next += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert!(rx.is_abandoned());
    }

    #[test]
    fn slices_reframe_odd_chunks_into_whole_frames() {
        let (mut tx, mut rx) = ring::<i16>(1024);
        let mut frame = [0i16; 160];
        // 100 samples are not a frame yet
        assert_eq!(tx.push_slice(&[1; 100]), 100);
        assert!(!rx.pop_exact(&mut frame));
        assert_eq!(rx.len(), 100);
        // 250 more: one whole frame, 190 left
        assert_eq!(tx.push_slice(&[2; 250]), 250);
        assert!(rx.pop_exact(&mut frame));
        assert_eq!(frame[99], 1);
        assert_eq!(frame[100], 2);
        assert_eq!(rx.len(), 190);
        assert_eq!(rx.clear(), 190);
        assert!(rx.is_empty());
    }

    #[test]
    fn a_full_ring_rejects_instead_of_blocking() {
        let (mut tx, _rx) = ring::<i16>(4);
        assert_eq!(tx.push_slice(&[0; 10]), 4);
        assert_eq!(tx.push(7), Err(7));
        assert_eq!(tx.free(), 0);
    }
}
