// SPDX-License-Identifier: (MIT OR Apache-2.0) AND GPL-2.0
//
// ember's user-stack walk in the kernel, run at each sample of ember's perf events: frame by
// frame from the sample's user registers, with the rows ember built in user space from each
// file's .eh_frame (src/unwind_table: the same rows, the same walk as `walk.rs`). It sends
// the frames' addresses, and where the rows end before the root (no row, a rule they cannot
// follow) the registers there and a copy of the stack from there, for ember to go on as it
// does with perf events' copies. The perf sample itself is dropped: this record replaces it.
//
// Built with `scripts/bpf.sh` (Debian's clang -target bpf); the object is kept next to this
// file and CI checks that it is this file's.

#include <linux/bpf.h>
#include <linux/bpf_perf_event.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>

typedef unsigned long long u64;
typedef long long s64;
typedef unsigned int u32;
typedef int s32;
typedef short s16;
typedef unsigned char u8;

// A packed row (src/unwind_table/packed.rs): the address less the table's base, and the
// rule — bits 0-2 the kind, 3-10 the rbp slot from the CFA in units of 8 (signed; -128
// unknown) or a PLT stub's threshold, 11-31 the CFA offset in units of 8 (signed).
struct row {
	u32 pc;
	u32 rule;
};

enum {
	ROW_STOP = 0,
	ROW_CFA_RSP = 1,
	ROW_CFA_RBP = 2,
	ROW_PLT = 3,
	ROW_ROOT = 4,
	ROW_UNSUPPORTED = 5,
};
#define RBP_UNKNOWN (-128)

// One executable mapping of a process: its rows are rows[first, first + count), keyed by
// address - bias (the load bias and the table's base); before them, `buckets` entries of
// their index by address (src/unwind_table/packed.rs, RowIndex): entry b's pc is the row
// that holds bucket b's first address, a bucket `1 << shift` bytes.
struct mapping {
	u64 start;
	u64 end;
	u64 bias;
	u32 first;
	u32 count;
	u32 buckets;
	u32 shift;
};

#define MAX_MAPPINGS 256
struct process {
	u32 count;
	u32 pad;
	struct mapping m[MAX_MAPPINGS];
};

// How a walk ended (`WalkEnd` of walk.rs, with the same numbers).
enum {
	END_ROOT = 0,
	END_NO_ROW = 1,
	END_UNSUPPORTED = 2,
	END_UNREADABLE = 3,
	END_DEPTH = 4,
};

#define MAX_FRAMES 5990
#define MAX_KERNEL 128
#define COPY_BYTES 16384
// The most raw data a record holds (a perf record's size is 16 bits), and where the copy
// starts in it (after the most frames there can be).
#define RAW_MAX 65472
#define COPY_AT (RAW_MAX - COPY_BYTES)
// A copy follows the frames where they end before this (a power of two), else at COPY_AT.
#define COPY_NEAR 32768
#define BUF_BYTES 65536
#define HEADER_WORDS 17
#define MAGIC 0x3546504252424d45ULL // "EMBRBPF5"

// The record sent: HEADER_WORDS words — magic, how many kernel frames, how many user
// frames, how the walk ended, the registers where it ended (ip, sp, bp), the bytes of stack
// copied, where the copy starts (0: where the walk ended, 1: at the sample's stack pointer),
// the sample's registers (ip, sp, bp), how many Python frames, how the Python walk ended
// (PY_*, and from bit 8 how many name blocks), the sample's time (CLOCK_MONOTONIC, as
// ember's perf events), its process and thread (tgid << 32 | tid) and its CPU — then the user frames, the kernel frames,
// the Python frames (PY_FRAME_WORDS words each, innermost first), the name blocks
// (struct name_block) and the copy.
struct out_buf {
	u64 w[BUF_BYTES / 8];
};

// Entries are allocated as ember adds them (only ember writes this map; the program reads
// it): preallocated, 4,096 entries of 8 KiB would take 33 MB of the kernel's memory.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, u32);
	__type(value, struct process);
} processes SEC(".maps");

// Mapped into ember's memory too: it writes a file's rows at once, not one call each.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1); // set by ember before loading
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, u32);
	__type(value, struct row);
} rows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1); // one per CPU, set by ember
	__type(key, u32);
	__type(value, struct out_buf);
} buffers SEC(".maps");

// One entry, read once a sample: `check` 1 to copy the stack at the sample's stack pointer
// always (ember's check of this walk against its DWARF unwinder); `generation` the rows'
// generation, which ember counts up whenever it gives a file's rows back (other rows may take
// their place); `wake_bytes` how full the ring of records wakes ember.
struct settings {
	u64 check;
	u64 generation;
	u64 wake_bytes;
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct settings);
} config SEC(".maps");

// Each process's version, in a slot by its pid: ember counts it up after it changes the
// process's mappings here (or forgets the process). Pids sharing a slot only forget each
// other's remembered frames.
#define VERSION_SLOTS 65536
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, VERSION_SLOTS);
	__type(key, u32);
	__type(value, u32);
} versions SEC(".maps");

// Frames found lately, per CPU, by process and address: a hot loop's frames are sampled
// again and again, and finding one anew takes a search of the process's mappings and one of
// the file's rows (a dozen steps). An entry holds the row's rule, the addresses it holds for
// (within its mapping) and the mapping; it answers only for the process's version and the
// rows' generation it was found with, so changed mappings, and rows given back and taken by
// another file, never answer for it.
#define MEMO_ENTRIES 2048
struct memo {
	u64 tag; // (version + generation) << 32 | pid
	u64 from, to;
	u64 rule;
	struct mapping map;
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MEMO_ENTRIES);
	__type(key, u32);
	__type(value, struct memo);
} memo SEC(".maps");

// The records, for ember to read: one ring for all CPUs (its size set by ember before
// loading), which costs a third of what a perf event's output costs a sample.
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} records SEC(".maps");

// Records the ring had no room for, per CPU (ember counts them as lost samples).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} lost SEC(".maps");

// A CPython process (src/python/layout.rs: the same offsets), set by ember when it finds one.
struct python {
	u64 runtime; // the address of _PyRuntime
	u32 interpreters_head, threads_head, tstate_next, tstate_tid;
	u32 cframe; // NO_OFFSET: the thread state holds the current frame itself
	u32 current_frame;
	u32 frame_code, frame_previous, frame_prev_instr, frame_owner;
	u32 entry_byte; // NO_OFFSET: a frame owned by the C stack marks each entry (3.12 on)
	u32 code_instructions, code_firstlineno, code_filename, code_qualname;
	// Read at once: a frame's first frame_size bytes, and code_size bytes of a code object
	// from code_from (every field above lies within them).
	u32 frame_size, code_from, code_size;
	u32 str_data; // where an ASCII str object's text begins
	u32 code_flags; // co_flags: a module's or a class's body lacks CO_NEWLOCALS
};
#define CO_NEWLOCALS 0x2
#define NO_OFFSET 0xffffffffu
#define FRAME_OWNED_BY_CSTACK 3

// Code objects whose names the program has sent, one per slot (code_slot), as it saw them.
// A frame whose code object is not here sends the object's names with the sample (struct
// name_block): a module's or a class's body is freed once it has run, often before ember
// could read it from the process. Another object that takes the slot has it sent again.
#define KNOWN_BITS 14
struct known_code {
	u64 code, filename, qualname;
	u32 pid;
	u32 first_line;
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << KNOWN_BITS);
	__type(key, u32);
	__type(value, struct known_code);
} known_codes SEC(".maps");

// A code object's names, sent after the sample's Python frames: the object (address, file
// name and qualified name pointers), the bytes of each name (NAME_* bits), and the text of
// each (its last bytes where it is longer).
#define NAME_FILE 256
#define NAME_QUAL 128
#define NAME_TAIL (1ULL << 16) // the name is longer: these are its last bytes
#define NAME_FAILED (1ULL << 63)
#define MAX_NAMES 16
struct name_block {
	u64 code, filename, qualname;
	u64 lens; // file name bytes | NAME_TAIL, qualified name's << 32
	u8 file[NAME_FILE];
	u8 qual[NAME_QUAL];
};
#define NAME_WORDS (sizeof(struct name_block) / 8)
struct names {
	struct name_block b[MAX_NAMES];
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct names);
} name_blocks SEC(".maps");

// How the Python walk ended.
enum {
	PY_NONE = 0,  // not a Python process, or a thread without a thread state
	PY_WHOLE = 1, // to the outermost frame
	PY_CUT = 2,   // unreadable, looping, or out of room
};
// Per frame: the code object, (instruction offset | entry << 31 | first line << 32), and
// the code object's file name and qualified name (pointers): ember reads the code object
// later and takes it for this one only if they are the same.
#define PY_FRAME_WORDS 4
#define PY_ENTRY (1ULL << 31)
#define MAX_PY_FRAMES 2048
#define MAX_PY_THREADS 4096

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, u32);
	__type(value, struct python);
} pythons SEC(".maps");

// A frame and a code object as read, per CPU: one read each instead of one per field.
#define PY_READ 128
struct py_read {
	u8 frame[PY_READ + 8]; // a word at any offset below PY_READ lies within
	u8 code[PY_READ + 8];
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct py_read);
} py_reads SEC(".maps");

// Thread → its thread state, as found last (checked again at each use).
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, u64);
} tstates SEC(".maps");

struct walk {
	u64 ip, sp, bp;
	u64 lookup;
	u32 bp_known;
	u32 n;
	u32 end;
	u32 pid;
	u32 cpu;
	u32 pad;
	u64 tag; // what the memo's entries hold for (struct memo)
	// The mapping and the row of the last frame, and the addresses they hold for
	// (recursion, and callers in the same function or file, look up nothing again).
	struct mapping map;
	u32 rule;
	u32 window_len; // the bytes of the stack window (0: none read yet)
	u64 row_from, row_to;
	u64 window_from; // where the stack window was read
};

// The interrupted thread's stack, read a window at a time, per CPU: a read from user memory
// costs ~140 ns for a word and ~370 ns for 1 KiB, and a walk reads a word or two a frame,
// mostly within a few hundred bytes of the last.
#define WINDOW 1024
#define BELOW_WORD 128 // a window read for a word starts this far below it
struct stack_window {
	u8 b[WINDOW + 8]; // a word at any offset below WINDOW lies within
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct stack_window);
} windows SEC(".maps");

// A binary search for the last entry whose start is at most `key`, among `count` entries:
// one bpf_loop step per halving (a loop of its own would make the verifier follow every
// path through it).
struct search {
	u64 key;
	u32 lo, hi;
	u32 first;         // rows: the file's first row
	struct process *p; // mappings: the process's
};

static long row_step(u64 index, void *ctx)
{
	struct search *s = ctx;
	if (s->lo >= s->hi)
		return 1;
	u32 mid = s->lo + (s->hi - s->lo) / 2;
	u32 key = s->first + mid;
	struct row *r = bpf_map_lookup_elem(&rows, &key);
	if (!r) {
		s->lo = 0;
		return 1;
	}
	if (r->pc <= s->key)
		s->lo = mid + 1;
	else
		s->hi = mid;
	return 0;
}

static long mapping_step(u64 index, void *ctx)
{
	struct search *s = ctx;
	if (s->lo >= s->hi)
		return 1;
	struct process *p = s->p;
	if (!p) {
		s->lo = 0;
		return 1;
	}
	u32 mid = s->lo + (s->hi - s->lo) / 2;
	if (p->m[mid & (MAX_MAPPINGS - 1)].start <= s->key)
		s->lo = mid + 1;
	else
		s->hi = mid;
	return 0;
}

// The mapping of process `p` that holds `addr`, or NULL.
static struct mapping *find_mapping(struct process *p, u64 addr)
{
	u32 count = p->count;
	struct search s = { .key = addr, .lo = 0, .hi = count < MAX_MAPPINGS ? count : MAX_MAPPINGS, .p = p };
	bpf_loop(10, mapping_step, &s, 0);
	if (s.lo == 0)
		return 0;
	struct mapping *m = &p->m[(s.lo - 1) & (MAX_MAPPINGS - 1)];
	return addr < m->end ? m : 0;
}

// Narrow search `s` of mapping `m`'s rows to those of the bucket that holds its key and
// the row that holds the next bucket's start: a few rows, near each other in memory.
static __always_inline void narrow(struct search *s, const struct mapping *m)
{
	u64 b = s->key >> (m->shift & 63);
	if (b + 1 >= m->buckets)
		return;
	u32 at = m->first - m->buckets + (u32)b;
	struct row *lo = bpf_map_lookup_elem(&rows, &at);
	at++;
	struct row *hi = bpf_map_lookup_elem(&rows, &at);
	if (!lo || !hi || lo->pc > hi->pc || hi->pc >= s->hi)
		return;
	s->lo = lo->pc;
	s->hi = hi->pc + 1;
}

// The row for `svma` among mapping `w->map`'s rows into `w->row`, with the addresses it
// holds for; 0 if there is none.
static int find_row(struct walk *w, u64 svma)
{
	u32 first = w->map.first, count = w->map.count;
	struct search s = { .key = svma, .lo = 0, .hi = count, .first = first };
	narrow(&s, &w->map);
	bpf_loop(33, row_step, &s, 0);
	if (s.lo == 0)
		return 0;
	u32 key = first + s.lo - 1;
	struct row *r = bpf_map_lookup_elem(&rows, &key);
	if (!r)
		return 0;
	w->rule = r->rule;
	w->row_from = r->pc;
	w->row_to = ~0ULL;
	if (s.lo < count) {
		key++;
		struct row *next = bpf_map_lookup_elem(&rows, &key);
		if (next)
			w->row_to = next->pc;
	}
	return 1;
}

// The slot of the frame at `addr` of process `pid` in the memo.
static __always_inline u32 memo_slot(u32 pid, u64 addr)
{
	return ((pid * 2654435761u) ^ (u32)(addr >> 4) ^ (u32)(addr >> 20)) & (MEMO_ENTRIES - 1);
}

// The mapping and the row for the frame at `w->lookup`, found anew; 0 if there is none.
static int find_frame(struct walk *w, u64 addr)
{
	if (!(w->map.count && addr >= w->map.start && addr < w->map.end)) {
		struct process *p = bpf_map_lookup_elem(&processes, &w->pid);
		if (!p)
			return 0;
		struct mapping *m = find_mapping(p, addr);
		if (!m)
			return 0;
		w->map = *m;
	}
	return find_row(w, addr - w->map.bias);
}

// The row for the frame at `w->lookup` into `w->rule`, with `w->map` its mapping: the last
// frame's where it holds, else the memo's, else found anew; 0 if there is none. A global
// function: the verifier checks it once, not once per path that calls it.
__attribute__((noinline)) int row_for(struct walk *w)
{
	if (!w)
		return 0;
	u64 addr = w->lookup;
	if (w->map.count && addr >= w->map.start && addr < w->map.end) {
		u64 svma = addr - w->map.bias;
		if (svma >= w->row_from && svma < w->row_to)
			return 1;
	}
	u32 slot = memo_slot(w->pid, addr);
	struct memo *m = bpf_map_lookup_elem(&memo, &slot);
	if (m && m->tag == w->tag && addr >= m->from && addr < m->to) {
		w->map = m->map;
		w->rule = m->rule;
		w->row_from = m->from - m->map.bias;
		w->row_to = m->to - m->map.bias;
		return 1;
	}
	if (!find_frame(w, addr))
		return 0;
	if (m) {
		// The addresses the row holds for, within its mapping.
		u64 from = w->row_from + w->map.bias, to = w->row_to + w->map.bias;
		if (w->row_to == ~0ULL || to > w->map.end)
			to = w->map.end;
		m->tag = w->tag;
		m->from = from > w->map.start ? from : w->map.start;
		m->to = to;
		m->rule = w->rule;
		m->map = w->map;
	}
	return 1;
}

static int read_word(u64 addr, u64 *v)
{
	return bpf_probe_read_user(v, sizeof(*v), (const void *)addr);
}

// Read the window of the stack from `addr`: WINDOW bytes, or where the stack's mapping ends
// sooner (its outermost frames), to the end of addr's page.
static int fill_window(struct walk *w, struct stack_window *win, u64 addr)
{
	w->window_len = 0;
	if (bpf_probe_read_user(win->b, WINDOW, (const void *)addr) == 0) {
		w->window_len = WINDOW;
	} else {
		u64 len = 4096 - (addr & 4095);
		if (len > WINDOW)
			len = WINDOW;
		if (len < 8 || bpf_probe_read_user(win->b, len & (WINDOW * 2 - 1), (const void *)addr))
			return 1;
		w->window_len = len;
	}
	w->window_from = addr;
	return 0;
}

// A word of the interrupted thread's stack, through its window.
static int stack_word(struct walk *w, u64 addr, u64 *v)
{
	u32 zero = 0;
	struct stack_window *win = bpf_map_lookup_elem(&windows, &zero);
	if (!win)
		return read_word(addr, v);
	if (!(addr >= w->window_from && addr + 8 <= w->window_from + w->window_len)) {
		// From just below addr (a return address: the frame's saved registers lie below
		// it, and its caller's frame above, where the next words are read), not from the
		// frame's stack pointer, which would fill the window with the frame's body (rustc's
		// large frames: 17 windows a sample instead of 10); from addr where it lies below
		// the stack pointer (an epilogue's popped rbp).
		u64 from = addr;
		if (addr >= w->sp)
			from = addr - w->sp > BELOW_WORD ? addr - BELOW_WORD : w->sp;
		if (fill_window(w, win, from))
			return read_word(addr, v);
		// A window cut short at its page's end may still miss it.
		if (!(addr >= w->window_from && addr + 8 <= w->window_from + w->window_len))
			return read_word(addr, v);
	}
	u64 off = addr - w->window_from;
	// Masked where it is used, behind a barrier (as in word_in).
	asm volatile("" : "+r"(off));
	*v = *(const u64 *)(win->b + (off & (WINDOW - 1)));
	return 0;
}

// One frame: find the caller of the frame at w->lookup; 1 ends the walk. A global
// function: the verifier checks it once, not for each state the loop around it may hold.
__attribute__((noinline)) int walk_frame(struct walk *w)
{
	if (!w)
		return 1;
	struct out_buf *buf = bpf_map_lookup_elem(&buffers, &w->cpu);
	if (!buf || !row_for(w)) {
		w->end = END_NO_ROW;
		return 1;
	}
	u32 kind = w->rule & 7;
	s64 slot = (s64)(signed char)((w->rule >> 3) & 0xff);
	s64 cfa_offset = (s64)((s32)w->rule >> 11) * 8;
	if (kind == ROW_STOP) {
		w->end = END_NO_ROW;
		return 1;
	}
	if (kind == ROW_ROOT) {
		w->end = END_ROOT;
		return 1;
	}
	u64 cfa;
	if (kind == ROW_CFA_RSP) {
		cfa = w->sp + cfa_offset;
	} else if (kind == ROW_CFA_RBP && w->bp_known) {
		cfa = w->bp + cfa_offset;
	} else if (kind == ROW_PLT) {
		cfa = w->sp + cfa_offset + ((s64)(w->ip & 15) >= slot ? 8 : 0);
	} else {
		w->end = END_UNSUPPORTED;
		return 1;
	}
	u64 ra, bp = w->bp;
	if (cfa <= w->sp || stack_word(w, cfa - 8, &ra)) {
		w->end = END_UNREADABLE;
		return 1;
	}
	if (kind == ROW_PLT) {
		// A PLT stub saves no register.
	} else if (slot == RBP_UNKNOWN) {
		w->bp_known = 0;
	} else if (slot != 0) {
		u64 at = cfa + slot * 8;
		if (stack_word(w, at, &bp)) {
			// An epilogue that popped rbp: it holds the caller's again (walk.rs).
			if (!(w->n == 1 && at < w->sp)) {
				w->end = END_UNREADABLE;
				return 1;
			}
			bp = w->bp;
		}
		w->bp = bp;
	}
	if (ra == 0) {
		w->end = END_ROOT;
		return 1;
	}
	w->ip = ra;
	w->sp = cfa;
	w->lookup = ra - 1;
	u32 at = HEADER_WORDS + w->n;
	if (w->n >= MAX_FRAMES || at >= BUF_BYTES / 8) {
		w->end = END_DEPTH;
		return 1;
	}
	buf->w[at] = w->lookup;
	w->n++;
	return 0;
}

static long step(u64 index, void *ctx)
{
	return walk_frame(ctx) ? 1 : 0;
}

// The user registers of the interrupted thread: the sample's own (`sample`: ip, sp, bp, cs)
// where it was in user space, else those saved at its entry to the kernel.
static int user_regs(u64 sample[4], u64 *ip, u64 *sp, u64 *bp)
{
	struct pt_regs regs;
	if ((sample[3] & 3) == 3) {
		*ip = sample[0];
		*sp = sample[1];
		*bp = sample[2];
		return 0;
	}
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *saved = (struct pt_regs *)bpf_task_pt_regs(task);
	if (bpf_probe_read_kernel(&regs, sizeof(regs), saved))
		return -1;
	*ip = regs.rip;
	*sp = regs.rsp;
	*bp = regs.rbp;
	return 0;
}

// Looking for a thread's thread state along its interpreter's list.
struct find_tstate {
	u64 t;
	u64 tid;
	u32 next, tid_at;
	u64 found;
};

static long tstate_step(u64 index, void *ctx)
{
	struct find_tstate *f = ctx;
	u64 tid;
	if (!f->t || read_word(f->t + f->tid_at, &tid))
		return 1;
	if (tid == f->tid) {
		f->found = f->t;
		return 1;
	}
	if (read_word(f->t + f->next, &f->t))
		f->t = 0;
	return 0;
}

// The thread state of thread `tid`, or 0.
static u64 thread_state(struct python *py, u32 tid)
{
	u64 *known = bpf_map_lookup_elem(&tstates, &tid);
	u64 t;
	if (known && !read_word(*known + py->tstate_tid, &t) && t == tid)
		return *known;
	u64 interp;
	if (read_word(py->runtime + py->interpreters_head, &interp) || !interp)
		return 0;
	struct find_tstate f = { .tid = tid, .next = py->tstate_next, .tid_at = py->tstate_tid };
	if (read_word(interp + py->threads_head, &f.t))
		return 0;
	bpf_loop(MAX_PY_THREADS, tstate_step, &f, 0);
	if (f.found)
		bpf_map_update_elem(&tstates, &tid, &f.found, BPF_ANY);
	return f.found;
}

// The Python walk: frame by frame from the thread's current frame.
struct py_walk {
	struct python py;
	u64 frame;
	u64 seen; // Brent's cycle check: a frame met again means the chain loops
	u32 steps, power;
	u32 at, end; // where the next frame goes in the buffer, and the first word past room
	u32 n, how;
	u32 cpu, names; // names: the name blocks taken
	u32 pid, pad;
};

// The word or byte at `off` of `size` bytes read at once; 1 where it does not lie within them.
// The offset is masked where it is used, behind a barrier: the verifier must see the bound
// on the very register that addresses the read, which the compiler would otherwise drop
// (it knows the check above implies it).
static __always_inline int word_in(const u8 *raw, u32 size, u32 off, u64 *v)
{
	if (off > PY_READ - 8 || off + 8 > size)
		return 1;
	asm volatile("" : "+r"(off));
	*v = *(const u64 *)(raw + (off & (PY_READ - 1)));
	return 0;
}

static __always_inline int byte_in(const u8 *raw, u32 size, u32 off, u8 *v)
{
	if (off >= size)
		return 1;
	asm volatile("" : "+r"(off));
	*v = raw[off & (PY_READ - 1)];
	return 0;
}

// The slot of code object `code` of process `pid` in known_codes.
static __always_inline u32 code_slot(u64 code, u32 pid)
{
	return ((code ^ ((u64)pid << 32)) * 0x9E3779B97F4A7C15ULL) >> (64 - KNOWN_BITS);
}

// The text of the str object at `str` into `to` (`room` bytes, a power of two): its bytes
// (| NAME_TAIL where only its last ones fit), or NAME_FAILED where it is not a compact ASCII
// string or cannot be read.
static __always_inline u64 read_name(u8 *to, u64 room, u64 str, u32 data)
{
	struct {
		u64 length, hash;
		u32 state;
	} h;
	if (!str || bpf_probe_read_user(&h, 20, (const void *)(str + 16)))
		return NAME_FAILED;
	// PyASCIIObject.state: compact (bit 5) and ascii (bit 6).
	if ((h.state & 0x60) != 0x60 || h.length > (1 << 20))
		return NAME_FAILED;
	u64 len = h.length, skip = 0, tail = 0;
	if (len > room - 1) {
		skip = len - (room - 1);
		len = room - 1;
		tail = NAME_TAIL;
	}
	asm volatile("" : "+r"(len));
	len &= room - 1;
	if (bpf_probe_read_user(to, len, (const void *)(str + data + skip)))
		return NAME_FAILED;
	return len | tail;
}

// The names of code object `code` into the next name block of walk `p`, and the object
// into its slot of known_codes, unless the slot holds it (its names were sent). A global
// function: checked once.
__attribute__((noinline)) int py_names(struct py_walk *p, u64 code, u64 filename, u64 qualname,
				       u64 first_line)
{
	if (!p)
		return 0;
	u32 zero = 0, slot = code_slot(code, p->pid);
	struct names *s = bpf_map_lookup_elem(&name_blocks, &zero);
	struct known_code *k = bpf_map_lookup_elem(&known_codes, &slot);
	u32 i = p->names;
	if (!s || !k || i >= MAX_NAMES)
		return 0;
	if (k->code == code && k->filename == filename && k->qualname == qualname &&
	    k->pid == p->pid && k->first_line == (u32)first_line)
		return 0;
	asm volatile("" : "+r"(i));
	struct name_block *b = &s->b[i & (MAX_NAMES - 1)];
	u64 file = read_name(b->file, NAME_FILE, filename, p->py.str_data);
	u64 qual = read_name(b->qual, NAME_QUAL, qualname, p->py.str_data);
	if ((file | qual) & NAME_FAILED)
		return 0;
	b->code = code;
	b->filename = filename;
	b->qualname = qualname;
	b->lens = file | (qual << 32);
	p->names = i + 1;
	k->code = code;
	k->filename = filename;
	k->qualname = qualname;
	k->pid = p->pid;
	k->first_line = first_line;
	return 1;
}

// The names of the frame last put in the buffer (it ends at word `at`), unless sent.
static __always_inline void inner_names(struct py_walk *p, struct out_buf *buf, u32 at)
{
	if (at < HEADER_WORDS + PY_FRAME_WORDS || at > BUF_BYTES / 8)
		return;
	asm volatile("" : "+r"(at));
	u32 from = (at - PY_FRAME_WORDS) & (BUF_BYTES / 8 - 1);
	if (from > BUF_BYTES / 8 - PY_FRAME_WORDS)
		return;
	u64 code = buf->w[from], first_line = buf->w[from + 1] >> 32;
	u64 filename = buf->w[from + 2], qualname = buf->w[from + 3];
	py_names(p, code, filename, qualname, first_line);
}

// One Python frame into the buffer; 1 ends the walk. A global function: the verifier checks
// it once, not once per path of the loop around it.
__attribute__((noinline)) int py_frame(struct py_walk *p)
{
	if (!p)
		return 1;
	struct out_buf *buf = bpf_map_lookup_elem(&buffers, &p->cpu);
	if (!buf)
		return 1;
	if (!p->frame) {
		p->how = PY_WHOLE;
		return 1;
	}
	if (p->frame == p->seen) {
		p->how = PY_CUT;
		return 1;
	}
	if (++p->steps == p->power) {
		p->seen = p->frame;
		p->power *= 2;
		p->steps = 0;
	}
	struct python *py = &p->py;
	u32 zero = 0;
	struct py_read *r = bpf_map_lookup_elem(&py_reads, &zero);
	u32 frame_size = py->frame_size, code_size = py->code_size;
	if (!r || frame_size == 0 || frame_size > PY_READ || code_size == 0 || code_size > PY_READ ||
	    bpf_probe_read_user(r->frame, frame_size, (const void *)p->frame)) {
		p->how = PY_CUT;
		return 1;
	}
	u64 code, prev_instr;
	u8 owner = 0, entry = 0;
	if (word_in(r->frame, frame_size, py->frame_code, &code) ||
	    word_in(r->frame, frame_size, py->frame_prev_instr, &prev_instr) ||
	    word_in(r->frame, frame_size, py->frame_previous, &p->frame) ||
	    byte_in(r->frame, frame_size, py->frame_owner, &owner)) {
		p->how = PY_CUT;
		return 1;
	}
	u32 at = p->at;
	if (py->entry_byte == NO_OFFSET) {
		if (owner == FRAME_OWNED_BY_CSTACK) {
			// Where a C-level call of the evaluation loop began: its innermost frame is
			// the one before.
			if (p->n > 0 && at >= HEADER_WORDS + PY_FRAME_WORDS && at < BUF_BYTES / 8)
				buf->w[at - PY_FRAME_WORDS + 1] |= PY_ENTRY;
			return 0;
		}
	} else if (byte_in(r->frame, frame_size, py->entry_byte, &entry)) {
		p->how = PY_CUT;
		return 1;
	}
	u64 first_line = 0, filename, qualname, flags = 0;
	u32 from = py->code_from;
	if (bpf_probe_read_user(r->code, code_size, (const void *)(code + from)) ||
	    word_in(r->code, code_size, py->code_firstlineno - from, &first_line) ||
	    word_in(r->code, code_size, py->code_filename - from, &filename) ||
	    word_in(r->code, code_size, py->code_qualname - from, &qualname) ||
	    word_in(r->code, code_size, py->code_flags - from, &flags)) {
		p->how = PY_CUT;
		return 1;
	}
	first_line &= 0xffffffff; // an int: the word read with it holds the next field too
	// A module's or a class's body is freed once it has run, often before ember reads it:
	// its names go with the first sample of it, and those of the frame it runs, which may
	// be as short-lived (a generator expression, a lambda, a 3.11 comprehension of the
	// body's own). Other frames are not looked up: a function's code lives as long as the
	// function, and a lookup would cost each frame.
	if (!(flags & CO_NEWLOCALS)) {
		py_names(p, code, filename, qualname, first_line);
		if (p->n > 0)
			inner_names(p, buf, at);
	}
	if (at > BUF_BYTES / 8 - PY_FRAME_WORDS || at + PY_FRAME_WORDS > p->end) {
		p->how = PY_CUT;
		return 1;
	}
	u64 start = code + py->code_instructions;
	u64 offset = prev_instr >= start ? ((prev_instr - start) / 2) & 0x7fffffff : 0;
	buf->w[at] = code;
	buf->w[at + 1] = offset | (entry ? PY_ENTRY : 0) | ((u64)first_line << 32);
	buf->w[at + 2] = filename;
	buf->w[at + 3] = qualname;
	p->at = at + PY_FRAME_WORDS;
	p->n++;
	return 0;
}

static long py_step(u64 index, void *ctx)
{
	return py_frame(ctx) ? 1 : 0;
}

// Where the Python walk of thread `tid` of process `p->py` begins: its innermost frame into
// `p->frame`, 1 if there is one to walk from (`p->how` says why not). A global function,
// checked once.
__attribute__((noinline)) int python_start(struct py_walk *p, u32 tid)
{
	if (!p)
		return 0;
	p->n = 0;
	p->how = PY_NONE;
	u64 t = thread_state(&p->py, tid);
	if (!t)
		return 0;
	p->how = PY_CUT;
	u64 cframe = t;
	if (p->py.cframe != NO_OFFSET && (read_word(t + p->py.cframe, &cframe) || !cframe))
		return 0;
	if (read_word(cframe + p->py.current_frame, &p->frame))
		return 0;
	return 1;
}

// Copy the stack at `sp` to the end of the record's buffer; returns the bytes copied. Near
// the top of a stack (the outermost frames) the stack's mapping ends before COPY_BYTES: then
// as many whole pages as can be read, from sp to the end of its page on.
// A global function: the verifier checks its five reads once, not once for each way the
// walk before it can have ended (which tripled the program's verification).
__attribute__((noinline)) u64 copy_stack(u32 cpu, u64 at, u64 sp)
{
	struct out_buf *buf = bpf_map_lookup_elem(&buffers, &cpu);
	if (!buf)
		return 0;
	// Masked: the verifier must see the bound on the very register it checks.
	void *to = (char *)buf->w + (at < COPY_NEAR ? (at & (COPY_NEAR - 8)) : COPY_AT);
	if (bpf_probe_read_user(to, COPY_BYTES, (const void *)sp) == 0)
		return COPY_BYTES;
	u64 edge = 4096 - (sp & 4095);
#pragma unroll
	for (int pages = 3; pages >= 0; pages--) {
		u64 len = edge + pages * 4096;
		if (len > COPY_BYTES)
			continue;
		if (bpf_probe_read_user(to, len, (const void *)sp) == 0)
			return len;
	}
	return 0;
}

// The name blocks the Python walk took (`n`), copied into the record at word `at`: how many.
// A global function: checked once.
__attribute__((noinline)) u32 append_names(u32 cpu, u32 at, u32 n)
{
	struct out_buf *buf = bpf_map_lookup_elem(&buffers, &cpu);
	u32 zero = 0;
	struct names *s = bpf_map_lookup_elem(&name_blocks, &zero);
	if (!buf || !s || n == 0 || n > MAX_NAMES || at > COPY_AT / 8 - MAX_NAMES * NAME_WORDS)
		return 0;
	asm volatile("" : "+r"(at), "+r"(n));
	at &= BUF_BYTES / 8 - 1;
	n &= 2 * MAX_NAMES - 1;
	if (at > COPY_AT / 8 - MAX_NAMES * NAME_WORDS || n > MAX_NAMES)
		return 0;
	if (bpf_probe_read_kernel(&buf->w[at], n * sizeof(struct name_block), s))
		return 0;
	return n;
}

// Put the record's first `size` bytes in the ring, waking ember as the ring comes to hold
// `wake_bytes` (it reads at its own pace until then; once past, a poll finds the ring
// readable without being woken); a record the ring has no room for is counted in `lost`.
static void send(struct out_buf *buf, u64 size, u64 wake_bytes)
{
	u64 held = bpf_ringbuf_query(&records, BPF_RB_AVAIL_DATA);
	int crossing = held < wake_bytes && held + size >= wake_bytes;
	u64 flags = crossing ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
	if (bpf_ringbuf_output(&records, buf, size & 0xffff, flags) == 0)
		return;
	u32 zero = 0;
	u64 *n = bpf_map_lookup_elem(&lost, &zero);
	if (n)
		*n += 1;
}

SEC("perf_event")
int unwind(struct bpf_perf_event_data *ctx)
{
	// The context is read at fixed offsets, before anything else (the verifier refuses a
	// context pointer the compiler moved).
	u64 sample[4];
	sample[0] = ctx->regs.rip;
	sample[1] = ctx->regs.rsp;
	sample[2] = ctx->regs.rbp;
	sample[3] = ctx->regs.cs;
	u64 time = bpf_ktime_get_ns();
	u64 id = bpf_get_current_pid_tgid();
	u32 cpu = bpf_get_smp_processor_id();
	struct out_buf *buf = bpf_map_lookup_elem(&buffers, &cpu);
	if (!buf)
		return 0;
	u32 zero = 0;
	struct settings *cfg = bpf_map_lookup_elem(&config, &zero);
	struct walk w = { .pid = id >> 32, .cpu = cpu };
	u32 version_slot = w.pid & (VERSION_SLOTS - 1);
	u32 *version = bpf_map_lookup_elem(&versions, &version_slot);
	u64 generation = cfg ? cfg->generation : 0;
	w.tag = ((version ? *version : 0) + generation) << 32 | w.pid;
	int unreadable = user_regs(sample, &w.ip, &w.sp, &w.bp) != 0;
	if (unreadable)
		w.ip = 0;
	u64 sample_ip = w.ip, sample_sp = w.sp, sample_bp = w.bp;
	if (w.ip != 0) {
		w.bp_known = 1;
		w.lookup = w.ip;
		buf->w[HEADER_WORDS] = w.ip;
		w.n = 1;
		w.end = END_DEPTH;
		bpf_loop(MAX_FRAMES, step, &w, 0);
	} else {
		// No user registers saved at the kernel's entry: a kernel thread, whose stack is
		// the kernel's alone.
		w.end = unreadable ? END_UNREADABLE : END_ROOT;
	}
	u32 n = w.n;
	if (n > MAX_FRAMES)
		n = MAX_FRAMES;
	// The kernel's frames after the user ones; a sample taken in user space has none (and
	// asking the kernel for them costs a tenth of the program's time).
	long k = 0;
	if ((sample[3] & 3) != 3)
		k = bpf_get_stack(ctx, &buf->w[HEADER_WORDS + n], MAX_KERNEL * 8, 0);
	u32 nkernel = k > 0 ? (u64)k / 8 : 0;
	if (nkernel > MAX_KERNEL)
		nkernel = MAX_KERNEL;
	u32 frames_end = HEADER_WORDS + n + nkernel;
	u32 npython = 0, python = PY_NONE, names = 0;
	struct python *py = bpf_map_lookup_elem(&pythons, &w.pid);
	if (py) {
		// Room is left after the frames for the names blocks.
		struct py_walk p = { .py = *py,
				     .at = frames_end,
				     .end = COPY_AT / 8 - MAX_NAMES * NAME_WORDS,
				     .cpu = cpu,
				     .pid = w.pid,
				     .power = 1 };
		if (python_start(&p, (u32)id))
			bpf_loop(MAX_PY_FRAMES, py_step, &p, 0);
		npython = p.n > MAX_PY_FRAMES ? MAX_PY_FRAMES : p.n;
		python = p.how;
		frames_end += npython * PY_FRAME_WORDS;
		if (p.names)
			names = append_names(cpu, frames_end, p.names);
		frames_end += names * NAME_WORDS;
	}
	// Where the walk handed over, the stack from there, for ember to go on; in a check, the
	// stack at the sample's stack pointer.
	u64 from = cfg && cfg->check ? 1 : 0;
	int handed_over = w.end == END_NO_ROW || w.end == END_UNSUPPORTED;
	u64 copy_sp = from ? sample_sp : w.sp;
	// The copy follows the frames (a record as long as what it holds, not 64 KiB); after
	// thousands of frames, at COPY_AT (frames end before it).
	u64 copy_at = (u64)frames_end * 8;
	if (copy_at >= COPY_NEAR)
		copy_at = COPY_AT;
	u64 copy = 0;
	if (from || (n > 0 && handed_over))
		copy = copy_stack(cpu, copy_at, copy_sp);
	buf->w[0] = MAGIC;
	buf->w[1] = nkernel;
	buf->w[2] = n;
	buf->w[3] = w.end;
	buf->w[4] = w.ip;
	buf->w[5] = w.sp;
	buf->w[6] = w.bp_known ? w.bp : 0;
	buf->w[7] = copy | (copy_at << 32);
	buf->w[8] = from;
	buf->w[9] = sample_ip;
	buf->w[10] = sample_sp;
	buf->w[11] = sample_bp;
	buf->w[12] = npython;
	buf->w[13] = python | (names << 8);
	buf->w[14] = time;
	buf->w[15] = id;
	buf->w[16] = cpu;
	u64 size = copy ? copy_at + copy : (u64)frames_end * 8;
	if (size > RAW_MAX)
		size = RAW_MAX;
	send(buf, size, cfg ? cfg->wake_bytes : 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
