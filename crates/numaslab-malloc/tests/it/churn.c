/* Threads that allocate, fill, check and free blocks of many sizes for a few seconds:
   run under LD_PRELOAD while cpu1 goes offline and online. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define THREADS 4
#define KEEP 256

static volatile int stop;
static long corrupted, operations[THREADS];

static void *worker(void *arg) {
    long id = (long)arg;
    unsigned char *kept[KEEP] = {0};
    size_t sizes[KEEP] = {0};
    unsigned seed = (unsigned)id * 2654435761u;
    while (!stop) {
        int slot = (int)((seed = seed * 1103515245u + 12345u) >> 8) % KEEP;
        if (kept[slot]) {
            for (size_t i = 0; i < sizes[slot]; i++)
                if (kept[slot][i] != (unsigned char)(slot + id)) { __atomic_add_fetch(&corrupted, 1, __ATOMIC_RELAXED); break; }
            free(kept[slot]);
        }
        sizes[slot] = 1 + (seed >> 4) % ((seed & 7) == 0 ? 70000 : 600);
        kept[slot] = malloc(sizes[slot]);
        memset(kept[slot], slot + id, sizes[slot]);
        operations[id]++;
    }
    for (int i = 0; i < KEEP; i++) free(kept[i]);
    return NULL;
}

int main(int argc, char **argv) {
    int seconds = argc > 1 ? atoi(argv[1]) : 2;
    pthread_t threads[THREADS];
    for (long i = 0; i < THREADS; i++) pthread_create(&threads[i], NULL, worker, (void *)i);
    struct timespec pause = {seconds, 0};
    nanosleep(&pause, NULL);
    stop = 1;
    long total = 0;
    for (int i = 0; i < THREADS; i++) { pthread_join(threads[i], NULL); total += operations[i]; }
    printf("%s\n", corrupted == 0 && total > 0 ? "nothing lost" : "CORRUPTED");
    return corrupted == 0 ? 0 : 1;
}
