/* A program that closes every descriptor it did not open, as daemons and shells do
   (close_range(3, ~0U, 0)), then opens its own, which take the numbers the library's
   hotplug watcher held: a datagram socket pair with a datagram waiting at one end, a
   file with content and an offset, and a pipe with bytes in it (a number the watcher
   took back first, as it may when it wakes between the close and the opens, is given the
   socket's end by dup3, so that every one of the library's numbers is the program's).
   It goes on allocating
   for longer than the watcher's poll and reconcile intervals (with the argument `stdin`,
   until its standard input closes, for a test that switches cpu1 meanwhile), then checks
   that nothing of its own was read, written, closed or replaced. Its standard output is
   the same under glibc. On stderr: the descriptors above 2 open before close_range (the
   library's) and which of those numbers are the program's afterwards. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_FDS 64

static const char DATAGRAM[] = "the program's datagram";
static const char CONTENT[] = "the program's file\n";
static const char PIPED[] = "the program's pipe";

/* The descriptors above 2 open now (but the directory's own), with what they name. */
static int open_descriptors(int *numbers, char names[][64]) {
    int count = 0;
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *entry;
    while (dir && (entry = readdir(dir)) && count < MAX_FDS) {
        int fd = atoi(entry->d_name);
        if (entry->d_name[0] == '.' || fd <= 2 || fd == dirfd(dir)) continue;
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t len = readlink(path, names[count], 63);
        names[count][len > 0 ? len : 0] = 0;
        numbers[count++] = fd;
    }
    if (dir) closedir(dir);
    return count;
}

static ino_t inode(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 ? st.st_ino : 0;
}

/* Allocates and frees a few blocks of many sizes: the program keeps the allocator busy
   while the watcher wakes. */
static void churn(void) {
    void *blocks[32];
    for (int i = 0; i < 32; i++) memset(blocks[i] = malloc(16 + i * 97), i, 16 + i * 97);
    for (int i = 0; i < 32; i++) free(blocks[i]);
}

int main(int argc, char **argv) {
    int until_stdin = argc > 1 && strcmp(argv[1], "stdin") == 0;
    free(malloc(100));
    int before[MAX_FDS];
    char names[MAX_FDS][64];
    int count = open_descriptors(before, names);
    /* Each line goes out in one write: the watcher's thread writes to stderr too. */
    char line[MAX_FDS * 80] = "library descriptors before close_range:";
    for (int i = 0; i < count; i++)
        snprintf(line + strlen(line), sizeof line - strlen(line), " %d=%s", before[i], names[i]);
    fprintf(stderr, "%s\n", line);

    if (syscall(SYS_close_range, 3u, ~0u, 0u) != 0) { perror("close_range"); return 2; }

    int pair[2], pipe_fds[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, pair) != 0) { perror("socketpair"); return 2; }
    /* One datagram waits at pair[0]; nothing at pair[1]. */
    if (send(pair[1], DATAGRAM, sizeof DATAGRAM, 0) != (ssize_t)sizeof DATAGRAM) { perror("send"); return 2; }
    char path[] = "/tmp/numaslab-fdreuse-XXXXXX";
    int file = mkostemp(path, O_CLOEXEC);
    if (file < 0) { perror("mkostemp"); return 2; }
    unlink(path);
    if (write(file, CONTENT, sizeof CONTENT - 1) != (ssize_t)sizeof CONTENT - 1) { perror("write"); return 2; }
    if (pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) { perror("pipe2"); return 2; }
    if (write(pipe_fds[1], PIPED, sizeof PIPED) != (ssize_t)sizeof PIPED) { perror("write pipe"); return 2; }
    int mine[5 + MAX_FDS] = {pair[0], pair[1], file, pipe_fds[0], pipe_fds[1]};
    int owned = 5;
    ino_t inodes[5 + MAX_FDS];
    for (int i = 0; i < 5; i++) inodes[i] = inode(mine[i]);
    for (int i = 0; i < count; i++) {
        int taken = 0;
        for (int j = 0; j < owned; j++) taken |= before[i] == mine[j];
        if (taken) continue;
        /* The watcher has this number again (or it is free): the program takes it. */
        if (dup3(pair[0], before[i], O_CLOEXEC) != before[i]) { perror("dup3"); return 2; }
        inodes[owned] = inodes[0];
        mine[owned++] = before[i];
    }
    strcpy(line, "now the program's:");
    for (int i = 0; i < count; i++)
        for (int j = 0; j < owned; j++)
            if (before[i] == mine[j]) snprintf(line + strlen(line), sizeof line - strlen(line), " %d", before[i]);
    fprintf(stderr, "%s\n", line);

    if (until_stdin) {
        struct pollfd in = {0, POLLIN, 0};
        char buf[64];
        for (;;) {
            churn();
            if (poll(&in, 1, 10) > 0 && read(0, buf, sizeof buf) <= 0) break;
        }
    } else {
        /* 2.5 s: the watcher reconciles every second and polls every 100 ms. */
        for (int i = 0; i < 250; i++) {
            churn();
            struct timespec pause = {0, 10 * 1000 * 1000};
            nanosleep(&pause, NULL);
        }
    }

    int same = 1;
    for (int i = 0; i < owned; i++) same &= fcntl(mine[i], F_GETFD) != -1 && inode(mine[i]) == inodes[i];
    printf("descriptors: %s\n", same ? "still the program's" : "CLOSED OR REPLACED");

    char got[64];
    ssize_t first = recv(pair[0], got, sizeof got, MSG_DONTWAIT);
    ssize_t more = recv(pair[0], got + 32, 32, MSG_DONTWAIT);
    ssize_t other = recv(pair[1], got + 32, 32, MSG_DONTWAIT);
    int datagram = first == (ssize_t)sizeof DATAGRAM && memcmp(got, DATAGRAM, sizeof DATAGRAM) == 0;
    printf("socket pair: %s\n", datagram && more < 0 && other < 0 ? "intact" : "TOUCHED");

    off_t offset = lseek(file, 0, SEEK_CUR);
    struct stat st;
    ssize_t read_back = pread(file, got, sizeof got, 0);
    int content = fstat(file, &st) == 0 && st.st_size == (off_t)sizeof CONTENT - 1 &&
                  read_back == (ssize_t)sizeof CONTENT - 1 && memcmp(got, CONTENT, sizeof CONTENT - 1) == 0;
    printf("file: %s\n", content && offset == (off_t)sizeof CONTENT - 1 ? "intact" : "TOUCHED");

    ssize_t piped = read(pipe_fds[0], got, sizeof got);
    ssize_t extra = read(pipe_fds[0], got + 32, 32);
    int pipe_ok = piped == (ssize_t)sizeof PIPED && memcmp(got, PIPED, sizeof PIPED) == 0 && extra < 0 && errno == EAGAIN;
    printf("pipe: %s\n", pipe_ok ? "intact" : "TOUCHED");
    return same && datagram && content && pipe_ok ? 0 : 1;
}
