//! [`EmitQueue`]: frames the pipeline sends on its own (ARP requests, released held frames,
//! gratuitous ARP), in one buffer allocated up front.
//!
//! Invariants: at most [`EMIT_CAPACITY`] frames of at most [`EMIT_FRAME`] bytes each; a push
//! to a full queue is refused (the caller counts `emit_overflow`), never an allocation.

use crate::snapshot::IfaceId;

use super::{EMIT_CAPACITY, EMIT_FRAME};

/// Frames the pipeline sends on its own, in one buffer allocated up front.
#[derive(Debug)]
pub(super) struct EmitQueue {
    buffer: Vec<u8>,
    frames: Vec<(IfaceId, usize)>,
}

impl EmitQueue {
    pub(super) fn new() -> Self {
        EmitQueue {
            buffer: vec![0; EMIT_CAPACITY * EMIT_FRAME],
            frames: Vec::with_capacity(EMIT_CAPACITY),
        }
    }

    /// Queues a frame written by `write` (which returns its length). False when full.
    pub(super) fn push_with(
        &mut self,
        egress: IfaceId,
        write: impl FnOnce(&mut [u8]) -> usize,
    ) -> bool {
        let index = self.frames.len();
        if index >= EMIT_CAPACITY {
            return false;
        }
        let slot = &mut self.buffer[index * EMIT_FRAME..(index + 1) * EMIT_FRAME];
        let len = write(slot).min(EMIT_FRAME);
        self.frames.push((egress, len));
        true
    }

    pub(super) fn push(&mut self, egress: IfaceId, frame: &[u8]) -> bool {
        if frame.len() > EMIT_FRAME {
            return false;
        }
        self.push_with(egress, |slot| {
            slot[..frame.len()].copy_from_slice(frame);
            frame.len()
        })
    }

    pub(super) fn len(&self) -> usize {
        self.frames.len()
    }

    pub(super) fn drain(&mut self, mut send: impl FnMut(IfaceId, &[u8])) -> usize {
        let count = self.frames.len();
        for (index, (egress, len)) in self.frames.iter().enumerate() {
            send(*egress, &self.buffer[index * EMIT_FRAME..index * EMIT_FRAME + len]);
        }
        self.frames.clear();
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_queue_is_bounded_and_drains_in_order() {
        let mut queue = EmitQueue::new();
        for i in 0..EMIT_CAPACITY {
            assert!(queue.push(IfaceId(0), &[i as u8; 3]));
        }
        assert!(!queue.push(IfaceId(0), &[0; 3]));
        let mut seen = Vec::new();
        assert_eq!(queue.drain(|_, frame| seen.push(frame[0])), EMIT_CAPACITY);
        // Marks wrap at 256 (the queue may hold more frames than a byte counts).
        assert_eq!(seen, (0..EMIT_CAPACITY).map(|i| i as u8).collect::<Vec<_>>());
        assert_eq!(queue.drain(|_, _| panic!("empty")), 0);
    }
}
