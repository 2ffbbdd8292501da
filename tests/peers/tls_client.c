/* HTTPS client on OpenSSL for the TLS tests: one connection, the given paths
 * as HTTP/1.1 keep-alive requests, each response read to its Content-Length.
 *
 *   tls_client [--seccomp] [--pause MS] PORT PATH...
 *
 * --pause waits after the handshake, before the first request: a program
 * that carries its own OpenSSL (static) is probed once the agent has seen
 * its first TLS records, which takes the agent milliseconds.
 *
 * --seccomp installs a filter that kills the process on the uretprobe
 * syscall (x86-64 335, since Linux 6.11) before it makes any TLS call: a
 * program whose filter does not know that syscall dies when a uretprobe
 * fires in it (systemd#34615). The agent's RET-offset uprobes must leave it
 * alive. Built dynamically and statically (-static) by the tests. */
#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <arpa/inet.h>

static void install_filter(void) {
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 335, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof filter / sizeof filter[0], .filter = filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
        perror("seccomp");
        exit(2);
    }
}

/* Reads one response: headers, then Content-Length bytes. */
static int read_response(SSL *ssl) {
    char buf[65536];
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        int n = SSL_read(ssl, buf + have, (int)(sizeof buf - 1 - have));
        if (n <= 0) return -1;
        have += (size_t)n;
        buf[have] = 0;
        end = strstr(buf, "\r\n\r\n");
    }
    int status = atoi(buf + 9);
    char *cl = strcasestr(buf, "Content-Length:");
    long want = cl ? atol(cl + 15) : 0;
    long got = (long)(have - (size_t)(end + 4 - buf));
    while (got < want) {
        int n = SSL_read(ssl, buf, sizeof buf);
        if (n <= 0) return -1;
        got += n;
    }
    printf("%d %ld\n", status, want);
    return 0;
}

int main(int argc, char **argv) {
    int arg = 1;
    if (argc > 1 && strcmp(argv[1], "--seccomp") == 0) {
        install_filter();
        arg++;
    }
    int pause_ms = 0;
    if (argc > arg + 1 && strcmp(argv[arg], "--pause") == 0) {
        pause_ms = atoi(argv[arg + 1]);
        arg += 2;
    }
    if (argc - arg < 2) {
        fprintf(stderr, "usage: %s [--seccomp] [--pause MS] PORT PATH...\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[arg++]);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr)) {
        perror("connect");
        return 1;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    if (pause_ms > 0) usleep((useconds_t)pause_ms * 1000);
    for (; arg < argc; arg++) {
        char req[512];
        int len = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n", argv[arg]);
        if (SSL_write(ssl, req, len) != len || read_response(ssl)) {
            ERR_print_errors_fp(stderr);
            return 1;
        }
    }
    SSL_shutdown(ssl);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    return 0;
}
