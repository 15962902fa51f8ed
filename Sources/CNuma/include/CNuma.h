// CNuma: thin wrappers over libnuma (and sched_setaffinity) for the Primitives buffer pool.
// Kept as plain functions so Swift never has to deal with libnuma's bitmask structs or the
// glibc CPU_SET macros, which Swift cannot import.
#ifndef CNUMA_H
#define CNUMA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// numa_available(): >= 0 when the kernel and libnuma support NUMA policy calls, -1 otherwise.
/// Every other cnuma_* call except cnuma_pin_current_thread/cnuma_current_cpu must only be made
/// after this returned >= 0 (libnuma's own rule).
int cnuma_available(void);

/// numa_max_node(): highest node number (0 on a single-node machine).
int cnuma_max_node(void);

/// numa_num_configured_nodes().
int cnuma_configured_nodes(void);

/// numa_node_of_cpu(cpu): node of `cpu`, or -1 (errno set) for an invalid CPU.
int cnuma_node_of_cpu(int cpu);

/// numa_alloc_onnode(size, node): page-granular mmap bound to `node`; NULL on failure.
void *cnuma_alloc_onnode(size_t size, int node);

/// numa_free(p, size): `size` must be the size passed to cnuma_alloc_onnode.
void cnuma_free(void *p, size_t size);

/// sched_getcpu(): CPU the calling thread runs on right now, or -1.
int cnuma_current_cpu(void);

/// sched_setaffinity(0, ...) to the single CPU `cpu`. Returns 0 or -errno.
int cnuma_pin_current_thread(int cpu);

#ifdef __cplusplus
}
#endif
#endif
