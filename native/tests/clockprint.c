/* A target for the timeskew tests and bench: N threads (argv[1], default 1) each print, every
 * argv[2] microseconds (default 20 ms),
 * "thread realtime_ns monotonic_ns boottime_ns gettimeofday_us time_s" read through the vDSO.
 * Clock differences (realtime - boottime) show a skew exactly, however loaded the machine. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t out = PTHREAD_MUTEX_INITIALIZER;
static useconds_t interval_us = 20000;

static void *loop(void *arg)
{
	long id = (long)arg;
	for (;;) {
		struct timespec rt, mono, boot, boot2;
		struct timeval tv;
		time_t s;
		/* Read between two CLOCK_BOOTTIME reads, again if the thread was preempted meanwhile, so
		 * the differences between clocks are exact to a millisecond on a loaded machine. */
		for (int tries = 0; tries < 20; tries++) {
			clock_gettime(CLOCK_BOOTTIME, &boot);
			clock_gettime(CLOCK_REALTIME, &rt);
			clock_gettime(CLOCK_MONOTONIC, &mono);
			gettimeofday(&tv, NULL);
			s = time(NULL);
			clock_gettime(CLOCK_BOOTTIME, &boot2);
			long long window = (boot2.tv_sec - boot.tv_sec) * 1000000000LL + boot2.tv_nsec - boot.tv_nsec;
			if (window < 1000000)
				break;
		}
		pthread_mutex_lock(&out);
		printf("%ld %lld %lld %lld %lld %lld\n", id, (long long)rt.tv_sec * 1000000000LL + rt.tv_nsec,
		       (long long)mono.tv_sec * 1000000000LL + mono.tv_nsec,
		       (long long)boot.tv_sec * 1000000000LL + boot.tv_nsec,
		       (long long)tv.tv_sec * 1000000LL + tv.tv_usec, (long long)s);
		fflush(stdout);
		pthread_mutex_unlock(&out);
		usleep(interval_us);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1;
	if (argc > 2)
		interval_us = (useconds_t)atol(argv[2]);
	for (long i = 1; i < n; i++) {
		pthread_t t;
		pthread_create(&t, NULL, loop, (void *)i);
	}
	loop((void *)0);
	return 0;
}
