#define _GNU_SOURCE
#include <sched.h>
#include <errno.h>
#include <numa.h>
#include "CNuma.h"

int cnuma_available(void) { return numa_available(); }
int cnuma_max_node(void) { return numa_max_node(); }
int cnuma_configured_nodes(void) { return numa_num_configured_nodes(); }
int cnuma_node_of_cpu(int cpu) { return numa_node_of_cpu(cpu); }
void *cnuma_alloc_onnode(size_t size, int node) { return numa_alloc_onnode(size, node); }
void cnuma_free(void *p, size_t size) { numa_free(p, size); }
int cnuma_current_cpu(void) { return sched_getcpu(); }

int cnuma_pin_current_thread(int cpu) {
    if (cpu < 0 || cpu >= CPU_SETSIZE) return -EINVAL;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0) return -errno;
    return 0;
}
