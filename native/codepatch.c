/* codepatch: points functions of a running process at code injected into it, and undoes it.
 * GolangChaos's helper: the payload (built by services/injector/backends/gosql.py) decides what
 * the redirected functions do; this program only places it, in one stop of the process.
 *
 *   codepatch inject PID PAYLOAD_HEX RELOCS PAGE ADDR:ORIGHEX:OFFSET...
 *       checks that each ADDR still holds ORIGHEX (14 bytes), stops every thread clear of those
 *       bytes (and of PAGE's payload), takes PAGE (hex: executable memory of the target nothing
 *       else uses, e.g. the padding after an executable's headers) or, for "-", maps a fresh page
 *       (or more) in the target, adds the page's address to the 8-byte words at the payload
 *       offsets RELOCS (comma-separated, "-" for none), writes the payload there and replaces
 *       each ADDR's 14 bytes with `jmp *0(%rip)` to page + OFFSET, then resumes every thread;
 *       prints "page ADDR" and "stopped_us N". With a PAGE, no register of the target is ever
 *       changed: a kill -9 at any moment leaves it running (see README.md).
 *   codepatch restore PID ADDR:HEX...
 *       stops every thread clear of those bytes, writes HEX back at each ADDR, resumes; prints
 *       "stopped_us N"
 *
 * Exit status: 0 done, 2 usage, 3 the process is gone, 4 an ADDR does not hold ORIGHEX (already
 * patched, or another binary), 1 any other failure (the message on stderr). Threads are never
 * left stopped, and nothing is ever left as a breakpoint: every path detaches what it attached.
 */
#define _GNU_SOURCE
#include "tracee.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JUMP_LEN 14 /* ff 25 00 00 00 00 + the 8-byte destination */
#define MAX_SITES 16
#define MAX_PAYLOAD 16384

const char *tool = "codepatch";

struct site {
	uint64_t addr;
	uint8_t orig[JUMP_LEN];
	uint64_t offset;
};

static int parse_site(char *arg, struct site *s, int with_offset)
{
	char *colon = strchr(arg, ':');
	if (!colon)
		return -1;
	*colon = 0;
	char *hex = colon + 1, *end;
	s->addr = strtoull(arg, &end, 16);
	if (*end || !s->addr)
		return -1;
	s->offset = 0;
	if (with_offset) {
		char *c2 = strchr(hex, ':');
		if (!c2)
			return -1;
		*c2 = 0;
		s->offset = strtoull(c2 + 1, &end, 10);
		if (*end)
			return -1;
	}
	return parse_hex(hex, s->orig, JUMP_LEN);
}

static int stop_sites(const struct site *ss, int n, uint64_t page, size_t plen)
{
	struct range rs[MAX_SITES + 1];
	for (int i = 0; i < n; i++) {
		rs[i].addr = ss[i].addr;
		rs[i].len = JUMP_LEN;
	}
	if (page) { /* a thread inside an earlier payload there: from its first byte on */
		rs[n].addr = page - 1;
		rs[n++].len = plen + 1;
	}
	if (stop_clear(rs, n) == 0)
		return 0;
	int err = errno;
	resume_all();
	errno = err;
	return -1;
}

static int cmd_inject(const char *payload_hex, char *relocs, const char *at, int argc, char **argv)
{
	static uint8_t payload[MAX_PAYLOAD];
	size_t plen = strlen(payload_hex) / 2;
	if (plen == 0 || plen > MAX_PAYLOAD || parse_hex(payload_hex, payload, plen) != 0) {
		fprintf(stderr, "codepatch: bad payload (hex, at most %d bytes)\n", MAX_PAYLOAD);
		return 2;
	}
	struct site ss[MAX_SITES];
	int n = 0;
	for (int i = 0; i < argc; i++) {
		if (n == MAX_SITES || parse_site(argv[i], &ss[n], 1) != 0 || ss[n].offset + 8 > plen) {
			fprintf(stderr, "codepatch: bad site %s (ADDR:HEX of %d bytes:OFFSET)\n", argv[i], JUMP_LEN);
			return 2;
		}
		n++;
	}
	for (int i = 0; i < n; i++) {
		uint8_t now[JUMP_LEN];
		if (read_mem(ss[i].addr, now, JUMP_LEN) != 0)
			die_errno(gone() ? 3 : 1, "reading a site");
		if (memcmp(now, ss[i].orig, JUMP_LEN) != 0) {
			fprintf(stderr, "codepatch: %d: the code at %" PRIx64 " is not what was planned"
					" (already patched?)\n", target, ss[i].addr);
			return 4;
		}
	}
	size_t map_len = (plen + 4095) & ~(size_t)4095;
	uint64_t page = 0;
	if (strcmp(at, "-") != 0) {
		char *end;
		page = strtoull(at, &end, 16);
		if (*end || !page) {
			fprintf(stderr, "codepatch: bad PAGE %s (hex, or - to map one)\n", at);
			return 2;
		}
	}
	uint64_t t0 = now_us();
	if (stop_sites(ss, n, page, plen) != 0)
		die_errno(gone() ? 3 : 1, "stopping the threads");
	int ok = page ? 1 : remote_mmap(ss[0].addr, map_len, &page) == 0;
	if (ok && strcmp(relocs, "-") != 0) {
		for (char *tok = strtok(relocs, ","); ok && tok; tok = strtok(NULL, ",")) {
			uint64_t off = strtoull(tok, NULL, 10), v;
			if (off + 8 > plen) {
				errno = EINVAL;
				ok = 0;
				break;
			}
			memcpy(&v, payload + off, 8);
			v += page;
			memcpy(payload + off, &v, 8);
		}
	}
	ok = ok && write_mem(page, payload, plen) == 0;
	for (int i = 0; ok && i < n; i++) {
		uint8_t jump[JUMP_LEN] = {0xff, 0x25, 0, 0, 0, 0};
		uint64_t dest = page + ss[i].offset;
		memcpy(jump + 6, &dest, 8);
		ok = write_mem(ss[i].addr, jump, JUMP_LEN) == 0;
		if (!ok) /* undo the sites already redirected */
			for (int u = 0; u < i; u++)
				write_mem(ss[u].addr, ss[u].orig, JUMP_LEN);
	}
	int err = errno;
	resume_all();
	uint64_t stopped = now_us() - t0;
	if (!ok) {
		errno = err;
		die_errno(gone() ? 3 : 1, "patching");
	}
	printf("page %" PRIx64 "\nstopped_us %" PRIu64 "\n", page, stopped);
	return 0;
}

static int cmd_restore(int argc, char **argv)
{
	struct site ss[MAX_SITES];
	int n = 0;
	for (int i = 0; i < argc; i++) {
		if (n == MAX_SITES || parse_site(argv[i], &ss[n], 0) != 0) {
			fprintf(stderr, "codepatch: bad site %s (ADDR:HEX of %d bytes)\n", argv[i], JUMP_LEN);
			return 2;
		}
		n++;
	}
	uint64_t t0 = now_us();
	if (stop_sites(ss, n, 0, 0) != 0)
		die_errno(gone() ? 3 : 1, "stopping the threads");
	int ok = 1;
	for (int i = 0; ok && i < n; i++)
		ok = write_mem(ss[i].addr, ss[i].orig, JUMP_LEN) == 0;
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
	if (argc < 4)
		goto usage;
	target = atoi(argv[2]);
	if (target <= 0)
		goto usage;
	open_mem();
	if (strcmp(argv[1], "inject") == 0 && argc >= 7)
		return cmd_inject(argv[3], argv[4], argv[5], argc - 6, argv + 6);
	if (strcmp(argv[1], "restore") == 0)
		return cmd_restore(argc - 3, argv + 3);
usage:
	fprintf(stderr, "usage: codepatch inject PID PAYLOAD_HEX RELOCS PAGE|- ADDR:HEX:OFFSET... | restore PID ADDR:HEX...\n");
	return 2;
}
