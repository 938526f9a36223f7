/* Bootstrap cases under LD_PRELOAD: allocations from threads being created and exiting
   (a pthread key destructor allocates), from a program's own atfork child handler and a
   forked child freeing and growing its parent's blocks, every allocation function, and
   (argv[1] = "bad-free") a free of a pointer no allocator handed out. */
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static pthread_key_t key;
static int exit_allocations;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void at_thread_exit(void *value) {
    char *copy = strdup((char *)value);
    free(value);
    if (copy && strncmp(copy, "thread", 6) == 0) {
        pthread_mutex_lock(&lock);
        exit_allocations++;
        pthread_mutex_unlock(&lock);
    }
    free(copy);
}

static void *worker(void *arg) {
    char *name = malloc(64);
    snprintf(name, 64, "thread %ld", (long)arg);
    pthread_setspecific(key, name);
    for (int i = 0; i < 1000; i++) free(malloc((size_t)(i % 300) + 1));
    return NULL;
}

static char *in_child_handler;
static void child_handler(void) { in_child_handler = malloc(100); }

static int check(int ok, const char *what) {
    if (!ok) printf("FAILED: %s\n", what);
    return ok ? 0 : 1;
}

int main(int argc, char **argv) {
    int failures = 0;
    if (argc > 1 && strcmp(argv[1], "bad-free") == 0) {
        long on_stack[4] = {1, 2, 3, 4};
        free(&on_stack[1]);
        printf("survived %ld\n", on_stack[0] + on_stack[1] + on_stack[2] + on_stack[3]);
        return 0;
    }
    pthread_key_create(&key, at_thread_exit);
    for (int wave = 0; wave < 4; wave++) {
        pthread_t threads[8];
        for (long i = 0; i < 8; i++) pthread_create(&threads[i], NULL, worker, (void *)i);
        for (int i = 0; i < 8; i++) pthread_join(threads[i], NULL);
    }
    failures += check(exit_allocations == 32, "every exiting thread allocated");

    void *p = NULL;
    failures += check(posix_memalign(&p, 4096, 100) == 0 && ((size_t)p % 4096) == 0, "posix_memalign");
    free(p);
    failures += check(posix_memalign(&p, 3, 100) != 0, "posix_memalign refuses alignment 3");
    p = aligned_alloc(64, 640);
    failures += check(p && ((size_t)p % 64) == 0, "aligned_alloc");
    free(p);
    p = memalign(1 << 16, 10);
    failures += check(p && ((size_t)p % (1 << 16)) == 0, "memalign 64 KiB");
    free(p);
    p = valloc(10);
    failures += check(p && ((size_t)p % 4096) == 0, "valloc");
    free(p);
    p = pvalloc(10);
    failures += check(p && malloc_usable_size(p) >= 4096, "pvalloc");
    free(p);
    int *zeros = calloc(1000, sizeof(int));
    int all_zero = zeros != NULL;
    for (int i = 0; zeros && i < 1000; i++) all_zero &= zeros[i] == 0;
    failures += check(all_zero, "calloc zeroes");
    free(zeros);
    failures += check(calloc((size_t)1 << 62, 16) == NULL, "calloc overflow is null");
    failures += check(reallocarray(NULL, (size_t)1 << 62, 16) == NULL, "reallocarray overflow is null");
    char *grow = malloc(10);
    strcpy(grow, "123456789");
    for (size_t size = 20; size < 1000000; size *= 3) {
        grow = realloc(grow, size);
        failures += check(grow && strcmp(grow, "123456789") == 0 && malloc_usable_size(grow) >= size, "realloc keeps contents");
    }
    free(realloc(grow, 0) ? NULL : NULL);
    free(NULL);

    char *parents = malloc(50);
    strcpy(parents, "from the parent");
    pthread_atfork(NULL, NULL, child_handler);
    pid_t child = fork();
    if (child == 0) {
        int bad = 0;
        bad |= in_child_handler == NULL;
        char *mine = malloc(1000);
        bad |= mine == NULL;
        parents = realloc(parents, 5000);
        bad |= parents == NULL || strcmp(parents, "from the parent") != 0;
        free(parents);
        free(mine);
        free(in_child_handler);
        for (int i = 0; i < 10000; i++) free(malloc((size_t)(i % 5000) + 1));
        _exit(bad ? 3 : 0);
    }
    int status = 0;
    waitpid(child, &status, 0);
    failures += check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the forked child allocated and freed");
    free(parents);
    printf("%s\n", failures == 0 ? "all good" : "failures");
    return failures;
}
