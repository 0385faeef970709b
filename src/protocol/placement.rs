//! Which timely worker hosts which replica of which stage: plain data, decided before the
//! dataflow is built (the stage host and the cluster read it; nothing here knows timely).
//!
//! Replicas of one stage must sit on distinct workers, and on distinct processes whenever the
//! cluster has enough (Section III-A: "replicas belonging to the same stage are placed on separate
//! servers"); replicas of different stages may share a worker. A cluster of one process is one
//! failure domain whatever its threads, so there replicas of a stage may also share a worker when
//! there are fewer workers than replicas: an embedded cluster on a small machine runs every
//! replica on one worker and pays no hand-off between threads.

use serde::{Deserialize, Serialize};

use super::params::Params;
pub use super::topology::Stage;

/// Where the default spread starts a stage, so that heavy stages start on different workers:
/// the active proposer, committer 0 and executor 0 do not all share worker 0 with a source.
fn offset(stage: Stage) -> usize {
    if stage == Stage::Source { 1 } else { 0 }
}

/// A placement that cannot work, with what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementError(pub String);

impl std::fmt::Display for PlacementError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PlacementError {}

/// The worker of every replica of every stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    processes: usize,
    threads: usize,
    workers: [Vec<u32>; 6],
}

impl Placement {
    /// Spreads every stage over `processes` processes of `threads` workers each: replica i of a
    /// stage goes to process `(offset + i) mod processes`, so replicas of a stage land on
    /// distinct processes when there are enough, otherwise on distinct workers.
    pub fn spread(params: &Params, processes: usize, threads: usize) -> Result<Placement, PlacementError> {
        Self::new(params, processes, threads, &[])
    }

    /// Spreads every stage as [`Placement::spread`] does, except the stages listed in `explicit`,
    /// whose replicas go to the listed workers (co-location allowed: the operator asked for it).
    pub fn new(
        params: &Params,
        processes: usize,
        threads: usize,
        explicit: &[(Stage, Vec<u32>)],
    ) -> Result<Placement, PlacementError> {
        if processes == 0 || threads == 0 {
            return Err(PlacementError(
                "`workers`: a cluster needs at least one process with one worker thread".into(),
            ));
        }
        let total = processes * threads;
        let mut placement = Placement { processes, threads, workers: Default::default() };
        for stage in Stage::ALL {
            let replicas = stage.replicas(params);
            placement.workers[stage.index()] =
                (0..replicas).map(|i| Self::spread_one(stage, i, processes, threads) as u32).collect();
        }
        for (stage, workers) in explicit {
            placement = placement.with_stage(params, *stage, workers.clone())?;
        }
        for stage in Stage::ALL {
            // Distinct workers within one partition: partitions may share workers.
            let replicas = stage.per_partition(params);
            if replicas > total && processes > 1 && !explicit.iter().any(|(s, _)| *s == stage) {
                return Err(PlacementError(format!(
                    "`workers`: {} need {replicas} distinct workers (f = {}), but the cluster has {total}; \
                     set workers = {replicas} or more, or co-locate replicas explicitly with [placement] {} = [...]",
                    stage.name(),
                    params.f,
                    stage.name()
                )));
            }
        }
        Ok(placement)
    }

    fn spread_one(stage: Stage, replica: usize, processes: usize, threads: usize) -> usize {
        let slot = offset(stage) + replica;
        if processes > 1 {
            let process = slot % processes;
            let thread = (slot / processes + stage.index()) % threads;
            process * threads + thread
        } else {
            slot % threads
        }
    }

    /// Replaces the workers of `stage` with an explicit list (co-location allowed).
    pub fn with_stage(mut self, params: &Params, stage: Stage, workers: Vec<u32>) -> Result<Placement, PlacementError> {
        let replicas = stage.replicas(params);
        if workers.len() != replicas {
            return Err(PlacementError(format!(
                "[placement] {}: lists {} workers but the stage has {replicas} replicas (f = {}); list exactly {replicas}",
                stage.name(),
                workers.len(),
                params.f
            )));
        }
        let total = self.workers();
        if let Some(bad) = workers.iter().find(|w| **w as usize >= total) {
            return Err(PlacementError(format!(
                "[placement] {}: worker {bad} does not exist; workers are numbered 0 to {}",
                stage.name(),
                total - 1
            )));
        }
        self.workers[stage.index()] = workers;
        Ok(self)
    }

    /// Total worker count.
    pub fn workers(&self) -> usize {
        self.processes * self.threads
    }

    /// Worker threads per process.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Processes.
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// The worker hosting `replica` of `stage`. Replica indices come from tuples, so an index
    /// out of range maps to worker 0, whose operator ignores replicas it does not host.
    pub fn worker_of(&self, stage: Stage, replica: u32) -> u32 {
        self.workers[stage.index()].get(replica as usize).copied().unwrap_or(0)
    }

    /// The replicas of `stage` that `worker` hosts.
    pub fn replicas_on(&self, stage: Stage, worker: usize) -> Vec<u32> {
        let on = self.workers[stage.index()].iter().enumerate();
        on.filter(|(_, w)| **w as usize == worker).map(|(r, _)| r as u32).collect()
    }

    /// Every worker that hosts a replica of any of `stages`, sorted, without repeats.
    pub fn workers_hosting(&self, stages: &[Stage]) -> Vec<u32> {
        let mut workers: Vec<u32> = stages.iter().flat_map(|s| self.workers[s.index()].iter().copied()).collect();
        workers.sort_unstable();
        workers.dedup();
        workers
    }

    /// Checks that a job of `peers` workers has every worker this placement puts a replica on.
    /// A replica on a worker the job lacks would never run: timely routes its tuples modulo the
    /// number of workers, to a worker that hosts no such replica, and nothing would execute.
    ///
    /// ```
    /// use tara::dataflow::Placement;
    /// use tara::protocol::Params;
    ///
    /// let placement = Placement::spread(&Params::default(), 1, 3).unwrap();
    /// assert!(placement.fits(3).is_ok());
    /// assert!(placement.fits(2).unwrap_err().0.contains("worker 2"));
    /// ```
    pub fn fits(&self, peers: usize) -> Result<(), PlacementError> {
        match self.workers_hosting(&Stage::ALL).last() {
            Some(&last) if last as usize >= peers => Err(PlacementError(format!(
                "the placement puts replicas on worker {last}, but the job has {peers} worker{}: build the \
                 placement for the job's workers",
                if peers == 1 { "" } else { "s" }
            ))),
            _ => Ok(()),
        }
    }

    /// The workers of `stage`, by replica index.
    pub fn stage(&self, stage: Stage) -> &[u32] {
        &self.workers[stage.index()]
    }

    /// The process of a worker.
    pub fn process_of(&self, worker: u32) -> usize {
        worker as usize / self.threads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn distinct(xs: &[u32]) -> bool {
        let mut v = xs.to_vec();
        v.sort_unstable();
        v.dedup();
        v.len() == xs.len()
    }

    #[test]
    fn replicas_of_a_stage_sit_on_distinct_workers() {
        let params = Params::default();
        let p = Placement::spread(&params, 1, 3).unwrap();
        for stage in Stage::ALL {
            assert!(distinct(p.stage(stage)), "{stage:?}: {:?}", p.stage(stage));
        }
        assert_eq!(p.replicas_on(Stage::Executor, 2), vec![2]);
    }

    /// One process is one failure domain: with fewer workers than replicas, they share workers;
    /// several processes still need enough workers to keep a stage's replicas apart.
    #[test]
    fn one_process_may_put_a_stage_on_fewer_workers() {
        let params = Params::default();
        let p = Placement::spread(&params, 1, 1).unwrap();
        assert_eq!(p.stage(Stage::Executor), &[0, 0, 0]);
        let p = Placement::spread(&params, 1, 2).unwrap();
        assert_eq!(p.replicas_on(Stage::Executor, 0).len() + p.replicas_on(Stage::Executor, 1).len(), 3);
        assert!(Placement::spread(&params, 2, 1).is_err(), "two processes of one worker cannot keep 3 apart");
    }

    #[test]
    fn replicas_of_a_stage_sit_on_distinct_processes_when_there_are_enough() {
        let params = Params::default();
        let p = Placement::spread(&params, 3, 2).unwrap();
        for stage in Stage::ALL {
            let processes: Vec<u32> = p.stage(stage).iter().map(|w| p.process_of(*w) as u32).collect();
            assert!(distinct(&processes), "{stage:?}: {processes:?}");
        }
    }

    /// Section IV: replicas of one partition's stage sit on distinct workers (partitions share
    /// workers), and the partitions' proposers spread over the workers.
    #[test]
    fn each_partition_is_spread_on_its_own() {
        let params = Params { partitions: 4, ..Params::default() };
        let p = Placement::spread(&params, 1, 3).unwrap();
        for stage in Stage::ALL {
            let workers = p.stage(stage);
            assert_eq!(workers.len(), stage.replicas(&params));
            for partition in workers.chunks(stage.per_partition(&params)) {
                assert!(distinct(partition), "{stage:?}: {workers:?}");
            }
        }
        let leaders: Vec<u32> = p.stage(Stage::Proposer).chunks(2).map(|c| c[0]).collect();
        assert!(leaders.iter().collect::<std::collections::BTreeSet<_>>().len() >= 2, "{leaders:?}");
    }

    #[test]
    fn too_few_workers_is_an_error_that_names_the_fix() {
        let err = Placement::spread(&Params::default(), 2, 1).unwrap_err();
        assert!(err.0.contains("need 3 distinct workers"), "{err}");
        assert!(err.0.contains("[placement]"), "{err}");
    }

    #[test]
    fn explicit_co_location() {
        let params = Params::default();
        let p = Placement::spread(&params, 1, 3).unwrap();
        let p = p.with_stage(&params, Stage::Executor, vec![0, 0, 1]).unwrap();
        assert_eq!(p.replicas_on(Stage::Executor, 0), vec![0, 1]);
        assert!(p.clone().with_stage(&params, Stage::Executor, vec![0, 1]).is_err());
        assert!(p.with_stage(&params, Stage::Executor, vec![0, 1, 7]).is_err());
        let all: Vec<(Stage, Vec<u32>)> = Stage::ALL.iter().map(|s| (*s, vec![0; s.replicas(&params)])).collect();
        let single = Placement::new(&params, 1, 1, &all).unwrap();
        assert_eq!(single.replicas_on(Stage::Committer, 0), vec![0, 1, 2]);
    }
}
