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
#include "tracee.h"

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
#define N_ENTRIES 3

static const char *const entry_names[N_ENTRIES] = {
	"__vdso_clock_gettime", "__vdso_gettimeofday", "__vdso_time",
};

struct entry {
	uint64_t addr;
	uint8_t orig[PATCH_LEN];
};

const char *tool = "timeskew";

/* The entries' patched ranges, for stop_clear. */
static int stop_entries(const struct entry es[N_ENTRIES])
{
	struct range rs[N_ENTRIES];
	for (int e = 0; e < N_ENTRIES; e++) {
		rs[e].addr = es[e].addr;
		rs[e].len = PATCH_LEN;
	}
	return stop_clear(rs, N_ENTRIES);
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
	if (stop_entries(es) != 0) {
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
	if (stop_entries(es) != 0) {
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
