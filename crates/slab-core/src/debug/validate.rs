//! `validate()`: every object of a cache accounted for exactly once, every slab on its
//! own node's right list.
//!
//! It holds every lock of the cache while it looks, and allocates nothing then. When
//! numaslab is the process's allocator, an allocation made under those locks may be
//! served by this very cache and wait on them for ever: the seed's rule (nothing
//! allocated under a lock an allocation takes) holds here as on every other path. So its
//! room (the list of cached objects, a slab's free list) is reserved before it locks;
//! what it finds wrong is written into a fixed buffer ([`Note`]) and becomes an error
//! after it unlocks; and a picture with more cached objects than the room reserved is
//! counted, then taken again with room for them all.

#![allow(
    clippy::result_large_err,
    clippy::large_enum_variant,
    reason = "a finding carries its text in place: it is made where nothing may be allocated, once per validate at most"
)]

use std::fmt;

use topology::NodeId;

use super::Damage;
use crate::array_cache::SlotGuard;
use crate::cache::KmemCache;
use crate::error::{Error, Result};
use crate::node::NodeState;
use crate::slab::{ListKind, SlabPtr, SLAB_MAGIC};
use crate::sync::LockGuard;

/// Cached objects the first picture has room for.
const FIRST_ROOM: usize = 1024;

/// Pictures taken at most: each after the last counted more objects than it had room
/// for, with room for all it counted (so a second suffices unless the caches grew in
/// between).
const MAX_PICTURES: usize = 8;

/// Every lock of a cache, held for one consistent picture of it.
struct AllLocks<'a> {
    /// Each CPU's slot, by CPU.
    cpus: Vec<(usize, SlotGuard<'a>)>,
    /// Each alien slot, by the node that holds it.
    aliens: Vec<(usize, SlotGuard<'a>)>,
    /// Each node's `list_lock`, by node.
    nodes: Vec<LockGuard<'a, NodeState>>,
}

/// Where a cached object sits.
#[derive(Debug, Clone, Copy)]
enum Place {
    Cpu(usize),
    Alien { holder: usize, owner: NodeId },
    Barn(usize),
    Remote(usize),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Place::Cpu(cpu) => write!(f, "cpu {cpu}'s array"),
            Place::Alien { holder, owner } => write!(f, "node {holder}'s alien cache for node {owner}"),
            Place::Barn(node) => write!(f, "node {node}'s barn"),
            Place::Remote(node) => write!(f, "node {node}'s remote frees"),
        }
    }
}

/// What a picture writes, reserved before the locks are taken.
struct Room {
    /// Each cached object found, with where it sits, in the order found.
    cached: Vec<(usize, Place)>,
    /// Cached objects found with `cached` full.
    missed: usize,
    /// One slab's free-list walk: which slots were seen, and the free ones.
    seen: Vec<bool>,
    free: Vec<u32>,
}

impl Room {
    fn new(objects_per_slab: u32) -> Room {
        let num = objects_per_slab as usize;
        Room {
            cached: Vec::with_capacity(FIRST_ROOM),
            missed: 0,
            seen: Vec::with_capacity(num),
            free: Vec::with_capacity(num),
        }
    }

    /// Records a cached object, or counts it when there is no room left.
    fn record(&mut self, obj: *mut u8, place: Place) {
        if self.cached.len() < self.cached.capacity() {
            self.cached.push((obj as usize, place));
        } else {
            self.missed += 1;
        }
    }

    /// Room for every object the last picture found, and a quarter more; empty again.
    fn grow(&mut self) {
        let wanted = self.cached.len() + self.missed;
        self.cached.clear();
        self.cached.reserve(wanted + wanted / 4);
        self.missed = 0;
    }
}

/// A finding's text, written into a fixed buffer (cut at 240 bytes), so that it can be
/// had under the locks.
struct Note {
    bytes: [u8; 240],
    len: usize,
}

impl Note {
    fn as_str(&self) -> &str {
        // Only whole characters are ever copied in (`write_str`).
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl fmt::Write for Note {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut take = text.len().min(self.bytes.len() - self.len);
        while !text.is_char_boundary(take) {
            take -= 1;
        }
        self.bytes[self.len..self.len + take].copy_from_slice(&text.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

/// What a picture found wrong, as plain data.
enum Finding {
    Corrupted(Note),
    Damage { ptr: usize, damage: Damage },
}

/// A corruption finding with `args` for its reason.
fn corrupt(args: fmt::Arguments<'_>) -> Finding {
    let mut note = Note { bytes: [0; 240], len: 0 };
    // Writing into a `Note` cannot fail; a long text is cut.
    let _ = fmt::Write::write_fmt(&mut note, args);
    Finding::Corrupted(note)
}

/// The result of a step taken under the locks.
type Found<T> = std::result::Result<T, Finding>;

impl KmemCache {
    /// `Cache::validate`, serialized against hotplug and tuning by the cache_chain mutex.
    pub(crate) fn validate(&self) -> Result<()> {
        let allocator = self.allocator.upgrade();
        let _chain = allocator.as_ref().map(|allocator| allocator.chain.lock());
        self.validate_locked()
    }

    /// Checks every object is accounted for exactly once and every slab is on its own
    /// node's right list. Takes every lock of the cache (CPU slots, then alien slots,
    /// then node lists, then each barn's in turn: the lock order of the fast paths), so
    /// the picture is consistent even while other threads allocate and free: a barn
    /// changes only under a CPU slot lock or the cache_chain mutex, and a remote-free
    /// queue grows only under an alien slot lock and shrinks only under its node's lock.
    /// The caller holds the cache_chain mutex.
    pub(crate) fn validate_locked(&self) -> Result<()> {
        let refused = self.refused.load(crate::sync::Ordering::Relaxed);
        if refused > 0 {
            return Err(self.corrupted(format!(
                "{refused} objects were refused by free_block (double free or corruption)"
            )));
        }
        let mut room = Room::new(self.geometry.num);
        for _ in 0..MAX_PICTURES {
            let picture = {
                let mut locks = self.lock_all();
                self.picture(&mut locks, &mut room)
            };
            let (outstanding, in_use) = picture.map_err(|finding| self.finding_error(finding))?;
            if room.missed == 0 {
                return self.check_counts(&mut room.cached, outstanding, in_use);
            }
            room.grow();
        }
        Err(self.corrupted(format!(
            "the caches held more objects at each of {MAX_PICTURES} pictures than room was made for after the one before"
        )))
    }

    /// One picture, under every lock: the cached objects recorded in `room`; returns the
    /// objects out with callers and those handed out of the slabs.
    fn picture(&self, locks: &mut AllLocks<'_>, room: &mut Room) -> Found<(i64, usize)> {
        room.cached.clear();
        room.missed = 0;
        let outstanding = self.account_cached(locks, room)?;
        let in_use = self.account_slabs(&locks.nodes, room)?;
        Ok((outstanding, in_use))
    }

    /// After unlocking: no object cached twice, and the counts agree.
    fn check_counts(&self, cached: &mut [(usize, Place)], outstanding: i64, in_use: usize) -> Result<()> {
        // Stable: of two entries for one object, the one found first stays first.
        cached.sort_by_key(|&(obj, _)| obj);
        if let Some(pair) = cached.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            let (obj, first, then) = (pair[0].0 as *const u8, pair[0].1, pair[1].1);
            return Err(self.corrupted(format!("object {obj:p} is cached twice: in {first} and in {then}")));
        }
        if outstanding < 0 {
            return Err(self.corrupted(format!("more objects freed than allocated ({outstanding})")));
        }
        if in_use != cached.len() + outstanding as usize {
            return Err(self.corrupted(format!(
                "{in_use} objects handed out of the slabs, but {} cached + {outstanding} out with callers",
                cached.len()
            )));
        }
        Ok(())
    }

    /// The cache's corruption error for `reason`.
    fn corrupted(&self, reason: String) -> Error {
        Error::Corrupted { cache: self.name.clone(), reason }
    }

    /// The error for what a picture found, made after unlocking.
    fn finding_error(&self, finding: Finding) -> Error {
        match finding {
            Finding::Corrupted(note) => self.corrupted(note.as_str().to_owned()),
            Finding::Damage { ptr, damage } => self.damage_error(ptr, damage),
        }
    }

    /// Takes every lock of the cache in the fast paths' order: CPU slots, alien slots,
    /// node lists. The lists of guards are allocated first.
    fn lock_all(&self) -> AllLocks<'_> {
        let alien_slots = self.nodelists.iter().map(|l3| l3.alien.len()).sum();
        let mut locks = AllLocks {
            cpus: Vec::with_capacity(self.array.len()),
            aliens: Vec::with_capacity(alien_slots),
            nodes: Vec::with_capacity(self.nodelists.len()),
        };
        locks.cpus.extend(self.array.iter().enumerate().map(|(cpu, slot)| (cpu, slot.lock())));
        for (node, l3) in self.nodelists.iter().enumerate() {
            locks.aliens.extend(l3.alien.iter().map(|slot| (node, slot.lock())));
        }
        locks.nodes.extend(self.nodelists.iter().map(|l3| l3.list_lock.lock()));
        locks
    }

    /// Records every cached object (CPU arrays, alien caches, barns, remote frees) in
    /// `room`, each checked as a handed-out slot of the right node; returns how many
    /// objects are out with callers.
    fn account_cached(&self, locks: &mut AllLocks<'_>, room: &mut Room) -> Found<i64> {
        // The slots' counts wrap at 32 bits; their sum is exact below 2^31 objects out.
        let mut slots_net: u32 = 0;
        for (cpu, guard) in locks.cpus.iter_mut() {
            slots_net = slots_net.wrapping_add(self.account_slot(guard, room, Place::Cpu(*cpu))?);
        }
        for (holder, guard) in locks.aliens.iter_mut() {
            let place = Place::Alien { holder: *holder, owner: guard.node() };
            slots_net = slots_net.wrapping_add(self.account_slot(guard, room, place)?);
        }
        let mut outstanding = i64::from(slots_net as i32);
        for (node, state) in locks.nodes.iter().enumerate() {
            outstanding += state.direct_net_out();
            self.account_node_caches(node, state, room)?;
        }
        Ok(outstanding)
    }

    /// Records the objects of one CPU or alien slot; returns the slot's net count out.
    fn account_slot(&self, guard: &mut SlotGuard<'_>, room: &mut Room, place: Place) -> Found<u32> {
        let node = guard.node();
        guard.with(|data| -> Found<u32> {
            for &obj in data.array_mut().map_or(&[][..], |ac| ac.objects()) {
                self.record_cached(room, obj, node, place)?;
            }
            Ok(data.net_out())
        })
    }

    /// Records the objects of `node`'s barn and remote-free queue.
    fn account_node_caches(&self, node: usize, state: &NodeState, room: &mut Room) -> Found<()> {
        let l3 = &self.nodelists[node];
        let mut result = Ok(());
        l3.barn.for_each_full(|objects| {
            for &obj in objects {
                if result.is_ok() {
                    result = self.record_cached(room, obj, node as NodeId, Place::Barn(node));
                }
            }
        });
        result?;
        let mut result = Ok(());
        let complete = l3.walk_remote(state, &self.geometry, |obj| {
            result = self.record_cached(room, obj, node as NodeId, Place::Remote(node));
            result.is_ok()
        });
        result?;
        if !complete {
            return Err(corrupt(format_args!(
                "node {node}'s remote frees hold more objects than the node handed out (a double free)"
            )));
        }
        Ok(())
    }

    /// Checks one cached object and records where it sits.
    fn record_cached(&self, room: &mut Room, obj: *mut u8, node: NodeId, place: Place) -> Found<()> {
        self.check_cached_object(obj, node, place)?;
        room.record(obj, place);
        Ok(())
    }

    /// Checks every slab: on its own node's lists, on the list its use calls for, free
    /// list sound, free objects intact in debug mode; each node's counters agree with its
    /// lists and the registry with all of them. Returns the objects handed out of slabs.
    fn account_slabs(&self, nodes: &[LockGuard<'_, NodeState>], room: &mut Room) -> Found<usize> {
        let mut in_use = 0usize;
        let mut slabs = 0usize;
        for (node, state) in nodes.iter().enumerate() {
            let (node_slabs, used) = self.account_node_slabs(node as NodeId, state, room)?;
            slabs += node_slabs;
            in_use += used;
        }
        let registered =
            self.registry.slabs.read().values().filter(|owner| owner.cache_id == self.id).count();
        if registered != slabs {
            return Err(corrupt(format_args!("{slabs} slabs on the lists but {registered} in the registry")));
        }
        Ok(in_use)
    }

    /// Checks one node's slabs against its counters; returns its slab count and the
    /// objects handed out of them.
    fn account_node_slabs(&self, node: NodeId, state: &NodeState, room: &mut Room) -> Found<(usize, usize)> {
        let (mut slabs, mut in_use, mut free_objects) = (0usize, 0usize, 0usize);
        for (kind, list) in [
            (ListKind::Partial, &state.slabs_partial),
            (ListKind::Full, &state.slabs_full),
            (ListKind::Free, &state.slabs_free),
        ] {
            // SAFETY: we hold this node's lock.
            for slab in unsafe { list.iter() } {
                slabs += 1;
                let (used, free) = self.check_slab(slab, node, kind, room)?;
                in_use += used;
                free_objects += free;
            }
        }
        if free_objects != state.free_objects {
            return Err(corrupt(format_args!(
                "node {node}: free_objects is {} but its slabs hold {free_objects} free objects",
                state.free_objects
            )));
        }
        if state.grown.wrapping_sub(state.released) != slabs as u64 {
            return Err(corrupt(format_args!(
                "node {node}: grown {} - released {} != {slabs} slabs on its lists",
                state.grown, state.released
            )));
        }
        Ok((slabs, in_use))
    }

    /// Checks one cached object: in a live slab of this cache on `node`, a slot start,
    /// marked handed out, and in debug mode painted free.
    fn check_cached_object(&self, obj: *mut u8, node: NodeId, place: Place) -> Found<()> {
        let Some(slab) = SlabPtr::of(obj, self.geometry.slab_bytes) else {
            return Err(corrupt(format_args!("{place} holds a null object")));
        };
        let registered = self.registry.slabs.read().get(&(slab.base() as usize)).map(|owner| owner.cache_id);
        if registered != Some(self.id) {
            return Err(corrupt(format_args!("{place} holds {obj:p}, which is in no slab of this cache")));
        }
        // SAFETY: the slab is registered to this cache, so mapped; the caller holds every
        // lock of the cache.
        unsafe {
            if slab.nodeid() != node {
                return Err(corrupt(format_args!("{place} holds {obj:p} of node {}", slab.nodeid())));
            }
            let index = slab
                .obj_to_index(&self.geometry, obj)
                .map_err(|reason| corrupt(format_args!("{place}: {obj:p}: {reason}")))?;
            if !slab.is_handed_out(index) {
                return Err(corrupt(format_args!(
                    "{place} holds {obj:p}, which is also on its slab's free list"
                )));
            }
            if self.debug {
                self.check_painted_free(obj)?;
            }
        }
        Ok(())
    }

    /// A free slot's red zones and poison, in debug mode, as a finding.
    ///
    /// # Safety
    /// `obj` is a free slot of this cache, kept free by a lock the caller holds.
    unsafe fn check_painted_free(&self, obj: *mut u8) -> Found<()> {
        // SAFETY: forwarded to the caller.
        match unsafe { self.free_slot_damage(obj) } {
            Some(damage) => Err(Finding::Damage { ptr: self.body(obj) as usize, damage }),
            None => Ok(()),
        }
    }

    /// Checks one slab on `node`'s `kind` list; returns (objects handed out, free).
    fn check_slab(
        &self,
        slab: SlabPtr,
        node: NodeId,
        kind: ListKind,
        room: &mut Room,
    ) -> Found<(usize, usize)> {
        let base = slab.base();
        // SAFETY: the slab is on a list of this cache whose lock the caller holds, so its
        // descriptor is mapped and nobody changes it (the reads below rely on the same).
        if unsafe { slab.magic() != SLAB_MAGIC || slab.cache_id() != self.id } {
            return Err(corrupt(format_args!("slab {base:p} on node {node} has a foreign descriptor")));
        }
        // SAFETY: as above; the descriptor is this cache's.
        let (nodeid, list, used) = unsafe { (slab.nodeid(), slab.list(), slab.inuse() as usize) };
        if nodeid != node {
            return Err(corrupt(format_args!("slab {base:p} of node {nodeid} sits on node {node}'s lists")));
        }
        if list != kind {
            return Err(corrupt(format_args!("slab {base:p} on the {kind:?} list says {list:?}")));
        }
        // SAFETY: as above; `room` has space for `num` entries in both buffers.
        unsafe { slab.free_indices_into(&self.geometry, &mut room.seen, &mut room.free) }
            .map_err(|fault| corrupt(format_args!("slab {base:p}: {fault}")))?;
        let expected = match kind {
            ListKind::Full => used == self.geometry.num as usize,
            ListKind::Partial => used > 0 && used < self.geometry.num as usize,
            ListKind::Free => used == 0,
            ListKind::Detached => false,
        };
        if !expected {
            return Err(corrupt(format_args!(
                "slab {base:p} with {used} objects in use sits on the {kind:?} list"
            )));
        }
        if self.debug {
            for &index in &room.free {
                // SAFETY: `index` is a free slot of this slab, which the caller's lock
                // keeps free while it checks.
                unsafe { self.check_painted_free(slab.index_to_obj(&self.geometry, index)) }?;
            }
        }
        Ok((used, room.free.len()))
    }
}
