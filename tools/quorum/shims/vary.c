/* libquorum-vary: the preload shim of `quorum reproduce`'s file_order and
 * clock variations (docs/reproduce.md, tools/quorum/variations/).
 *
 * A rebuild must run under conditions the build did not have, so that a
 * package whose bytes depend on them shows up as MISMATCH.  Two of those
 * conditions cannot be changed from outside a container on a Docker-API
 * engine: the order in which a folder lists its entries (the engine's
 * storage decides it) and the wall clock (containers share the host's).
 * This library, preloaded into every dynamically linked program of the
 * rebuild, changes both as the program sees them:
 *
 *   QUORUM_VARY_READDIR=reverse      readdir() returns a folder's entries
 *                                    in the reverse of the storage's order
 *   QUORUM_VARY_CLOCK_OFFSET=<secs>  the realtime clock reads <secs> later
 *
 * It never touches a statically linked program (the preload does not reach
 * it) nor what the kernel stamps (file times): quorum's report says so.
 * Reverse, not random: a rebuild that differs must differ the same way
 * each time, so its diff can be studied.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static long long clock_offset;
static int reverse_dirs;

static int (*real_clock_gettime)(clockid_t, struct timespec *);
static int (*real_gettimeofday)(struct timeval *, void *);
static int (*real_timespec_get)(struct timespec *, int);
static struct dirent *(*real_readdir)(DIR *);
static int (*real_closedir)(DIR *);
static void (*real_rewinddir)(DIR *);
static void (*real_seekdir)(DIR *, long);

__attribute__((constructor)) static void quorum_vary_init(void)
{
    const char *s = getenv("QUORUM_VARY_CLOCK_OFFSET");
    if (s)
        clock_offset = strtoll(s, NULL, 10);
    s = getenv("QUORUM_VARY_READDIR");
    reverse_dirs = s && strcmp(s, "reverse") == 0;
    real_clock_gettime = dlsym(RTLD_NEXT, "clock_gettime");
    real_gettimeofday = dlsym(RTLD_NEXT, "gettimeofday");
    real_timespec_get = dlsym(RTLD_NEXT, "timespec_get");
    real_readdir = dlsym(RTLD_NEXT, "readdir");
    real_closedir = dlsym(RTLD_NEXT, "closedir");
    real_rewinddir = dlsym(RTLD_NEXT, "rewinddir");
    real_seekdir = dlsym(RTLD_NEXT, "seekdir");
}

/* --- the clock ----------------------------------------------------------- */

/* The C library declares these pointers non-null, but a program may still
 * pass NULL; test them through a function the compiler cannot see into. */
__attribute__((noinline)) static int present(const void *p)
{
    return p != NULL;
}

static int shifted(clockid_t id)
{
    return id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE;
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
    int r = real_clock_gettime(id, ts);
    if (r == 0 && present(ts) && shifted(id))
        ts->tv_sec += clock_offset;
    return r;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz)
{
    int r = real_gettimeofday(tv, tz);
    if (r == 0 && present(tv))
        tv->tv_sec += clock_offset;
    return r;
}

time_t time(time_t *t)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return (time_t)-1;
    if (t)
        *t = ts.tv_sec;
    return ts.tv_sec;
}

int timespec_get(struct timespec *ts, int base)
{
    int r = real_timespec_get(ts, base);
    if (r == TIME_UTC && present(ts))
        ts->tv_sec += clock_offset;
    return r;
}

/* --- folder order -------------------------------------------------------- */

/* The entries of one open folder, read in full at the first readdir() and
 * handed out last to first.  Kept per DIR in a short list: a build has few
 * folders open at once. */
struct listing {
    DIR *dir;
    struct dirent **ents;
    size_t n, next;
    int err;                  /* errno of a failed read, reported at the end */
    struct listing *link;
};

static struct listing *open_listings;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void drop(DIR *d)
{
    struct listing **p = &open_listings;
    while (*p && (*p)->dir != d)
        p = &(*p)->link;
    if (!*p)
        return;
    struct listing *l = *p;
    *p = l->link;
    for (size_t i = 0; i < l->n; i++)
        free(l->ents[i]);
    free(l->ents);
    free(l);
}

static struct listing *slurp(DIR *d)
{
    struct listing *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    size_t cap = 0;
    for (;;) {
        errno = 0;
        struct dirent *e = real_readdir(d);
        if (!e) {
            l->err = errno;
            break;
        }
        if (l->n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            struct dirent **grown = realloc(l->ents, ncap * sizeof *grown);
            if (!grown) {
                l->err = ENOMEM;
                break;
            }
            l->ents = grown;
            cap = ncap;
        }
        /* A record is only d_reclen long in the kernel's buffer: copy the
         * name, not sizeof(struct dirent) bytes past its end. */
        struct dirent *copy = calloc(1, sizeof *copy);
        if (!copy) {
            l->err = ENOMEM;
            break;
        }
        size_t head = offsetof(struct dirent, d_name);
        memcpy(copy, e, head);
        memcpy(copy->d_name, e->d_name, strnlen(e->d_name, sizeof copy->d_name - 1));
        copy->d_reclen = sizeof *copy;
        l->ents[l->n++] = copy;
    }
    l->dir = d;
    l->link = open_listings;
    open_listings = l;
    return l;
}

struct dirent *readdir(DIR *d)
{
    if (!reverse_dirs || !present(d))
        return real_readdir(d);
    int saved = errno;
    pthread_mutex_lock(&lock);
    struct listing *l = open_listings;
    while (l && l->dir != d)
        l = l->link;
    if (!l)
        l = slurp(d);
    struct dirent *e = NULL;
    if (!l) {
        pthread_mutex_unlock(&lock);
        return real_readdir(d);
    }
    if (l->next < l->n) {
        e = l->ents[l->n - 1 - l->next++];
        errno = saved;
    } else {
        errno = l->err ? l->err : saved;
    }
    pthread_mutex_unlock(&lock);
    return e;
}

/* On x86_64 glibc, struct dirent64 is struct dirent and readdir64 is the
 * same function; programs built with large-file support call it by this
 * name. */
struct dirent64 *readdir64(DIR *d)
{
    return (struct dirent64 *)readdir(d);
}

int closedir(DIR *d)
{
    pthread_mutex_lock(&lock);
    drop(d);
    pthread_mutex_unlock(&lock);
    return real_closedir(d);
}

void rewinddir(DIR *d)
{
    pthread_mutex_lock(&lock);
    drop(d);
    pthread_mutex_unlock(&lock);
    real_rewinddir(d);
}

/* A position from telldir() means nothing in a reversed listing: forget
 * the listing and let the next readdir() read on from there. */
void seekdir(DIR *d, long pos)
{
    pthread_mutex_lock(&lock);
    drop(d);
    pthread_mutex_unlock(&lock);
    real_seekdir(d, pos);
}
