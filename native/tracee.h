/* tracee: what the ptrace helpers (timeskew, codepatch) share: the target's memory through
 * /proc/PID/mem, stopping every thread of it clear of the bytes about to change, resuming them
 * with any signal the stop intercepted, and running a syscall (an mmap) inside it. */
#ifndef CHAOSBUS_TRACEE_H
#define CHAOSBUS_TRACEE_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

extern const char *tool;  /* the helper's name, for messages */
extern pid_t target;

/* A range of the target's code some thread must not be inside while it is rewritten. */
struct range {
	uint64_t addr;
	size_t len;
};

void die_errno(int code, const char *what);
int gone(void);
uint64_t now_us(void);
void open_mem(void);
/* open_mem for another target (the previous one closed); -1 with errno set instead of exiting. */
int try_open_mem(void);
int read_mem(uint64_t addr, void *buf, size_t len);
int write_mem(uint64_t addr, const void *buf, size_t len);
int parse_hex(const char *s, uint8_t *out, size_t len);
/* Stops every thread with none inside a range (retrying briefly); -1 with errno set otherwise. */
int stop_clear(const struct range *rs, int n);
/* Detaches every stopped thread, handing back the signals the stop intercepted. */
void resume_all(void);
/* Maps `len` bytes PROT_READ|PROT_EXEC in the stopped target, using two bytes at `scratch`
 * (which the caller is about to overwrite anyway) for one `syscall` instruction. */
int remote_mmap(uint64_t scratch, size_t len, uint64_t *out);
/* Runs syscall `nr` with `args` in one stopped thread the same way; its result in *out, or -1 with
 * errno set to the syscall's error. The thread's registers are restored afterwards. */
int remote_syscall(uint64_t scratch, long nr, const uint64_t args[6], uint64_t *out);
#endif
