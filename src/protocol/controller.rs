//! The controller stage (Section III-E): watches progress and starts view changes.

use super::params::Params;
use super::quorum::Announced;
use super::replica::{Counters, Outbox, Recovered, Repeat, Replica};
use super::topology::{Partition, Stage, Tuple};
use super::tuple::{Actual, Target, View};

/// Controller replica `x` (2f+1 of them).
///
/// Request sources report the highest request number they assigned (`Target`), executors the
/// highest request number of each source they executed (`Actual`). A source has outstanding
/// work while fewer than f+1 executors have executed up to its target. When some source has had
/// outstanding work for `view_timeout` and at least f+1 executors have made no progress for
/// that long, the controller announces the next view; replicas adopt the (f+1)-th highest view
/// announced by distinct controllers. After a view change the new proposer gets `view_timeout`
/// to make progress before the controllers move on to the next view. Without outstanding work
/// there is never a view change. Announcements are repeated periodically.
#[derive(Debug)]
pub struct Controller {
    id: u32,
    /// Controllers judge their own partition only: its sources' targets against what executors
    /// report of those sources (Section IV).
    partition: Partition,
    sources: usize,
    controllers: usize,
    quorum: usize,
    view_timeout_us: u64,
    report_us: u64,
    /// Per source: the highest request number reported, and when it was last reported.
    targets: Vec<Option<(u64, u64)>>,
    /// Since when each source has had outstanding work.
    outstanding_since: Vec<Option<u64>>,
    /// Per executor: the highest executed request number of each source.
    actual: Vec<Vec<u64>>,
    /// Per executor: when its progress last increased.
    progress_us: Vec<u64>,
    /// Per executor: this partition's committed slots, and the slots the merge waits for.
    frontier: Vec<u64>,
    wanted: Vec<u64>,
    /// Since when f+1 executors have waited for slots of this partition that nobody fills.
    unfilled_since: Option<u64>,
    views: Announced,
    /// The highest view this controller announced.
    announced: u64,
    view_since_us: u64,
    /// Repeats of the current view: at the report interval after a change, backing off while
    /// it stays.
    repeat: Repeat,
    changes: u64,
    /// The first tick: a fresh (or restarted) controller first listens for a view timeout, to
    /// learn the current view from the others' announcements before it may change it.
    started_us: Option<u64>,
    /// A resumed view not announced yet: announced on the next tick, not a report later.
    resumed: bool,
    /// The known view last handed to the host for writing.
    written: u64,
    /// This controller restarted from durable state and may still suspect its resumed view at
    /// once (see [`Controller::restarted_suspects`]).
    restarted: bool,
}

impl Controller {
    /// Controller replica `id` of a deployment with `params`.
    pub fn new(id: u32, params: &Params) -> Controller {
        Controller {
            id,
            partition: Partition::of(Stage::Controller, id, params),
            sources: params.sources(),
            controllers: params.controllers(),
            quorum: params.quorum(),
            view_timeout_us: params.view_timeout_us,
            report_us: params.report_interval_us(),
            targets: vec![None; params.sources()],
            outstanding_since: vec![None; params.sources()],
            actual: vec![vec![0; params.sources()]; params.executors()],
            progress_us: vec![0; params.executors()],
            frontier: vec![0; params.executors()],
            wanted: vec![0; params.executors()],
            unfilled_since: None,
            views: Announced::new(params.controllers(), params.quorum(), 0),
            announced: 0,
            view_since_us: 0,
            repeat: Repeat::new(params.report_interval_us()),
            changes: 0,
            started_us: None,
            resumed: false,
            written: 0,
            restarted: false,
        }
    }

    /// The view adopted from the controllers' announcements.
    pub fn view(&self) -> u64 {
        self.views.adopted()
    }

    /// The highest view this controller announced or adopted: what it keeps durable, so that a
    /// restarted cluster resumes from it instead of climbing again from view 0.
    pub fn known_view(&self) -> u64 {
        self.announced.max(self.view())
    }

    /// Resumes from the view this controller knew before a restart (its durable state): it
    /// announces that view at once, and suspects it as soon as work is outstanding (see
    /// [`Controller::restarted_suspects`]).
    pub fn resume(&mut self, view: u64) {
        self.announced = self.announced.max(view);
        self.written = self.written.max(view);
        self.resumed = true;
        self.restarted = true;
    }

    /// The restart fast path. A controller that restarted from durable state suspects its
    /// resumed view as soon as some source has outstanding work, without the view timeout or
    /// the listening period: the host restarts a process as a whole, so the proposer of that
    /// view restarted too (in `tara cluster` every process restarts), and a restarted proposer
    /// never leads a view it led before; waiting a timeout for it would only delay the
    /// service. It happens once per restart, and only while no higher view was adopted.
    ///
    /// Safety (Section III-E) is untouched: when a view change starts affects liveness only.
    /// A view is adopted only when f+1 distinct controllers announce it, so a lone restarted
    /// controller cannot change the view by itself (the others still need their timeout), and
    /// the new proposer takes over from the records of f+1 committers, as after any view change.
    fn restarted_suspects(&mut self) -> bool {
        let outstanding =
            self.outstanding_since.iter().chain(std::iter::once(&self.unfilled_since)).any(Option::is_some);
        let suspects = self.restarted && outstanding && self.announced <= self.view();
        if suspects || self.view() > self.announced {
            self.restarted = false;
        }
        suspects
    }

    /// View changes this controller started.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// A source's progress report. A report from a new incarnation of a source may be lower;
    /// the latest report counts.
    pub fn on_target(&mut self, target: Target, now_us: u64) {
        let Some(source) = self.partition.own(target.source, self.sources) else { return };
        if let Some(slot) = self.targets.get_mut(source as usize) {
            *slot = Some((target.number, now_us));
        }
    }

    /// An executor's progress report; only this partition's sources count.
    pub fn on_actual(&mut self, actual: Actual, now_us: u64) {
        let Some(known) = self.actual.get_mut(actual.executor as usize) else { return };
        let first = self.partition.index as usize * self.sources;
        let ours = actual.agreed.iter().skip(first).take(self.sources);
        let mut progressed = false;
        for (known, reported) in known.iter_mut().zip(ours) {
            if reported > known {
                *known = *reported;
                progressed = true;
            }
        }
        let partition = self.partition.index as usize;
        let executor = actual.executor as usize;
        if let Some(&frontier) = actual.frontier.get(partition) {
            progressed |= frontier > self.frontier[executor];
            self.frontier[executor] = self.frontier[executor].max(frontier);
        }
        self.wanted[executor] = actual.wanted.get(partition).copied().unwrap_or(0);
        if progressed {
            self.progress_us[executor] = now_us;
        }
    }

    /// A controller's view announcement (its own included).
    pub fn on_view(&mut self, view: View, now_us: u64) {
        let Some(controller) = self.partition.own(view.controller, self.controllers) else { return };
        if self.views.report(controller, view.view).is_some() {
            self.view_since_us = now_us;
        }
    }

    fn announce(&mut self, now_us: u64, out: &mut Outbox) {
        self.repeat.sent(now_us, Some(self.announced.max(self.view())));
        out.views.push(View { controller: self.id, view: self.announced.max(self.view()) });
    }

    /// A source has outstanding work while fewer than f+1 executors executed up to its target;
    /// a source that stopped reporting (crashed) has none.
    fn track_outstanding(&mut self, now_us: u64) {
        let mut executed: Vec<u64> = Vec::with_capacity(self.actual.len());
        for (source, target) in self.targets.iter().enumerate() {
            let fresh =
                target.filter(|(number, heard)| *number > 0 && now_us.saturating_sub(*heard) <= 3 * self.report_us);
            let outstanding = fresh.is_some_and(|(number, _)| {
                executed.clear();
                executed.extend(self.actual.iter().map(|a| a[source]));
                executed.sort_unstable_by(|a, b| b.cmp(a));
                executed[self.quorum - 1] < number
            });
            let since = &mut self.outstanding_since[source];
            *since = if outstanding { Some(since.unwrap_or(now_us)) } else { None };
        }
        // Section IV: the merge waits for this partition (at f+1 executors) and nobody fills.
        let waiting = self.wanted.iter().zip(&self.frontier).filter(|(wanted, frontier)| wanted > frontier).count();
        self.unfilled_since = if waiting >= self.quorum { Some(self.unfilled_since.unwrap_or(now_us)) } else { None };
    }
}

impl Replica for Controller {
    fn stage(&self) -> Stage {
        Stage::Controller
    }

    fn id(&self) -> u32 {
        self.id
    }

    fn on_tuple(&mut self, tuple: Tuple, now_us: u64, _out: &mut Outbox) -> bool {
        match tuple {
            Tuple::Target(target) => self.on_target(target, now_us),
            Tuple::Actual(actual) => self.on_actual(actual, now_us),
            Tuple::View(view) => self.on_view(view, now_us),
            _ => return false,
        }
        true
    }

    /// Time passed: start a view change if progress stalled with work outstanding; repeat the
    /// current announcement periodically. A higher known view is written to [`Outbox::value`].
    fn on_tick(&mut self, now_us: u64, out: &mut Outbox) {
        self.track_outstanding(now_us);
        let timeout = self.view_timeout_us;
        let started = *self.started_us.get_or_insert(now_us);
        let stalled_source = self
            .outstanding_since
            .iter()
            .chain(std::iter::once(&self.unfilled_since))
            .flatten()
            .any(|since| now_us.saturating_sub(*since) >= timeout);
        let quiet = self.progress_us.iter().filter(|p| now_us.saturating_sub(**p) >= timeout).count();
        let settled = now_us.saturating_sub(self.view_since_us.max(started)) >= timeout;
        let timed_out = stalled_source && quiet >= self.quorum && settled && self.announced <= self.view();
        if timed_out || self.restarted_suspects() {
            self.announced = self.view() + 1;
            self.changes += 1;
            self.announce(now_us, out);
        } else if self.resumed || self.repeat.due(now_us, Some(self.announced.max(self.view()))) {
            self.resumed = false;
            self.announce(now_us, out);
        }
        if self.known_view() > self.written {
            self.written = self.known_view();
            out.value = Some(self.written);
        }
    }

    fn resume(&mut self, recovered: Recovered) -> Result<(), String> {
        match recovered {
            Recovered::Value(Some(view)) => Controller::resume(self, view),
            // A restart before any view change: view 0 was never written.
            Recovered::Value(None) => Controller::resume(self, 0),
            Recovered::Fresh => {}
            other => return Err(format!("a controller resumes from its view, not {other:?}")),
        }
        Ok(())
    }

    /// A view timeout from the oldest outstanding work (a time already past, while the other
    /// conditions of a view change are pending: every epoch); the next announcement.
    fn deadline_us(&self) -> Option<u64> {
        if self.resumed || self.started_us.is_none() {
            return Some(0);
        }
        let since = self.outstanding_since.iter().chain(std::iter::once(&self.unfilled_since)).flatten().min();
        let stall = since.map(|since| since + self.view_timeout_us);
        [stall, Some(self.repeat.next_us())].into_iter().flatten().min()
    }

    fn counters(&self) -> Counters {
        Counters { view: self.view(), count: self.changes, ..Counters::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params { view_timeout_us: 1_000, ..Params::default() }
    }

    fn actual(executor: u32, agreed: u64) -> Actual {
        Actual { executor, agreed: vec![agreed, 0], frontier: vec![0], wanted: vec![0] }
    }

    /// Section III-E: outstanding work and f+1 executors without progress for the timeout
    /// start the next view.
    #[test]
    fn a_stall_with_outstanding_work_changes_the_view() {
        let mut x = Controller::new(0, &params());
        let mut out = Outbox::default();
        for now in [0, 200, 400, 600, 800, 1_000, 1_200] {
            x.on_target(Target { source: 0, number: 5 }, now);
            for e in 0..3 {
                x.on_actual(actual(e, 3), now);
            }
            x.on_tick(now, &mut out);
        }
        assert_eq!(out.views.iter().filter(|v| v.view == 1).count(), 1, "{:?}", out.views);
        assert_eq!(x.changes(), 1);
    }

    /// Section III-E: no view change without outstanding work, however long executors idle.
    #[test]
    fn an_idle_system_keeps_its_view() {
        let mut x = Controller::new(0, &params());
        let mut out = Outbox::default();
        for now in (0..10_000).step_by(100) {
            x.on_target(Target { source: 0, number: 5 }, now);
            x.on_actual(actual(0, 5), now);
            x.on_actual(actual(1, 5), now);
            x.on_tick(now, &mut out);
        }
        assert!(out.views.iter().all(|v| v.view == 0), "{:?}", out.views);
    }

    /// Progress on f+1 executors prevents a view change even with work outstanding.
    #[test]
    fn progress_prevents_a_view_change() {
        let mut x = Controller::new(0, &params());
        let mut out = Outbox::default();
        for (i, now) in (0..10_000).step_by(100).enumerate() {
            x.on_target(Target { source: 0, number: 1_000 }, now);
            x.on_actual(actual(0, i as u64 + 1), now);
            x.on_actual(actual(1, i as u64 + 1), now);
            x.on_tick(now, &mut out);
        }
        assert_eq!(x.changes(), 0);
    }

    /// A crashed source stops reporting: its stale target does not keep changing views.
    #[test]
    fn a_silent_source_has_no_outstanding_work() {
        let mut x = Controller::new(0, &params());
        let mut out = Outbox::default();
        x.on_target(Target { source: 0, number: 9 }, 0);
        for now in (0..10_000).step_by(100) {
            x.on_tick(now, &mut out);
        }
        assert_eq!(x.changes(), 0);
    }

    /// A restarted controller listens first: it does not start a view change before it had a
    /// view timeout to learn the current view from the others.
    #[test]
    fn a_fresh_controller_listens_before_acting() {
        let mut x = Controller::new(0, &params());
        let mut out = Outbox::default();
        for now in (50_000..50_900).step_by(100) {
            x.on_target(Target { source: 0, number: 5 }, now);
            x.on_tick(now, &mut out);
        }
        assert_eq!(x.changes(), 0, "stalled for long in absolute time, but it just started");
        for now in (50_900..51_200).step_by(100) {
            x.on_target(Target { source: 0, number: 5 }, now);
            x.on_tick(now, &mut out);
        }
        assert_eq!(x.changes(), 1);
    }

    /// A whole-cluster restart: controllers that resume from their durable view announce it at
    /// once (so replicas adopt it without climbing view by view), and the next view change is
    /// one above it.
    #[test]
    fn a_resumed_controller_announces_its_durable_view() {
        let mut x = Controller::new(0, &params());
        x.resume(7);
        let mut out = Outbox::default();
        x.on_tick(0, &mut out);
        assert_eq!(out.views, vec![View { controller: 0, view: 7 }]);
        for now in (100..2_000).step_by(100) {
            x.on_target(Target { source: 0, number: 5 }, now);
            // Its own announcement comes back through the view loop; one peer agrees.
            x.on_view(View { controller: 0, view: 7 }, now);
            x.on_view(View { controller: 1, view: 7 }, now);
            x.on_tick(now, &mut out);
        }
        assert_eq!(x.view(), 7);
        assert_eq!(out.views.last().map(|v| v.view), Some(8), "{:?}", out.views);
        assert_eq!(x.known_view(), 8);
    }

    /// The restart fast path: a controller restarted from durable state suspects its view as
    /// soon as work is outstanding and the view is adopted, long before a view timeout, and
    /// only once.
    #[test]
    fn a_restarted_controller_suspects_its_view_at_once() {
        let params = Params { view_timeout_us: 1_000_000, ..Params::default() };
        let mut x = Controller::new(0, &params);
        x.resume(4);
        let mut out = Outbox::default();
        x.on_tick(0, &mut out);
        assert_eq!(x.changes(), 0, "no outstanding work yet, and view 4 not adopted");
        for now in (100..1_000).step_by(100) {
            x.on_target(Target { source: 0, number: 5 }, now);
            x.on_view(View { controller: 1, view: 4 }, now);
            x.on_view(View { controller: 2, view: 4 }, now);
            x.on_tick(now, &mut out);
        }
        assert_eq!(x.changes(), 1, "suspected within 1 ms of a 1 s view timeout");
        assert_eq!(out.views.last().map(|v| v.view), Some(5), "{:?}", out.views);
        // The others agree: view 5 is adopted; the fast path does not fire again.
        for now in (1_000..10_000).step_by(100) {
            x.on_target(Target { source: 0, number: 5 }, now);
            x.on_view(View { controller: 1, view: 5 }, now);
            x.on_view(View { controller: 2, view: 5 }, now);
            x.on_tick(now, &mut out);
        }
        assert_eq!((x.view(), x.changes()), (5, 1));
    }

    /// A restart before any view change (view 0 was never written) takes the fast path too; a
    /// first start does not.
    #[test]
    fn a_restart_in_view_0_suspects_at_once_but_a_first_start_listens() {
        let params = Params { view_timeout_us: 1_000_000, ..Params::default() };
        for (recovered, changes) in [(Recovered::Value(None), 1), (Recovered::Fresh, 0)] {
            let mut x = Controller::new(0, &params);
            Replica::resume(&mut x, recovered).expect("a controller's recovery");
            let mut out = Outbox::default();
            for now in (0..1_000).step_by(100) {
                x.on_target(Target { source: 0, number: 5 }, now);
                x.on_view(View { controller: 1, view: 0 }, now);
                x.on_tick(now, &mut out);
            }
            assert_eq!(x.changes(), changes);
        }
    }

    /// A lone restarted controller whose durable view is behind the others' does not suspect
    /// the newer view at once: it adopts it and waits for the timeout like everyone.
    #[test]
    fn a_restarted_controller_behind_the_others_waits() {
        let params = Params { view_timeout_us: 1_000_000, ..Params::default() };
        let mut x = Controller::new(0, &params);
        x.resume(2);
        let mut out = Outbox::default();
        for now in (0..1_000).step_by(100) {
            x.on_view(View { controller: 1, view: 6 }, now);
            x.on_view(View { controller: 2, view: 6 }, now);
            x.on_tick(now, &mut out);
            x.on_target(Target { source: 0, number: 5 }, now);
        }
        assert_eq!((x.view(), x.changes()), (6, 0));
    }

    /// If the new view does not make progress either, the controllers move on; a controller
    /// does not run ahead of the adopted view by more than one.
    #[test]
    fn moves_on_when_the_new_view_fails_too() {
        let mut x = Controller::new(0, &params());
        let mut out = Outbox::default();
        for now in (0..5_000).step_by(100) {
            x.on_target(Target { source: 0, number: 5 }, now);
            x.on_tick(now, &mut out);
            if let Some(v) = out.views.last().copied() {
                // Another controller agrees, so the view is adopted.
                x.on_view(v, now);
                x.on_view(View { controller: 1, view: v.view }, now);
            }
        }
        assert!(x.view() >= 3, "view {}", x.view());
        assert_eq!(x.changes(), x.view());
    }
}
