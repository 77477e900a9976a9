//! The policies' decisions, apart from any memory: which 2 MiB extents get
//! a huge page, which get 4 KiB pages, and which are broken, given the PFNs
//! of each PFN batch (`FORMAT.md` §4) in stream order.

use super::{SuperpagePolicy, EXTENT_PAGES};

/// What the memory must do for one extent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Back the extent with one 2 MiB page.
    Huge(u64),
    /// Back the extent with 4 KiB pages.
    Small(u64),
    /// The extent, backed by a 2 MiB page, goes to 4 KiB pages, keeping
    /// every byte written to it.
    Break(u64),
}

/// Where an extent stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtentState {
    /// No page of it has arrived.
    Untouched,
    /// `tracking` only: its first PFN and the ones after it arrived in
    /// order up to the end of a batch; it was given a 2 MiB page, which the
    /// next PFN keeps (if it is the one expected) or breaks.
    Pending,
    /// Backed by a 2 MiB page for good.
    Huge,
    /// Backed by 4 KiB pages for good.
    Small,
}

/// An extent whose PFNs are arriving in order (the seed's `required_pfn`).
#[derive(Clone, Copy, Debug)]
struct Track {
    extent: u64,
    /// The PFN that must come next for the extent to stay whole.
    next: u64,
    /// Whether a 2 MiB page was already given at the end of an earlier batch.
    allocated: bool,
}

/// The decisions of one policy over a stream of PFN batches.
#[derive(Clone, Debug)]
pub struct Planner {
    policy: SuperpagePolicy,
    /// Extents lying wholly inside the guest; a last, partial extent (if
    /// any) is never a superpage: the guest does not own the whole 2 MiB.
    whole: u64,
    state: Vec<ExtentState>,
    track: Option<Track>,
}

impl Planner {
    /// A planner for a guest of `pages` pages.
    pub fn new(policy: SuperpagePolicy, pages: u64) -> Planner {
        Planner {
            policy,
            whole: pages / EXTENT_PAGES,
            state: vec![ExtentState::Untouched; pages.div_ceil(EXTENT_PAGES) as usize],
            track: None,
        }
    }

    /// The policy.
    pub fn policy(&self) -> SuperpagePolicy {
        self.policy
    }

    /// Where extent `extent` stands.
    pub fn state(&self, extent: u64) -> ExtentState {
        self.state[extent as usize]
    }

    /// Extents of the guest (the last may be partial).
    pub fn extents(&self) -> u64 {
        self.state.len() as u64
    }

    /// Decides for one batch, whose PFNs (each below the guest's size) are
    /// given in stream order before any of them is written; appends what
    /// the memory must do, in order, to `out`.
    pub fn plan(&mut self, pfns: &[u64], out: &mut Vec<Action>) {
        match self.policy {
            SuperpagePolicy::None => {
                for &pfn in pfns {
                    self.first_touch(pfn / EXTENT_PAGES, ExtentState::Small, out);
                }
            }
            SuperpagePolicy::Optimistic => {
                for &pfn in pfns {
                    let e = pfn / EXTENT_PAGES;
                    let kind = if e < self.whole {
                        ExtentState::Huge
                    } else {
                        ExtentState::Small
                    };
                    self.first_touch(e, kind, out);
                }
            }
            SuperpagePolicy::Tracking => self.plan_tracking(pfns, out),
        }
    }

    fn first_touch(&mut self, e: u64, kind: ExtentState, out: &mut Vec<Action>) {
        let s = &mut self.state[e as usize];
        if *s == ExtentState::Untouched {
            *s = kind;
            out.push(match kind {
                ExtentState::Huge => Action::Huge(e),
                _ => Action::Small(e),
            });
        }
    }

    /// The seed's first method, case by case.
    fn plan_tracking(&mut self, pfns: &[u64], out: &mut Vec<Action>) {
        for &pfn in pfns {
            let e = pfn / EXTENT_PAGES;
            match self.track {
                // Case 2: the PFN the tracked extent needs next.
                Some(ref mut t) if pfn == t.next => {
                    t.next += 1;
                    if t.next == (t.extent + 1) * EXTENT_PAGES {
                        if !t.allocated {
                            out.push(Action::Huge(t.extent));
                        }
                        self.state[t.extent as usize] = ExtentState::Huge;
                        self.track = None;
                    }
                }
                // Case 1: the first PFN of an extent nothing of which has
                // arrived: whatever was tracked ends, and tracking starts.
                _ if pfn % EXTENT_PAGES == 0
                    && e < self.whole
                    && self.state[e as usize] == ExtentState::Untouched =>
                {
                    self.end_track(out);
                    self.state[e as usize] = ExtentState::Pending;
                    self.track = Some(Track {
                        extent: e,
                        next: pfn + 1,
                        allocated: false,
                    });
                }
                // Cases 3 and 4: out of order, or a series of 4 KiB pages.
                _ => {
                    self.end_track(out);
                    self.first_touch(e, ExtentState::Small, out);
                }
            }
        }
        // The run reaches the end of the batch in order: allocate the 2 MiB
        // page now, optimistically; a later batch keeps or breaks it.
        if let Some(t) = &mut self.track {
            if !t.allocated {
                t.allocated = true;
                out.push(Action::Huge(t.extent));
            }
        }
    }

    /// The tracked extent's order broke before its 512th page: its pages
    /// go to 4 KiB pages, breaking the 2 MiB page if one was given.
    fn end_track(&mut self, out: &mut Vec<Action>) {
        if let Some(t) = self.track.take() {
            self.state[t.extent as usize] = ExtentState::Small;
            out.push(if t.allocated {
                Action::Break(t.extent)
            } else {
                Action::Small(t.extent)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Action::{Break, Huge, Small};
    use super::*;

    const N: u64 = EXTENT_PAGES;

    /// Plans each batch in turn; returns every action in order.
    fn run(policy: SuperpagePolicy, pages: u64, batches: &[Vec<u64>]) -> (Planner, Vec<Action>) {
        let mut p = Planner::new(policy, pages);
        let mut out = Vec::new();
        for b in batches {
            p.plan(b, &mut out);
        }
        (p, out)
    }

    fn range(a: u64, b: u64) -> Vec<u64> {
        (a..b).collect()
    }

    /// Splits a PFN order into batches of at most `n` (as a sender does).
    fn batches(order: &[u64], n: usize) -> Vec<Vec<u64>> {
        order.chunks(n).map(|c| c.to_vec()).collect()
    }

    use SuperpagePolicy::{None as Off, Optimistic, Tracking};

    #[test]
    fn in_order_in_one_batch() {
        let b = batches(&range(0, 2 * N), 1024);
        let (p, out) = run(Tracking, 2 * N, &b);
        assert_eq!(out, [Huge(0), Huge(1)]);
        assert_eq!(p.state(0), ExtentState::Huge);
        assert_eq!(run(Optimistic, 2 * N, &b).1, [Huge(0), Huge(1)]);
        assert_eq!(run(Off, 2 * N, &b).1, [Small(0), Small(1)]);
    }

    #[test]
    fn reversed_order_gets_small_pages_under_tracking() {
        let mut order = range(0, 2 * N);
        order.reverse();
        let b = batches(&order, 1024);
        let (p, out) = run(Tracking, 2 * N, &b);
        assert_eq!(out, [Small(1), Small(0)]);
        assert_eq!(p.state(1), ExtentState::Small);
        // Optimistic takes the extent at whichever PFN comes first.
        assert_eq!(run(Optimistic, 2 * N, &b).1, [Huge(1), Huge(0)]);
    }

    #[test]
    fn in_order_across_a_batch_boundary_is_allocated_early_and_kept() {
        let b = [range(0, 300), range(300, N)];
        let mut p = Planner::new(Tracking, N);
        let mut out = Vec::new();
        p.plan(&b[0], &mut out);
        // Optimistic allocation in the first batch.
        assert_eq!(out, [Huge(0)]);
        assert_eq!(p.state(0), ExtentState::Pending);
        p.plan(&b[1], &mut out);
        // Nothing more to do: the order held.
        assert_eq!(out, [Huge(0)]);
        assert_eq!(p.state(0), ExtentState::Huge);
    }

    #[test]
    fn order_breaking_in_the_next_batch_breaks_the_extent() {
        // PFN 300 is missing where the second batch starts (case 3).
        let b = vec![range(0, 300), range(301, N)];
        let (p, out) = run(Tracking, N, &b);
        assert_eq!(out, [Huge(0), Break(0)]);
        assert_eq!(p.state(0), ExtentState::Small);
        // A new extent's first PFN while one is pending (case 1).
        let b = vec![range(0, 300), range(N, 2 * N)];
        let (p, out) = run(Tracking, 2 * N, &b);
        assert_eq!(out, [Huge(0), Break(0), Huge(1)]);
        assert_eq!(
            (p.state(0), p.state(1)),
            (ExtentState::Small, ExtentState::Huge)
        );
        // Optimistic never breaks.
        assert_eq!(run(Optimistic, 2 * N, &b).1, [Huge(0), Huge(1)]);
    }

    #[test]
    fn order_breaking_inside_a_batch_needs_no_break() {
        // 0..100, then 200.. of the same extent (case 3): 4 KiB from the start.
        let mut order = range(0, 100);
        order.extend(range(200, N));
        order.extend(range(100, 200));
        let (_, out) = run(Tracking, N, &[order]);
        assert_eq!(out, [Small(0)]);
    }

    #[test]
    fn a_batch_ending_at_the_extent_end_completes_it() {
        let (p, out) = run(Tracking, 2 * N, &[range(0, N), range(N + 5, N + 9)]);
        assert_eq!(out, [Huge(0), Small(1)]);
        assert_eq!(p.state(0), ExtentState::Huge);
    }

    #[test]
    fn holes() {
        // Every page of extent 0 but one; extent 1 complete.
        let order: Vec<u64> = (0..2 * N).filter(|&p| p != 7).collect();
        let b = batches(&order, 1024);
        let (p, out) = run(Tracking, 2 * N, &b);
        assert_eq!(out, [Small(0), Huge(1)]);
        assert_eq!(p.state(0), ExtentState::Small);
        assert_eq!(run(Optimistic, 2 * N, &b).1, [Huge(0), Huge(1)]);
        // The hole arriving later changes nothing.
        let mut b2 = b.clone();
        b2.push(vec![7]);
        assert_eq!(run(Tracking, 2 * N, &b2).1, [Small(0), Huge(1)]);
        assert_eq!(run(Optimistic, 2 * N, &b2).1, [Huge(0), Huge(1)]);
    }

    #[test]
    fn an_extent_that_does_not_start_at_its_first_pfn() {
        // Case 4: tracking never starts, so 4 KiB pages throughout.
        let mut order = range(5, N);
        order.extend(range(0, 5));
        let (_, out) = run(Tracking, N, &[order.clone()]);
        assert_eq!(out, [Small(0)]);
        assert_eq!(run(Optimistic, N, &[order]).1, [Huge(0)]);
    }

    #[test]
    fn an_extent_begun_twice() {
        // Begun, broken inside the batch, begun again in a later batch: its
        // pages are populated already, so no second 2 MiB attempt.
        let b = vec![range(0, 100), vec![3 * N + 5], range(0, N)];
        let (p, out) = run(Tracking, 4 * N, &b);
        assert_eq!(out, [Huge(0), Break(0), Small(3)]);
        assert_eq!(p.state(0), ExtentState::Small);
        // Begun, completed, then sent whole again (a later checkpoint).
        let b = vec![range(0, N), range(N, 2 * N), range(0, 2 * N)];
        let (p, out) = run(Tracking, 2 * N, &b);
        assert_eq!(out, [Huge(0), Huge(1)]);
        assert_eq!(p.state(0), ExtentState::Huge);
        // Optimistic allocates once.
        let b = vec![range(0, 100), range(0, N)];
        assert_eq!(run(Optimistic, N, &b).1, [Huge(0)]);
    }

    #[test]
    fn a_pending_extent_survives_between_checkpoints_only_in_order() {
        // The stream is one sequence of batches: the next checkpoint's
        // first PFN keeps or breaks what the last one left pending.
        let (p, out) = run(Tracking, N, &[range(0, 400), range(400, N)]);
        assert_eq!(
            (out.as_slice(), p.state(0)),
            (&[Huge(0)][..], ExtentState::Huge)
        );
        let (p, out) = run(Tracking, N, &[range(0, 400), vec![10]]);
        assert_eq!(out, [Huge(0), Break(0)]);
        assert_eq!(p.state(0), ExtentState::Small);
    }

    #[test]
    fn interleaved_extents() {
        // Two extents' PFNs alternating: each start ends the other's run.
        let order: Vec<u64> = (0..N).flat_map(|i| [i, N + i]).collect();
        let (_, out) = run(Tracking, 2 * N, &batches(&order, 1024));
        assert_eq!(out, [Small(0), Small(1)]);
    }

    #[test]
    fn a_partial_last_extent_is_never_huge() {
        let pages = N + 100;
        for policy in [Off, Tracking, Optimistic] {
            let (p, out) = run(policy, pages, &[range(0, pages)]);
            let want = if policy == Off {
                [Small(0), Small(1)]
            } else {
                [Huge(0), Small(1)]
            };
            assert_eq!(out, want, "{policy:?}");
            assert_eq!(p.state(1), ExtentState::Small);
        }
    }

    #[test]
    fn single_pfn_batches_still_track() {
        // Each PFN its own batch: every extent is allocated early and kept.
        let b: Vec<Vec<u64>> = (0..2 * N).map(|p| vec![p]).collect();
        let (p, out) = run(Tracking, 2 * N, &b);
        assert_eq!(out, [Huge(0), Huge(1)]);
        assert_eq!(p.state(1), ExtentState::Huge);
    }
}
