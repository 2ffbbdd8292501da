#define _GNU_SOURCE
/* A blocking HTTP/1.1 server for the span <-> profile tests.
 *
 *   corr_server PORT
 *
 * One thread serves connections one at a time (keep-alive): GET /burn spins
 * about 400 ms of CPU in burn_request(), anything else answers at once. A
 * background thread spins in background_spin() the whole time, outside any
 * request. Built with frame pointers so the agent's stacks name both.
 */
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double thread_cpu_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static volatile unsigned long sink;

__attribute__((noinline)) static void burn_request(double ms) {
    double end = thread_cpu_ms() + ms;
    while (thread_cpu_ms() < end)
        sink++;
}

__attribute__((noinline)) static void background_spin(void) {
    for (;;) {
        double end = thread_cpu_ms() + 20;
        while (thread_cpu_ms() < end)
            sink++;
        usleep(20000);
    }
}

static void *background(void *arg) {
    (void)arg;
    background_spin();
    return NULL;
}

/* Serves one keep-alive connection until the client closes it. */
static void serve(int fd) {
    char buf[8192];
    size_t have = 0;
    for (;;) {
        char *end = NULL;
        while (!(end = memmem(buf, have, "\r\n\r\n", 4))) {
            if (have == sizeof buf)
                return;
            ssize_t n = read(fd, buf + have, sizeof buf - have);
            if (n <= 0)
                return;
            have += (size_t)n;
        }
        if (strncmp(buf, "GET /burn", 9) == 0)
            burn_request(400);
        const char *response = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
        if (write(fd, response, strlen(response)) < 0)
            return;
        size_t used = (size_t)(end + 4 - buf);
        memmove(buf, buf + used, have - used);
        have -= used;
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: corr_server PORT\n");
        return 2;
    }
    pthread_t t;
    pthread_create(&t, NULL, background, NULL);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s, (struct sockaddr *)&addr, sizeof addr) || listen(s, 16)) {
        perror("bind/listen");
        return 1;
    }
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0)
            continue;
        serve(c);
        close(c);
    }
}
