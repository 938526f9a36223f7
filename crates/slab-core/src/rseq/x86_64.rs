//! The x86_64 sequences. Each is one `asm!` block laid out as the kernel's rseq ABI
//! requires (`kernel/rseq.c`, uapi `linux/rseq.h`) and as librseq's x86 templates do:
//!
//! ```text
//!         .pushsection __rseq_cs, "aw"      descriptor: version 0, flags 0,
//!     3:  .long 0, 0; .quad 4f, 5f-4f, 6f    start, length, abort
//!         .popsection
//!         lea t, [rip + 3b]
//!         mov fs:[area + 8], t               arm: rseq->rseq_cs = &descriptor,
//!     4:  cmp fs:[area + 4], cpu             the instruction right before start_ip
//!         jne 7f                             R1: the CPU we address is ours
//!         ...loads and arithmetic...
//!         mov [array], new header            the commit, the only store to the array
//!     5:                                     post_commit_ip
//!         jmp 22f
//!         ud1 <RSEQ_SIG>                     the signature the kernel checks
//!     6:  abort: result = ABORTED            outside [4, 5)
//!     7:  result = MISMATCH; 8: result = DETACHED; 9: the sequence's own early exit
//!    22:
//! ```
//!
//! Inside `[4, 5)`: no call, no system call, no store before the compare, and only
//! speculative stores (above the array's `avail`, or into the caller's buffer) before
//! the commit. Labels are numeric (an inlined copy gets its own) and none is made of 0s
//! and 1s only (x86 `binary_asm_labels`). `--cfg numaslab_rseq_inject` widens each
//! sequence with a spin just before its commit, so that tests see aborts happen.

use std::arch::asm;

use crate::array_cache::{Block, SLOT_NODE, SLOT_PUBLISHED, SLOT_STRIDE};

/// The sequence's descriptor (`struct rseq_cs`: version 0, flags 0, start `4:`, length
/// to `5:`, abort `6:`) in `__rseq_cs`, and the arming store of its address into
/// `rseq->rseq_cs`, which must come right before the start. Uses `{t}` and `{area}`.
macro_rules! arm {
    () => {
        concat!(
            ".pushsection __rseq_cs, \"aw\"\n",
            ".balign 32\n",
            "3:\n",
            ".long 0, 0\n",
            ".quad 4f, 5f - 4f, 6f\n",
            ".popsection\n",
            "lea {t}, [rip + 3b]\n",
            "mov qword ptr fs:[{area} + 8], {t}\n",
        )
    };
}

/// `arm!`, then the CPU check and the published array's address
/// in `{b}`: how the sequences for a CPU the caller names start. Uses `{t}`, `{area}`, `{cpu}`,
/// `{published}` and `{b}`.
macro_rules! sequence_start {
    () => {
        concat!(
            arm!(),
            "4:\n",
            "cmp dword ptr fs:[{area} + 4], {cpu:e}\n",
            "jne 7f\n",
            "mov {b}, qword ptr [{published}]\n",
            "test {b}, {b}\n",
            "jz 8f\n",
        )
    };
}

/// The header word into `{h}` and its `avail` into `{r}`: how pop and push begin.
macro_rules! load_header {
    () => {
        "mov {h}, qword ptr [{b}]\nmovzx {r:e}, {h:x}\n"
    };
}

/// After the commit: the signature, the abort address and the shared early exits, each
/// setting the outcome register `$code` (a 32-bit register name).
macro_rules! sequence_end {
    ($code:literal) => {
        concat!(
            "jmp 22f\n",
            ".byte 0x0f, 0xb9, 0x3d\n",
            ".long 0x53053053\n",
            "6:\n",
            "mov ",
            $code,
            ", 3\n",
            "jmp 22f\n",
            "7:\n",
            "mov ",
            $code,
            ", 2\n",
            "jmp 22f\n",
            "8:\n",
            "mov ",
            $code,
            ", 1\n",
            "jmp 22f\n",
        )
    };
}

/// The spin of `--cfg numaslab_rseq_inject`, in scratch register `$reg` (32-bit name).
#[cfg(numaslab_rseq_inject)]
macro_rules! inject {
    ($reg:literal) => {
        concat!("mov ", $reg, ", 20000\n", "23:\n", "pause\n", "dec ", $reg, "\n", "jnz 23b\n")
    };
}

#[cfg(not(numaslab_rseq_inject))]
macro_rules! inject {
    ($reg:literal) => {
        ""
    };
}

/// One sequence as an `asm!` block, evaluating to its outcome register: [`sequence_start!`],
/// then `$body` (which commits, defines `5:` and its own exits, and ends at `22:`), with the
/// operands every sequence has (`area`, `cpu`, `published`, the outcome in `r`, scratch `b`
/// and `t`) and then `$operand`, the sequence's own.
macro_rules! sequence {
    (($area:expr, $cpu:expr, $published:expr), [$($body:tt)*], [$($operand:tt)*]) => {{
        let result: usize;
        asm!(
            sequence_start!(),
            $($body)*
            area = in(reg) $area,
            cpu = in(reg) $cpu,
            published = in(reg) $published,
            r = out(reg) result,
            b = out(reg) _,
            t = out(reg) _,
            $($operand)*
            options(nostack),
        );
        result
    }};
}

/// Pop: returns the object, or an outcome code (`DONE`: the array is empty).
///
/// # Safety
/// `area` is glibc's `__rseq_offset`; `published` is the published-array cell of the
/// slot of `cpu`; a non-null block there is a live array of that slot (R2 keeps it so
/// until the sequence ends).
#[inline(always)]
pub(super) unsafe fn pop(area: isize, cpu: u32, published: *const *mut Block) -> usize {
    // SAFETY: the caller's guarantees; the sequence follows R1 (see the module docs), its
    // loads stay inside the block (the entry below `avail`, at most the capacity) and its
    // one store is the commit of the header word.
    unsafe {
        sequence!(
            (area, cpu, published),
            [
                load_header!(),
                "test {r:e}, {r:e}",
                "jz 9f",
                // The newest object: entry avail - 1, at block + 64 + (avail - 1) * 8.
                "mov {r}, qword ptr [{b} + {r} * 8 + 56]",
                // header' = header - 1 (avail) + 2^32 (net) | touched.
                "mov {t:e}, 0xffffffff",
                "add {h}, {t}",
                "bts {h}, 31",
                inject!("{t:e}"),
                "mov qword ptr [{b}], {h}",
                "5:",
                sequence_end!("{r:e}"),
                "9:",
                "xor {r:e}, {r:e}",
                "22:",
            ],
            [h = out(reg) _,]
        )
    }
}

/// `arm!`, then the calling thread's CPU as the kernel keeps
/// it, loaded into `{r}` as the sequence's first instruction, so that the CPU the
/// sequence addresses is `rseq->cpu_id` itself (R1: there is no earlier value to compare;
/// a migration after this load aborts the sequence). A CPU id that is not a slot (an
/// unregistered thread's -1 or -2, unsigned) exits at `7:`. Leaves the slot's offset from
/// `{slots}` in `{t}`. Uses `{t}`, `{area}`, `{r}`, `{n}` and `{slots}`; `{n}` is free
/// after it (the header goes there).
macro_rules! here_start {
    () => {
        concat!(
            arm!(),
            "4:\n",
            "mov {r:e}, dword ptr fs:[{area} + 4]\n",
            "cmp {r}, {n}\n",
            "jae 7f\n",
            "imul {t}, {r}, {stride}\n",
        )
    };
}

/// The published array of the slot at `{slots} + {t}` into `{b}` (a null one exits at
/// `8:`), then its header word into `{n}` and its `avail` into `{r}`.
macro_rules! here_header {
    () => {
        concat!(
            "mov {b}, qword ptr [{slots} + {t} + {published}]\n",
            "test {b}, {b}\n",
            "jz 8f\n",
            "mov {n}, qword ptr [{b}]\n",
            "movzx {r:e}, {n:x}\n",
        )
    };
}

/// The exits of a sequence on the thread's own CPU, out of line (in `.text.unlikely`, as
/// librseq keeps its abort handlers in `__rseq_failure`), so that the commit falls through
/// to `22:` with no jump: the signature and the abort address, then the early exits `7:`
/// (no slot), `8:` (detached) and `9:` (the sequence's own, outcome `$limit`), each
/// setting `{r}` and returning to `22:`. The section is left open for the sequence's own
/// further exits; it closes it.
macro_rules! here_exits {
    ($limit:literal) => {
        concat!(
            "22:\n",
            ".pushsection .text.unlikely, \"ax\"\n",
            ".byte 0x0f, 0xb9, 0x3d\n",
            ".long 0x53053053\n",
            "6:\n",
            "mov {r:e}, 3\n",
            "jmp 22b\n",
            "7:\n",
            "mov {r:e}, 2\n",
            "jmp 22b\n",
            "8:\n",
            "mov {r:e}, 1\n",
            "jmp 22b\n",
            "9:\n",
            "mov {r:e}, ",
            $limit,
            "\n",
            "jmp 22b\n",
        )
    };
}

/// Pop on the calling thread's own CPU, which the sequence reads itself: returns the
/// object or an outcome code (`DONE`: the array is empty; `MISMATCH`: the CPU id is not a
/// slot). Six registers, the CPU's and the header's reused, so that a caller that
/// inlines it keeps its own values in registers.
///
/// # Safety
/// `area` is glibc's `__rseq_offset`; `slots` and `n` are the slots of a cache whose
/// slots all follow rseq mode; a non-null block published in one is a live array of that
/// slot (R2 keeps it so until the sequence ends).
#[inline(always)]
pub(super) unsafe fn pop_here(area: isize, slots: *const u8, n: usize) -> usize {
    let result: usize;
    // SAFETY: the caller's guarantees; the sequence follows R1 (its first instruction
    // loads the CPU it addresses from `rseq->cpu_id`), its loads stay inside the slots
    // (the id is below `n`) and the block, and its one store is the commit.
    unsafe {
        asm!(
            here_start!(),
            here_header!(),
            "test {r:e}, {r:e}",
            "jz 9f",
            "mov {r}, qword ptr [{b} + {r} * 8 + 56]",
            // header' = header - 1 (avail) + 2^32 (net) | touched, with `touched` set
            // only where it is clear (a branch, off the chain of header loads and
            // stores that a run of pops and pushes forms).
            "mov {t:e}, 0xffffffff",
            "add {n}, {t}",
            "test {n:e}, 0x80000000",
            "jnz 13f",
            "bts {n}, 31",
            "13:",
            inject!("{t:e}"),
            "mov qword ptr [{b}], {n}",
            "5:",
            here_exits!("0"),
            ".popsection",
            area = in(reg) area,
            slots = in(reg) slots,
            n = inout(reg) n => _,
            r = out(reg) result,
            b = out(reg) _,
            t = out(reg) _,
            stride = const SLOT_STRIDE,
            published = const SLOT_PUBLISHED,
            options(nostack),
        );
    }
    result
}

/// Push of an object of `node` on the calling thread's own CPU, read as [`pop_here`]
/// reads it: returns the outcome code (`LIMIT` when full, `REMOTE` when the CPU's node is
/// not `node`, `MISMATCH` when the CPU id is not a slot). Eight registers, as few as
/// [`pop_here`]'s reasons allow.
///
/// # Safety
/// As for [`pop_here`]; `obj` is a handed-out object of `node`.
#[inline(always)]
pub(super) unsafe fn push_here(area: isize, slots: *const u8, n: usize, obj: *mut u8, node: u32) -> usize {
    let result: usize;
    // SAFETY: as for `pop_here`; the node compare reads the slot, and the entry store lies
    // above `avail` (speculative: nothing reads it unless the commit lands) and inside
    // the block.
    unsafe {
        asm!(
            here_start!(),
            "cmp {node:e}, dword ptr [{slots} + {t} + {slot_node}]",
            "jne 12f",
            here_header!(),
            "cmp {r:e}, dword ptr [{b} + 12]",
            "jae 9f",
            "mov qword ptr [{b} + {r} * 8 + 64], {obj}",
            "xor {r:e}, {r:e}",
            "mov {t:e}, 0xffffffff",
            "sub {n}, {t}",
            inject!("{t:e}"),
            "mov qword ptr [{b}], {n}",
            "5:",
            here_exits!("4"),
            "12:",
            "mov {r:e}, 5",
            "jmp 22b",
            ".popsection",
            area = in(reg) area,
            slots = in(reg) slots,
            n = inout(reg) n => _,
            obj = in(reg) obj,
            node = in(reg) node,
            r = out(reg) result,
            b = out(reg) _,
            t = out(reg) _,
            stride = const SLOT_STRIDE,
            published = const SLOT_PUBLISHED,
            slot_node = const SLOT_NODE,
            options(nostack),
        );
    }
    result
}

/// Unpublish: the CPU's own thread stores null into `published` as one sequence; returns
/// the outcome code (`DONE`, or `DETACHED` when nothing was published).
///
/// # Safety
/// As for [`pop`]; the caller holds the slot's lock, so no other thread writes the cell.
#[inline(never)]
pub(super) unsafe fn unpublish(area: isize, cpu: u32, published: *mut *mut Block) -> usize {
    // SAFETY: as for `pop`; the one store is the commit, into the cell the caller owns
    // under the slot lock.
    unsafe {
        sequence!(
            (area, cpu, published),
            ["mov qword ptr [{published}], 0", "5:", "xor {r:e}, {r:e}", sequence_end!("{r:e}"), "22:",],
            []
        )
    }
}

/// Push: returns the outcome code (`LIMIT` when full).
///
/// # Safety
/// As for [`pop`].
#[inline(always)]
pub(super) unsafe fn push(area: isize, cpu: u32, published: *const *mut Block, obj: *mut u8) -> usize {
    // SAFETY: as for `pop`; the entry store lies above `avail` (speculative: nothing
    // reads it unless the commit that follows it lands) and inside the block.
    unsafe {
        sequence!(
            (area, cpu, published),
            [
                load_header!(),
                "cmp {r:e}, dword ptr [{b} + 12]",
                "jae 9f",
                // The first free entry: entry avail, at block + 64 + avail * 8.
                "mov qword ptr [{b} + {r} * 8 + 64], {obj}",
                // header' = header + 1 (avail) - 2^32 (net).
                "mov {t:e}, 0xffffffff",
                "sub {h}, {t}",
                inject!("{t:e}"),
                "mov qword ptr [{b}], {h}",
                "5:",
                "xor {r:e}, {r:e}",
                sequence_end!("{r:e}"),
                "9:",
                "mov {r:e}, 4",
                "22:",
            ],
            [obj = in(reg) obj, h = out(reg) _,]
        )
    }
}
