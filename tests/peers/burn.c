/* A CPU burner with known shape, for the profiling tests.
 *
 *   burn cpu SECONDS       burn_heavy and burn_light, called by run_cpu, in a
 *                          2:1 ratio of CPU time: each spins for a fixed
 *                          amount of its thread's CPU time per call, so the
 *                          ratio holds however busy the machine is
 *   burn syscalls SECONDS  getppid() in a loop: mostly kernel time
 *
 * Built with frame pointers so the kernel can walk its stacks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long sink;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Spins in its own body (the leaf) for `ms` milliseconds of CPU time. */
__attribute__((noinline)) void burn_heavy(double ms) {
    double end = cpu_now() + ms / 1e3;
    while (cpu_now() < end)
        for (unsigned long i = 0; i < 20000; i++) sink += i * 7;
}

__attribute__((noinline)) void burn_light(double ms) {
    double end = cpu_now() + ms / 1e3;
    while (cpu_now() < end)
        for (unsigned long i = 0; i < 20000; i++) sink += i * 7;
}

__attribute__((noinline)) void run_cpu(double seconds) {
    double end = now() + seconds;
    while (now() < end) {
        burn_heavy(2.0);
        burn_light(1.0);
    }
}

__attribute__((noinline)) void run_syscalls(double seconds) {
    double end = now() + seconds;
    while (now() < end)
        for (int i = 0; i < 1000; i++) sink += getppid();
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s cpu|syscalls SECONDS\n", argv[0]);
        return 2;
    }
    double seconds = atof(argv[2]);
    if (strcmp(argv[1], "cpu") == 0) run_cpu(seconds);
    else if (strcmp(argv[1], "syscalls") == 0) run_syscalls(seconds);
    else return 2;
    return 0;
}
