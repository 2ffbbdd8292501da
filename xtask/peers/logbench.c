/* Writes N short log lines to stdout, one write() each, after a byte on
 * stdin (the agent lists it meanwhile); prints its own CPU time (µs) on
 * stderr. For `cargo xtask bench logs`. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

static long cpu_us(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000000L + u.ru_utime.tv_usec + u.ru_stime.tv_usec;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 100000;
    char go;
    if (read(0, &go, 1) != 1)
        return 1;
    long start = cpu_us();
    char line[128];
    for (long i = 0; i < n; i++) {
        int len = snprintf(line, sizeof line, "INFO request %ld done for bob@example.com in 3 ms\n", i);
        if (write(1, line, (size_t)len) != len)
            return 1;
    }
    fprintf(stderr, "cpu_us %ld\n", cpu_us() - start);
    return 0;
}
