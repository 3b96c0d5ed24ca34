//! The owner's eviction queues: which flows a full table may give up, oldest first.
//!
//! Three intrusive FIFO lists threaded through an array with one link per record:
//! embryonic TCP flows, UDP flows no reply has been seen for (*unreplied*), and replied UDP
//! flows. A flow joins the tail of its class's list when it enters the class (an insert, or
//! a transition the owner makes) and leaves it when it is removed or changes class, so the
//! head of a list is the flow that has been in that class longest.
//!
//! Only the owner reads or writes the queues (they live in [`super::Conntrack`], not in the
//! shared table): readers on other cores never see them, and nothing here is atomic. A reader
//! may move a flow out of its class (complete a handshake, see a UDP reply) without the
//! owner knowing; the owner finds out when that flow reaches the head of its list and
//! re-files it (`Conntrack::settle`), so a list may hold flows that have since left its class,
//! but every flow in a class is on that class's list or was moved out of it by a reader.
//!
//! Everything is allocated in [`Queues::new`]; every operation is O(1) and allocation-free.

/// An eviction class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Class {
    /// TCP, SYN seen, handshake not completed.
    Embryonic,
    /// UDP, no packet seen from the backend yet.
    Unreplied,
    /// UDP, the backend has answered.
    Replied,
}

impl Class {
    const ALL: [Class; 3] = [Class::Embryonic, Class::Unreplied, Class::Replied];

    const fn index(self) -> usize {
        match self {
            Class::Embryonic => 0,
            Class::Unreplied => 1,
            Class::Replied => 2,
        }
    }
}

/// No record.
const NIL: u32 = u32::MAX;

/// One record's place in at most one list.
#[derive(Debug, Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
    /// `Class::index() + 1`, or 0 when the record is on no list.
    class: u8,
}

const UNLINKED: Link = Link { prev: NIL, next: NIL, class: 0 };

/// The three lists over a table's records.
#[derive(Debug)]
pub(super) struct Queues {
    links: Box<[Link]>,
    heads: [u32; 3],
    tails: [u32; 3],
    lens: [usize; 3],
}

impl Queues {
    /// Queues for `records` records (at most `u32::MAX - 1`), all empty.
    pub fn new(records: usize) -> Queues {
        Queues {
            links: vec![UNLINKED; records].into_boxed_slice(),
            heads: [NIL; 3],
            tails: [NIL; 3],
            lens: [0; 3],
        }
    }

    /// What [`Queues::memory_bytes`] of `Queues::new(records)` will be, without allocating.
    pub fn memory_for(records: usize) -> usize {
        records.saturating_mul(std::mem::size_of::<Link>())
    }

    /// Bytes allocated.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.links)
    }

    /// The list `record` is on.
    pub fn class_of(&self, record: usize) -> Option<Class> {
        let class = self.links.get(record)?.class;
        Class::ALL.get(usize::from(class).checked_sub(1)?).copied()
    }

    /// Flows on `class`'s list.
    pub fn len(&self, class: Class) -> usize {
        self.lens[class.index()]
    }

    /// The record longest on `class`'s list.
    pub fn oldest(&self, class: Class) -> Option<usize> {
        let head = self.heads[class.index()];
        (head != NIL).then_some(head as usize)
    }

    /// Appends `record` to `class`'s list (taking it off any list it was on).
    pub fn push(&mut self, record: usize, class: Class) {
        self.remove(record);
        self.push_unlinked(record, class);
    }

    /// [`Queues::push`] of a record on no list (one just taken off the free list: a record
    /// leaves its list when it is freed).
    #[inline]
    pub fn push_unlinked(&mut self, record: usize, class: Class) {
        debug_assert!(self.class_of(record).is_none(), "the record is on no list");
        let Some(link) = self.links.get_mut(record) else {
            return;
        };
        let list = class.index();
        let tail = self.tails[list];
        *link = Link { prev: tail, next: NIL, class: list as u8 + 1 };
        match self.links.get_mut(tail as usize) {
            Some(previous) => previous.next = record as u32,
            None => self.heads[list] = record as u32,
        }
        self.tails[list] = record as u32;
        self.lens[list] += 1;
    }

    /// Takes `record` off its list, if it is on one; returns that list's class.
    pub fn remove(&mut self, record: usize) -> Option<Class> {
        let class = self.class_of(record)?;
        let list = class.index();
        let link = std::mem::replace(self.links.get_mut(record)?, UNLINKED);
        match self.links.get_mut(link.prev as usize) {
            Some(previous) => previous.next = link.next,
            None => self.heads[list] = link.next,
        }
        match self.links.get_mut(link.next as usize) {
            Some(next) => next.prev = link.prev,
            None => self.tails[list] = link.prev,
        }
        self.lens[list] -= 1;
        Some(class)
    }

    /// `class`'s list from its head (tests).
    #[cfg(test)]
    pub fn list(&self, class: Class) -> Vec<usize> {
        let mut out = Vec::new();
        let mut at = self.heads[class.index()];
        while let Some(link) = self.links.get(at as usize) {
            out.push(at as usize);
            at = link.next;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[derive(Debug, Clone)]
    enum Op {
        Push(usize, usize),
        Remove(usize),
    }

    proptest! {
        /// The lists behave like three `VecDeque`s a record is in at most one of.
        #[test]
        fn behave_like_three_fifos(ops in prop::collection::vec(
            prop_oneof![
                (0..12usize, 0..3usize).prop_map(|(r, c)| Op::Push(r, c)),
                (0..12usize).prop_map(Op::Remove),
            ],
            0..200,
        )) {
            let mut queues = Queues::new(12);
            let mut model: [VecDeque<usize>; 3] = Default::default();
            for op in ops {
                let (record, class) = match op {
                    Op::Push(record, class) => (record, Some(Class::ALL[class])),
                    Op::Remove(record) => (record, None),
                };
                let was = model.iter().position(|list| list.contains(&record)).map(|i| Class::ALL[i]);
                for list in &mut model {
                    list.retain(|&r| r != record);
                }
                match class {
                    Some(class) => {
                        queues.push(record, class);
                        model[class.index()].push_back(record);
                    }
                    None => prop_assert_eq!(queues.remove(record), was),
                }
                for class in Class::ALL {
                    let want: Vec<usize> = model[class.index()].iter().copied().collect();
                    prop_assert_eq!(queues.list(class), want.clone());
                    prop_assert_eq!(queues.len(class), want.len());
                    prop_assert_eq!(queues.oldest(class), want.first().copied());
                }
                prop_assert_eq!(queues.class_of(record), class);
            }
        }
    }

    #[test]
    fn out_of_range_records_are_ignored() {
        let mut queues = Queues::new(2);
        queues.push(5, Class::Embryonic);
        assert_eq!((queues.remove(5), queues.len(Class::Embryonic)), (None, 0));
        assert_eq!(queues.class_of(5), None);
    }
}
