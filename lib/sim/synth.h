/* Synthetic workloads for the simulator, the unit tests and bench/: the
 * access patterns an adaptive policy must get right, generated
 * deterministically from a short spec.  See synth.c for the kinds. */
#ifndef SLUICE_SIM_SYNTH_H
#define SLUICE_SIM_SYNTH_H

#include "sim/trace.h"

/* Fill T from SPEC, "KIND[:key=value,...]" (synth.c lists kinds and keys).
 * 0, or -errno with a message naming the spec and what is wrong. */
int sl_synth_generate(const char *spec, struct sl_trace *t);

#endif
