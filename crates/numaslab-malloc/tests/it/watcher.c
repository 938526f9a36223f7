/* Whether this process has a thread named hotplug-watcher, and whether it blocks SIGINT,
   SIGTERM and SIGCHLD; then the same in a forked child after it allocated. Waits up to a
   second for the thread to name itself (it does so once it runs). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int blocks(unsigned long long mask, int signal) { return (mask >> (signal - 1)) & 1; }

/* The number of watcher threads; *blocked is set when every one blocks the three signals. */
static int watchers(int *blocked) {
    int found = 0;
    *blocked = 1;
    DIR *tasks = opendir("/proc/self/task");
    if (!tasks) return -1;
    struct dirent *task;
    while ((task = readdir(tasks))) {
        if (task->d_name[0] == '.') continue;
        char path[64], line[256];
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", task->d_name);
        FILE *comm = fopen(path, "r");
        if (!comm) continue;
        int watcher = fgets(line, sizeof line, comm) && strcmp(line, "hotplug-watcher\n") == 0;
        fclose(comm);
        if (!watcher) continue;
        found++;
        snprintf(path, sizeof path, "/proc/self/task/%s/status", task->d_name);
        FILE *status = fopen(path, "r");
        unsigned long long mask = 0;
        while (status && fgets(line, sizeof line, status))
            if (strncmp(line, "SigBlk:", 7) == 0) mask = strtoull(line + 7, NULL, 16);
        if (status) fclose(status);
        *blocked &= blocks(mask, 2) && blocks(mask, 15) && blocks(mask, 17);
    }
    closedir(tasks);
    return found;
}

static void report(const char *who) {
    int blocked = 0, found = 0;
    for (int tries = 0; tries < 100 && found == 0; tries++) {
        found = watchers(&blocked);
        if (found == 0) {
            struct timespec pause = {0, 10 * 1000 * 1000};
            nanosleep(&pause, NULL);
        }
    }
    if (found > 0)
        printf("%s: %d watcher, signals %s\n", who, found, blocked ? "blocked" : "NOT BLOCKED");
    else
        printf("%s: no watcher\n", who);
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
