/* fdswitch: re-opens a process tree's open files under a directory on whatever is mounted there
 * now, IOChaos's way to move files a target opened before its volume was covered by iofs onto iofs
 * (and back once iofs is detached), as Chaos Mesh's toda does.
 *
 *   fdswitch PID DIR [--from-mnt MOUNT_ID[,MOUNT_ID...]]
 *
 * PID and every descendant of it (through /proc/P/task/T/children; never fdswitch itself or one of
 * its ancestors, such as the injector): every regular file the process has open whose path (as it
 * sees it) is DIR or under it, and whose device is not the device DIR resolves to in its mount
 * namespace now; with --from-mnt, every file open on one of those mounts instead (fdinfo's mnt_id:
 * also a mount already detached, whose files the process sees relative to its root, and one whose
 * FUSE server is dead). Each is re-opened inside the process by its path under DIR with the same
 * flags (less O_CREAT, O_EXCL, O_TRUNC) and put at the same offset and descriptor number: the
 * process's threads are stopped (tracee.c), one of them runs openat, lseek, dup3 and close, then
 * every thread is resumed. A process with no such file is never stopped. Files deleted since they
 * were opened are left alone. Prints how many descriptors were switched.
 * Exit status: 0 done (also when nothing needed switching), 2 usage, 3 PID is gone,
 * 1 any other failure (the messages on stderr; the other processes were still switched).
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

static int collect(const char *dir, long from_mnt, struct open_file *out, int cap)
{
	char p[PATH_MAX + 64];
	struct stat want;
	snprintf(p, sizeof p, "/proc/%d/root%s", target, dir);
	if (stat(p, &want) != 0) {
		if (gone())
			return -2;
		fprintf(stderr, "fdswitch: %d: stat DIR in its mount namespace: %s\n", target, strerror(errno));
		return -1;
	}
	snprintf(p, sizeof p, "/proc/%d/fd", target);
	DIR *d = opendir(p);
	if (!d) {
		if (gone())
			return -2;
		fprintf(stderr, "fdswitch: %d: listing /proc/PID/fd: %s\n", target, strerror(errno));
		return -1;
	}
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) && n < cap) {
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

#define MAX_PROCS 4096
#define MAX_MNTS 16

/* The parent of `pid` (field 4 of /proc/PID/stat), 0 when unknown. */
static pid_t parent_of(pid_t pid)
{
	char p[64], buf[512];
	snprintf(p, sizeof p, "/proc/%d/stat", pid);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	char *end = strrchr(buf, ')');
	int ppid = 0;
	if (!end || sscanf(end + 1, " %*c %d", &ppid) != 1)
		return 0;
	return ppid;
}

static int listed(const pid_t *ps, int n, pid_t pid)
{
	for (int i = 0; i < n; i++)
		if (ps[i] == pid)
			return 1;
	return 0;
}

/* `root` and its descendants, breadth first, less fdswitch and its ancestors. */
static int process_tree(pid_t root, pid_t *out)
{
	pid_t mine[64];
	int nmine = 0;
	for (pid_t p = getpid(); p > 0 && nmine < 64; p = parent_of(p))
		mine[nmine++] = p;
	int n = 0;
	out[n++] = root;
	for (int i = 0; i < n; i++) {
		char p[64];
		snprintf(p, sizeof p, "/proc/%d/task", out[i]);
		DIR *d = opendir(p);
		struct dirent *e;
		while (d && (e = readdir(d))) {
			if (e->d_name[0] == '.')
				continue;
			char cp[320];
			snprintf(cp, sizeof cp, "/proc/%d/task/%s/children", out[i], e->d_name);
			FILE *f = fopen(cp, "r");
			int child;
			while (f && fscanf(f, "%d", &child) == 1)
				if (n < MAX_PROCS && !listed(out, n, child))
					out[n++] = child;
			if (f)
				fclose(f);
		}
		if (d)
			closedir(d);
	}
	int kept = 0;
	for (int i = 0; i < n; i++)
		if (!listed(mine, nmine, out[i]))
			out[kept++] = out[i];
	return kept;
}

/* Switches the files of process `target`; how many, or -1 (the reason printed) on a failure.
 * A process gone meanwhile switched none. */
static int switch_process(const char *dir, const long *mnts, int nmnt, struct open_file *files)
{
	int n = 0;
	for (int m = 0; m < (nmnt ? nmnt : 1); m++) {
		int got = collect(dir, nmnt ? mnts[m] : -1, files + n, MAX_FDS - n);
		if (got < 0)
			return got == -2 ? 0 : -1; /* -2: the process is gone */
		n += got;
	}
	if (n == 0)
		return 0;
	if (try_open_mem() != 0)
		return gone() ? 0 : (fprintf(stderr, "fdswitch: %d: open /proc/PID/mem: %s\n", target, strerror(errno)), -1);
	uint64_t scratch = vdso_base(); /* the vDSO's ELF header: no thread ever executes there */
	if (!scratch) {
		fprintf(stderr, "fdswitch: no vDSO in %d\n", target);
		return -1;
	}
	struct range r = {scratch, 2};
	uint64_t page, ignored;
	if (stop_clear(&r, 1) != 0 || remote_mmap(scratch, 4096, &page) != 0) {
		int err = errno;
		resume_all();
		errno = err;
		if (gone())
			return 0;
		fprintf(stderr, "fdswitch: %d: stopping the threads and mapping a page: %s\n", target, strerror(err));
		return -1;
	}
	int switched = 0, failed = 0;
	for (int i = 0; i < n; i++) {
		struct open_file *o = &files[i];
		uint64_t fd;
		uint64_t flags = o->flags & ~(uint64_t)(O_CREAT | O_EXCL | O_TRUNC);
		if (write_mem(page, o->path, strlen(o->path) + 1) != 0 ||
		    call(scratch, SYS_openat, (uint64_t)AT_FDCWD, page, flags, &fd) != 0) {
			fprintf(stderr, "fdswitch: %d: re-opening %s (fd %d): %s\n", target, o->path, o->fd, strerror(errno));
			failed++;
			continue;
		}
		int ok = call(scratch, SYS_lseek, fd, o->pos, SEEK_SET, &ignored) == 0 &&
			 call(scratch, SYS_dup3, fd, (uint64_t)o->fd, flags & O_CLOEXEC, &ignored) == 0;
		if (!ok)
			fprintf(stderr, "fdswitch: %d: moving %s onto fd %d: %s\n", target, o->path, o->fd, strerror(errno));
		call(scratch, SYS_close, fd, 0, 0, &ignored);
		switched += ok;
		failed += !ok;
	}
	call(scratch, SYS_munmap, page, 4096, 0, &ignored);
	resume_all();
	return failed ? -1 - switched : switched;
}

int main(int argc, char **argv)
{
	long mnts[MAX_MNTS];
	int nmnt = 0;
	if (argc == 5 && !strcmp(argv[3], "--from-mnt")) {
		for (char *s = argv[4], *end; *s && nmnt < MAX_MNTS; s = *end ? end + 1 : end) {
			mnts[nmnt++] = strtol(s, &end, 10);
			if (end == s || (*end && *end != ','))
				argv[2] = "";
		}
	} else if (argc != 3) {
		argv[2] = "";
	}
	if (argv[2][0] != '/') {
		fprintf(stderr, "usage: fdswitch PID DIR [--from-mnt MOUNT_ID[,MOUNT_ID...]]\n");
		return 2;
	}
	pid_t root = atoi(argv[1]);
	static pid_t procs[MAX_PROCS];
	static struct open_file files[MAX_FDS];
	char p[64];
	snprintf(p, sizeof p, "/proc/%d", root);
	if (access(p, F_OK) != 0) {
		fprintf(stderr, "fdswitch: process %d is gone\n", root);
		return 3;
	}
	int nprocs = process_tree(root, procs), switched = 0, failed = 0;
	for (int i = 0; i < nprocs; i++) {
		target = procs[i];
		int r = switch_process(argv[2], mnts, nmnt, files);
		if (r < 0) {
			failed++;
			r = -1 - r;
		}
		switched += r;
	}
	printf("%d\n", switched);
	return failed ? 1 : 0;
}
