/* fault.h - crash injection points for tests.
 *
 * hsq_fault("name") kills the process with SIGKILL when the environment
 * variable HSQ_FAULT equals "name" (optionally "name@N": on the N-th time
 * the point is reached). It does nothing otherwise; the variable is read
 * once. Tests use it to prove that an erasure or a purge interrupted at the
 * worst moment completes after a restart and leaves no orphans.
 */
#ifndef HSQ_COMMON_FAULT_H
#define HSQ_COMMON_FAULT_H

void hsq_fault(const char *point);

#endif
