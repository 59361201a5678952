/* timeskew: shifts the clocks a running process reads through its vDSO, and undoes it.
 *
 *   timeskew plan PID
 *       prints the vDSO entries it would patch and their original bytes (nothing is written), so
 *       the caller can journal them before anything changes:
 *         patch ADDR HEX            one line per entry (clock_gettime, gettimeofday, time)
 *   timeskew inject PID OFFSET_NS CLOCK_MASK DEADLINE_NS PAYLOAD_FILE
 *       stops every thread, maps one page holding the payload (skew_payload.bin with its
 *       configuration filled in), points each vDSO entry at it, resumes every thread; prints the
 *       plan lines, "payload ADDR" and "stopped_us N" (how long the process was stopped)
 *   timeskew restore PID ADDR:HEX...
 *       stops every thread, writes the original bytes back, resumes; prints "stopped_us N"
 *
 * Exit status: 0 done, 2 usage, 3 the process is gone, 4 already skewed, 1 any other failure
 * (the message on stderr). Threads are never left stopped: every path detaches what it attached.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SKEW_MAGIC 0x31305745534B4243ull
#define PATCH_LEN 12 /* movabs $addr, %rax; jmp *%rax */
#define MAX_THREADS 4096
#define N_ENTRIES 3

static const char *const entry_names[N_ENTRIES] = {
	"__vdso_clock_gettime", "__vdso_gettimeofday", "__vdso_time",
};

struct entry {
	uint64_t addr;
	uint8_t orig[PATCH_LEN];
};

static int memfd = -1;
static pid_t target;

static void die_errno(int code, const char *what)
{
	fprintf(stderr, "timeskew: %s: %s\n", what, strerror(errno));
	exit(code);
}

static int gone(void)
{
	return errno == ESRCH || errno == ENOENT;
}

static int read_mem(uint64_t addr, void *buf, size_t len)
{
	return pread(memfd, buf, len, (off_t)addr) == (ssize_t)len ? 0 : -1;
}

static int write_mem(uint64_t addr, const void *buf, size_t len)
{
	return pwrite(memfd, buf, len, (off_t)addr) == (ssize_t)len ? 0 : -1;
}

static uint64_t now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

/* The vDSO's start and end in the target, from /proc/PID/maps. */
static int find_vdso(uint64_t *start, uint64_t *end)
{
	char path[64], line[512];
	snprintf(path, sizeof path, "/proc/%d/maps", target);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	int found = 0;
	while (fgets(line, sizeof line, f)) {
		if (strstr(line, "[vdso]")) {
			found = sscanf(line, "%" SCNx64 "-%" SCNx64, start, end) == 2;
			break;
		}
	}
	fclose(f);
	if (!found)
		errno = ENOEXEC;
	return found ? 0 : -1;
}

/* Finds the three entries in the vDSO's dynamic symbol table and reads their first bytes. */
static int plan(struct entry out[N_ENTRIES])
{
	uint64_t start, end;
	if (find_vdso(&start, &end) != 0)
		return -1;
	size_t size = (size_t)(end - start);
	uint8_t *img = malloc(size);
	if (!img || read_mem(start, img, size) != 0) {
		free(img);
		return -1;
	}
	Elf64_Ehdr *eh = (Elf64_Ehdr *)img;
	int rc = -1;
	if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_shoff + (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr) > size)
		goto bad;
	Elf64_Shdr *sh = (Elf64_Shdr *)(img + eh->e_shoff);
	Elf64_Sym *syms = NULL;
	const char *strs = NULL;
	size_t nsyms = 0;
	for (int i = 0; i < eh->e_shnum; i++) {
		if (sh[i].sh_type != SHT_DYNSYM || sh[i].sh_link >= eh->e_shnum)
			continue;
		if (sh[i].sh_offset + sh[i].sh_size > size || sh[sh[i].sh_link].sh_offset >= size)
			goto bad;
		syms = (Elf64_Sym *)(img + sh[i].sh_offset);
		nsyms = sh[i].sh_size / sizeof(Elf64_Sym);
		strs = (const char *)(img + sh[sh[i].sh_link].sh_offset);
	}
	if (!syms)
		goto bad;
	/* The vDSO is linked at 0 (or at a base its first PT_LOAD names): addresses are relative. */
	uint64_t base = 0;
	Elf64_Phdr *ph = (Elf64_Phdr *)(img + eh->e_phoff);
	for (int i = 0; i < eh->e_phnum; i++)
		if (ph[i].p_type == PT_LOAD) {
			base = ph[i].p_vaddr - ph[i].p_offset;
			break;
		}
	for (int e = 0; e < N_ENTRIES; e++) {
		out[e].addr = 0;
		for (size_t s = 0; s < nsyms; s++) {
			if (strcmp(strs + syms[s].st_name, entry_names[e]) != 0)
				continue;
			uint64_t off = syms[s].st_value - base;
			if (syms[s].st_size < PATCH_LEN || off + PATCH_LEN > size)
				goto bad;
			out[e].addr = start + off;
			memcpy(out[e].orig, img + off, PATCH_LEN);
		}
		if (!out[e].addr)
			goto bad;
	}
	rc = 0;
bad:
	if (rc != 0)
		errno = ENOEXEC;
	free(img);
	return rc;
}

static void print_plan(const struct entry es[N_ENTRIES])
{
	for (int e = 0; e < N_ENTRIES; e++) {
		printf("patch %" PRIx64 " ", es[e].addr);
		for (int i = 0; i < PATCH_LEN; i++)
			printf("%02x", es[e].orig[i]);
		printf("\n");
	}
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

static void resume_all(void)
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

/* Whether some thread is about to execute bytes a patch would change. */
static int thread_inside(const struct entry es[N_ENTRIES])
{
	for (int i = 0; i < nthreads; i++) {
		struct user_regs_struct r;
		if (!threads[i].tid || ptrace(PTRACE_GETREGS, threads[i].tid, 0, &r) != 0)
			continue;
		for (int e = 0; e < N_ENTRIES; e++)
			if (r.rip > es[e].addr && r.rip < es[e].addr + PATCH_LEN)
				return 1;
	}
	return 0;
}

/* Stops every thread at a point where none is inside a patched range (retrying briefly). */
static int stop_clear(const struct entry es[N_ENTRIES])
{
	for (int attempt = 0; attempt < 50; attempt++) {
		if (stop_all() != 0)
			return -1;
		if (!thread_inside(es))
			return 0;
		resume_all();
		usleep(1000);
	}
	errno = EBUSY;
	return -1;
}

/* Runs mmap in the target: a thread stopped by the interrupt executes one `syscall` placed at
 * `scratch` (bytes the caller is about to overwrite anyway) under single-step, then gets its
 * registers back. orig_rax = -1 keeps the kernel from restarting the syscall the thread was in;
 * restoring the saved registers later lets that restart happen as it would have. */
static int remote_mmap(uint64_t scratch, size_t len, uint64_t *out)
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
	r.rax = SYS_mmap;
	r.orig_rax = (uint64_t)-1;
	r.rdi = 0;
	r.rsi = len;
	r.rdx = 5;     /* PROT_READ | PROT_EXEC: written through /proc/PID/mem, never by the target */
	r.r10 = 0x22;  /* MAP_PRIVATE | MAP_ANONYMOUS */
	r.r8 = (uint64_t)-1;
	r.r9 = 0;
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

static void open_mem(void)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/mem", target);
	memfd = open(path, O_RDWR);
	if (memfd < 0)
		die_errno(gone() ? 3 : 1, "open /proc/PID/mem");
}

static int parse_hex(const char *s, uint8_t *out, size_t len)
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

static int is_patched(const uint8_t *b)
{
	return b[0] == 0x48 && b[1] == 0xb8 && b[10] == 0xff && b[11] == 0xe0;
}

static int cmd_plan(void)
{
	struct entry es[N_ENTRIES];
	if (plan(es) != 0)
		die_errno(gone() ? 3 : 1, "reading the vDSO");
	print_plan(es);
	return 0;
}

static int cmd_inject(int64_t offset_ns, uint64_t mask, int64_t deadline_ns, const char *payload_path)
{
	uint8_t payload[4096];
	int pf = open(payload_path, O_RDONLY);
	if (pf < 0)
		die_errno(1, payload_path);
	ssize_t plen = read(pf, payload, sizeof payload);
	close(pf);
	uint64_t magic;
	if (plen < 64 || (memcpy(&magic, payload + 32, 8), magic != SKEW_MAGIC)) {
		fprintf(stderr, "timeskew: %s is not a skew payload\n", payload_path);
		return 1;
	}
	memcpy(payload + 40, &offset_ns, 8);
	memcpy(payload + 48, &mask, 8);
	memcpy(payload + 56, &deadline_ns, 8);

	struct entry es[N_ENTRIES];
	if (plan(es) != 0)
		die_errno(gone() ? 3 : 1, "reading the vDSO");
	for (int e = 0; e < N_ENTRIES; e++)
		if (is_patched(es[e].orig)) {
			fprintf(stderr, "timeskew: %d is already skewed\n", target);
			return 4;
		}
	uint64_t t0 = now_us();
	if (stop_clear(es) != 0) {
		int err = errno;
		resume_all();
		errno = err;
		die_errno(gone() ? 3 : 1, "stopping the threads");
	}
	uint64_t page;
	int ok = remote_mmap(es[0].addr, 4096, &page) == 0 && write_mem(page, payload, (size_t)plen) == 0;
	for (int e = 0; ok && e < N_ENTRIES; e++) {
		uint8_t patch[PATCH_LEN] = {0x48, 0xb8};
		uint64_t dest = page + 8u * (unsigned)e;
		memcpy(patch + 2, &dest, 8);
		patch[10] = 0xff;
		patch[11] = 0xe0;
		ok = write_mem(es[e].addr, patch, PATCH_LEN) == 0;
		if (!ok) /* undo the entries already pointed at the payload */
			for (int u = 0; u < e; u++)
				write_mem(es[u].addr, es[u].orig, PATCH_LEN);
	}
	int err = errno;
	resume_all();
	uint64_t stopped = now_us() - t0;
	if (!ok) {
		errno = err;
		die_errno(gone() ? 3 : 1, "patching");
	}
	print_plan(es);
	printf("payload %" PRIx64 "\nstopped_us %" PRIu64 "\n", page, stopped);
	return 0;
}

static int cmd_restore(int argc, char **argv)
{
	struct entry es[N_ENTRIES];
	int n = 0;
	for (int i = 0; i < argc; i++) {
		char *colon = strchr(argv[i], ':');
		if (n == N_ENTRIES || !colon || parse_hex(colon + 1, es[n].orig, PATCH_LEN) != 0) {
			fprintf(stderr, "timeskew: bad patch %s (ADDR:HEX of %d bytes)\n", argv[i], PATCH_LEN);
			return 2;
		}
		*colon = 0;
		es[n++].addr = strtoull(argv[i], NULL, 16);
	}
	for (int i = n; i < N_ENTRIES; i++)
		es[i] = es[0];
	uint64_t t0 = now_us();
	if (stop_clear(es) != 0) {
		int err = errno;
		resume_all();
		errno = err;
		die_errno(gone() ? 3 : 1, "stopping the threads");
	}
	int ok = 1;
	for (int i = 0; ok && i < n; i++)
		ok = write_mem(es[i].addr, es[i].orig, PATCH_LEN) == 0;
	int err = errno;
	resume_all();
	if (!ok) {
		errno = err;
		die_errno(gone() ? 3 : 1, "restoring");
	}
	printf("stopped_us %" PRIu64 "\n", now_us() - t0);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		goto usage;
	target = atoi(argv[2]);
	if (target <= 0)
		goto usage;
	open_mem();
	if (strcmp(argv[1], "plan") == 0 && argc == 3)
		return cmd_plan();
	if (strcmp(argv[1], "inject") == 0 && argc == 7)
		return cmd_inject(strtoll(argv[3], NULL, 10), strtoull(argv[4], NULL, 10),
				  strtoll(argv[5], NULL, 10), argv[6]);
	if (strcmp(argv[1], "restore") == 0 && argc >= 4)
		return cmd_restore(argc - 3, argv + 3);
usage:
	fprintf(stderr, "usage: timeskew plan PID | inject PID OFFSET_NS CLOCK_MASK DEADLINE_NS PAYLOAD"
			" | restore PID ADDR:HEX...\n");
	return 2;
}
