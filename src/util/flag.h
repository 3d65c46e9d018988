/* An int flag shared between threads (or written by a signal handler): the __atomic
 * builtins are lock-free for int, so async-signal-safe, and visible to ThreadSanitizer.
 * Used for the coordinator's stop flag and a peer's dialing thread's "done". */
#ifndef STARLING_UTIL_FLAG_H
#define STARLING_UTIL_FLAG_H
#if defined(__GNUC__)
#define STARLING_FLAG_LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STARLING_FLAG_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define STARLING_FLAG_XCHG(p, v) __atomic_exchange_n((p), (v), __ATOMIC_ACQ_REL)
#else
static inline int starling__flag_xchg(int *p, int v)
{
    int old = *(volatile int *)p;
    *(volatile int *)p = v;
    return old;
}
#define STARLING_FLAG_LOAD(p) (*(volatile int *)(p))
#define STARLING_FLAG_STORE(p, v) (*(volatile int *)(p) = (v))
#define STARLING_FLAG_XCHG(p, v) starling__flag_xchg((p), (v))
#endif
#endif
