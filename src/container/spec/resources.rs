//! CRI resources → the OCI `linux.resources` (CPU, memory, hugepages, unified).

use std::collections::HashMap;

use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxHugepageLimitBuilder, LinuxMemoryBuilder, LinuxResources,
    LinuxResourcesBuilder,
};

use super::error::SpecError;
use crate::container::config::ContainerResources;

/// CRI resources → `linux.resources` (without the device rules). Zero or empty means unset.
/// Also what UpdateContainerResources applies.
pub fn linux_resources(r: &ContainerResources) -> Result<LinuxResources, SpecError> {
    let mut cpu = LinuxCpuBuilder::default();
    if r.cpu_shares > 0 {
        cpu = cpu.shares(r.cpu_shares as u64);
    }
    if r.cpu_quota != 0 {
        cpu = cpu.quota(r.cpu_quota);
    }
    if r.cpu_period > 0 {
        cpu = cpu.period(r.cpu_period as u64);
    }
    if !r.cpuset_cpus.is_empty() {
        cpu = cpu.cpus(r.cpuset_cpus.clone());
    }
    if !r.cpuset_mems.is_empty() {
        cpu = cpu.mems(r.cpuset_mems.clone());
    }
    let mut memory = LinuxMemoryBuilder::default();
    if r.memory_limit_in_bytes > 0 {
        memory = memory.limit(r.memory_limit_in_bytes);
    }
    if r.memory_swap_limit_in_bytes > 0 {
        memory = memory.swap(r.memory_swap_limit_in_bytes);
    }
    let hugepages = r
        .hugepage_limits
        .iter()
        .map(|h| {
            LinuxHugepageLimitBuilder::default()
                .page_size(h.page_size.clone())
                .limit(i64::try_from(h.limit).unwrap_or(i64::MAX))
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (cpu, memory) = (cpu.build()?, memory.build()?);
    let mut builder = LinuxResourcesBuilder::default();
    if cpu != Default::default() {
        builder = builder.cpu(cpu);
    }
    if memory != Default::default() {
        builder = builder.memory(memory);
    }
    if !hugepages.is_empty() {
        builder = builder.hugepage_limits(hugepages);
    }
    if !r.unified.is_empty() {
        builder = builder.unified(
            r.unified
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        );
    }
    Ok(builder.build()?)
}
