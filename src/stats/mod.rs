//! The stats collector: one pass per period reads every container's and pod's cgroup,
//! writable layer and network counters (off the executor), keeps the previous sample to
//! turn cumulative CPU time into a rate, and serves the stats RPCs from that cache.
//!
//! A request only reads files for a container or pod the cache has never seen (just
//! created) or whose sample is more than a second old; everything else is answered from
//! memory. (crictl stats samples twice a second apart and needs two different readings; a
//! kubelet polling every 10 s gets fresh figures at the cost of one read per poll, and the
//! periodic pass keeps rates and metrics going between polls.) A container whose cgroup vanished
//! keeps its last sample, so one gone container never fails a whole list.
//!
//! Owns the sample cache and the cAdvisor-compatible CRI metrics (`cadvisor`); berth's own
//! Prometheus metrics are `crate::metrics`, the CRI messages `crate::cri::stats`. May call
//! `container` and `sandbox` (records, usage readings), `linux` and `metrics` (its timer).

pub mod cadvisor;
pub mod pod;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::container::manager::{ContainerFilter, ContainerManager, ContainerRecord};
use crate::container::usage::{Usage, disk_usage, read_usage};
use crate::linux::cgroup::Cgroups;
use crate::linux::process::now_unix_nanos;
use crate::sandbox::{SandboxFilter, SandboxManager, SandboxRecord, SandboxState};
use crate::store::lock;
pub use pod::InterfaceStats;

/// One container's figures at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSample {
    /// Unix nanoseconds of the read.
    pub timestamp: i64,
    pub usage: Usage,
    /// CPU use over the last period, in billionths of a core.
    pub nano_cores: Option<u64>,
    pub writable_bytes: Option<u64>,
    pub writable_inodes: Option<u64>,
}

/// One pod's own figures (its containers' are kept apart) at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSample {
    pub timestamp: i64,
    pub usage: Usage,
    pub nano_cores: Option<u64>,
    /// None for host-network pods (their traffic is the node's) and pods not running.
    pub network: Option<Vec<InterfaceStats>>,
    pub processes: Option<u64>,
}

/// A cached sample younger than this is served as is.
const FRESH_FOR_NANOS: i64 = 1_000_000_000;

fn is_fresh(timestamp: i64) -> bool {
    now_unix_nanos().saturating_sub(timestamp) < FRESH_FOR_NANOS
}

/// CPU rate between two cumulative readings: Δcpu_ns / Δt_s, in nano-cores. None when it
/// cannot be told (no time passed, or the counter went back: a new cgroup of the same name).
pub fn nano_cores(prev: (i64, u64), now: (i64, u64)) -> Option<u64> {
    let (prev_ts, prev_cpu) = prev;
    let (ts, cpu) = now;
    let elapsed_ns = u128::try_from(ts.checked_sub(prev_ts)?).ok()?;
    if elapsed_ns == 0 || cpu < prev_cpu {
        return None;
    }
    let rate = u128::from(cpu - prev_cpu) * 1_000_000_000 / elapsed_ns;
    u64::try_from(rate).ok()
}

/// The sample to keep after a fresh read: the read with its rate, or (when the cgroup is
/// gone and nothing could be read) the previous sample unchanged.
fn merge(prev: Option<&ContainerSample>, mut read: ContainerSample) -> ContainerSample {
    if read.usage.is_empty() {
        if let Some(prev) = prev {
            return prev.clone();
        }
        return read;
    }
    read.nano_cores = rate_from(
        prev.map(|p| (p.timestamp, p.usage.cpu_usage_ns)),
        read.timestamp,
        read.usage.cpu_usage_ns,
    )
    .or(prev.and_then(|p| p.nano_cores));
    read
}

fn merge_pod(prev: Option<&PodSample>, mut read: PodSample) -> PodSample {
    if read.usage.is_empty()
        && let Some(prev) = prev
    {
        // Keep the last cgroup figures, but the network and process reads are current.
        read.usage = prev.usage.clone();
        read.nano_cores = prev.nano_cores;
        return read;
    }
    read.nano_cores = rate_from(
        prev.map(|p| (p.timestamp, p.usage.cpu_usage_ns)),
        read.timestamp,
        read.usage.cpu_usage_ns,
    )
    .or(prev.and_then(|p| p.nano_cores));
    read
}

fn rate_from(prev: Option<(i64, Option<u64>)>, ts: i64, cpu: Option<u64>) -> Option<u64> {
    let (prev_ts, prev_cpu) = prev?;
    nano_cores((prev_ts, prev_cpu?), (ts, cpu?))
}

/// What one container read needs, taken from its record.
struct ContainerTarget {
    id: String,
    cgroup: String,
    writable: PathBuf,
}

struct PodTarget {
    id: String,
    cgroup: String,
    /// The pause process, whose netns is the pod's; None for host network or not running.
    netns_pid: Option<u32>,
}

/// What a request reads and caches: a container or a pod.
trait Target: Send + 'static {
    type Sample: Clone + Send + 'static;
    fn id(&self) -> &str;
    fn read(&self, cgroups: &Cgroups) -> Self::Sample;
    fn merge(prev: Option<&Self::Sample>, read: Self::Sample) -> Self::Sample;
    fn timestamp(sample: &Self::Sample) -> i64;
    fn samples(cache: &mut Cache) -> &mut HashMap<String, Self::Sample>;
}

impl Target for ContainerTarget {
    type Sample = ContainerSample;
    fn id(&self) -> &str {
        &self.id
    }
    fn read(&self, cgroups: &Cgroups) -> ContainerSample {
        read_container(cgroups, self)
    }
    fn merge(prev: Option<&ContainerSample>, read: ContainerSample) -> ContainerSample {
        merge(prev, read)
    }
    fn timestamp(sample: &ContainerSample) -> i64 {
        sample.timestamp
    }
    fn samples(cache: &mut Cache) -> &mut HashMap<String, ContainerSample> {
        &mut cache.containers
    }
}

impl Target for PodTarget {
    type Sample = PodSample;
    fn id(&self) -> &str {
        &self.id
    }
    fn read(&self, cgroups: &Cgroups) -> PodSample {
        read_pod(cgroups, self)
    }
    fn merge(prev: Option<&PodSample>, read: PodSample) -> PodSample {
        merge_pod(prev, read)
    }
    fn timestamp(sample: &PodSample) -> i64 {
        sample.timestamp
    }
    fn samples(cache: &mut Cache) -> &mut HashMap<String, PodSample> {
        &mut cache.pods
    }
}

fn read_container(cgroups: &Cgroups, target: &ContainerTarget) -> ContainerSample {
    let usage = read_usage(cgroups, &target.cgroup);
    let (bytes, inodes) = disk_usage(&target.writable);
    ContainerSample {
        timestamp: now_unix_nanos(),
        usage,
        nano_cores: None,
        writable_bytes: Some(bytes),
        writable_inodes: Some(inodes),
    }
}

fn read_pod(cgroups: &Cgroups, target: &PodTarget) -> PodSample {
    let usage = read_usage(cgroups, &target.cgroup);
    let processes = usage
        .pids
        .or_else(|| pod::count_processes(cgroups, &target.cgroup));
    PodSample {
        timestamp: now_unix_nanos(),
        usage,
        nano_cores: None,
        network: target.netns_pid.map(pod::read_net_dev),
        processes,
    }
}

#[derive(Default)]
struct Cache {
    containers: HashMap<String, ContainerSample>,
    pods: HashMap<String, PodSample>,
}

pub struct Collector {
    containers: Arc<ContainerManager>,
    sandboxes: Arc<SandboxManager>,
    period: Duration,
    cache: Mutex<Cache>,
}

impl Collector {
    pub fn new(
        containers: Arc<ContainerManager>,
        sandboxes: Arc<SandboxManager>,
        period: Duration,
    ) -> Arc<Collector> {
        Arc::new(Collector {
            containers,
            sandboxes,
            period,
            cache: Mutex::new(Cache::default()),
        })
    }

    /// Collects now and then once per period, for as long as the daemon runs.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(this.period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let started = std::time::Instant::now();
                this.collect().await;
                crate::metrics::METRICS
                    .stats_collection_duration
                    .observe(started.elapsed().as_secs_f64());
                tracing::debug!(
                    elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                    "stats collected"
                );
            }
        })
    }

    fn container_target(&self, record: &ContainerRecord) -> ContainerTarget {
        ContainerTarget {
            id: record.id.clone(),
            cgroup: record.cgroup_path.clone(),
            writable: self.containers.writable_dir(&record.id),
        }
    }

    fn pod_target(record: &SandboxRecord, state: SandboxState) -> PodTarget {
        PodTarget {
            id: record.id.clone(),
            cgroup: record.pod_cgroup.clone(),
            netns_pid: record
                .pause_pid
                .filter(|_| record.netns.is_some() && state == SandboxState::Ready),
        }
    }

    /// One pass over every container and pod; samples of what is gone are forgotten.
    pub async fn collect(&self) {
        let containers: Vec<ContainerTarget> = self
            .containers
            .list(&ContainerFilter::default())
            .iter()
            .map(|r| self.container_target(r))
            .collect();
        let pods: Vec<PodTarget> = self
            .sandboxes
            .list(&SandboxFilter::default())
            .iter()
            .map(|(r, s)| Self::pod_target(r, *s))
            .collect();
        let cgroups = self.sandboxes.cgroups().clone();
        let read = tokio::task::spawn_blocking(move || {
            let containers: Vec<(String, ContainerSample)> = containers
                .iter()
                .map(|t| (t.id.clone(), read_container(&cgroups, t)))
                .collect();
            let pods: Vec<(String, PodSample)> = pods
                .iter()
                .map(|t| (t.id.clone(), read_pod(&cgroups, t)))
                .collect();
            (containers, pods)
        })
        .await;
        let Ok((containers, pods)) = read else {
            tracing::warn!("the stats collection task failed");
            return;
        };
        let mut cache = lock(&self.cache);
        let containers = containers
            .into_iter()
            .map(|(id, s)| {
                let merged = merge(cache.containers.get(&id), s);
                (id, merged)
            })
            .collect();
        let pods = pods
            .into_iter()
            .map(|(id, s)| {
                let merged = merge_pod(cache.pods.get(&id), s);
                (id, merged)
            })
            .collect();
        *cache = Cache { containers, pods };
    }

    /// The cached sample of each record; records the cache has not seen, or saw more than
    /// a second ago, are read now.
    pub async fn containers(
        &self,
        records: Vec<ContainerRecord>,
    ) -> Vec<(ContainerRecord, ContainerSample)> {
        let wanted = records
            .into_iter()
            .map(|record| {
                let target = self.container_target(&record);
                (record, target)
            })
            .collect();
        let mut found = self.samples(wanted).await;
        found.sort_by_key(|(r, _)| r.created_at);
        found
    }

    /// Like `containers`, for pods.
    pub async fn pods(
        &self,
        sandboxes: Vec<(SandboxRecord, SandboxState)>,
    ) -> Vec<(SandboxRecord, PodSample)> {
        let wanted = sandboxes
            .into_iter()
            .map(|(record, state)| {
                let target = Self::pod_target(&record, state);
                (record, target)
            })
            .collect();
        let mut found = self.samples(wanted).await;
        found.sort_by_key(|(r, _)| r.created_at);
        found
    }

    /// The fresh cached sample of each target, or a new read merged into the cache.
    async fn samples<R, T: Target>(&self, wanted: Vec<(R, T)>) -> Vec<(R, T::Sample)> {
        let mut found = Vec::with_capacity(wanted.len());
        let mut missing = Vec::new();
        {
            let mut cache = lock(&self.cache);
            let samples = T::samples(&mut cache);
            for (record, target) in wanted {
                match samples.get(target.id()) {
                    Some(sample) if is_fresh(T::timestamp(sample)) => {
                        found.push((record, sample.clone()))
                    }
                    _ => missing.push((record, target)),
                }
            }
        }
        if missing.is_empty() {
            return found;
        }
        let cgroups = self.sandboxes.cgroups().clone();
        let (records, targets): (Vec<R>, Vec<T>) = missing.into_iter().unzip();
        let read = tokio::task::spawn_blocking(move || {
            targets
                .into_iter()
                .map(|t| {
                    let sample = t.read(&cgroups);
                    (t, sample)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut cache = lock(&self.cache);
        let samples = T::samples(&mut cache);
        for (record, (target, read)) in records.into_iter().zip(read) {
            let sample = T::merge(samples.get(target.id()), read);
            samples.insert(target.id().to_string(), sample.clone());
            found.push((record, sample));
        }
        found
    }

    /// Where writable layers live, as the CRI `fs_id` names it.
    pub fn writable_mountpoint(&self) -> PathBuf {
        self.containers
            .writable_dir("")
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ts: i64, cpu: Option<u64>) -> ContainerSample {
        ContainerSample {
            timestamp: ts,
            usage: Usage {
                cpu_usage_ns: cpu,
                memory_usage_bytes: cpu.map(|_| 4096),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn nano_cores_is_cpu_time_over_wall_time() {
        // Half a core for two seconds.
        assert_eq!(
            nano_cores((1_000_000_000, 0), (3_000_000_000, 1_000_000_000)),
            Some(500_000_000)
        );
        // Two full cores.
        assert_eq!(
            nano_cores((0, 5), (100_000_000, 200_000_005)),
            Some(2_000_000_000)
        );
        assert_eq!(nano_cores((5, 10), (5, 20)), None, "no time passed");
        assert_eq!(nano_cores((5, 10), (4, 20)), None, "clock went back");
        assert_eq!(nano_cores((0, 10), (10, 5)), None, "counter reset");
    }

    #[test]
    fn the_first_sample_has_no_rate_the_second_has() {
        let first = merge(None, sample(1_000_000_000, Some(100)));
        assert_eq!(first.nano_cores, None);
        let second = merge(Some(&first), sample(2_000_000_000, Some(250_000_100)));
        assert_eq!(second.nano_cores, Some(250_000_000));
        assert_eq!(second.timestamp, 2_000_000_000);
    }

    #[test]
    fn a_vanished_cgroup_keeps_the_last_sample() {
        let first = merge(None, sample(1, Some(100)));
        let second = merge(Some(&first), sample(2, None));
        assert_eq!(second, first);
        let never_seen = merge(None, sample(3, None));
        assert_eq!(never_seen.usage, Usage::default());
        assert_eq!(never_seen.timestamp, 3);
    }

    #[test]
    fn a_pod_with_a_vanished_cgroup_keeps_cpu_but_reads_processes_afresh() {
        let mut first = PodSample {
            timestamp: 1,
            usage: sample(1, Some(7)).usage,
            processes: Some(3),
            ..Default::default()
        };
        first = merge_pod(None, first);
        let later = PodSample {
            timestamp: 2,
            processes: Some(0),
            ..Default::default()
        };
        let merged = merge_pod(Some(&first), later);
        assert_eq!(merged.usage.cpu_usage_ns, Some(7));
        assert_eq!(merged.processes, Some(0));
        assert_eq!(merged.timestamp, 2);
    }
}
