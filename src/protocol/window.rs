//! A window of consensus instances indexed by sequence number (Section III-D).
//!
//! Every stage keeps per-instance state only for sequence numbers in `[base, base + capacity)`,
//! where `base` follows the stability threshold. The window is a ring of preallocated slots: no
//! allocation and no hashing per instance, and memory is bounded by the capacity forever.

/// Per-instance state for the sequence numbers `[base, base + capacity)`.
#[derive(Clone, Debug)]
pub struct Window<T> {
    base: u64,
    slots: Vec<Option<T>>,
    occupied: usize,
}

impl<T> Window<T> {
    /// An empty window of `capacity` slots starting at sequence number `base`.
    pub fn new(base: u64, capacity: u64) -> Window<T> {
        assert!(capacity > 0, "a window holds at least one slot");
        let slots = (0..capacity).map(|_| None).collect();
        Window { base, slots, occupied: 0 }
    }

    /// The lowest sequence number the window holds.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// One past the highest sequence number the window holds.
    pub fn end(&self) -> u64 {
        self.base + self.slots.len() as u64
    }

    /// True if `sequence` lies inside the window.
    pub fn contains(&self, sequence: u64) -> bool {
        sequence >= self.base && sequence < self.end()
    }

    /// The number of occupied slots (the state held, for metrics and bounds).
    pub fn occupied(&self) -> usize {
        self.occupied
    }

    fn index(&self, sequence: u64) -> usize {
        (sequence % self.slots.len() as u64) as usize
    }

    /// The state of `sequence`, if inside the window and present.
    pub fn get(&self, sequence: u64) -> Option<&T> {
        if !self.contains(sequence) {
            return None;
        }
        self.slots[self.index(sequence)].as_ref()
    }

    /// The state of `sequence`, created with `make` if absent; `None` outside the window.
    pub fn get_or_insert_with(&mut self, sequence: u64, make: impl FnOnce() -> T) -> Option<&mut T> {
        if !self.contains(sequence) {
            return None;
        }
        let index = self.index(sequence);
        if self.slots[index].is_none() {
            self.occupied += 1;
        }
        Some(self.slots[index].get_or_insert_with(make))
    }

    /// The state of `sequence`, mutable, if inside the window and present.
    pub fn get_mut(&mut self, sequence: u64) -> Option<&mut T> {
        if !self.contains(sequence) {
            return None;
        }
        let index = self.index(sequence);
        self.slots[index].as_mut()
    }

    /// Removes and returns the state of `sequence`.
    pub fn take(&mut self, sequence: u64) -> Option<T> {
        if !self.contains(sequence) {
            return None;
        }
        let index = self.index(sequence);
        let taken = self.slots[index].take();
        if taken.is_some() {
            self.occupied -= 1;
        }
        taken
    }

    /// Moves the window up to start at `base`, discarding every instance below it.
    /// A lower `base` than the current one is ignored: windows never move back.
    pub fn advance(&mut self, base: u64) {
        if base <= self.base {
            return;
        }
        let discard = (base - self.base).min(self.slots.len() as u64);
        for sequence in self.base..self.base + discard {
            let index = self.index(sequence);
            if self.slots[index].take().is_some() {
                self.occupied -= 1;
            }
        }
        self.base = base;
    }

    /// The occupied slots in sequence order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        (self.base..self.end()).filter_map(|s| self.get(s).map(|t| (s, t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_only_sequence_numbers_inside() {
        let mut w: Window<u64> = Window::new(10, 4);
        assert!(w.get_or_insert_with(9, || 9).is_none());
        assert!(w.get_or_insert_with(14, || 14).is_none());
        for s in 10..14 {
            *w.get_or_insert_with(s, || 0).unwrap() = s;
        }
        assert_eq!(w.occupied(), 4);
        assert_eq!(w.iter().map(|(s, v)| (s, *v)).collect::<Vec<_>>(), vec![(10, 10), (11, 11), (12, 12), (13, 13)]);
    }

    #[test]
    fn advancing_discards_below_and_frees_slots() {
        let mut w: Window<u64> = Window::new(0, 4);
        for s in 0..4 {
            w.get_or_insert_with(s, || s);
        }
        w.advance(2);
        assert_eq!(w.occupied(), 2);
        assert_eq!(w.get(1), None);
        assert_eq!(w.get(3), Some(&3));
        // The freed slots now hold 4 and 5, not stale 0 and 1.
        assert_eq!(w.get(4), None);
        w.get_or_insert_with(4, || 44);
        assert_eq!(w.get(4), Some(&44));
        // Jumping far ahead clears everything; moving back is ignored.
        w.advance(100);
        assert_eq!(w.occupied(), 0);
        w.advance(50);
        assert_eq!(w.base(), 100);
    }

    #[test]
    fn take_empties_a_slot() {
        let mut w: Window<&str> = Window::new(0, 2);
        w.get_or_insert_with(1, || "a");
        assert_eq!(w.take(1), Some("a"));
        assert_eq!(w.take(1), None);
        assert_eq!(w.occupied(), 0);
    }
}
