"""The timed loops of `uffd-uabi bench`, in C.

A benchmark of UFFDIO_MOVE against UFFDIO_COPY has to time the kernel, not
the interpreter: a Python loop around one ioctl per page costs as much as
the ioctl.  So every timed loop here is C, with its clock readings inside
it, and Python only sets up memory, calls a loop once per repeat and reads
back a `struct bench_run`.

The C is compiled after the model's declarations (conformance.bindings), so
every request code, struct layout, mode and feature bit the loops use is
the spec's, checked by the compiler; nothing of the uABI is written here.
The same loops are also built into a small program with no Python in it
(`bare_program`), so that the harness's own overhead can be shown beside a
bare C loop.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from types import ModuleType

from conformance import bindings
from spec import Spec

NAME = "bench"

LOOPS_CDEF = """
#define BENCH_COPY ...
#define BENCH_MOVE ...
#define BENCH_OBJ ...
#define MREMAP_MAYMOVE ...
#define MREMAP_FIXED ...
struct bench_run {
	uint64_t ns;
	uint64_t release_ns;
	uint64_t other_ns;
	uint64_t calls;
	uint64_t pages;
	uint64_t faults;
	uint64_t fresh;
	uint64_t bad;
	int64_t err;
	char where[64];
};
void bench_fill(uintptr_t addr, size_t pages, size_t page_size, uint64_t first);
uint64_t bench_check(uintptr_t addr, size_t pages, size_t page_size, uint64_t first);
int bench_faults(int uffd, int method, uintptr_t dst, uintptr_t src, uintptr_t buf, size_t pages,
                 size_t page_size, struct bench_run *r);
int bench_compact(int uffd, int method, uintptr_t from, uintptr_t to, uintptr_t spare, uintptr_t buf,
                  size_t heap_pages, unsigned live_permille, uint64_t seed, size_t page_size,
                  int with_mutator, struct bench_run *r);
size_t bench_compacted_pages(size_t heap_pages, unsigned live_permille, uint64_t seed, size_t page_size);
int bench_percall(int uffd, int method, uintptr_t dst, uintptr_t src, size_t pages, size_t per_call,
                  size_t page_size, struct bench_run *r);
int bench_mremap(uintptr_t old, size_t len, uintptr_t new_addr, struct bench_run *r);
void bench_nothing(void);
void bench_set_other_cpu(int cpu);
uint64_t bench_clock(size_t readings);
"""

LOOPS_C = r"""
/* ---- tools/benchloops.py: the timed loops of `uffd-uabi bench` ---- */
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define BENCH_COPY 0
#define BENCH_MOVE 1
#define BENCH_OBJ 64		/* bytes per heap object */
#define BENCH_WAIT_MS 5000	/* a fault that does not arrive in this time is an error */

struct bench_run {
	uint64_t ns;		/* the timed part, CLOCK_MONOTONIC */
	uint64_t release_ns;	/* of which: giving memory back (compaction) */
	uint64_t other_ns;	/* the other thread's own time (faulter, mutator) */
	uint64_t calls;		/* ioctls (or mremaps) in the timed part */
	uint64_t pages;		/* pages that reached their destination */
	uint64_t faults;	/* page-fault messages read from the userfaultfd */
	uint64_t fresh;		/* pages allocated for lack of one to recycle */
	uint64_t bad;		/* pages found with the wrong contents afterwards */
	int64_t err;		/* the first error, -errno; 0 for none */
	char where[64];		/* what failed */
};

static uint64_t bench_now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static int bench_fail(struct bench_run *r, int err, const char *where)
{
	if (!r->err) {
		r->err = -(int64_t)(err ? err : EIO);
		snprintf(r->where, sizeof(r->where), "%s", where);
	}
	return -1;
}

/* Word w of the page (or heap object) numbered id: no two pages share one. */
static inline uint64_t bench_word(uint64_t id, uint64_t w)
{
	return (id + 1) * 0x9E3779B97F4A7C15ull ^ (w << 48 | w);
}

static void bench_fill_page(char *page, uint64_t id, size_t page_size)
{
	uint64_t *p = (uint64_t *)page;

	for (size_t w = 0; w < page_size / 8; w++)
		p[w] = bench_word(id, w);
}

void bench_fill(uintptr_t addr, size_t pages, size_t page_size, uint64_t first)
{
	for (size_t i = 0; i < pages; i++)
		bench_fill_page((char *)addr + i * page_size, first + i, page_size);
}

/* Pages of [addr, addr + pages) that do not hold what bench_fill wrote. */
uint64_t bench_check(uintptr_t addr, size_t pages, size_t page_size, uint64_t first)
{
	uint64_t bad = 0;

	for (size_t i = 0; i < pages; i++) {
		const uint64_t *p = (const uint64_t *)(addr + i * page_size);
		for (size_t w = 0; w < page_size / 8; w++)
			if (p[w] != bench_word(first + i, w)) {
				bad++;
				break;
			}
	}
	return bad;
}

static uint64_t bench_rand(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *state = x;
}

/* One UFFDIO_COPY or UFFDIO_MOVE of len bytes; 0 or the errno. */
static int bench_install(int uffd, int method, uintptr_t dst, uintptr_t src, size_t len)
{
	if (method == BENCH_COPY) {
		struct uffdio_copy copy = { .dst = dst, .src = src, .len = len, .mode = 0 };
		return ioctl(uffd, UFFDIO_COPY, &copy) < 0 ? errno : 0;
	}
	struct uffdio_move move = { .dst = dst, .src = src, .len = len, .mode = 0 };
	return ioctl(uffd, UFFDIO_MOVE, &move) < 0 ? errno : 0;
}

static const char *bench_name(int method)
{
	return method == BENCH_COPY ? "UFFDIO_COPY" : "UFFDIO_MOVE";
}

/* After an error: unregister the range, which wakes a thread blocked on a
   fault there, so that it can be joined. */
static void bench_release(int uffd, uintptr_t start, size_t len)
{
	struct uffdio_range range = { .start = start, .len = len };

	ioctl(uffd, UFFDIO_UNREGISTER, &range);
}

/* The next page-fault address, 0 when the userfaultfd has none (wait: how
   long to poll for one; 0 for not at all), or -1 after an error. */
static intptr_t bench_next_fault(int uffd, int wait, struct bench_run *r)
{
	for (;;) {
		struct uffd_msg msg;
		ssize_t n = read(uffd, &msg, sizeof(msg));

		if (n == (ssize_t)sizeof(msg)) {
			if (msg.event != UFFD_EVENT_PAGEFAULT)
				continue;
			r->faults++;
			return (intptr_t)msg.arg[1];
		}
		if (n >= 0 || errno != EAGAIN)
			return bench_fail(r, n >= 0 ? EIO : errno, "read(userfaultfd)");
		if (!wait)
			return 0;
		struct pollfd p = { .fd = uffd, .events = POLLIN };
		int k = poll(&p, 1, wait);
		if (k == 0)
			return bench_fail(r, ETIMEDOUT, "no page fault arrived");
		if (k < 0 && errno != EINTR)
			return bench_fail(r, errno, "poll(userfaultfd)");
	}
}

/* ---- fault resolution: a thread reads every page of a registered range in
   order; each missing fault is resolved by UFFDIO_COPY from a buffer, or by
   UFFDIO_MOVE of a page freshly allocated (faulted in) to hold the data. */

struct bench_reader {
	uintptr_t base;
	size_t pages, page_size;
	const uint32_t *order;	/* NULL: in address order */
	const uint32_t *expect;	/* the id of each page's first word; NULL: the page's index */
	uint64_t bad, ns;
	int started;		/* set when the thread runs */
};

static void *bench_reader_run(void *arg)
{
	struct bench_reader *t = arg;
	uint64_t start = bench_now();

	__atomic_store_n(&t->started, 1, __ATOMIC_RELEASE);

	for (size_t k = 0; k < t->pages; k++) {
		size_t i = t->order ? t->order[k] : k;
		uint64_t v = *(volatile uint64_t *)(t->base + i * t->page_size);
		if (v != bench_word(t->expect ? t->expect[i] : i, 0))
			t->bad++;
	}
	t->ns = bench_now() - start;
	return NULL;
}

/* The CPU the second thread runs on; -1: wherever the scheduler puts it.
   The caller pins its own thread to another, so that the two run side by
   side on every repeat instead of sometimes taking turns on one CPU. */
static int bench_other_cpu = -1;

void bench_set_other_cpu(int cpu)
{
	bench_other_cpu = cpu;
}

static int bench_spawn(pthread_t *thread, struct bench_reader *reader)
{
	pthread_attr_t attr;
	cpu_set_t set;
	int e = pthread_attr_init(&attr);

	if (e)
		return e;
	if (bench_other_cpu >= 0) {
		CPU_ZERO(&set);
		CPU_SET(bench_other_cpu, &set);
		e = pthread_attr_setaffinity_np(&attr, sizeof(set), &set);
	}
	if (!e)
		e = pthread_create(thread, &attr, bench_reader_run, reader);
	pthread_attr_destroy(&attr);
	return e;
}

int bench_faults(int uffd, int method, uintptr_t dst, uintptr_t src, uintptr_t buf, size_t pages,
			size_t page_size, struct bench_run *r)
{
	struct bench_reader reader = { dst, pages, page_size, NULL, NULL, 0, 0, 0 };
	size_t len = pages * page_size, done = 0;
	pthread_t thread;
	uint64_t start;
	int e;

	memset(r, 0, sizeof(*r));
	if (madvise((void *)dst, len, MADV_DONTNEED) < 0 || madvise((void *)src, len, MADV_DONTNEED) < 0)
		return bench_fail(r, errno, "madvise(MADV_DONTNEED)");
	start = bench_now();
	e = bench_spawn(&thread, &reader);
	if (e)
		return bench_fail(r, e, "pthread_create");
	while (done < pages) {
		intptr_t addr = bench_next_fault(uffd, BENCH_WAIT_MS, r);
		if (addr < 0)
			break;
		uintptr_t page = (uintptr_t)addr & ~(uintptr_t)(page_size - 1);
		if (page < dst || page >= dst + len)
			continue;
		size_t i = (page - dst) / page_size;
		char *from = method == BENCH_COPY ? (char *)buf : (char *)src + i * page_size;
		bench_fill_page(from, i, page_size);	/* for MOVE: the allocation */
		r->calls++;
		e = bench_install(uffd, method, page, (uintptr_t)from, page_size);
		if (e == EEXIST)
			continue;	/* a fault reported twice: resolved already */
		if (e) {
			bench_fail(r, e, bench_name(method));
			break;
		}
		done++;
	}
	if (r->err)
		bench_release(uffd, dst, len);
	pthread_join(thread, NULL);
	r->ns = bench_now() - start;
	r->other_ns = reader.ns;
	r->pages = done;
	r->bad = reader.bad + (r->err ? 0 : bench_check(dst, pages, page_size, 0));
	return r->err ? -1 : 0;
}

/* ---- compaction: a heap of 64-byte objects, some live, in `from`; the
   compactor slides the live ones, in order, into `to` (registered), page by
   page, while a mutator thread reads the pages of `to` in random order; a
   page the mutator faults on is compacted next.  COPY gathers each page in
   one buffer, UFFDIO_COPYs it, and gives `from` back with MADV_DONTNEED at
   the end; MOVE gathers each page in a page of `from` whose objects have all
   been moved out already (a fresh page from `spare` when there is none) and
   UFFDIO_MOVEs it, so only the pages left over are given back.  Without
   the mutator (with_mutator 0) the compactor runs alone. */

struct bench_heap {
	size_t per_page, heap_pages, nlive, used;
	uint32_t *live;		/* object numbers of the live objects, ascending */
	uint32_t *expect;	/* per page of `to`: the object its first word belongs to */
	uint32_t *order;	/* the mutator's order of the pages of `to` */
	uint32_t *refs;		/* per page of `from`: pages of `to` still to take objects from it */
	uint32_t *pool;		/* pages of `from` free for reuse */
	unsigned char *done;	/* per page of `to` */
	size_t npool;
};

static void bench_heap_free(struct bench_heap *h)
{
	free(h->live);
	free(h->expect);
	free(h->order);
	free(h->refs);
	free(h->pool);
	free(h->done);
}

static int bench_heap_make(struct bench_heap *h, size_t heap_pages, unsigned live_permille, uint64_t seed,
				size_t page_size)
{
	uint64_t state = seed | 1;

	memset(h, 0, sizeof(*h));
	h->per_page = page_size / BENCH_OBJ;
	h->heap_pages = heap_pages;
	h->live = malloc(heap_pages * h->per_page * sizeof(uint32_t));
	if (!h->live)
		return -1;
	for (size_t k = 0; k < heap_pages * h->per_page; k++)
		if (bench_rand(&state) % 1000 < live_permille)
			h->live[h->nlive++] = (uint32_t)k;
	h->used = (h->nlive + h->per_page - 1) / h->per_page;
	h->expect = malloc((h->used + 1) * sizeof(uint32_t));
	h->order = malloc((h->used + 1) * sizeof(uint32_t));
	h->refs = calloc(heap_pages, sizeof(uint32_t));
	h->pool = malloc(heap_pages * sizeof(uint32_t));
	h->done = calloc(h->used + 1, 1);
	if (!h->expect || !h->order || !h->refs || !h->pool || !h->done)
		return -1;
	for (size_t j = 0; j < h->used; j++) {
		size_t first = j * h->per_page, end = first + h->per_page, last = SIZE_MAX;
		h->expect[j] = h->live[first];
		h->order[j] = (uint32_t)j;
		for (size_t s = first; s < end && s < h->nlive; s++) {
			size_t f = h->live[s] / h->per_page;
			if (f != last)
				h->refs[f]++;
			last = f;
		}
	}
	for (size_t j = h->used; j > 1; j--) {	/* Fisher-Yates */
		size_t k = bench_rand(&state) % j;
		uint32_t t = h->order[j - 1];
		h->order[j - 1] = h->order[k];
		h->order[k] = t;
	}
	for (size_t f = 0; f < heap_pages; f++)
		if (!h->refs[f])
			h->pool[h->npool++] = (uint32_t)f;
	return 0;
}

size_t bench_compacted_pages(size_t heap_pages, unsigned live_permille, uint64_t seed, size_t page_size)
{
	struct bench_heap h;
	size_t used = bench_heap_make(&h, heap_pages, live_permille, seed, page_size) ? 0 : h.used;

	bench_heap_free(&h);
	return used;
}

static void bench_fill_heap(uintptr_t from, size_t heap_pages, size_t page_size)
{
	for (size_t k = 0; k < heap_pages * page_size / BENCH_OBJ; k++) {
		uint64_t *o = (uint64_t *)(from + k * BENCH_OBJ);
		for (size_t w = 0; w < BENCH_OBJ / 8; w++)
			o[w] = bench_word(k, w);
	}
}

static int bench_compact_page(int uffd, int method, struct bench_heap *h, size_t j, uintptr_t from,
				uintptr_t to, uintptr_t spare, uintptr_t buf, size_t page_size,
				struct bench_run *r)
{
	size_t first = j * h->per_page, end = first + h->per_page, last = SIZE_MAX;
	char *page = (char *)buf;
	int e;

	if (method == BENCH_MOVE) {
		if (h->npool)
			page = (char *)from + (size_t)h->pool[--h->npool] * page_size;
		else
			page = (char *)spare + r->fresh++ * page_size;
	}
	for (size_t s = first; s < end; s++) {
		char *slot = page + (s - first) * BENCH_OBJ;
		if (s < h->nlive)
			memcpy(slot, (char *)from + (size_t)h->live[s] * BENCH_OBJ, BENCH_OBJ);
		else
			memset(slot, 0, BENCH_OBJ);
	}
	r->calls++;
	e = bench_install(uffd, method, to + j * page_size, (uintptr_t)page, page_size);
	if (e)
		return bench_fail(r, e, bench_name(method));
	h->done[j] = 1;
	r->pages++;
	if (method == BENCH_MOVE)
		for (size_t s = first; s < end && s < h->nlive; s++) {
			size_t f = h->live[s] / h->per_page;
			if (f != last && --h->refs[f] == 0)
				h->pool[h->npool++] = (uint32_t)f;
			last = f;
		}
	return 0;
}

int bench_compact(int uffd, int method, uintptr_t from, uintptr_t to, uintptr_t spare, uintptr_t buf,
			size_t heap_pages, unsigned live_permille, uint64_t seed, size_t page_size,
			int with_mutator, struct bench_run *r)
{
	size_t len = heap_pages * page_size;
	struct bench_heap h;
	struct bench_reader mutator;
	pthread_t thread;
	uint64_t start, release;
	int e;

	memset(r, 0, sizeof(*r));
	if (bench_heap_make(&h, heap_pages, live_permille, seed, page_size)) {
		bench_heap_free(&h);
		return bench_fail(r, ENOMEM, "malloc");
	}
	if (madvise((void *)to, len, MADV_DONTNEED) < 0 || madvise((void *)spare, len, MADV_DONTNEED) < 0 ||
		madvise((void *)from, len, MADV_DONTNEED) < 0) {
		bench_heap_free(&h);
		return bench_fail(r, errno, "madvise(MADV_DONTNEED)");
	}
	bench_fill_heap(from, heap_pages, page_size);
	mutator = (struct bench_reader){ to, h.used, page_size, h.order, h.expect, 0, 0, 0 };

	if (with_mutator) {
		e = bench_spawn(&thread, &mutator);
		if (e) {
			bench_heap_free(&h);
			return bench_fail(r, e, "pthread_create");
		}
		while (!__atomic_load_n(&mutator.started, __ATOMIC_ACQUIRE))
			sched_yield();	/* the two run side by side from the start */
	}
	start = bench_now();
	for (size_t i = 0; i < h.used && !r->err; i++) {
		intptr_t addr;
		while ((addr = bench_next_fault(uffd, 0, r)) > 0) {
			size_t j = ((uintptr_t)addr - to) / page_size;
			if ((uintptr_t)addr >= to && j < h.used && !h.done[j] &&
				bench_compact_page(uffd, method, &h, j, from, to, spare, buf, page_size, r))
				break;
		}
		if (!r->err && !h.done[i])
			bench_compact_page(uffd, method, &h, i, from, to, spare, buf, page_size, r);
	}
	release = bench_now();
	if (!r->err && (madvise((void *)from, len, MADV_DONTNEED) < 0 ||
			madvise((void *)spare, len, MADV_DONTNEED) < 0))
		bench_fail(r, errno, "madvise(MADV_DONTNEED)");
	r->ns = bench_now() - start;
	r->release_ns = r->ns - (release - start);
	if (r->err)
		bench_release(uffd, to, len);
	if (with_mutator)
		pthread_join(thread, NULL);
	r->other_ns = mutator.ns;
	r->bad = mutator.bad;
	if (!r->err)
		for (size_t j = 0; j < h.used; j++) {
			for (size_t s = j * h.per_page; s < (j + 1) * h.per_page && s < h.nlive; s++) {
				const uint64_t *o = (const uint64_t *)(to + s * BENCH_OBJ);
				size_t w = 0;
				while (w < BENCH_OBJ / 8 && o[w] == bench_word(h.live[s], w))
					w++;
				if (w < BENCH_OBJ / 8) {
					r->bad++;
					break;
				}
			}
		}
	bench_heap_free(&h);
	return r->err ? -1 : 0;
}

/* ---- the cost per call: `pages` pages from src to dst, per_call pages per
   ioctl, nothing else: dst must be empty and src populated (the caller
   empties dst, and checks it afterwards with bench_check). */

int bench_percall(int uffd, int method, uintptr_t dst, uintptr_t src, size_t pages, size_t per_call,
			size_t page_size, struct bench_run *r)
{
	uint64_t start;

	memset(r, 0, sizeof(*r));
	start = bench_now();
	for (size_t off = 0; off < pages; off += per_call) {
		size_t n = pages - off < per_call ? pages - off : per_call;
		int e = bench_install(uffd, method, dst + off * page_size, src + off * page_size, n * page_size);
		r->calls++;
		if (e) {
			bench_fail(r, e, bench_name(method));
			break;
		}
		r->pages += n;
	}
	r->ns = bench_now() - start;
	return r->err ? -1 : 0;
}

/* ---- mremap, the other way to move swapped-out pages */

int bench_mremap(uintptr_t old, size_t len, uintptr_t new_addr, struct bench_run *r)
{
	uint64_t start;
	void *p;

	memset(r, 0, sizeof(*r));
	start = bench_now();
	p = mremap((void *)old, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)new_addr);
	r->ns = bench_now() - start;
	r->calls = 1;
	if (p == MAP_FAILED)
		return bench_fail(r, errno, "mremap");
	return 0;
}

/* ---- the harness itself: the cost of a call from Python, of a clock reading */

void bench_nothing(void)
{
}

uint64_t bench_clock(size_t readings)
{
	uint64_t start = bench_now();

	for (size_t i = 0; i < readings; i++)
		(void)bench_now();
	return bench_now() - start;
}
"""

# The bare program: bench_percall with no Python in the process.  It opens
# its own userfaultfd and maps its own memory, then prints the nanoseconds
# of each timed pass, one a line, after one untimed warm-up pass.
MAIN_C = r"""
/* ---- tools/benchloops.py: the bare program ---- */
static char *bench_map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED || madvise(p, len, MADV_NOHUGEPAGE) < 0)
		return NULL;
	return p;
}

int main(int argc, char **argv)
{
	size_t page_size = (size_t)sysconf(_SC_PAGESIZE), pages, per_call, repeats, len;
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_MOVE };
	struct bench_run run;
	int method, uffd;
	char *a, *b;

	if (argc != 5) {
		fprintf(stderr, "usage: %s copy|move PAGES PER_CALL REPEATS\n", argv[0]);
		return 2;
	}
	method = strcmp(argv[1], "copy") == 0 ? BENCH_COPY : BENCH_MOVE;
	pages = strtoul(argv[2], NULL, 0);
	per_call = strtoul(argv[3], NULL, 0);
	repeats = strtoul(argv[4], NULL, 0);
	len = pages * page_size;
	uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) < 0) {
		perror("userfaultfd");
		return 1;
	}
	a = bench_map(len);
	b = bench_map(len);
	if (!a || !b) {
		perror("mmap");
		return 1;
	}
	bench_fill((uintptr_t)a, pages, page_size, 0);	/* before a is registered */
	for (int i = 0; i < 2; i++) {
		struct uffdio_register reg = { .range = { .start = (uintptr_t)(i ? b : a), .len = len },
						.mode = UFFDIO_REGISTER_MODE_MISSING };
		if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) {
			perror("UFFDIO_REGISTER");
			return 1;
		}
	}
	for (size_t k = 0; k <= repeats; k++) {
		char *dst = b, *src = a;
		if (method == BENCH_MOVE && k % 2) {	/* back and forth */
			dst = a;
			src = b;
		}
		if (method == BENCH_COPY && madvise(dst, len, MADV_DONTNEED) < 0) {
			perror("madvise");
			return 1;
		}
		if (bench_percall(uffd, method, (uintptr_t)dst, (uintptr_t)src, pages, per_call, page_size, &run)) {
			fprintf(stderr, "%s: %s\n", run.where, strerror((int)-run.err));
			return 1;
		}
		if (bench_check((uintptr_t)dst, pages, page_size, 0)) {
			fprintf(stderr, "%s: wrong contents after the pass\n", argv[1]);
			return 1;
		}
		if (k)
			printf("%llu\n", (unsigned long long)run.ns);
	}
	return 0;
}
"""


def extra() -> tuple[str, str, str]:
    """What conformance.bindings compiles beside the model."""
    return (NAME, LOOPS_CDEF, LOOPS_C)


def load(spec: Spec) -> ModuleType:
    """The loops, compiled with the model's structs and numbers (cached)."""
    return bindings.load(spec, extra())


def _compiler() -> list[str]:
    """The compiler and flags Python builds its extensions with, so the bare
    program and the cffi module are the same code."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    flags = sysconfig.get_config_var("CFLAGS") or "-O2"
    return [*shlex.split(cc), *shlex.split(flags)]


def bare_program(spec: Spec) -> Path:
    """The bare program, compiled once per source into build/cffi/ and reused."""
    source = bindings.c_source(spec, extra()) + MAIN_C
    command = _compiler()
    digest = hashlib.sha256("\0".join([source, *command]).encode()).hexdigest()[:16]
    target = bindings.CACHE / f"bare-{digest}"
    program = target / "bench-bare"
    if program.exists():
        return program
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".bare-", dir=target.parent))
    try:
        (work / "bench-bare.c").write_text(source)
        done = subprocess.run([*command, "-o", str(work / "bench-bare"), str(work / "bench-bare.c"),
                               "-lpthread"], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"compiling the bare program failed:\n{done.stderr}")
        try:
            os.rename(work, target)
        except OSError:
            if not program.exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return program
