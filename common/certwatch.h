/*
 * certwatch: the expiry alarms of a node's own CA and OCSP responder
 * certificates (issue 8 item 3; the product's "Certificate Expiration"
 * and "Certificate Expired" alarms).
 *
 * Each node watches the certificates it holds and the PAN must know
 * about: the PAN its Root CA, Node CA and OCSP responder, a SAN its Node
 * CA, a PSN its Endpoint Sub CA and OCSP responder.  A certificate that
 * ends within CERTWATCH_WARN_DAYS raises "Certificate Expiration: <label>"
 * (warning), one past its notAfter "Certificate Expired: <label>"
 * (critical); the text names the certificate, the node and notAfter.  The
 * alarm clears by itself when the certificate is replaced by one that is
 * not near its end, or when the node no longer holds it.
 *
 * The check runs at start, again every CERTWATCH_RECHECK_MS (the days
 * pass), and whenever a watched file changes (a stat() every
 * CERTWATCH_STAT_MS).  Where the alarm goes is the caller's: the member
 * daemons put it in their heartbeats (join_link_alarm_set), the PAN in its
 * own alarm table.
 */
#ifndef ISELAB_CERTWATCH_H
#define ISELAB_CERTWATCH_H

#include <stdint.h>

struct error;

/* The product warns this many days before a certificate expires. */
#define CERTWATCH_WARN_DAYS 90
/* A full check this often although no file changed: time moves on. */
#define CERTWATCH_RECHECK_MS (3600LL * 1000)
/* How often the watched files are stat()ed for a change. */
#define CERTWATCH_STAT_MS 5000
/* Most certificates one node watches. */
#define CERTWATCH_MAX 8
/* Alarm names: the product's, then ": " and the certificate's label. */
#define CERTWATCH_ALARM_SOON    "Certificate Expiration"
#define CERTWATCH_ALARM_EXPIRED "Certificate Expired"

/* One watched certificate: a label ("Endpoint Sub CA") and its file. */
struct certwatch_cert {
	const char *label;
	const char *file; /* relative to the data directory: "ca/node-ca.crt" */
};

struct certwatch;

/*
 * Watch certs (ended by a NULL label, at most CERTWATCH_MAX) of node in
 * datadir.  Nothing is read before the first tick.
 */
struct certwatch *certwatch_new(const char *datadir, const char *node,
                                const struct certwatch_cert *certs,
                                struct error *err);
void certwatch_free(struct certwatch *w);

/*
 * Raise (text set, severity an AlarmSeverity of registry.proto) or clear
 * (text NULL) the alarm name.  Called for every alarm name of a checked
 * certificate, raised or not, so the sink must take a clear of an alarm
 * that is not active.
 */
typedef void (*certwatch_alarm_fn)(void *arg, const char *name, int severity,
                                   const char *text);

/* Check what is due; returns ms until the next tick wants to run. */
int64_t certwatch_tick(struct certwatch *w, int64_t now_mono,
                       certwatch_alarm_fn fn, void *arg);

#endif
