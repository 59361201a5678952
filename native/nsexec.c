/* nsexec: run a host binary inside a target's namespaces and cgroup (what Chaos Mesh's nsexec does
 * for its tools), so a fault can use a tool the target's own filesystem lacks (distroless images).
 *
 *   nsexec --target PID -- PROGRAM ARGS...
 *       joins PID's cgroup (every v1 hierarchy and the v2 one), cgroup, network and PID
 *       namespaces, then runs PROGRAM (resolved through the host's PATH) as a child in a private
 *       mount namespace: the host's files, with a /proc of the target's PID namespace on top, so
 *       the program's libraries load from the host and it sees the target's processes and network.
 *   nsexec --net PATH -- PROGRAM ARGS...
 *       joins the network namespace at PATH only (a netns bind mount or /proc/PID/ns/net).
 *
 * Exit status: the program's, 128+N if it died of signal N, 125 when nsexec itself failed (the
 * reason on stderr), 127 when PROGRAM cannot be run. No shell is ever involved.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void fail(const char *what, const char *detail)
{
	fprintf(stderr, "nsexec: %s%s%s: %s\n", what, detail ? " " : "", detail ? detail : "", strerror(errno));
	exit(125);
}

static void join_ns(const char *path, int type)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		fail("open", path);
	if (setns(fd, type) != 0)
		fail("setns", path);
	close(fd);
}

/* Writes our pid into the target's cgroup in each hierarchy /proc/PID/cgroup lists. A hierarchy
 * that is not mounted under /sys/fs/cgroup (a named v1 one) is skipped. */
static void join_cgroups(pid_t pid)
{
	char path[64], line[4096];
	snprintf(path, sizeof path, "/proc/%d/cgroup", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		fail("open", path);
	int joined = 0;
	while (fgets(line, sizeof line, f)) {
		line[strcspn(line, "\n")] = 0;
		char *c1 = strchr(line, ':');
		char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2)
			continue;
		*c1 = 0;
		*c2 = 0;
		const char *controllers = c1 + 1, *cg = c2 + 1;
		char dir[PATH_MAX];
		if (*controllers == 0) {
			/* cgroup v2: under /sys/fs/cgroup itself (pure v2) or /sys/fs/cgroup/unified (hybrid). */
			snprintf(dir, sizeof dir, "/sys/fs/cgroup/unified%s", cg);
			struct stat st;
			if (stat("/sys/fs/cgroup/unified/cgroup.procs", &st) != 0)
				snprintf(dir, sizeof dir, "/sys/fs/cgroup%s", cg);
		} else {
			if (strncmp(controllers, "name=", 5) == 0)
				continue;
			/* v1: the hierarchy's mount is named after its controllers ("cpu,cpuacct"). */
			snprintf(dir, sizeof dir, "/sys/fs/cgroup/%s%s", controllers, cg);
		}
		char procs[PATH_MAX + 16];
		snprintf(procs, sizeof procs, "%s/cgroup.procs", dir);
		int fd = open(procs, O_WRONLY | O_CLOEXEC);
		if (fd < 0) {
			if (errno == ENOENT)
				continue;
			fail("open", procs);
		}
		char me[32];
		int n = snprintf(me, sizeof me, "%d", getpid());
		if (write(fd, me, (size_t)n) != n)
			fail("joining", procs);
		close(fd);
		joined++;
	}
	fclose(f);
	if (!joined) {
		errno = ENOENT;
		fail("no cgroup of the target to join", path);
	}
}

/* The host path of PROGRAM (through PATH when it has no slash). */
static char *resolve(const char *prog)
{
	static char buf[PATH_MAX];
	if (strchr(prog, '/'))
		return access(prog, X_OK) == 0 ? (char *)prog : NULL;
	const char *env = getenv("PATH");
	char *paths = strdup(env && *env ? env : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
	for (char *save = NULL, *d = strtok_r(paths, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		snprintf(buf, sizeof buf, "%s/%s", d, prog);
		if (access(buf, X_OK) == 0) {
			free(paths);
			return buf;
		}
	}
	free(paths);
	return NULL;
}

static int exit_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 128 + WTERMSIG(status);
}

int main(int argc, char **argv)
{
	pid_t target = 0;
	const char *net = NULL;
	int i = 1;
	for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
		if (strcmp(argv[i], "--target") == 0 && i + 1 < argc)
			target = atoi(argv[++i]);
		else if (strcmp(argv[i], "--net") == 0 && i + 1 < argc)
			net = argv[++i];
		else
			goto usage;
	}
	if (i + 1 >= argc || (target <= 0) == (net == NULL))
		goto usage;
	char **prog = argv + i + 1;
	char *path = resolve(prog[0]);
	if (!path) {
		fprintf(stderr, "nsexec: %s: not found on the host\n", prog[0]);
		return 127;
	}
	if (net) {
		join_ns(net, CLONE_NEWNET);
		execve(path, prog, environ);
		fprintf(stderr, "nsexec: exec %s: %s\n", path, strerror(errno));
		return 127;
	}
	char ns[64];
	/* Opened before joining anything: the target's /proc entries are reached from our own view. */
	int fds[3];
	const char *names[3] = {"cgroup", "net", "pid"};
	int types[3] = {CLONE_NEWCGROUP, CLONE_NEWNET, CLONE_NEWPID};
	for (int k = 0; k < 3; k++) {
		snprintf(ns, sizeof ns, "/proc/%d/ns/%s", target, names[k]);
		fds[k] = open(ns, O_RDONLY | O_CLOEXEC);
		if (fds[k] < 0)
			fail("open", ns);
	}
	join_cgroups(target);
	for (int k = 0; k < 3; k++)
		if (setns(fds[k], types[k]) != 0)
			fail("setns", names[k]);
	/* Joining a PID namespace applies to children: the program runs in a child, and mounts a
	 * /proc for that namespace in a mount namespace of its own (nothing leaks to the host). */
	pid_t child = fork();
	if (child < 0)
		fail("fork", NULL);
	if (child == 0) {
		if (unshare(CLONE_NEWNS) != 0)
			fail("unshare", "mount namespace");
		if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
			fail("mount", "/ private");
		if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
			fail("mount", "/proc");
		execve(path, prog, environ);
		fprintf(stderr, "nsexec: exec %s: %s\n", path, strerror(errno));
		_exit(127);
	}
	int status;
	while (waitpid(child, &status, 0) < 0)
		if (errno != EINTR)
			fail("waitpid", NULL);
	return exit_code(status);
usage:
	fprintf(stderr, "usage: nsexec --target PID -- PROGRAM ARGS... | nsexec --net PATH -- PROGRAM ARGS...\n");
	return 125;
}
