/* fault.h - crash injection points for tests.
 *
 * hsq_fault("name") kills the process with SIGKILL when the environment
 * variable HSQ_FAULT equals "name" (optionally "name@N": on the N-th time
 * the point is reached). With "name~MS" (or "name@N~MS") the thread that
 * reaches the point sleeps MS milliseconds instead, every time from the
 * N-th on. It does nothing otherwise; the variable is read once, by the
 * first thread to reach any point. Tests use it to prove that an erasure or
 * a purge interrupted at the worst moment completes after a restart and
 * leaves no orphans, and to make a step slow on purpose.
 */
#ifndef HSQ_COMMON_FAULT_H
#define HSQ_COMMON_FAULT_H

void hsq_fault(const char *point);

#endif
