/* iofs: IOChaos's FUSE filesystem. Mounted over a volume inside a target's mount namespace, it
 * passes every operation through to the directory it covers and applies the rules of a small
 * text file (latency, errno, attribute overrides, corrupted data) to the operations they match.
 *
 *   iofs mount  --pid PID --path DIR --rules FILE [--status-fd FD] [--control-fd FD] [--passthrough no]
 *   iofs umount --pid PID --path DIR
 *
 * mount: opens /dev/fuse, the rules file's directory and /proc/PID while still in the host's mount
 * namespace, joins PID's mount namespace, opens DIR (the covered directory, which stays reachable
 * through that descriptor), mounts a "fuse.chaosbus-iofs" filesystem over DIR and serves it until
 * the kernel ends the connection (the mount detached and its last open file closed, or the mount
 * namespace gone); when PID exits, iofs detaches its mount itself (see "the target's end"). It
 * writes "ok" to FD once the mount serves ("ok passthrough": with the kernel's FUSE passthrough
 * for files no data rule matches, see below; "--passthrough no" never asks for it, as on a kernel
 * without it), or why not. The rules are re-read on SIGUSR1, on a "reload" request on the
 * control socket FD (a listening unix socket: the reply "ok N" comes once they are in force) and
 * whenever the file changes or goes (checked every 200 ms). Exit status 3: an iofs is already
 * mounted at DIR.
 *
 * umount: detaches (MNT_DETACH) every iofs mount stacked at DIR in PID's mount namespace, whether
 * its server is alive or dead (a dead one would leave "Transport endpoint is not connected").
 * Nothing else is ever unmounted. Prints how many were detached.
 *
 * Rules file: one rule a line, '#' lines ignored; the path glob is the rest of the line ("-": any):
 *   latency DEADLINE METHODS PERCENT DELAY_NS GLOB
 *   fault   DEADLINE METHODS PERCENT ERRNO GLOB
 *   mistake DEADLINE METHODS PERCENT FILLING(0 zero, 1 random) MAX_OCCURRENCES MAX_LENGTH GLOB
 *   attr    DEADLINE METHODS PERCENT MASK INO SIZE BLOCKS ATIME_S ATIME_NS MTIME_S MTIME_NS
 *           CTIME_S CTIME_NS KIND PERM NLINK UID GID RDEV GLOB
 * DEADLINE: CLOCK_REALTIME ns after which the rule is ignored (0: none), so injection stops on
 * time even when nothing is left to change the file. METHODS: bit mask over Chaos Mesh's method
 * list (bit 0 lookup ... bit 31 bmap, see METHOD_NAMES). The glob is matched against the path as
 * the target sees it (DIR/...): '*' and '?' stop at '/', '**' crosses it, "**" + "/" also matches
 * no directory at all, [...] classes.
 */
#define FUSE_USE_VERSION 317
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

/* libfuse's own session (see "attributes of a file whose directory is gone"): sound only because
 * iofs is built against the very source it links, pinned by its checksum in the Makefile. */
#include "fuse_i.h"

#define FSTYPE "fuse.chaosbus-iofs"
#define FSNAME "chaosbus-iofs"
#define MAX_RULES 4096
#define MAX_MISTAKES 16
#define EXIT_ALREADY 3

enum method {
    M_LOOKUP, M_FORGET, M_GETATTR, M_SETATTR, M_READLINK, M_MKNOD, M_MKDIR, M_UNLINK, M_RMDIR,
    M_SYMLINK, M_RENAME, M_LINK, M_OPEN, M_READ, M_WRITE, M_FLUSH, M_RELEASE, M_FSYNC, M_OPENDIR,
    M_READDIR, M_RELEASEDIR, M_FSYNCDIR, M_STATFS, M_SETXATTR, M_GETXATTR, M_LISTXATTR,
    M_REMOVEXATTR, M_ACCESS, M_CREATE, M_GETLK, M_SETLK, M_BMAP,
};

enum action { A_LATENCY, A_FAULT, A_MISTAKE, A_ATTR };
enum attr_bit { AT_INO, AT_SIZE, AT_BLOCKS, AT_ATIME, AT_MTIME, AT_CTIME, AT_KIND, AT_PERM, AT_NLINK,
                AT_UID, AT_GID, AT_RDEV };

struct rule {
    int action;
    int64_t deadline_ns;
    uint32_t methods;
    int percent;
    int64_t delay_ns;
    int err;
    int filling, max_occ, max_len;
    uint32_t attr_mask;
    int64_t ino, size, blocks, atime_s, atime_ns, mtime_s, mtime_ns, ctime_s, ctime_ns;
    int64_t kind, perm, nlink, uid, gid, rdev;
    char *glob; /* NULL: any path */
};

struct ruleset {
    int n;
    struct rule r[];
};

struct mistake { int filling, max_occ, max_len; };

struct effects {
    int err;
    int64_t delay_ns;
    int n_mistakes;
    struct mistake mistakes[MAX_MISTAKES];
    int n_attrs;
    struct rule attr_copies[MAX_MISTAKES]; /* copied under the lock (a reload frees the originals) */
};

static pthread_rwlock_t rules_lock = PTHREAD_RWLOCK_INITIALIZER;
static struct ruleset *rules;
static struct fuse_config *fs_cfg; /* libfuse's own, read by it on every reply */
static int root_fd = -1, rules_dir_fd = -1;
static const char *rules_name;
static char volume[4096];

static void report(const char *fmt, const char *arg, int err);

/* ---- glob ---- */

static int class_match(const char **pp, char c) {
    const char *p = *pp + 1;
    int neg = 0, hit = 0;
    if (*p == '!' || *p == '^') { neg = 1; p++; }
    if (*p == ']') { hit |= c == ']'; p++; }
    for (; *p && *p != ']'; p++) {
        if (p[1] == '-' && p[2] && p[2] != ']') { hit |= c >= p[0] && c <= p[2]; p += 2; }
        else hit |= c == *p;
    }
    if (!*p) return -1; /* no closing bracket: a literal '[' */
    *pp = p + 1;
    return hit != neg;
}

static int gmatch(const char *p, const char *s) {
    for (;;) {
        if (p[0] == '*' && p[1] == '*') {
            const char *q = p + 2;
            if (*q == '/' && gmatch(q + 1, s)) return 1;
            for (const char *t = s;; t++) {
                if (gmatch(q, t)) return 1;
                if (!*t) return 0;
            }
        }
        if (*p == '*') {
            for (const char *t = s;; t++) {
                if (gmatch(p + 1, t)) return 1;
                if (!*t || *t == '/') return 0;
            }
        }
        if (!*p) return !*s;
        if (!*s) return 0;
        if (*p == '?') {
            if (*s == '/') return 0;
            p++; s++;
            continue;
        }
        if (*p == '[') {
            const char *q = p;
            int m = class_match(&q, *s);
            if (m >= 0) {
                if (!m || *s == '/') return 0;
                p = q; s++;
                continue;
            }
        }
        if (*p == '\\' && p[1]) p++;
        if (*p != *s) return 0;
        p++; s++;
    }
}

/* ---- rules ---- */

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t rnd(void) {
    static __thread uint64_t s;
    if (!s) s = (uint64_t)now_ns() ^ ((uint64_t)pthread_self() << 17) ^ 0x9e3779b97f4a7c15ull;
    s ^= s << 13; s ^= s >> 7; s ^= s << 17;
    return s;
}

static void free_rules(struct ruleset *rs) {
    if (!rs) return;
    for (int i = 0; i < rs->n; i++) free(rs->r[i].glob);
    free(rs);
}

static int parse_rule(char *line, struct rule *r) {
    char word[16];
    int used = 0;
    memset(r, 0, sizeof *r);
    if (sscanf(line, "%15s %ld %u %d %n", word, &r->deadline_ns, &r->methods, &r->percent, &used) != 4)
        return -1;
    char *rest = line + used;
    int more = 0;
    if (!strcmp(word, "latency")) {
        r->action = A_LATENCY;
        if (sscanf(rest, "%ld %n", &r->delay_ns, &more) != 1) return -1;
    } else if (!strcmp(word, "fault")) {
        r->action = A_FAULT;
        if (sscanf(rest, "%d %n", &r->err, &more) != 1 || r->err <= 0) return -1;
    } else if (!strcmp(word, "mistake")) {
        r->action = A_MISTAKE;
        if (sscanf(rest, "%d %d %d %n", &r->filling, &r->max_occ, &r->max_len, &more) != 3 ||
            r->max_occ < 1 || r->max_len < 1) return -1;
    } else if (!strcmp(word, "attr")) {
        r->action = A_ATTR;
        if (sscanf(rest, "%u %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %n", &r->attr_mask,
                   &r->ino, &r->size, &r->blocks, &r->atime_s, &r->atime_ns, &r->mtime_s, &r->mtime_ns,
                   &r->ctime_s, &r->ctime_ns, &r->kind, &r->perm, &r->nlink, &r->uid, &r->gid, &r->rdev,
                   &more) != 16) return -1;
    } else {
        return -1;
    }
    rest += more;
    rest[strcspn(rest, "\n")] = 0;
    if (!*rest) return -1;
    r->glob = strcmp(rest, "-") ? strdup(rest) : NULL;
    return 0;
}

/* ---- attributes the kernel holds ----
 * Paths whose attributes went out with a timeout, so that a rule on lookup or getattr takes
 * effect at once: the kernel is told to drop those attributes when such a rule arrives. They are
 * kept in two sets, the paths stat'ed since the current one started and in the one before; a set
 * is dropped once all it holds is older than the kernel keeps attributes (HELD_NS), so only paths
 * whose attributes may still be held are kept. Past CACHED_MAX paths in a set none is added; the
 * last such miss is noted, and a rule that wants its attributes dropped then waits until what
 * the kernel holds for it has expired (at most HELD_NS), so it still reaches the first stat. */
#define CACHED_SLOTS 8192
#define CACHED_MAX (CACHED_SLOTS / 2)
#define HELD_NS 1100000000 /* the 1 s attribute timeout, and the time from here to the kernel */

struct cached_set { char *slot[CACHED_SLOTS]; int n; };

static struct fuse *fs;
static pthread_mutex_t cached_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cached_set cached[2];
static int cached_cur;
static int64_t cached_since, missed_at; /* CLOCK_MONOTONIC ns */

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void clear_set(struct cached_set *c) {
    for (size_t i = 0; c->n && i < CACHED_SLOTS; i++)
        if (c->slot[i]) { free(c->slot[i]); c->slot[i] = NULL; c->n--; }
}

static void remember_cached(const char *path) {
    uint64_t h = 1469598103934665603ull;
    for (const char *c = path; *c; c++) h = (h ^ (uint8_t)*c) * 1099511628211ull;
    int64_t now = mono_ns();
    pthread_mutex_lock(&cached_lock);
    if (now - cached_since >= HELD_NS) {
        /* Everything in the other set was stat'ed before cached_since: expired in the kernel. */
        cached_cur ^= 1;
        clear_set(&cached[cached_cur]);
        cached_since = now;
    }
    struct cached_set *c = &cached[cached_cur];
    for (size_t i = h % CACHED_SLOTS;; i = (i + 1) % CACHED_SLOTS) {
        if (!c->slot[i]) {
            if (c->n < CACHED_MAX && (c->slot[i] = strdup(path))) c->n++;
            else missed_at = now;
            break;
        }
        if (!strcmp(c->slot[i], path)) break;
    }
    pthread_mutex_unlock(&cached_lock);
}

/* Has the kernel drop the attributes it may hold, and returns once it has (or, for paths past
 * what is kept, once they have expired). Under load_lock only (one at a time), outside cached_lock:
 * the kernel may wait on pages a request in flight holds. */
static void invalidate_cached(void) {
    static char *taken[2 * CACHED_SLOTS];
    int n = 0;
    pthread_mutex_lock(&cached_lock);
    for (int s = 0; s < 2; s++) {
        for (size_t i = 0; cached[s].n && i < CACHED_SLOTS; i++)
            if (cached[s].slot[i]) { taken[n++] = cached[s].slot[i]; cached[s].slot[i] = NULL; cached[s].n--; }
    }
    int64_t until = missed_at ? missed_at + HELD_NS : 0;
    missed_at = 0;
    pthread_mutex_unlock(&cached_lock);
    for (int i = 0; i < n; i++) {
        if (fs) (void)fuse_invalidate_path(fs, taken[i]);
        free(taken[i]);
    }
    for (int64_t left; (left = until - mono_ns()) > 0;) {
        struct timespec ts = {left / 1000000000, left % 1000000000};
        nanosleep(&ts, NULL);
    }
}

/* Re-reads the rules file (none: no rules); a malformed line is skipped (and reported), the rest
 * still apply. Returns once the new rules are in force and the attributes the kernel holds that
 * they may change are dropped: how many rules there are, -1 if they could not be read. Loads run
 * one at a time, so the last file read is the one in force. */
static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;

static int load_rules(void) {
    pthread_mutex_lock(&load_lock);
    int fd = openat(rules_dir_fd, rules_name, O_RDONLY | O_CLOEXEC);
    FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
    struct ruleset *rs = calloc(1, sizeof *rs + MAX_RULES * sizeof(struct rule));
    if (!rs) { if (f) fclose(f); pthread_mutex_unlock(&load_lock); return -1; }
    char *line = NULL;
    size_t cap = 0;
    while (f && getline(&line, &cap, f) > 0 && rs->n < MAX_RULES) {
        if (line[0] == '#' || line[0] == '\n') continue;
        if (parse_rule(line, &rs->r[rs->n]) == 0) rs->n++;
        else fprintf(stderr, "iofs: rule ignored: %s", line);
    }
    free(line);
    if (f) fclose(f);
    /* Names and attributes are cached by the kernel for a second unless a rule wants to see every
     * lookup and stat (then the attributes it holds are dropped: the next stat meets the rule). */
    uint32_t meta = 0;
    for (int i = 0; i < rs->n; i++) meta |= rs->r[i].methods & (1u << M_LOOKUP | 1u << M_GETATTR);
    pthread_rwlock_wrlock(&rules_lock);
    struct ruleset *old = rules;
    rules = rs;
    if (fs_cfg) fs_cfg->entry_timeout = fs_cfg->attr_timeout = meta ? 0.0 : 1.0;
    pthread_rwlock_unlock(&rules_lock);
    free_rules(old);
    if (meta) invalidate_cached();
    int n = rs->n;
    pthread_mutex_unlock(&load_lock);
    return n;
}

static void full_path(const char *path, char *out, size_t n) {
    snprintf(out, n, "%s%s", volume, strcmp(path, "/") ? path : "");
}

/* The rules in force for one call: delays add up, the first errno wins, attribute overrides and
 * mistakes are collected for the caller to apply to its result. Sleeps here, outside the lock. */
static int inject(const char *path, int method, struct effects *fx) {
    fx->err = 0;
    fx->delay_ns = 0;
    fx->n_mistakes = 0;
    fx->n_attrs = 0;
    int64_t now = now_ns();
    char full[8192];
    int have_full = 0;
    pthread_rwlock_rdlock(&rules_lock);
    for (int i = 0; rules && i < rules->n; i++) {
        const struct rule *r = &rules->r[i];
        uint32_t bits = 1u << method;
        if (method == M_GETATTR) bits |= 1u << M_LOOKUP; /* the high-level API looks up by getattr */
        if (!(r->methods & bits)) continue;
        if (r->deadline_ns && now >= r->deadline_ns) continue;
        if (r->glob) {
            if (!path) continue; /* a file with no name left: only rules for every path */
            if (!have_full) { full_path(path, full, sizeof full); have_full = 1; }
            if (!gmatch(r->glob, full)) continue;
        }
        if (r->percent < 100 && (int)(rnd() % 100) >= r->percent) continue;
        switch (r->action) {
        case A_LATENCY: fx->delay_ns += r->delay_ns; break;
        case A_FAULT: if (!fx->err) fx->err = r->err; break;
        case A_MISTAKE:
            if (fx->n_mistakes < MAX_MISTAKES)
                fx->mistakes[fx->n_mistakes++] = (struct mistake){r->filling, r->max_occ, r->max_len};
            break;
        case A_ATTR:
            if (fx->n_attrs < MAX_MISTAKES) {
                fx->attr_copies[fx->n_attrs] = *r;
                fx->attr_copies[fx->n_attrs].glob = NULL;
                fx->n_attrs++;
            }
            break;
        }
    }
    pthread_rwlock_unlock(&rules_lock);
    if (fx->delay_ns > 0) {
        struct timespec ts = {fx->delay_ns / 1000000000, fx->delay_ns % 1000000000};
        while (nanosleep(&ts, &ts) && errno == EINTR) {}
    }
    return fx->err ? -fx->err : 0;
}

/* Whether any rule in force could match one of `methods` (a bit mask) on this path. */
static int rules_may_match(const char *path, uint32_t methods) {
    int64_t now = now_ns();
    char full[8192];
    full_path(path, full, sizeof full);
    int hit = 0;
    pthread_rwlock_rdlock(&rules_lock);
    for (int i = 0; rules && i < rules->n && !hit; i++) {
        const struct rule *r = &rules->r[i];
        hit = (r->methods & methods) && (!r->deadline_ns || now < r->deadline_ns) && (!r->glob || gmatch(r->glob, full));
    }
    pthread_rwlock_unlock(&rules_lock);
    return hit;
}

static void corrupt(char *buf, size_t len, const struct effects *fx) {
    for (int m = 0; m < fx->n_mistakes && len; m++) {
        const struct mistake *k = &fx->mistakes[m];
        int times = 1 + (int)(rnd() % (uint64_t)k->max_occ);
        for (int t = 0; t < times; t++) {
            size_t n = 1 + rnd() % (uint64_t)k->max_len;
            if (n > len) n = len;
            size_t at = rnd() % (len - n + 1);
            for (size_t i = 0; i < n; i++) buf[at + i] = k->filling ? (char)rnd() : 0;
        }
    }
}

static void override(struct stat *st, const struct effects *fx) {
    static const mode_t kinds[] = {S_IFIFO, S_IFCHR, S_IFBLK, S_IFDIR, S_IFREG, S_IFLNK, S_IFSOCK};
    for (int i = 0; i < fx->n_attrs; i++) {
        const struct rule *a = &fx->attr_copies[i];
        uint32_t m = a->attr_mask;
        if (m & 1u << AT_INO) st->st_ino = (ino_t)a->ino;
        if (m & 1u << AT_SIZE) st->st_size = a->size;
        if (m & 1u << AT_BLOCKS) st->st_blocks = a->blocks;
        if (m & 1u << AT_ATIME) { st->st_atim.tv_sec = a->atime_s; st->st_atim.tv_nsec = a->atime_ns; }
        if (m & 1u << AT_MTIME) { st->st_mtim.tv_sec = a->mtime_s; st->st_mtim.tv_nsec = a->mtime_ns; }
        if (m & 1u << AT_CTIME) { st->st_ctim.tv_sec = a->ctime_s; st->st_ctim.tv_nsec = a->ctime_ns; }
        if ((m & 1u << AT_KIND) && a->kind >= 0 && a->kind < 7) st->st_mode = (st->st_mode & 07777) | kinds[a->kind];
        if (m & 1u << AT_PERM) st->st_mode = (st->st_mode & S_IFMT) | (a->perm & 07777);
        if (m & 1u << AT_NLINK) st->st_nlink = (nlink_t)a->nlink;
        if (m & 1u << AT_UID) st->st_uid = (uid_t)a->uid;
        if (m & 1u << AT_GID) st->st_gid = (gid_t)a->gid;
        if (m & 1u << AT_RDEV) st->st_rdev = (dev_t)a->rdev;
    }
}

/* ---- the kernel's FUSE passthrough ----
 * Where the kernel offers it (Linux 6.9 on, FUSE_PASSTHROUGH at INIT), a file no read or write
 * rule may match when it is opened gets a backing file: the kernel then reads and writes the
 * covered file itself and iofs never sees that file's data. The kernel wants one backing file per
 * inode while any passthrough open of it lasts (and every open of such an inode passthrough too),
 * so backing ids are shared per (device, inode) of the covered file and counted. Without
 * passthrough, files use the page cache (libfuse's auto_cache) instead. */

#ifndef FUSE_DEV_IOC_BACKING_OPEN
struct fuse_backing_map { int32_t fd; uint32_t flags; uint64_t padding; };
#define FUSE_DEV_IOC_BACKING_OPEN _IOW(229, 1, struct fuse_backing_map)
#define FUSE_DEV_IOC_BACKING_CLOSE _IOW(229, 2, uint32_t)
#endif

#define FH_PASSTHROUGH (1ull << 32) /* in fi->fh above the descriptor: it holds a backing id */
#define FD(fi) ((int)((fi)->fh & 0xffffffffu))
#define BACKING_BUCKETS 1024

/* A backing id outlives its last release by up to a second (reopening a file is common, and
 * each set-up is two ioctls); at most BACKING_IDLE_MAX are kept idle. While it is held the covered
 * file stays open in the kernel, so its inode number cannot go to another file. */
#define BACKING_IDLE_NS 1000000000
#define BACKING_IDLE_MAX 256

struct backing { dev_t dev; ino_t ino; int id, refs; int64_t idle_since; struct backing *next; };

static int dev_fuse = -1;
static int want_passthrough = 1; /* --passthrough no: as on a kernel without it */
static int passthrough;          /* negotiated at INIT */
static pthread_mutex_t backing_lock = PTHREAD_MUTEX_INITIALIZER;
static struct backing *backings[BACKING_BUCKETS];
static int n_idle;

static struct backing **backing_slot(const struct stat *st) {
    struct backing **b = &backings[(st->st_ino ^ st->st_dev * 31) % BACKING_BUCKETS];
    while (*b && ((*b)->dev != st->st_dev || (*b)->ino != st->st_ino)) b = &(*b)->next;
    return b;
}

/* The backing id for the file open at `fd`: the inode's existing one (always: the kernel refuses
 * an open of an inode open passthrough that names no backing file or another one), else a new one
 * unless `shun` (a rule wants this file's data: no new passthrough). 0: none. */
static int backing_get(int fd, const struct stat *st, int shun) {
    if (!passthrough || !S_ISREG(st->st_mode)) return 0;
    pthread_mutex_lock(&backing_lock);
    struct backing **slot = backing_slot(st);
    int id = 0;
    if (*slot && ((*slot)->refs > 0 || !shun)) {
        n_idle -= (*slot)->refs == 0;
        (*slot)->refs++;
        id = (*slot)->id;
    } else if (!*slot && !shun) {
        struct fuse_backing_map map = {.fd = fd};
        struct backing *b = malloc(sizeof *b);
        id = b ? ioctl(dev_fuse, FUSE_DEV_IOC_BACKING_OPEN, &map) : -1;
        if (id > 0) {
            *b = (struct backing){st->st_dev, st->st_ino, id, 1, 0, NULL};
            *slot = b;
        } else {
            free(b);
            id = 0;
        }
    }
    pthread_mutex_unlock(&backing_lock);
    return id;
}

static void backing_close(struct backing **slot) {
    struct backing *b = *slot;
    uint32_t id = (uint32_t)b->id;
    (void)ioctl(dev_fuse, FUSE_DEV_IOC_BACKING_CLOSE, &id);
    *slot = b->next;
    free(b);
}

static void backing_put(const struct stat *st) {
    pthread_mutex_lock(&backing_lock);
    struct backing **slot = backing_slot(st), *b = *slot;
    if (b && --b->refs == 0) {
        if (n_idle < BACKING_IDLE_MAX) {
            b->idle_since = now_ns();
            n_idle++;
        } else {
            backing_close(slot);
        }
    }
    pthread_mutex_unlock(&backing_lock);
}

/* Closes the backing ids idle for longer than BACKING_IDLE_NS. */
static void backing_expire(void) {
    int64_t cutoff = now_ns() - BACKING_IDLE_NS;
    pthread_mutex_lock(&backing_lock);
    for (int i = 0; i < BACKING_BUCKETS && n_idle; i++)
        for (struct backing **slot = &backings[i]; *slot;) {
            if ((*slot)->refs == 0 && (*slot)->idle_since < cutoff) {
                backing_close(slot);
                n_idle--;
            } else {
                slot = &(*slot)->next;
            }
        }
    pthread_mutex_unlock(&backing_lock);
}

/* ---- files unlinked while open ----
 * libfuse's path API renames a file that is unlinked (or renamed over) while open to a hidden name
 * in its directory (".fuse_hidden" and 16 hex digits) and unlinks that name after the last
 * release. On the covered volume that name would stay behind while the file is open: its directory
 * could not be removed (ENOTEMPTY), and a file still open at recovery left it there for good.
 * iofs serves open files by their descriptors, so it removes the name for real instead and keeps
 * the inode reachable (a descriptor of its own) for the calls libfuse still makes by the hidden
 * name (fstat and fchmod arrive with no file handle), and remembers the name the file had, which
 * the rules keep matching. hard_remove would not do: libfuse then forgets the file's name, and an
 * fstat on a descriptor still open fails. The inodes open through iofs are counted, so all this is
 * dropped with their last release. */

#define OPEN_BUCKETS 1024
#define HIDDEN_PREFIX ".fuse_hidden"

struct opened {
    dev_t dev;
    ino_t ino;
    int refs;
    int fd;             /* once hidden: iofs's own descriptor of the file */
    char *hidden, *name; /* the hidden name's last component, the path it had */
    uint32_t node;      /* libfuse's node id for it (in the hidden name) */
    struct opened *next;
};

static pthread_mutex_t opened_lock = PTHREAD_MUTEX_INITIALIZER;
static struct opened *opened[OPEN_BUCKETS];
static int n_hidden;                       /* entries with a descriptor of their own */
static __thread char hidden_probe[4096];   /* the hidden name libfuse just found free, on this thread */

static const char *rel(const char *path) { return path[1] ? path + 1 : "."; }

static struct opened **opened_slot(dev_t dev, ino_t ino) {
    struct opened **o = &opened[(ino ^ dev * 31) % OPEN_BUCKETS];
    while (*o && ((*o)->dev != dev || (*o)->ino != ino)) o = &(*o)->next;
    return o;
}

static void opened_add(const struct stat *st) {
    pthread_mutex_lock(&opened_lock);
    struct opened **o = opened_slot(st->st_dev, st->st_ino);
    if (!*o && (*o = calloc(1, sizeof **o))) **o = (struct opened){.dev = st->st_dev, .ino = st->st_ino, .fd = -1};
    if (*o) (*o)->refs++;
    pthread_mutex_unlock(&opened_lock);
}

static void opened_drop(const struct stat *st) {
    pthread_mutex_lock(&opened_lock);
    struct opened **slot = opened_slot(st->st_dev, st->st_ino), *o = *slot;
    if (o && --o->refs == 0) {
        *slot = o->next;
        if (o->fd >= 0) { close(o->fd); __atomic_sub_fetch(&n_hidden, 1, __ATOMIC_RELAXED); }
        free(o->hidden);
        free(o->name);
        free(o);
    }
    pthread_mutex_unlock(&opened_lock);
}

static const char *base_name(const char *path) {
    const char *base = strrchr(path, '/');
    return base ? base + 1 : path;
}

/* The name libfuse hides an open file under: ".fuse_hidden" and 16 hex digits. */
static int hidden_name(const char *path) {
    const char *base = base_name(path);
    if (strncmp(base, HIDDEN_PREFIX, sizeof HIDDEN_PREFIX - 1)) return 0;
    base += sizeof HIDDEN_PREFIX - 1;
    return strspn(base, "0123456789abcdef") == 16 && !base[16];
}

/* Under opened_lock: the hidden file by its hidden name (path) or, path NULL (its directory is
 * gone), by its open file. Hidden names are told apart by their last component alone (libfuse
 * makes each unique in the filesystem: its node id and a counter), so one whose directory was
 * renamed since is still found. */
static struct opened *hidden_entry(const char *path, const struct fuse_file_info *fi) {
    if (path) {
        const char *base = base_name(path);
        for (int i = 0; i < OPEN_BUCKETS; i++)
            for (struct opened *o = opened[i]; o; o = o->next)
                if (o->hidden && !strcmp(o->hidden, base)) return o;
        return NULL;
    }
    struct stat st;
    if (!fi || fstat(FD(fi), &st)) return NULL;
    struct opened *o = *opened_slot(st.st_dev, st.st_ino);
    return o && o->fd >= 0 ? o : NULL;
}

/* The path the rules see for a call on `path`, or on the open file `fi` (path NULL: libfuse knows
 * no name for it any more): a hidden file's name before it was hidden, else `path` itself. */
static const char *rule_path(const char *path, const struct fuse_file_info *fi, char *buf, size_t n) {
    if (!__atomic_load_n(&n_hidden, __ATOMIC_RELAXED) || (path && !hidden_name(path))) return path;
    pthread_mutex_lock(&opened_lock);
    struct opened *o = hidden_entry(path, fi);
    if (o) snprintf(buf, n, "%s", o->name);
    pthread_mutex_unlock(&opened_lock);
    return o ? buf : path;
}

/* A descriptor of the hidden file named `path` (the caller closes it); -1 (errno ENOENT): none. */
static int hidden_dup(const char *path) {
    if (!__atomic_load_n(&n_hidden, __ATOMIC_RELAXED) || !hidden_name(path)) { errno = ENOENT; return -1; }
    pthread_mutex_lock(&opened_lock);
    struct opened *o = hidden_entry(path, NULL);
    int fd = o ? fcntl(o->fd, F_DUPFD_CLOEXEC, 0) : -1;
    pthread_mutex_unlock(&opened_lock);
    if (!o) errno = ENOENT;
    return fd;
}

/* The node id libfuse names a hidden file by: the first 8 hex digits after the prefix (its node
 * ids are 32 bits). */
static uint32_t node_of(const char *hidden) {
    char hex[9] = {0};
    memcpy(hex, hidden + sizeof HIDDEN_PREFIX - 1, 8);
    return (uint32_t)strtoul(hex, NULL, 16);
}

/* libfuse hides the open file `from` as `to`: its name is removed from the volume and the inode
 * kept as `to`. 1: `from` is not a file open through iofs (a plain rename then); else 0 or -errno
 * (the unlink's). */
static int hide(const char *from, const char *to) {
    int fd = openat(root_fd, rel(from), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) fd = openat(root_fd, rel(from), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) {
        if (fd >= 0) close(fd);
        return 1;
    }
    int r = 1;
    char *h = strdup(base_name(to)), *n = strdup(from);
    pthread_mutex_lock(&opened_lock);
    struct opened *o = *opened_slot(st.st_dev, st.st_ino);
    if (o && o->fd < 0 && h && n) {
        r = unlinkat(root_fd, rel(from), 0) ? -errno : 0;
        if (!r) {
            o->fd = fd;
            o->hidden = h;
            o->name = n;
            o->node = node_of(h);
            __atomic_add_fetch(&n_hidden, 1, __ATOMIC_RELAXED);
            fd = -1;
            h = n = NULL;
        }
    }
    pthread_mutex_unlock(&opened_lock);
    if (fd >= 0) close(fd);
    free(h);
    free(n);
    return r;
}

/* libfuse unlinks a hidden name after the file's last release (nothing is left of it then), or a
 * caller names it: the name goes, the file stays reachable through its open descriptors. 1: not a
 * hidden file's name. */
static int unhide(const char *path) {
    if (!__atomic_load_n(&n_hidden, __ATOMIC_RELAXED) || !hidden_name(path)) return 1;
    pthread_mutex_lock(&opened_lock);
    struct opened *o = hidden_entry(path, NULL);
    if (o) {
        free(o->hidden);
        o->hidden = NULL;
    }
    pthread_mutex_unlock(&opened_lock);
    return !o;
}

/* How a file just opened at `fd` is served: a file a read or write rule may match gets direct I/O,
 * so every read and write meets the rules (named with the inode's backing file if it has one: the
 * kernel then still sends this file's reads and writes here); any other, passthrough, or without it
 * the page cache (direct I/O when passthrough is on but this file could not get a backing file: a
 * cached open would bar later passthrough opens of the inode). No FLUSH is asked for unless a flush
 * rule may match. */
static void open_mode(const char *path, int fd, struct fuse_file_info *fi) {
    int data = rules_may_match(path, 1u << M_READ | 1u << M_WRITE);
    struct stat st;
    int have = fstat(fd, &st) == 0;
    if (have) opened_add(&st);
    int id = have ? backing_get(fd, &st, data) : 0;
    fi->fh = (uint64_t)fd | (id > 0 ? FH_PASSTHROUGH : 0);
    fi->backing_id = id;
    fi->direct_io = data || (passthrough && id <= 0);
    fi->keep_cache = 0;
    fi->noflush = !rules_may_match(path, 1u << M_FLUSH);
}

/* ---- passthrough ---- */

#define INJECT(path, method) \
    struct effects fx; \
    do { int _e = inject((path), (method), &fx); if (_e) return _e; } while (0)

/* For calls on an open file, or that may name a hidden one: the rules see the name it had. */
#define INJECT_FI(path, fi, method) \
    char _name[4096]; \
    INJECT(rule_path((path), (fi), _name, sizeof _name), (method))

/* New files belong to the caller, not to the server (root). */
static void own(const char *path) {
    struct fuse_context *c = fuse_get_context();
    if (c->uid != 0 || c->gid != 0)
        (void)fchownat(root_fd, rel(path), c->uid, c->gid, AT_SYMLINK_NOFOLLOW);
}

static void *fs_init(struct fuse_conn_info *conn, struct fuse_config *cfg) {
    cfg->use_ino = 1;
    cfg->nullpath_ok = 0;
    cfg->negative_timeout = 0;
    /* The covered directory may itself be stacked (overlayfs): one level below iofs is allowed. */
    passthrough = want_passthrough && fuse_set_feature_flag(conn, FUSE_CAP_PASSTHROUGH);
    if (passthrough) conn->max_backing_stack_depth = 1;
    /* Without passthrough a file's pages stay cached across opens while its size and mtime are
     * unchanged (see open_mode). */
    cfg->auto_cache = !passthrough;
    pthread_rwlock_wrlock(&rules_lock);
    fs_cfg = cfg;
    pthread_rwlock_unlock(&rules_lock);
    load_rules();
    report(passthrough ? "ok passthrough" : "ok", "", 0);
    return NULL;
}

static int fs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
    char name[4096];
    const char *rp = rule_path(path, fi, name, sizeof name);
    int hidden = rp == name;
    /* libfuse checking that a hidden name is free is no call of the target's: a rule matching the
     * name would make it give up, and the unlink of an open file fail with EBUSY. */
    int probe = !fi && !hidden && hidden_name(path);
    struct effects fx = {0};
    if (!probe) {
        int e = inject(rp, M_GETATTR, &fx);
        if (e) return e;
    }
    int r, fd = !fi && hidden ? hidden_dup(path) : -1;
    if (fi) r = fstat(FD(fi), st);
    else if (fd >= 0) r = fstat(fd, st);
    else r = fstatat(root_fd, rel(path), st, AT_SYMLINK_NOFOLLOW);
    int e = errno;
    if (fd >= 0) close(fd);
    if (r) {
        /* libfuse checks a hidden name is free before it hides a file under it (see fs_rename). */
        if (e == ENOENT && probe) snprintf(hidden_probe, sizeof hidden_probe, "%s", path);
        return -e;
    }
    /* libfuse takes one link off a hidden file's count: its name is really gone here already. */
    if (hidden) st->st_nlink++;
    override(st, &fx);
    if (fs_cfg && fs_cfg->attr_timeout > 0) remember_cached(path);
    return 0;
}

static int fs_access(const char *path, int mask) {
    INJECT(path, M_ACCESS);
    return faccessat(root_fd, rel(path), mask, 0) ? -errno : 0;
}

static int fs_readlink(const char *path, char *buf, size_t size) {
    INJECT(path, M_READLINK);
    ssize_t n = readlinkat(root_fd, rel(path), buf, size - 1);
    if (n < 0) return -errno;
    buf[n] = 0;
    return 0;
}

struct dirh { DIR *d; off_t off; };

static int fs_opendir(const char *path, struct fuse_file_info *fi) {
    INJECT(path, M_OPENDIR);
    int fd = openat(root_fd, rel(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    struct dirh *h = calloc(1, sizeof *h);
    if (!h || !(h->d = fdopendir(fd))) { int e = errno; close(fd); free(h); return -e; }
    fi->fh = (uint64_t)(uintptr_t)h;
    return 0;
}

static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off, struct fuse_file_info *fi,
                      enum fuse_readdir_flags flags) {
    (void)flags;
    INJECT(path, M_READDIR);
    struct dirh *h = (struct dirh *)(uintptr_t)fi->fh;
    if (off != h->off) { seekdir(h->d, off); h->off = off; }
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(h->d);
        if (!e) return errno ? -errno : 0;
        struct stat st = {.st_ino = e->d_ino, .st_mode = (mode_t)DTTOIF(e->d_type)};
        off_t next = telldir(h->d);
        if (fill(buf, e->d_name, &st, next, 0)) break;
        h->off = next;
    }
    return 0;
}

static int fs_releasedir(const char *path, struct fuse_file_info *fi) {
    struct dirh *h = (struct dirh *)(uintptr_t)fi->fh;
    closedir(h->d);
    free(h);
    if (path) { struct effects fx; return inject(path, M_RELEASEDIR, &fx); }
    return 0;
}

static int fs_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi) {
    INJECT(path, M_FSYNCDIR);
    int fd = dirfd(((struct dirh *)(uintptr_t)fi->fh)->d);
    return (datasync ? fdatasync(fd) : fsync(fd)) ? -errno : 0;
}

static int fs_mknod(const char *path, mode_t mode, dev_t rdev) {
    INJECT(path, M_MKNOD);
    if (mknodat(root_fd, rel(path), mode, rdev)) return -errno;
    own(path);
    return 0;
}

static int fs_mkdir(const char *path, mode_t mode) {
    INJECT(path, M_MKDIR);
    if (mkdirat(root_fd, rel(path), mode)) return -errno;
    own(path);
    return 0;
}

static int fs_unlink(const char *path) {
    INJECT_FI(path, NULL, M_UNLINK);
    if (!unhide(path)) return 0;
    return unlinkat(root_fd, rel(path), 0) ? -errno : 0;
}

static int fs_rmdir(const char *path) {
    INJECT(path, M_RMDIR);
    return unlinkat(root_fd, rel(path), AT_REMOVEDIR) ? -errno : 0;
}

static int fs_symlink(const char *to, const char *path) {
    INJECT(path, M_SYMLINK);
    if (symlinkat(to, root_fd, rel(path))) return -errno;
    own(path);
    return 0;
}

static int fs_rename(const char *from, const char *to, unsigned int flags) {
    /* libfuse hiding an open file that is unlinked or renamed over: for the caller an unlink. */
    int hiding = !flags && hidden_name(to) && !strcmp(to, hidden_probe);
    hidden_probe[0] = 0;
    if (hiding) {
        INJECT(from, M_UNLINK);
        int r = hide(from, to);
        if (r <= 0) return r;
    }
    INJECT(from, M_RENAME);
    return renameat2(root_fd, rel(from), root_fd, rel(to), flags) ? -errno : 0;
}

static int fs_link(const char *from, const char *to) {
    INJECT(to, M_LINK);
    return linkat(root_fd, rel(from), root_fd, rel(to), 0) ? -errno : 0;
}

/* The descriptor a setattr without a file handle works on: a hidden file's own (fchmod, fchown,
 * futimens on a file unlinked while open arrive by its hidden name), else -1: by path. */
static int setattr_fd(const char *path, const struct fuse_file_info *fi) {
    return fi ? fcntl(FD(fi), F_DUPFD_CLOEXEC, 0) : hidden_dup(path);
}

static int by_fd(int fd, int r) {
    int e = errno;
    close(fd);
    return r ? -e : 0;
}

static int fs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi) {
    INJECT_FI(path, fi, M_SETATTR);
    int fd = setattr_fd(path, fi);
    if (fd >= 0) return by_fd(fd, fchmod(fd, mode));
    return fchmodat(root_fd, rel(path), mode, 0) ? -errno : 0;
}

static int fs_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi) {
    INJECT_FI(path, fi, M_SETATTR);
    int fd = setattr_fd(path, fi);
    if (fd >= 0) return by_fd(fd, fchown(fd, uid, gid));
    return fchownat(root_fd, rel(path), uid, gid, AT_SYMLINK_NOFOLLOW) ? -errno : 0;
}

static int fs_truncate(const char *path, off_t size, struct fuse_file_info *fi) {
    INJECT_FI(path, fi, M_SETATTR);
    if (fi) return ftruncate(FD(fi), size) ? -errno : 0;
    int fd = openat(root_fd, rel(path), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int r = ftruncate(fd, size) ? -errno : 0;
    close(fd);
    return r;
}

static int fs_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi) {
    INJECT_FI(path, fi, M_SETATTR);
    int fd = setattr_fd(path, fi);
    if (fd >= 0) return by_fd(fd, futimens(fd, tv));
    return utimensat(root_fd, rel(path), tv, AT_SYMLINK_NOFOLLOW) ? -errno : 0;
}

static int fs_create(const char *path, mode_t mode, struct fuse_file_info *fi) {
    INJECT(path, M_CREATE);
    int fd = openat(root_fd, rel(path), (fi->flags | O_CREAT | O_CLOEXEC) & ~O_NOFOLLOW, mode);
    if (fd < 0) return -errno;
    own(path);
    open_mode(path, fd, fi);
    return 0;
}

static int fs_open(const char *path, struct fuse_file_info *fi) {
    INJECT(path, M_OPEN);
    int fd = openat(root_fd, rel(path), (fi->flags | O_CLOEXEC) & ~O_NOFOLLOW);
    if (fd < 0) return -errno;
    open_mode(path, fd, fi);
    return 0;
}

static int fs_read_buf(const char *path, struct fuse_bufvec **out, size_t size, off_t off,
                       struct fuse_file_info *fi) {
    INJECT_FI(path, fi, M_READ);
    struct fuse_bufvec *v = malloc(sizeof *v);
    if (!v) return -ENOMEM;
    *v = FUSE_BUFVEC_INIT(size);
    if (!fx.n_mistakes) {
        /* Nothing to change in the data: the kernel splices it from the file. */
        v->buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
        v->buf[0].fd = FD(fi);
        v->buf[0].pos = off;
        *out = v;
        return 0;
    }
    char *mem = malloc(size ? size : 1);
    if (!mem) { free(v); return -ENOMEM; }
    ssize_t n = pread(FD(fi), mem, size, off);
    if (n < 0) { int e = errno; free(mem); free(v); return -e; }
    corrupt(mem, (size_t)n, &fx);
    v->buf[0].mem = mem;
    v->buf[0].size = (size_t)n;
    *out = v;
    return 0;
}

static int fs_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
    INJECT_FI(path, fi, M_WRITE);
    if (!fx.n_mistakes) {
        ssize_t n = pwrite(FD(fi), buf, size, off);
        return n < 0 ? -errno : (int)n;
    }
    char *mem = malloc(size ? size : 1);
    if (!mem) return -ENOMEM;
    memcpy(mem, buf, size);
    corrupt(mem, size, &fx);
    ssize_t n = pwrite(FD(fi), mem, size, off);
    int e = errno;
    free(mem);
    return n < 0 ? -e : (int)n;
}

static int fs_statfs(const char *path, struct statvfs *st) {
    INJECT(path, M_STATFS);
    return fstatvfs(root_fd, st) ? -errno : 0;
}

static int fs_flush(const char *path, struct fuse_file_info *fi) {
    INJECT_FI(path, fi, M_FLUSH);
    /* What close() would report for the file (it is closed for real on release). */
    int d = dup(FD(fi));
    if (d < 0) return -errno;
    return close(d) ? -errno : 0;
}

static int fs_release(const char *path, struct fuse_file_info *fi) {
    char name[4096];
    const char *rp = rule_path(path, fi, name, sizeof name); /* before a hidden file's entry goes */
    struct stat st;
    if (fstat(FD(fi), &st) == 0) {
        if (fi->fh & FH_PASSTHROUGH) backing_put(&st);
        opened_drop(&st);
    }
    close(FD(fi));
    struct effects fx;
    return inject(rp, M_RELEASE, &fx);
}

static int fs_fsync(const char *path, int datasync, struct fuse_file_info *fi) {
    INJECT_FI(path, fi, M_FSYNC);
    return (datasync ? fdatasync(FD(fi)) : fsync(FD(fi))) ? -errno : 0;
}

/* xattrs by descriptor: /proc/self is not this process in the target's /proc. A file unlinked
 * while open (f*xattr on its descriptor arrive by its hidden name) by iofs's own descriptor. */
static int xfd(const char *path) {
    int fd = openat(root_fd, rel(path), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
    return fd < 0 && errno == ENOENT ? hidden_dup(path) : fd;
}

static int fs_setxattr(const char *path, const char *name, const char *val, size_t size, int flags) {
    INJECT_FI(path, NULL, M_SETXATTR);
    int fd = xfd(path);
    if (fd < 0) return errno == ELOOP ? -ENOTSUP : -errno;
    int r = fsetxattr(fd, name, val, size, flags) ? -errno : 0;
    close(fd);
    return r;
}

static int fs_getxattr(const char *path, const char *name, char *val, size_t size) {
    INJECT_FI(path, NULL, M_GETXATTR);
    int fd = xfd(path);
    if (fd < 0) return errno == ELOOP ? -ENOTSUP : -errno;
    ssize_t n = fgetxattr(fd, name, val, size);
    int e = errno;
    close(fd);
    return n < 0 ? -e : (int)n;
}

static int fs_listxattr(const char *path, char *list, size_t size) {
    INJECT_FI(path, NULL, M_LISTXATTR);
    int fd = xfd(path);
    if (fd < 0) return errno == ELOOP ? 0 : -errno;
    ssize_t n = flistxattr(fd, list, size);
    int e = errno;
    close(fd);
    return n < 0 ? -e : (int)n;
}

static int fs_removexattr(const char *path, const char *name) {
    INJECT_FI(path, NULL, M_REMOVEXATTR);
    int fd = xfd(path);
    if (fd < 0) return errno == ELOOP ? -ENOTSUP : -errno;
    int r = fremovexattr(fd, name) ? -errno : 0;
    close(fd);
    return r;
}

/* ---- attributes of a file whose directory is gone ----
 * The kernel asks for an open file's attributes (fstat) by node, with no file handle, and
 * libfuse's path API answers only for a node it can name: a hidden file whose directory was
 * removed too it cannot, and it would fail with ESTALE. iofs answers every such call on a hidden
 * file itself, in front of libfuse: the session's getattr is replaced by one that serves them
 * (libfuse's node id is in the hidden name) and hands every other call on to libfuse's. */
static void (*lib_getattr)(fuse_req_t, fuse_ino_t, struct fuse_file_info *);

/* A descriptor of the hidden file libfuse knows as node `ino` (the caller closes it), and the
 * name it had; -1: no such file. */
static int hidden_node_dup(fuse_ino_t ino, char *name, size_t n) {
    if (!__atomic_load_n(&n_hidden, __ATOMIC_RELAXED) || ino > UINT32_MAX) return -1;
    int fd = -1;
    pthread_mutex_lock(&opened_lock);
    for (int i = 0; i < OPEN_BUCKETS && fd < 0; i++)
        for (struct opened *o = opened[i]; o && fd < 0; o = o->next)
            if (o->fd >= 0 && o->node == (uint32_t)ino && (fd = fcntl(o->fd, F_DUPFD_CLOEXEC, 0)) >= 0)
                snprintf(name, n, "%s", o->name);
    pthread_mutex_unlock(&opened_lock);
    return fd;
}

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
    char name[4096];
    int fd = fi ? -1 : hidden_node_dup(ino, name, sizeof name);
    if (fd < 0) {
        lib_getattr(req, ino, fi);
        return;
    }
    struct effects fx;
    struct stat st;
    int e = -inject(name, M_GETATTR, &fx);
    if (!e && fstat(fd, &st)) e = errno;
    close(fd);
    if (e) {
        fuse_reply_err(req, e);
        return;
    }
    override(&st, &fx);
    fuse_reply_attr(req, &st, fs_cfg ? fs_cfg->attr_timeout : 0);
}

static const struct fuse_operations ops = {
    .init = fs_init, .getattr = fs_getattr, .access = fs_access, .readlink = fs_readlink,
    .opendir = fs_opendir, .readdir = fs_readdir, .releasedir = fs_releasedir, .fsyncdir = fs_fsyncdir,
    .mknod = fs_mknod, .mkdir = fs_mkdir, .unlink = fs_unlink, .rmdir = fs_rmdir, .symlink = fs_symlink,
    .rename = fs_rename, .link = fs_link, .chmod = fs_chmod, .chown = fs_chown, .truncate = fs_truncate,
    .utimens = fs_utimens, .create = fs_create, .open = fs_open, .read_buf = fs_read_buf, .write = fs_write,
    .statfs = fs_statfs, .flush = fs_flush, .release = fs_release, .fsync = fs_fsync,
    .setxattr = fs_setxattr, .getxattr = fs_getxattr, .listxattr = fs_listxattr, .removexattr = fs_removexattr,
};

/* ---- mount table ---- */

/* Mountinfo escapes ' ', '\t', '\n' and '\\' as octal. */
static void unescape(char *s) {
    char *o = s;
    for (; *s; s++) {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '7' && s[2] && s[3]) {
            *o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
            s += 3;
        } else {
            *o++ = *s;
        }
    }
    *o = 0;
}

/* How many iofs mounts sit at `path` in the mount table read through `proc_fd` (/proc/PID), and
with `top`, whether the topmost mount there (the last listed) is one. */
static int iofs_mounts_at_top(int proc_fd, const char *path, int *top) {
    int fd = openat(proc_fd, "mountinfo", O_RDONLY | O_CLOEXEC);
    FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
    if (!f) return -1;
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    while (getline(&line, &cap, f) > 0) {
        char mnt[4096], type[256];
        char *sep = strstr(line, " - ");
        if (!sep || sscanf(line, "%*s %*s %*s %*s %4095s", mnt) != 1 || sscanf(sep + 3, "%255s", type) != 1)
            continue;
        unescape(mnt);
        if (strcmp(mnt, path)) continue;
        int ours = !strcmp(type, FSTYPE);
        n += ours;
        if (top) *top = ours;
    }
    free(line);
    fclose(f);
    return n;
}

static int iofs_mounts_at(int proc_fd, const char *path) { return iofs_mounts_at_top(proc_fd, path, NULL); }

/* ---- the target's end ----
 * iofs is in the target's mount namespace, so it keeps it, and its own mount, alive: were it to
 * serve on after the target exits, nothing would ever end it (the injector may be gone too). So
 * when the target exits, iofs detaches its mounts at the volume (never another filesystem stacked
 * on them) and the connection ends, and iofs with it, once the files still open on it are closed. */
static int target_pidfd = -1, self_fd = -1;

static void watch_target(int pid) {
    target_pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    self_fd = open("/proc/self", O_PATH | O_DIRECTORY | O_CLOEXEC); /* its mountinfo: iofs's namespace */
}

static void detach_when_target_gone(void) {
    struct pollfd p = {.fd = target_pidfd, .events = POLLIN};
    if (target_pidfd < 0 || self_fd < 0 || poll(&p, 1, 0) <= 0) return;
    close(target_pidfd);
    target_pidfd = -1;
    int top = 0;
    while (iofs_mounts_at_top(self_fd, volume, &top) > 0 && top)
        if (umount2(volume, MNT_DETACH)) break;
}

static int enter_mount_ns(int pid, int *proc_fd) {
    char p[64];
    snprintf(p, sizeof p, "/proc/%d", pid);
    *proc_fd = open(p, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (*proc_fd < 0) return -1;
    int ns = openat(*proc_fd, "ns/mnt", O_RDONLY | O_CLOEXEC);
    if (ns < 0) return -1;
    int r = setns(ns, CLONE_NEWNS);
    close(ns);
    return r;
}

static int status_fd = -1;

static void report(const char *fmt, const char *arg, int err) {
    char msg[8192];
    int n = snprintf(msg, sizeof msg, fmt, arg);
    if (err) snprintf(msg + n, sizeof msg - (size_t)n, ": %s", strerror(err));
    if (status_fd >= 0) {
        if (write(status_fd, msg, strlen(msg)) < 0) {}
        close(status_fd);
        status_fd = -1;
    } else {
        fprintf(stderr, "iofs: %s\n", msg);
    }
}

/* Re-reads the rules on SIGUSR1, and when the file was replaced or changed (every 200 ms). */
static void *watch_rules(void *arg) {
    (void)arg;
    pthread_setname_np(pthread_self(), "iofs-rules"); /* told apart from the threads serving FUSE */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    struct stat last = {0};
    int had = 1;
    struct timespec tick = {0, 200 * 1000000};
    for (;;) {
        int sig = sigtimedwait(&set, NULL, &tick);
        struct stat st = {0};
        int have = fstatat(rules_dir_fd, rules_name, &st, 0) == 0;
        int moved = st.st_ino != last.st_ino || st.st_size != last.st_size;
        int touched = st.st_mtim.tv_sec != last.st_mtim.tv_sec || st.st_mtim.tv_nsec != last.st_mtim.tv_nsec;
        int changed = have != had || (have && (moved || touched));
        if (sig == SIGUSR1 || changed) {
            load_rules(); /* a removed file: no rules */
            last = st;
            had = have;
        }
        backing_expire();
        detach_when_target_gone();
    }
    return NULL;
}

/* The injector's requests on the control socket (--control-fd, listening): each connection sends
 * a line ("reload") and gets "ok N" (N rules in force) once the rules file has been re-read and the
 * attributes it may change are dropped, or "error"; so a rule change returns only when it is in
 * force. */
static int control_fd = -1;

static void *serve_control(void *arg) {
    (void)arg;
    pthread_setname_np(pthread_self(), "iofs-control");
    for (;;) {
        int c = accept4(control_fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            return NULL;
        }
        struct timeval wait = {5, 0}; /* a client that sends nothing does not hold the others up */
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
        char req[64];
        ssize_t n = read(c, req, sizeof req - 1);
        char reply[32];
        int len = 0;
        if (n > 0) {
            req[n] = 0;
            int rules_n = strncmp(req, "reload", 6) ? -1 : load_rules();
            len = rules_n < 0 ? snprintf(reply, sizeof reply, "error\n")
                              : snprintf(reply, sizeof reply, "ok %d\n", rules_n);
        }
        if (len > 0 && write(c, reply, (size_t)len) < 0) {}
        close(c);
    }
    return NULL;
}

static int usage(void) {
    fprintf(stderr, "usage: iofs mount --pid PID --path DIR --rules FILE [--status-fd FD] [--control-fd FD] [--passthrough no]\n"
                    "       iofs umount --pid PID --path DIR\n");
    return 2;
}

static int cmd_umount(int pid, const char *path) {
    int proc_fd;
    if (enter_mount_ns(pid, &proc_fd)) {
        fprintf(stderr, "iofs: entering the mount namespace of %d: %s\n", pid, strerror(errno));
        return errno == ENOENT || errno == ESRCH ? 0 : 1; /* the target is gone: nothing mounted */
    }
    int detached = 0;
    for (int n = iofs_mounts_at(proc_fd, path); n > 0; n = iofs_mounts_at(proc_fd, path)) {
        if (umount2(path, MNT_DETACH)) {
            fprintf(stderr, "iofs: detaching %s: %s\n", path, strerror(errno));
            return 1;
        }
        detached++;
    }
    printf("%d\n", detached);
    return 0;
}

static int cmd_mount(int pid, const char *path, const char *rules_path) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", rules_path);
    char *slash = strrchr(dir, '/');
    if (!slash) { report("--rules must be an absolute path: %s", rules_path, 0); return 2; }
    *slash = 0;
    rules_name = strrchr(rules_path, '/') + 1;
    rules_dir_fd = open(dir[0] ? dir : "/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rules_dir_fd < 0) { report("opening %s", dir, errno); return 1; }
    int fuse_fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fuse_fd < 0) { report("opening %s", "/dev/fuse", errno); return 1; }
    dev_fuse = fuse_fd;
    snprintf(volume, sizeof volume, "%s", path);
    load_rules();

    watch_target(pid); /* before leaving the host's /proc */
    int proc_fd;
    if (enter_mount_ns(pid, &proc_fd)) { report("entering the mount namespace of the target (%s)", path, errno); return 1; }
    if (chdir("/")) { report("chdir %s", "/", errno); return 1; }
    if (iofs_mounts_at(proc_fd, path) > 0) { report("an iofs is already mounted at %s", path, 0); return EXIT_ALREADY; }
    root_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0) { report("opening the volume %s", path, errno); return 1; }
    struct stat st;
    if (fstat(root_fd, &st)) { report("stat %s", path, errno); return 1; }
    char opts[256];
    snprintf(opts, sizeof opts, "fd=%d,rootmode=%o,user_id=0,group_id=0,allow_other,default_permissions",
             fuse_fd, st.st_mode & S_IFMT);
    if (mount(FSNAME, path, FSTYPE, MS_NOSUID | MS_NODEV, opts)) { report("mounting over %s", path, errno); return 1; }

    char *argv[] = {"iofs", NULL};
    struct fuse_args args = FUSE_ARGS_INIT(1, argv);
    struct fuse *f = fs = fuse_new(&args, &ops, sizeof ops, NULL);
    char devfd[32];
    snprintf(devfd, sizeof devfd, "/dev/fd/%d", fuse_fd);
    if (!f || fuse_mount(f, devfd)) {
        umount2(path, MNT_DETACH);
        report("starting the FUSE session on %s", path, 0);
        return 1;
    }
    struct fuse_session *se = fuse_get_session(f);
    lib_getattr = se->op.getattr;
    se->op.getattr = ll_getattr;
    /* SIGUSR1 is taken by the rules thread only; SIGTERM/SIGINT end the loop (fuse's handlers). */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    pthread_t t;
    pthread_create(&t, NULL, watch_rules, NULL);
    if (control_fd >= 0) {
        fcntl(control_fd, F_SETFD, FD_CLOEXEC);
        pthread_create(&t, NULL, serve_control, NULL);
    }
    fuse_set_signal_handlers(fuse_get_session(f));
    /* "ok" is reported by fs_init, once the kernel's INIT has arrived: the mount serves. */
    struct fuse_loop_config *cfg = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(cfg, 64);
    int r = fuse_loop_mt(f, cfg);
    fuse_loop_cfg_destroy(cfg);
    fuse_remove_signal_handlers(fuse_get_session(f));
    fuse_unmount(f);
    fuse_destroy(f);
    return r < 0 ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return usage();
    int pid = 0;
    const char *path = NULL, *rules_path = NULL;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--pid")) pid = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--path")) path = argv[i + 1];
        else if (!strcmp(argv[i], "--rules")) rules_path = argv[i + 1];
        else if (!strcmp(argv[i], "--status-fd")) status_fd = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--control-fd")) control_fd = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--passthrough")) want_passthrough = strcmp(argv[i + 1], "no") != 0;
        else return usage();
    }
    if (pid <= 0 || !path || path[0] != '/') return usage();
    if (!strcmp(argv[1], "umount")) return cmd_umount(pid, path);
    if (!strcmp(argv[1], "mount") && rules_path) {
        int r = cmd_mount(pid, path, rules_path);
        if (status_fd >= 0) report("exited before mounting", "", 0);
        return r;
    }
    return usage();
}
