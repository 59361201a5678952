/* Code placed in a target process by timeskew: the vDSO's clock_gettime, gettimeofday and time
 * entries jump here. Each replacement asks the kernel directly (the vDSO is patched, so it cannot
 * be called), then adds the configured offset for the selected clocks until the deadline.
 * Freestanding: no libc, no relocations, position independent; the layout is fixed by
 * skew_payload.ld (entry jumps at 0, 8, 16; the configuration at 32). */
#include <stdint.h>

struct skew_config {
	uint64_t magic;        /* SKEW_MAGIC: timeskew checks it before writing the fields */
	int64_t offset_ns;     /* added to every selected clock */
	uint64_t clock_mask;   /* bit n selects clock id n */
	int64_t deadline_ns;   /* CLOCK_REALTIME ns after which no offset is added; 0: none */
};

__attribute__((section(".payload_config"), used))
volatile struct skew_config skew_config = { 0x31305745534B4243ull /* SKEW_MAGIC in timeskew.c */, 0, 0, 0 };

struct ts { int64_t sec; int64_t nsec; };
struct tv { int64_t sec; int64_t usec; };

static inline long raw_syscall2(long nr, long a, long b)
{
	long ret;
	__asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b) : "rcx", "r11", "memory");
	return ret;
}

#define NR_GETTIMEOFDAY 96
#define NR_CLOCK_GETTIME 228
#define NS 1000000000LL

/* Whether the offset still applies: the deadline is read against the real CLOCK_REALTIME so the
 * skew ends on time even if nothing is left to restore the process. */
static int active(void)
{
	int64_t deadline = skew_config.deadline_ns;
	if (deadline == 0)
		return 1;
	struct ts now;
	if (raw_syscall2(NR_CLOCK_GETTIME, 0, (long)&now) != 0)
		return 1;
	return now.sec * NS + now.nsec < deadline;
}

static int selected(long clk)
{
	return clk >= 0 && clk < 64 && (skew_config.clock_mask >> clk) & 1;
}

static void shift(struct ts *t)
{
	int64_t total = t->nsec + skew_config.offset_ns % NS;
	int64_t sec = t->sec + skew_config.offset_ns / NS;
	if (total < 0) { total += NS; sec -= 1; }
	else if (total >= NS) { total -= NS; sec += 1; }
	t->sec = sec;
	t->nsec = total;
}

long skew_clock_gettime(long clk, struct ts *t)
{
	long r = raw_syscall2(NR_CLOCK_GETTIME, clk, (long)t);
	if (r == 0 && selected(clk) && active())
		shift(t);
	return r;
}

long skew_gettimeofday(struct tv *tv, void *tz)
{
	if (tv == 0 || !selected(0))
		return raw_syscall2(NR_GETTIMEOFDAY, (long)tv, (long)tz);
	struct ts t;
	long r = raw_syscall2(NR_CLOCK_GETTIME, 0, (long)&t);
	if (r != 0)
		return r;
	if (tz != 0) {
		r = raw_syscall2(NR_GETTIMEOFDAY, 0, (long)tz);
		if (r != 0)
			return r;
	}
	if (active())
		shift(&t);
	tv->sec = t.sec;
	tv->usec = t.nsec / 1000;
	return 0;
}

long skew_time(int64_t *out)
{
	struct ts t;
	long r = raw_syscall2(NR_CLOCK_GETTIME, 0, (long)&t);
	if (r != 0)
		return r;
	if (selected(0) && active())
		shift(&t);
	if (out != 0)
		*out = t.sec;
	return t.sec;
}

/* Fixed entry points: a 5-byte jmp each, 8 bytes apart, so the injector needs no symbol table. */
__asm__(".section .payload_entries,\"ax\",@progbits\n"
	".byte 0xe9\n.long skew_clock_gettime - . - 4\n.balign 8, 0xcc\n"
	".byte 0xe9\n.long skew_gettimeofday - . - 4\n.balign 8, 0xcc\n"
	".byte 0xe9\n.long skew_time - . - 4\n.balign 32, 0xcc\n"
	".text\n");
