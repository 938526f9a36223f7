//! numaslab, through three APIs: the typed cache (handles that free on drop), the raw
//! cache (pointers freed explicitly), and kmalloc (any layout, the size class found per
//! call: what `numaslab::NumaSlabAlloc`, numaslab as a `#[global_allocator]`, calls,
//! without that wrapper's thread-local depth count and bring-up check, on the workload's
//! machine instead of the live one). All run on the workload's machine: this machine,
//! its CPUs laid out on two nodes for the cross-node workload, or the seed box (virtual
//! CPUs) for the hotplug workload.

use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::Arc;

use anyhow::{Context, Result};
use slab_core::{Allocator, Cache, CacheFlags, Checking, FastPathMode, Handle, Kmalloc, TypedCache};
use topology::{CpuId, CpuState, Topology};

use super::malloc::RawObj;
use super::{allocation_failed, Impl};
use crate::obj::Obj;
use crate::workloads::Machine;

/// Runs the allocator's hotplug callbacks around a fixture CPU going offline, in the
/// kernel's order: `CPU_DOWN_PREPARE`, the CPU stops, `CPU_DEAD`.
fn cpu_down(allocator: &Allocator, topology: &dyn Topology, cpu: CpuId) -> Result<()> {
    allocator.cpu_down_prepare(cpu).with_context(|| format!("cpu_down_prepare({cpu})"))?;
    if let Err(error) = topology.set_cpu_online(cpu, CpuState::Offline) {
        allocator.cpu_down_failed(cpu);
        return Err(error).with_context(|| format!("taking cpu {cpu} offline"));
    }
    allocator.cpu_dead(cpu);
    Ok(())
}

/// The bring-up order: `CPU_UP_PREPARE`, the CPU starts, `CPU_ONLINE`.
fn cpu_up(allocator: &Allocator, topology: &dyn Topology, cpu: CpuId) -> Result<()> {
    allocator.cpu_up_prepare(cpu).with_context(|| format!("cpu_up_prepare({cpu})"))?;
    if let Err(error) = topology.set_cpu_online(cpu, CpuState::Online) {
        allocator.cpu_up_canceled(cpu);
        return Err(error).with_context(|| format!("bringing cpu {cpu} online"));
    }
    allocator.cpu_online(cpu).with_context(|| format!("cpu_online({cpu})"))?;
    Ok(())
}

/// The typed API: `TypedCache<Obj<W>>`, handles free on drop.
pub(crate) struct NumaslabTyped<const W: usize> {
    allocator: Arc<Allocator>,
    cache: TypedCache<Obj<W>>,
}

impl<const W: usize> NumaslabTyped<W> {
    pub(crate) fn new(machine: &Machine) -> Result<Self> {
        let allocator = Allocator::new(Arc::clone(&machine.topology));
        let cache = allocator
            .create_typed::<Obj<W>>(&format!("bench-typed-{}", W * 8), CacheFlags::NONE)
            .context("creating numaslab's typed cache")?;
        Ok(Self { allocator, cache })
    }
}

impl<const W: usize> Impl for NumaslabTyped<W> {
    type Handle<'a>
        = Handle<Obj<W>>
    where
        Self: 'a;

    #[inline(always)]
    fn alloc(&self, stamp: u64) -> Handle<Obj<W>> {
        match self.cache.alloc(Obj::uninit()) {
            Ok(mut handle) => {
                handle.set_stamp(stamp);
                handle
            }
            Err(error) => allocation_failed("numaslab-typed", &error),
        }
    }

    #[inline(always)]
    fn free(&self, handle: Handle<Obj<W>>) {
        drop(handle);
    }

    #[inline(always)]
    fn stamp(&self, handle: &Handle<Obj<W>>) -> u64 {
        handle.stamp()
    }

    #[inline(always)]
    fn identity(&self, handle: &Handle<Obj<W>>) -> usize {
        std::ptr::from_ref::<Obj<W>>(handle) as usize
    }

    #[inline(always)]
    fn with_words<R>(&self, handle: &mut Handle<Obj<W>>, f: impl FnOnce(&mut [MaybeUninit<u64>]) -> R) -> R {
        f(&mut handle.words)
    }

    fn finish(&self) -> Result<()> {
        self.allocator.validate().context("numaslab's validate() after the run")
    }

    fn cpu_down(&self, topology: &dyn Topology, cpu: CpuId) -> Result<()> {
        cpu_down(&self.allocator, topology, cpu)
    }

    fn cpu_up(&self, topology: &dyn Topology, cpu: CpuId) -> Result<()> {
        cpu_up(&self.allocator, topology, cpu)
    }
}

/// The raw API: `Cache::alloc` and `Cache::free` on a cache of `Obj<W>`'s layout, with
/// the fast path the machine allows (rseq on the live machine) or, for `numaslab-raw-cas`,
/// always the CAS slot protocol, so that the two run side by side.
pub(crate) struct NumaslabRaw<const W: usize> {
    allocator: Arc<Allocator>,
    cache: Arc<Cache>,
}

impl<const W: usize> NumaslabRaw<W> {
    pub(crate) fn new(machine: &Machine, mode: FastPathMode) -> Result<Self> {
        let allocator = Allocator::with_fast_path(Arc::clone(&machine.topology), mode);
        let cache = allocator
            .create_cache(
                &format!("bench-raw-{}", W * 8),
                std::alloc::Layout::new::<Obj<W>>(),
                CacheFlags::NONE,
            )
            .context("creating numaslab's raw cache")?;
        Ok(Self { allocator, cache })
    }
}

impl<const W: usize> Impl for NumaslabRaw<W> {
    type Handle<'a>
        = RawObj<W>
    where
        Self: 'a;

    #[inline(always)]
    fn alloc(&self, stamp: u64) -> RawObj<W> {
        match self.cache.alloc() {
            // SAFETY: the cache hands out objects of `Obj<W>`'s layout, owned by us.
            Ok(ptr) => unsafe { RawObj::new(ptr.cast::<Obj<W>>(), stamp) },
            Err(error) => allocation_failed("numaslab-raw", &error),
        }
    }

    #[inline(always)]
    fn free(&self, handle: RawObj<W>) {
        let ptr: NonNull<u8> = handle.ptr().cast();
        // SAFETY: the pointer came from this cache's `alloc` and the handle, its only
        // owner, is consumed here.
        if let Err(error) = unsafe { self.cache.free(ptr) } {
            allocation_failed("numaslab-raw", &error);
        }
    }

    #[inline(always)]
    fn stamp(&self, handle: &RawObj<W>) -> u64 {
        handle.stamp()
    }

    #[inline(always)]
    fn identity(&self, handle: &RawObj<W>) -> usize {
        handle.ptr().as_ptr() as usize
    }

    #[inline(always)]
    fn with_words<R>(&self, handle: &mut RawObj<W>, f: impl FnOnce(&mut [MaybeUninit<u64>]) -> R) -> R {
        f(handle.words())
    }

    fn finish(&self) -> Result<()> {
        self.allocator.validate().context("numaslab's validate() after the run")
    }

    fn cpu_down(&self, topology: &dyn Topology, cpu: CpuId) -> Result<()> {
        cpu_down(&self.allocator, topology, cpu)
    }

    fn cpu_up(&self, topology: &dyn Topology, cpu: CpuId) -> Result<()> {
        cpu_up(&self.allocator, topology, cpu)
    }
}

/// kmalloc: `Kmalloc::alloc` and `Kmalloc::free` with `Obj<W>`'s layout, the class looked
/// up on every call, as a `GlobalAlloc` does.
pub(crate) struct NumaslabKmalloc<const W: usize> {
    kmalloc: Kmalloc,
}

impl<const W: usize> NumaslabKmalloc<W> {
    const LAYOUT: std::alloc::Layout = std::alloc::Layout::new::<Obj<W>>();

    pub(crate) fn new(machine: &Machine) -> Result<Self> {
        let allocator = Allocator::new(Arc::clone(&machine.topology));
        let kmalloc =
            Kmalloc::new(&allocator, Checking::Trusting).context("creating numaslab's kmalloc caches")?;
        Ok(Self { kmalloc })
    }
}

impl<const W: usize> Impl for NumaslabKmalloc<W> {
    type Handle<'a>
        = RawObj<W>
    where
        Self: 'a;

    #[inline(always)]
    fn alloc(&self, stamp: u64) -> RawObj<W> {
        match self.kmalloc.alloc(Self::LAYOUT) {
            // SAFETY: kmalloc hands out memory for `Obj<W>`'s layout, owned by us.
            Ok(ptr) => unsafe { RawObj::new(ptr.cast::<Obj<W>>(), stamp) },
            Err(error) => allocation_failed("numaslab-kmalloc", &error),
        }
    }

    #[inline(always)]
    fn free(&self, handle: RawObj<W>) {
        let ptr: NonNull<u8> = handle.ptr().cast();
        // SAFETY: the pointer came from this kmalloc with this layout and the handle, its
        // only owner, is consumed here.
        if let Err(error) = unsafe { self.kmalloc.free(ptr, Self::LAYOUT) } {
            allocation_failed("numaslab-kmalloc", &error);
        }
    }

    #[inline(always)]
    fn stamp(&self, handle: &RawObj<W>) -> u64 {
        handle.stamp()
    }

    #[inline(always)]
    fn identity(&self, handle: &RawObj<W>) -> usize {
        handle.ptr().as_ptr() as usize
    }

    #[inline(always)]
    fn with_words<R>(&self, handle: &mut RawObj<W>, f: impl FnOnce(&mut [MaybeUninit<u64>]) -> R) -> R {
        f(handle.words())
    }

    fn finish(&self) -> Result<()> {
        self.kmalloc.allocator().validate().context("numaslab's validate() after the run")
    }

    fn cpu_down(&self, topology: &dyn Topology, cpu: CpuId) -> Result<()> {
        cpu_down(self.kmalloc.allocator(), topology, cpu)
    }

    fn cpu_up(&self, topology: &dyn Topology, cpu: CpuId) -> Result<()> {
        cpu_up(self.kmalloc.allocator(), topology, cpu)
    }
}
