/* Whether this process has a thread named hotplug-watcher, and whether it blocks SIGINT,
   SIGTERM and SIGCHLD; then the same in a forked child after it allocated. The program
   starts no thread, so every thread but the main one is the library's: it exists once
   pthread_create returned (its mask is set from birth), and is waited for, up to five
   seconds, to name itself (it does so once it runs). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int blocks(unsigned long long mask, int signal) { return (mask >> (signal - 1)) & 1; }

/* Whether task `tid`'s name is hotplug-watcher, waiting for it to be set. */
static int named_watcher(const char *tid) {
    char path[64], line[64];
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", tid);
    for (int tries = 0; tries < 500; tries++) {
        FILE *comm = fopen(path, "r");
        int named = comm && fgets(line, sizeof line, comm) && strcmp(line, "hotplug-watcher\n") == 0;
        if (comm) fclose(comm);
        if (named) return 1;
        struct timespec pause = {0, 10 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    return 0;
}

static void report(const char *who) {
    int others = 0, named = 0, blocked = 1;
    char self[32];
    snprintf(self, sizeof self, "%d", (int)getpid());
    DIR *tasks = opendir("/proc/self/task");
    struct dirent *task;
    while (tasks && (task = readdir(tasks))) {
        if (task->d_name[0] == '.' || strcmp(task->d_name, self) == 0) continue;
        others++;
        char path[64], line[256];
        snprintf(path, sizeof path, "/proc/self/task/%s/status", task->d_name);
        FILE *status = fopen(path, "r");
        unsigned long long mask = 0;
        while (status && fgets(line, sizeof line, status))
            if (strncmp(line, "SigBlk:", 7) == 0) mask = strtoull(line + 7, NULL, 16);
        if (status) fclose(status);
        blocked &= blocks(mask, 2) && blocks(mask, 15) && blocks(mask, 17);
        named += named_watcher(task->d_name);
    }
    if (tasks) closedir(tasks);
    if (others == 0)
        printf("%s: no watcher\n", who);
    else if (named == others)
        printf("%s: %d watcher, signals %s\n", who, named, blocked ? "blocked" : "NOT BLOCKED");
    else
        printf("%s: %d threads, %d named hotplug-watcher\n", who, others, named);
    fflush(stdout);
}

int main(void) {
    free(malloc(100));
    report("parent");
    pid_t child = fork();
    if (child == 0) {
        /* The first allocation brings the child's allocator up and starts its watcher. */
        for (int i = 0; i < 10; i++) free(malloc(100 + i));
        report("child");
        _exit(0);
    }
    int status = 0;
    waitpid(child, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
