//! [`EmitQueue`]: frames the pipeline sends on its own (ARP requests, released held frames,
//! gratuitous ARP), in one buffer allocated up front.
//!
//! Invariants: at most [`EMIT_CAPACITY`] frames of at most [`EMIT_FRAME`] bytes each as
//! written, plus the VLAN tags of the frame being processed ([`EmitQueue::set_tags`]),
//! which the queue inserts after the MACs of every frame pushed meanwhile (each slot has
//! room for them); a push to a full queue is refused (the caller counts `emit_overflow`),
//! never an allocation.

use crate::snapshot::IfaceId;

use super::vlan::{self, MAX_TAGS_LEN, Tags};
use super::{EMIT_CAPACITY, EMIT_FRAME};

/// Bytes of one slot: a frame as written and the most tags inserted into it.
const SLOT: usize = EMIT_FRAME + MAX_TAGS_LEN;

/// Frames the pipeline sends on its own, in one buffer allocated up front.
#[derive(Debug)]
pub(super) struct EmitQueue {
    buffer: Vec<u8>,
    frames: Vec<(IfaceId, usize)>,
    /// The tags of the frame being processed (`vlan`): inserted into every frame pushed.
    tags: Tags,
}

impl EmitQueue {
    pub(super) fn new() -> Self {
        EmitQueue {
            buffer: vec![0; EMIT_CAPACITY * SLOT],
            frames: Vec::with_capacity(EMIT_CAPACITY),
            tags: Tags::NONE,
        }
    }

    /// Sets the tags inserted into every frame pushed from now on (the tags of the frame
    /// being processed; [`Tags::NONE`] once it is done); returns the previous ones.
    pub(super) fn set_tags(&mut self, tags: Tags) -> Tags {
        std::mem::replace(&mut self.tags, tags)
    }

    /// Queues a frame written by `write` into [`EMIT_FRAME`] bytes (it returns the frame's
    /// length), with the current tags inserted. False when full. Inlined: a tunnel hit's
    /// wrap writes through it, and out of line its call costs more than its body.
    #[inline(always)]
    pub(super) fn push_with(
        &mut self,
        egress: IfaceId,
        write: impl FnOnce(&mut [u8]) -> usize,
    ) -> bool {
        let index = self.frames.len();
        if index >= EMIT_CAPACITY {
            return false;
        }
        let slot = &mut self.buffer[index * SLOT..(index + 1) * SLOT];
        let len = write(&mut slot[..EMIT_FRAME]).min(EMIT_FRAME);
        let len = vlan::insert(slot, len, &self.tags);
        self.frames.push((egress, len));
        true
    }

    /// Queues a copy of `frame`, with the current tags inserted. False when full or when
    /// the frame is longer than [`EMIT_FRAME`].
    pub(super) fn push(&mut self, egress: IfaceId, frame: &[u8]) -> bool {
        if frame.len() > EMIT_FRAME {
            return false;
        }
        self.push_with(egress, |slot| {
            slot[..frame.len()].copy_from_slice(frame);
            frame.len()
        })
    }

    /// Queues a copy of `frame` as it is, with no tags inserted: a held frame, which was
    /// held with the tags of its own frame ([`vlan::hold`]).
    pub(super) fn push_held(&mut self, egress: IfaceId, frame: &[u8]) -> bool {
        let tags = self.set_tags(Tags::NONE);
        let pushed = self.push(egress, frame);
        self.tags = tags;
        pushed
    }

    /// The tags inserted into the frames pushed now.
    pub(super) fn tags(&self) -> &Tags {
        &self.tags
    }

    pub(super) fn len(&self) -> usize {
        self.frames.len()
    }

    pub(super) fn drain(&mut self, mut send: impl FnMut(IfaceId, &[u8])) -> usize {
        let count = self.frames.len();
        for (index, (egress, len)) in self.frames.iter().enumerate() {
            send(*egress, &self.buffer[index * SLOT..index * SLOT + len]);
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
