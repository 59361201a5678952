/* tracee: see tracee.h. */
#define _GNU_SOURCE
#include "tracee.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 4096

pid_t target;
static int memfd = -1;

void die_errno(int code, const char *what)
{
	fprintf(stderr, "%s: %s: %s\n", tool, what, strerror(errno));
	exit(code);
}

int gone(void)
{
	return errno == ESRCH || errno == ENOENT;
}

int read_mem(uint64_t addr, void *buf, size_t len)
{
	return pread(memfd, buf, len, (off_t)addr) == (ssize_t)len ? 0 : -1;
}

int write_mem(uint64_t addr, const void *buf, size_t len)
{
	return pwrite(memfd, buf, len, (off_t)addr) == (ssize_t)len ? 0 : -1;
}

uint64_t now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

/* --- stopping and resuming every thread ------------------------------------------------- */

struct thread {
	pid_t tid;
	int pending_signal; /* a signal the stop intercepted, handed back at detach */
	int in_event_stop;  /* stopped by PTRACE_INTERRUPT (usable for a syscall) */
};

static struct thread threads[MAX_THREADS];
static int nthreads;

static int attached(pid_t tid)
{
	for (int i = 0; i < nthreads; i++)
		if (threads[i].tid == tid)
			return 1;
	return 0;
}

static int stop_one(pid_t tid)
{
	if (ptrace(PTRACE_SEIZE, tid, 0, 0) != 0)
		return gone() ? 0 : -1; /* a thread that exited meanwhile needs nothing */
	struct thread *t = &threads[nthreads++];
	t->tid = tid;
	t->pending_signal = 0;
	t->in_event_stop = 0;
	if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) != 0)
		return -1;
	for (;;) {
		int status;
		if (waitpid(tid, &status, __WALL) != tid)
			return -1;
		if (WIFEXITED(status) || WIFSIGNALED(status)) {
			t->tid = 0;
			return 0;
		}
		if (!WIFSTOPPED(status))
			continue;
		if (status >> 16 == PTRACE_EVENT_STOP) {
			t->in_event_stop = 1;
			return 0;
		}
		/* A signal arrived first: keep it for detach and wait for the interrupt's stop. */
		t->pending_signal = WSTOPSIG(status);
		if (ptrace(PTRACE_CONT, tid, 0, 0) != 0)
			return -1;
		if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) != 0)
			return -1;
	}
}

void resume_all(void)
{
	for (int i = 0; i < nthreads; i++)
		if (threads[i].tid)
			ptrace(PTRACE_DETACH, threads[i].tid, 0, (void *)(long)threads[i].pending_signal);
	nthreads = 0;
}

/* Stops every thread, rescanning /proc/PID/task until no new one appeared (threads created while
 * the first ones were being stopped). */
static int stop_all(void)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/task", target);
	for (int round = 0; round < 100; round++) {
		DIR *d = opendir(path);
		if (!d)
			return -1;
		int added = 0;
		struct dirent *de;
		while ((de = readdir(d))) {
			pid_t tid = atoi(de->d_name);
			if (tid <= 0 || attached(tid))
				continue;
			if (nthreads == MAX_THREADS || stop_one(tid) != 0) {
				closedir(d);
				return -1;
			}
			added = 1;
		}
		closedir(d);
		if (!added)
			return 0;
	}
	errno = EAGAIN;
	return -1;
}

/* Whether some thread is about to execute bytes a rewrite would change. */
static int thread_inside(const struct range *rs, int n)
{
	for (int i = 0; i < nthreads; i++) {
		struct user_regs_struct r;
		if (!threads[i].tid || ptrace(PTRACE_GETREGS, threads[i].tid, 0, &r) != 0)
			continue;
		for (int e = 0; e < n; e++)
			if (r.rip > rs[e].addr && r.rip < rs[e].addr + rs[e].len)
				return 1;
	}
	return 0;
}

/* Stops every thread at a point where none is inside a patched range (retrying briefly). */
int stop_clear(const struct range *rs, int n)
{
	for (int attempt = 0; attempt < 50; attempt++) {
		if (stop_all() != 0)
			return -1;
		if (!thread_inside(rs, n))
			return 0;
		resume_all();
		usleep(1000);
	}
	errno = EBUSY;
	return -1;
}

/* Runs one syscall in the target: a thread stopped by the interrupt executes one `syscall` placed at
 * `scratch` (its two bytes are put back afterwards) under single-step, then gets its
 * registers back. orig_rax = -1 keeps the kernel from restarting the syscall the thread was in;
 * restoring the saved registers later lets that restart happen as it would have. */
int remote_syscall(uint64_t scratch, long nr, const uint64_t args[6], uint64_t *out)
{
	struct thread *t = NULL;
	for (int i = 0; i < nthreads; i++)
		if (threads[i].tid && threads[i].in_event_stop) {
			t = &threads[i];
			break;
		}
	if (!t) {
		errno = ESRCH;
		return -1;
	}
	struct user_regs_struct saved, r;
	uint8_t saved_code[2];
	static const uint8_t syscall_insn[2] = {0x0f, 0x05};
	if (ptrace(PTRACE_GETREGS, t->tid, 0, &saved) != 0 || read_mem(scratch, saved_code, 2) != 0)
		return -1;
	if (write_mem(scratch, syscall_insn, 2) != 0)
		return -1;
	r = saved;
	r.rip = scratch;
	r.rax = (uint64_t)nr;
	r.orig_rax = (uint64_t)-1;
	r.rdi = args[0];
	r.rsi = args[1];
	r.rdx = args[2];
	r.r10 = args[3];
	r.r8 = args[4];
	r.r9 = args[5];
	int rc = -1;
	int status;
	if (ptrace(PTRACE_SETREGS, t->tid, 0, &r) != 0 || ptrace(PTRACE_SINGLESTEP, t->tid, 0, 0) != 0)
		goto out;
	for (;;) {
		if (waitpid(t->tid, &status, __WALL) != t->tid)
			goto out;
		if (!WIFSTOPPED(status)) {
			t->tid = 0;
			errno = ESRCH;
			goto out;
		}
		if (WSTOPSIG(status) == SIGTRAP)
			break;
		/* Another signal stopped it first: keep it for detach and step again. */
		t->pending_signal = WSTOPSIG(status);
		if (ptrace(PTRACE_SINGLESTEP, t->tid, 0, 0) != 0)
			goto out;
	}
	if (ptrace(PTRACE_GETREGS, t->tid, 0, &r) != 0)
		goto out;
	if ((int64_t)r.rax < 0 && (int64_t)r.rax > -4096) {
		errno = (int)-(int64_t)r.rax;
		goto out;
	}
	*out = r.rax;
	rc = 0;
out:
	if (t->tid)
		ptrace(PTRACE_SETREGS, t->tid, 0, &saved);
	write_mem(scratch, saved_code, 2);
	return rc;
}

int remote_mmap(uint64_t scratch, size_t len, uint64_t *out)
{
	/* PROT_READ | PROT_EXEC: written through /proc/PID/mem, never by the target;
	 * MAP_PRIVATE | MAP_ANONYMOUS. */
	const uint64_t args[6] = {0, len, 5, 0x22, (uint64_t)-1, 0};
	return remote_syscall(scratch, SYS_mmap, args, out);
}

int try_open_mem(void)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/mem", target);
	if (memfd >= 0)
		close(memfd);
	memfd = open(path, O_RDWR | O_CLOEXEC);
	return memfd < 0 ? -1 : 0;
}

void open_mem(void)
{
	if (try_open_mem() != 0)
		die_errno(gone() ? 3 : 1, "open /proc/PID/mem");
}

int parse_hex(const char *s, uint8_t *out, size_t len)
{
	if (strlen(s) != len * 2)
		return -1;
	for (size_t i = 0; i < len; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (uint8_t)v;
	}
	return 0;
}

