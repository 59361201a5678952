/* A target for the timeskew tests: N threads (argv[1], default 1) each print, every 20 ms,
 * "thread realtime_ns monotonic_ns boottime_ns gettimeofday_us time_s" read through the vDSO.
 * Clock differences (realtime - boottime) show a skew exactly, however loaded the machine. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t out = PTHREAD_MUTEX_INITIALIZER;

static void *loop(void *arg)
{
	long id = (long)arg;
	for (;;) {
		struct timespec rt, mono, boot;
		struct timeval tv;
		clock_gettime(CLOCK_REALTIME, &rt);
		clock_gettime(CLOCK_MONOTONIC, &mono);
		clock_gettime(CLOCK_BOOTTIME, &boot);
		gettimeofday(&tv, NULL);
		time_t s = time(NULL);
		pthread_mutex_lock(&out);
		printf("%ld %lld %lld %lld %lld %lld\n", id, (long long)rt.tv_sec * 1000000000LL + rt.tv_nsec,
		       (long long)mono.tv_sec * 1000000000LL + mono.tv_nsec,
		       (long long)boot.tv_sec * 1000000000LL + boot.tv_nsec,
		       (long long)tv.tv_sec * 1000000LL + tv.tv_usec, (long long)s);
		fflush(stdout);
		pthread_mutex_unlock(&out);
		usleep(20000);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1;
	for (long i = 1; i < n; i++) {
		pthread_t t;
		pthread_create(&t, NULL, loop, (void *)i);
	}
	loop((void *)0);
	return 0;
}
