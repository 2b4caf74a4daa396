/* A tiny algorithm stand-in for real-runtime tests: no shell, no libc
 * surprises (static), every behaviour chosen by arguments.
 *
 *   probe [--log TEXT] [--result TEXT] [--result-bytes N] [--sleep SECONDS]
 *         [--first-sleep SECONDS] [--ignore-term] [--term-delay SECONDS]
 *         [--alloc-mib N] [--job] [--exit CODE]
 *
 * In order: prints TEXT to stdout (--log); prints $VISION_JOB and the file
 * /etc/vision/job.json (--job); allocates and touches N MiB (--alloc-mib);
 * sleeps, ignoring SIGTERM if asked (--sleep, --ignore-term; --first-sleep
 * sleeps only in a job's first attempt: "attempt":1 in $VISION_JOB); writes the
 * result (TEXT, or N bytes of JSON) to /dev/termination-log; exits CODE.
 * On SIGTERM it exits 143 at once, or after SECONDS (--term-delay: a slow
 * shutdown, logged when it starts and when it ends). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double term_delay = 0;

static void on_term(int sig) {
  (void)sig;
  printf("probe: SIGTERM\n");
  fflush(stdout);
  if (term_delay > 0) {
    printf("probe: stopping for %gs\n", term_delay);
    fflush(stdout);
    struct timespec ts = {(time_t)term_delay, (long)((term_delay - (time_t)term_delay) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {
    }
    printf("probe: stopped\n");
    fflush(stdout);
  }
  exit(143);
}

static void cat(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) {
    printf("probe: cannot open %s\n", path);
    return;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, stdout);
  fclose(f);
  putchar('\n');
}

int main(int argc, char **argv) {
  const char *result = NULL;
  long result_bytes = -1, alloc_mib = 0, code = 0;
  double sleep_s = 0, first_sleep_s = 0;
  int ignore_term = 0, show_job = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--log") && v) { printf("%s\n", v); i++; }
    else if (!strcmp(a, "--result") && v) { result = v; i++; }
    else if (!strcmp(a, "--result-bytes") && v) { result_bytes = atol(v); i++; }
    else if (!strcmp(a, "--sleep") && v) { sleep_s = atof(v); i++; }
    else if (!strcmp(a, "--first-sleep") && v) { first_sleep_s = atof(v); i++; }
    else if (!strcmp(a, "--term-delay") && v) { term_delay = atof(v); i++; }
    else if (!strcmp(a, "--alloc-mib") && v) { alloc_mib = atol(v); i++; }
    else if (!strcmp(a, "--exit") && v) { code = atol(v); i++; }
    else if (!strcmp(a, "--ignore-term")) ignore_term = 1;
    else if (!strcmp(a, "--job")) show_job = 1;
    else { fprintf(stderr, "probe: unknown argument %s\n", a); return 2; }
  }
  fflush(stdout);
  signal(SIGTERM, ignore_term ? SIG_IGN : on_term);
  if (show_job) {
    const char *job = getenv("VISION_JOB");
    printf("VISION_JOB=%s\n", job ? job : "(unset)");
    cat("/etc/vision/job.json");
    fflush(stdout);
  }
  for (long m = 0; m < alloc_mib; m++) {
    char *p = malloc(1 << 20);
    if (!p) return 3;
    memset(p, 1, 1 << 20);
  }
  const char *job = getenv("VISION_JOB");
  if (first_sleep_s > 0 && job &&
      (strstr(job, "\"attempt\":1,") || strstr(job, "\"attempt\":1}")))
    sleep_s += first_sleep_s;
  if (sleep_s > 0) {
    struct timespec ts = {(time_t)sleep_s, (long)((sleep_s - (time_t)sleep_s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {
    }
  }
  if (result || result_bytes >= 0) {
    FILE *f = fopen("/dev/termination-log", "w");
    if (!f) { perror("probe: /dev/termination-log"); return 4; }
    if (result) fputs(result, f);
    else {
      /* {"pad":"xxx..."} of exactly N bytes (N >= 10). */
      long pad = result_bytes > 10 ? result_bytes - 10 : 0;
      fputs("{\"pad\":\"", f);
      for (long i = 0; i < pad; i++) fputc('x', f);
      fputs("\"}", f);
    }
    fclose(f);
  }
  return (int)code;
}
