/* fdswitch: re-opens a process's open files under a directory on whatever is mounted there now,
 * IOChaos's way to move files a target opened before its volume was covered by iofs onto iofs
 * (and back once iofs is detached), as Chaos Mesh's toda does.
 *
 *   fdswitch PID DIR [--from-mnt MOUNT_ID]
 *
 * Every regular file PID has open whose path (as PID sees it) is DIR or under it, and whose device
 * is not the device DIR resolves to in PID's mount namespace now; with --from-mnt, every file open
 * on that mount instead (fdinfo's mnt_id: also a mount already detached, whose files PID sees
 * relative to its root, and one whose FUSE server is dead). Each is re-opened inside PID by its
 * path under DIR with the same flags (less O_CREAT, O_EXCL, O_TRUNC) and put at the same offset
 * and descriptor number: PID's threads are stopped (tracee.c),
 * one of them runs openat, lseek, dup3 and close, then every thread is resumed. Files deleted
 * since they were opened are left alone. Prints how many descriptors were switched.
 * Exit status: 0 done (also when nothing needed switching), 2 usage, 3 the process is gone,
 * 1 any other failure (the message on stderr).
 */
#define _GNU_SOURCE
#include "tracee.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_FDS 1024

const char *tool = "fdswitch";

struct open_file {
	int fd;
	uint64_t pos;
	uint64_t flags;
	char path[PATH_MAX];
};

static int under(const char *path, const char *dir)
{
	size_t n = strlen(dir);
	while (n > 1 && dir[n - 1] == '/')
		n--;
	return strncmp(path, dir, n) == 0 && (path[n] == 0 || path[n] == '/');
}

static int fdinfo(int fd, uint64_t *pos, uint64_t *flags, long *mnt)
{
	char p[64], line[256];
	snprintf(p, sizeof p, "/proc/%d/fdinfo/%d", target, fd);
	FILE *f = fopen(p, "r");
	if (!f)
		return -1;
	int got = 0;
	while (fgets(line, sizeof line, f)) {
		got += sscanf(line, "pos: %" SCNu64, pos) == 1;
		got += sscanf(line, "flags: %" SCNo64, flags) == 1;
		sscanf(line, "mnt_id: %ld", mnt);
	}
	fclose(f);
	return got == 2 ? 0 : -1;
}

static uint64_t vdso_base(void)
{
	char p[64], line[512];
	snprintf(p, sizeof p, "/proc/%d/maps", target);
	FILE *f = fopen(p, "r");
	uint64_t base = 0;
	while (f && fgets(line, sizeof line, f))
		if (strstr(line, "[vdso]")) {
			sscanf(line, "%" SCNx64, &base);
			break;
		}
	if (f)
		fclose(f);
	return base;
}

static int collect(const char *dir, long from_mnt, struct open_file *out)
{
	char p[PATH_MAX + 64];
	struct stat want;
	snprintf(p, sizeof p, "/proc/%d/root%s", target, dir);
	if (stat(p, &want) != 0)
		die_errno(gone() ? 3 : 1, "stat DIR in the target's mount namespace");
	snprintf(p, sizeof p, "/proc/%d/fd", target);
	DIR *d = opendir(p);
	if (!d)
		die_errno(gone() ? 3 : 1, "listing /proc/PID/fd");
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) && n < MAX_FDS) {
		if (e->d_name[0] == '.')
			continue;
		struct open_file *o = &out[n];
		o->fd = atoi(e->d_name);
		snprintf(p, sizeof p, "/proc/%d/fd/%d", target, o->fd);
		ssize_t len = readlink(p, o->path, sizeof o->path - 1);
		if (len <= 0)
			continue;
		o->path[len] = 0;
		long mnt = -1;
		if (o->path[0] != '/' || strstr(o->path, " (deleted)") || fdinfo(o->fd, &o->pos, &o->flags, &mnt) != 0)
			continue;
		struct stat st;
		int have = stat(p, &st) == 0;
		if (have && !S_ISREG(st.st_mode))
			continue;
		if (from_mnt >= 0) {
			if (mnt != from_mnt)
				continue;
			if (!under(o->path, dir)) { /* seen from a detached mount: relative to its root */
				char rel[PATH_MAX];
				snprintf(rel, sizeof rel, "%s", o->path);
				if (snprintf(o->path, sizeof o->path, "%s%s", dir, rel) >= (int)sizeof o->path)
					continue;
			}
		} else if (!under(o->path, dir) || (have && st.st_dev == want.st_dev)) {
			continue;
		}
		n++;
	}
	closedir(d);
	return n;
}

static int call(uint64_t scratch, long nr, uint64_t a, uint64_t b, uint64_t c, uint64_t *out)
{
	const uint64_t args[6] = {a, b, c, 0, 0, 0};
	return remote_syscall(scratch, nr, args, out);
}

int main(int argc, char **argv)
{
	long from_mnt = -1;
	if (argc == 5 && !strcmp(argv[3], "--from-mnt"))
		from_mnt = atol(argv[4]);
	else if (argc != 3)
		argv[2] = "";
	if (argv[2][0] != '/') {
		fprintf(stderr, "usage: fdswitch PID DIR [--from-mnt MOUNT_ID]\n");
		return 2;
	}
	target = atoi(argv[1]);
	static struct open_file files[MAX_FDS];
	int n = collect(argv[2], from_mnt, files);
	if (n == 0) {
		printf("0\n");
		return 0;
	}
	open_mem();
	uint64_t scratch = vdso_base(); /* the vDSO's ELF header: no thread ever executes there */
	if (!scratch) {
		fprintf(stderr, "fdswitch: no vDSO in %d\n", target);
		return 1;
	}
	struct range r = {scratch, 2};
	if (stop_clear(&r, 1) != 0) {
		int err = errno;
		resume_all();
		errno = err;
		die_errno(gone() ? 3 : 1, "stopping the threads");
	}
	uint64_t page, ignored;
	int switched = 0, failed = 0;
	if (remote_mmap(scratch, 4096, &page) != 0) {
		int err = errno;
		resume_all();
		errno = err;
		die_errno(gone() ? 3 : 1, "mapping a page in the target");
	}
	for (int i = 0; i < n; i++) {
		struct open_file *o = &files[i];
		uint64_t fd;
		uint64_t flags = o->flags & ~(uint64_t)(O_CREAT | O_EXCL | O_TRUNC);
		if (write_mem(page, o->path, strlen(o->path) + 1) != 0 ||
		    call(scratch, SYS_openat, (uint64_t)AT_FDCWD, page, flags, &fd) != 0) {
			fprintf(stderr, "fdswitch: re-opening %s (fd %d): %s\n", o->path, o->fd, strerror(errno));
			failed++;
			continue;
		}
		int ok = call(scratch, SYS_lseek, fd, o->pos, SEEK_SET, &ignored) == 0 &&
			 call(scratch, SYS_dup3, fd, (uint64_t)o->fd, flags & O_CLOEXEC, &ignored) == 0;
		if (!ok)
			fprintf(stderr, "fdswitch: moving %s onto fd %d: %s\n", o->path, o->fd, strerror(errno));
		call(scratch, SYS_close, fd, 0, 0, &ignored);
		switched += ok;
		failed += !ok;
	}
	call(scratch, SYS_munmap, page, 4096, 0, &ignored);
	resume_all();
	printf("%d\n", switched);
	return failed ? 1 : 0;
}
