/*
 * adminview: the admin node's tables as its admin commands show them
 * (`pan cert list`, `pan alarms`; on a SAN the same views of its replica,
 * and `san node list`).  Each writes to out and err and returns an exit
 * status.
 */
#ifndef ISELAB_ADMINVIEW_H
#define ISELAB_ADMINVIEW_H

#include <stdint.h>
#include <stdio.h>

struct store;

#define ADMINVIEW_EXIT_OK    0
#define ADMINVIEW_EXIT_FAIL  1
#define ADMINVIEW_EXIT_USAGE 2

/* "2025-01-02T03:04:05Z" */
void adminview_time(int64_t secs, char *buf, size_t len);
/* "critical", "major", ... of an AlarmSeverity. */
const char *adminview_severity_name(int severity);
/* argv: "cert" "list" [--node HOST] [--status S] [--limit N] [--after C] */
int adminview_cert_list(struct store *st, const char *prog, int argc,
                        char **argv, FILE *out, FILE *err);
/* argv: "alarms" [--all]; newest first, as the product's dashlet. */
int adminview_alarms(struct store *st, const char *prog, int argc, char **argv,
                     FILE *out, FILE *err);
/*
 * The same with the node's own alarms (kept apart from the store, in
 * raise order) merged in by raise time: a SAN's view of its link to the
 * PAN next to the replica's alarms (docs/san.md).
 */
struct Iselab__AlarmRecord;
int adminview_alarms_local(struct store *st, const char *prog, int argc,
                           char **argv,
                           const struct Iselab__AlarmRecord *const *local,
                           size_t nlocal, FILE *out, FILE *err);
/* The nodes table: host, role, session services, status, joined, CA. */
int adminview_nodes(struct store *st, const char *prog, FILE *out, FILE *err);

#endif
